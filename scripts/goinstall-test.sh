#!/usr/bin/env bash
# Proves that `go install github.com/spritefwd/spritefwd/cmd/spritefwd@latest`
# works for a user with nothing but Go. No public release exists to fetch, so
# this serves the committed tree (git archive HEAD: uncommitted changes are
# not in it) from a file:// module proxy, laid out as proxy.golang.org lays
# out a module, once as a tagged version and once as a pseudo-version of the
# commit. Each is installed outside any module with an empty GOPATH, module
# cache and build cache, GOFLAGS and GOWORK cleared and CGO_ENABLED=0; the
# dependencies come from the real module proxy. Then `spritefwd version`
# must say the version (and, for the pseudo-version, the commit).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
mod=github.com/spritefwd/spritefwd
tag=v0.99.0 # no release uses it; the proxy serves this tree under it
work=$(mktemp -d /tmp/spritefwd-goinstall.XXXXXX)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
start=$(date +%s)

commit=$(git rev-parse HEAD)
stamp=$(TZ=UTC git show -s --format=%cd --date=format-local:%Y%m%d%H%M%S HEAD)
pseudo=v0.0.0-$stamp-${commit:0:12}
at=$(git show -s --format=%cI HEAD)
dir=$work/proxy/$mod/@v
mkdir -p "$dir"
for v in $tag $pseudo; do
	git archive --format=zip --prefix="$mod@$v/" -o "$dir/$v.zip" HEAD
	git show HEAD:go.mod >"$dir/$v.mod"
	printf '{"Version":"%s","Time":"%s"}\n' "$v" "$at" >"$dir/$v.info"
done
echo $tag >"$dir/list" # a proxy lists tags only; @latest is the highest
cp "$dir/$tag.info" "$work/proxy/$mod/@latest"
if grep -q '^replace\|^\s*replace ' go.mod; then
	echo "go.mod has a replace directive: go install ...@version refuses it" >&2
	exit 1
fi

install() { # install VERSION: go install as a user runs it, with nothing cached
	(cd "$work" && env GOWORK=off GOFLAGS= CGO_ENABLED=0 GOTOOLCHAIN=local \
		GOPATH="$work/gopath" GOMODCACHE="$work/gopath/pkg/mod" GOCACHE="$work/cache" GOBIN="$work/bin" \
		GOPROXY="file://$work/proxy,https://proxy.golang.org" GONOSUMDB=$mod \
		"$GO" install "$mod/cmd/spritefwd@$1")
}
check() { # check WANT: the installed spritefwd says WANT, then the Go version
	got=$("$work/bin/spritefwd" version)
	echo "installed: $got"
	want="spritefwd $1 $("$GO" env GOVERSION) "
	if [[ $got != "$want"* ]]; then
		echo "want: $want..." >&2
		exit 1
	fi
}

install latest
check "$tag"
"$GO" version -m "$work/bin/spritefwd" | grep -E "^\s+mod\s|CGO_ENABLED"
install "$pseudo"
check "$pseudo (commit ${commit:0:12})"
echo "goinstall-test: ok in $(($(date +%s) - start))s: go install ...@latest ($tag) and @$pseudo of $commit"
