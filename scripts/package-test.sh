#!/usr/bin/env bash
# Builds the .deb from packaging/nfpm.yaml with the nfpm CLI, twice (two
# snapshot versions), and puts it through what a user's machine does with
# it: dpkg -i, the installed spritefwd version and validate on the packaged
# examples, systemd-analyze verify on the units, the completions in real
# bash, zsh and fish, an upgrade over a running service, removal and purge.
#
# It installs the package on THIS machine, as root. It refuses to run when
# a spritefwd package other than its own snapshot versions is installed, or
# when /usr/bin/spritefwd exists and no package owns it, so a developer's
# spritefwd is never overwritten; it purges its package when it ends,
# passed or failed. Set KEEP_DEB=1 to keep bin/package/.
#
# No systemd runs here (nor on CI), so the maintainer scripts' calls to
# systemctl are checked in a private mount namespace where /run says
# systemd runs, with a systemctl on PATH that records them. The real one
# runs only offline (is-enabled, disable of links).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
NFPM=${NFPM:?NFPM is the nfpm binary (make package-test installs it)}
start=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" $(($(date +%s) - start)); }
fail() {
	echo "package-test: FAIL: $*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || fail "needs root: it installs the package with dpkg -i (sudo make package-test)"
command -v dpkg >/dev/null || fail "needs dpkg"
status=$(dpkg-query -W -f='${db:Status-Status} ${Version}' spritefwd 2>/dev/null || true)
case $status in
"" | "not-installed "* | "config-files "*) ;;
"installed 0.0.0~pkgtest."*) echo "a snapshot of this test is installed (an earlier run that was cut short): replacing it" ;;
*) fail "spritefwd is installed from a package ($status): this test would replace and then purge it; remove it first" ;;
esac
if [ -e /usr/bin/spritefwd ] && ! dpkg -S /usr/bin/spritefwd >/dev/null 2>&1; then
	fail "/usr/bin/spritefwd exists and no package owns it: this test would overwrite it; move it away first"
fi

need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v zsh >/dev/null || need+=(zsh)
command -v fish >/dev/null || need+=(fish)
command -v unshare >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
	step "apt-get install ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

arch=$("$GO" env GOARCH)
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
out=bin/package
rm -rf "$out"
mkdir -p "$out"
build() { # build VERSION: the package of the tree as it is, as VERSION
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath -ldflags "-s -w -X main.version=$1 -X main.commit=$commit" \
		-o "$out/spritefwd" ./cmd/spritefwd
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath -ldflags "-s -w -X main.version=$1 -X main.commit=$commit" \
		-o "$out/spritefwd-agent-linux-$arch" ./cmd/spritefwd-agent
	./scripts/completions.sh "$out/spritefwd"
	VERSION=$1 GOARCH=$arch "$NFPM" package --config packaging/nfpm.yaml --packager deb --target "$out/" >/dev/null
}
v1=0.0.0-pkgtest.1
v2=0.0.0-pkgtest.2
step "build $v1 and $v2 with nfpm"
build $v1
build $v2
deb1=$(ls "$out"/spritefwd_0.0.0~pkgtest.1_*.deb)
deb2=$(ls "$out"/spritefwd_0.0.0~pkgtest.2_*.deb)
ls -l "$deb1" "$deb2"

cleanup() {
	dpkg -P spritefwd >/dev/null 2>&1 || true
	[ -z "${planted:-}" ] || rm -rf /etc/spritefwd
	[ -n "${KEEP_DEB:-}" ] || rm -rf "$out"
}
trap cleanup EXIT

# The admin's config and token: the package must never touch them. Planted
# only where none exist; an existing /etc/spritefwd is only read.
if [ ! -e /etc/spritefwd ]; then
	planted=1
	mkdir -p /etc/spritefwd
	printf 'token_file: /etc/spritefwd/token\nforwards:\n  - 5432:db:5432\n' >/etc/spritefwd/config.yaml
	(umask 077 && printf 'not-a-real-token' >/etc/spritefwd/token)
fi
etc_sum=$(find /etc/spritefwd -type f -exec sha256sum {} + | sort)

