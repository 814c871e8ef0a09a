#!/bin/sh
# After the package is removed: systemd forgets the units. dpkg calls this
# with "remove" or "purge", rpm with the number of versions left (0).
set -e
case "$1" in
remove | purge | 0) ;;
*) exit 0 ;;
esac
[ -d /run/systemd/system ] || exit 0
systemctl daemon-reload || true
for dir in /run/user/[0-9]*; do
	[ -d "$dir/systemd" ] || continue
	user=$(id -nu "${dir##*/}" 2>/dev/null) || continue
	systemctl --user -M "$user@" daemon-reload || true
done
exit 0
