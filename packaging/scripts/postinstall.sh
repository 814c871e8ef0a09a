#!/bin/sh
# After an install or upgrade. systemd learns of the new units. On an
# upgrade, a spritefwd service that is running (the system one, and each
# logged-in user's) restarts onto the new binary: try-restart touches only
# running units, and stopping gives open connections shutdown_grace. Nothing
# is enabled or started: a service runs only once someone asked for it.
# dpkg calls this with "configure OLD-VERSION" (no version on a first
# install), rpm with the number of versions installed (1 on a first install).
set -e
upgrade=false
case "$1" in
configure) [ -z "$2" ] || upgrade=true ;;
[0-9]*) [ "$1" -le 1 ] || upgrade=true ;;
*) exit 0 ;;
esac
[ -d /run/systemd/system ] || exit 0 # no systemd running: a container or chroot
systemctl daemon-reload || true
$upgrade && systemctl try-restart spritefwd.service || true
for dir in /run/user/[0-9]*; do
	[ -d "$dir/systemd" ] || continue
	user=$(id -nu "${dir##*/}" 2>/dev/null) || continue
	systemctl --user -M "$user@" daemon-reload || true
	$upgrade && systemctl --user -M "$user@" try-restart spritefwd.service || true
done
exit 0