# A fake systemd for the maintainer scripts: in a private mount namespace,
# /run has /run/systemd/system (systemd is running) and a user manager for
# root; systemctl records its arguments. dpkg runs inside it.
fake=$(mktemp -d /tmp/spritefwd-package-test.XXXXXX)
trap 'cleanup; rm -rf "$fake"' EXIT
mkdir -p "$fake/bin"
cat >"$fake/bin/systemctl" <<EOF
#!/bin/sh
echo "systemctl \$*" >>"$fake/calls"
EOF
chmod +x "$fake/bin/systemctl"
with_systemd() { # with_systemd CMD...: run CMD where the maintainer scripts see a running systemd
	: >"$fake/calls"
	unshare --mount --propagation private sh -c '
		mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system /run/user/0/systemd && PATH="$0:$PATH" exec "$@"' "$fake/bin" "$@"
}
calls() { # calls WANT...: the recorded systemctl calls are exactly WANT, in order
	local want
	want=$(printf '%s\n' "$@")
	if [ "$(cat "$fake/calls")" != "$want" ]; then
		printf 'systemctl calls:\n%s\nwant:\n%s\n' "$(cat "$fake/calls")" "$want" >&2
		fail "$step_name"
	fi
}

step_name="first install, no systemd running"
step "$step_name: dpkg -i $deb1"
dpkg -i "$deb1" >/dev/null
[ "$(dpkg-query -W -f='${Version}' spritefwd)" = 0.0.0~pkgtest.1 ] || fail "dpkg says $(dpkg-query -W -f='${Version}' spritefwd)"
got=$(spritefwd version)
echo "$got"
[[ $got == "spritefwd $v1 (commit $commit) $("$GO" env GOVERSION) linux/$arch" ]] || fail "spritefwd version: $got"
for f in /usr/bin/spritefwd-agent-linux-$arch /usr/lib/systemd/system/spritefwd.service /usr/lib/systemd/user/spritefwd.service \
	/usr/share/bash-completion/completions/spritefwd /usr/share/zsh/vendor-completions/_spritefwd \
	/usr/share/fish/vendor_completions.d/spritefwd.fish /usr/share/doc/spritefwd/README.md; do
	[ -f "$f" ] || fail "$f is not installed"
