#!/bin/sh
# Before the package is removed (not upgraded): stop the system service and
# every logged-in user's, and disable the system unit and a --global user
# enablement, so nothing is left to start a binary that is gone. The
# users' configs and tokens, and units of their own, are theirs: untouched.
# dpkg calls this with "remove" ("upgrade" on an upgrade), rpm with the
# number of versions left (0 on removal).
set -e
case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac
if [ -d /run/systemd/system ]; then
	systemctl stop spritefwd.service || true
	for dir in /run/user/[0-9]*; do
		[ -d "$dir/systemd" ] || continue
		user=$(id -nu "${dir##*/}" 2>/dev/null) || continue
		systemctl --user -M "$user@" stop spritefwd.service || true
	done
fi
# Enablement links are files: remove them with or without a running systemd.
systemctl --no-reload disable spritefwd.service >/dev/null 2>&1 || true
systemctl --no-reload --global disable spritefwd.service >/dev/null 2>&1 || true
exit 0