done
spritefwd validate --config /usr/share/doc/spritefwd/config.example.yaml
for f in /usr/share/doc/spritefwd/examples/*.yaml; do spritefwd validate --config "$f"; done
[ "$(systemctl is-enabled spritefwd.service || true)" = disabled ] || fail "the system unit is enabled after install"
[ "$(systemctl --global is-enabled spritefwd.service || true)" = disabled ] || fail "the user unit is enabled for all users after install"

step "systemd-analyze verify"
if verify=$(systemd-analyze verify /usr/lib/systemd/system/spritefwd.service 2>&1) &&
	verify+=$(XDG_RUNTIME_DIR=$fake systemd-analyze --user verify /usr/lib/systemd/user/spritefwd.service 2>&1); then
	[ -z "$verify" ] || fail "systemd-analyze verify warns: $verify"
	echo "both units verify, without a warning"
else
	fail "systemd-analyze verify: $verify"
fi

step "completions, as the package installs them"
mkdir -p "$fake/xdg/spritefwd"
printf 'forwards:\n  - {name: db, listen: 5432, sprite: pg, port: 5432}\n' >"$fake/xdg/spritefwd/config.yaml"
export XDG_CONFIG_HOME=$fake/xdg
got=$(bash --norc --noprofile -c 'source /usr/share/bash-completion/completions/spritefwd
	COMP_WORDS=(spritefwd service st); COMP_CWORD=2; _spritefwd; echo "${COMPREPLY[*]}"
	COMP_WORDS=(spritefwd forward ""); COMP_CWORD=2; _spritefwd; echo "${COMPREPLY[*]}"')
[ "$got" = $'start stop status\npg' ] || fail "bash completes: $got"
echo "bash: service st → start stop status; forward → pg"
got=$(HOME=$fake fish -c 'complete -C"spritefwd ser"; complete -C"spritefwd forward "; complete -C"spritefwd status --j"')
[ "$got" = $'service\npg\n--json' ] || fail "fish completes: $got"
echo "fish: ser → service; forward → pg; status --j → --json"
zsh -n /usr/share/zsh/vendor-completions/_spritefwd || fail "zsh: syntax"
got=$(zsh -f -c 'autoload -U compinit && compinit -u -d '"$fake"'/zcompdump && print -r -- ${_comps[spritefwd]}')
[ "$got" = _spritefwd ] || fail "zsh's compinit does not find _spritefwd in its fpath: $got"
# The function itself, autoloaded as compinit would, with compadd and
# _files (zsh's, usable only inside a completion widget) recording instead.
got=$(zsh -f -c 'compadd() { [[ $1 == -- ]] && shift; print -r -- "$*"; }; _files() { print -r -- "(files)"; }
	fpath=(/usr/share/zsh/vendor-completions $fpath); autoload -U _spritefwd
	words=(spritefwd service st); CURRENT=3; _spritefwd
	words=(spritefwd forward ""); CURRENT=3; _spritefwd
	words=(spritefwd run --config ""); CURRENT=4; _spritefwd')
[ "$got" = $'start stop status\npg\n(files)' ] || fail "zsh completes: $got"
echo "zsh: compinit registers it from its default fpath; service st → start stop status; forward → pg; run --config → files"
unset XDG_CONFIG_HOME

step_name="upgrade with systemd running"
step "$step_name: dpkg -i $deb2 over $v1"
with_systemd dpkg -i "$deb2" >/dev/null
calls "systemctl daemon-reload" "systemctl try-restart spritefwd.service" \
	"systemctl --user -M root@ daemon-reload" "systemctl --user -M root@ try-restart spritefwd.service"
echo "restarts only a running service (try-restart), system and per user; starts and enables nothing"
[[ $(spritefwd version) == "spritefwd $v2 "* ]] || fail "after the upgrade: $(spritefwd version)"

step_name="removal with systemd running"
step "$step_name: dpkg -r"
with_systemd dpkg -r spritefwd >/dev/null
calls "systemctl stop spritefwd.service" "systemctl --user -M root@ stop spritefwd.service" \
	"systemctl --no-reload disable spritefwd.service" "systemctl --no-reload --global disable spritefwd.service" \
	"systemctl daemon-reload" "systemctl --user -M root@ daemon-reload"
echo "stops the service, system and per user, and disables the units"
# dpkg keeps a removed package's scripts until a purge, and passes a later
# install its last version, as for an upgrade; try-restart then finds
# nothing running. A first install is after a purge.
dpkg -P spritefwd >/dev/null

step_name="first install with systemd running"
step "$step_name: dpkg -i $deb1"
with_systemd dpkg -i "$deb1" >/dev/null
calls "systemctl daemon-reload" "systemctl --user -M root@ daemon-reload"
echo "reloads systemd; starts and enables nothing"

step_name="enabled unit, then purge without systemd"
step "$step_name"
systemctl enable spritefwd.service 2>&1 | grep -v '^Created symlink' || true
[ -L /etc/systemd/system/multi-user.target.wants/spritefwd.service ] || fail "systemctl enable made no link"
files=$(dpkg-query -L spritefwd | while read -r f; do [ -d "$f" ] || echo "$f"; done)
dpkg -P spritefwd >/dev/null
[ ! -e /etc/systemd/system/multi-user.target.wants/spritefwd.service ] || fail "purge left the unit enabled"
for f in $files; do
	[ ! -e "$f" ] || fail "purge left $f"
done
[ ! -e /usr/share/doc/spritefwd ] || fail "purge left /usr/share/doc/spritefwd"
[ "$(dpkg-query -W -f='${db:Status-Status}' spritefwd 2>/dev/null || echo not-installed)" = not-installed ] || fail "dpkg still knows spritefwd"
[ "$(find /etc/spritefwd -type f -exec sha256sum {} + | sort)" = "$etc_sum" ] || fail "/etc/spritefwd changed"
echo "removed $(echo "$files" | wc -l) files and the enablement link; /etc/spritefwd (config, token) untouched"

step "package-test: ok"
