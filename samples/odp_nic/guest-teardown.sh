#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test VM as root, after the nic selftest group: undoes what its first test did
# if its last one did not (the group died half way), so that the next entry of the same boot
# starts clean. Unloads odp_nic, then clears driver_override of every PCI device handed to it
# (the second edu, 0000:00:10.0 with vm-run.sh --topology nic); the device stays unbound, as
# at boot before a driver took it. Idempotent.
#
# Exit status: 0 if nothing was left or everything left was cleaned up; 1 (with a message on
# stderr) if something could not be.

set -uo pipefail

failed=0

# Unload odp_nic. Its files close with the processes that held them, but the last fput() may
# come a moment after the process is gone: try for a few seconds.
if [ -e /sys/module/odp_nic ]; then
	echo "guest-teardown (odp_nic): odp_nic still loaded: unloading it"
	for _ in $(seq 50); do
		out=$(rmmod odp_nic 2>&1) && break
		sleep 0.1
	done
	if [ -e /sys/module/odp_nic ]; then
		echo "guest-teardown (odp_nic): rmmod odp_nic failed: $out" >&2
		failed=1
	fi
fi

# Clear driver_override of each device handed to odp_nic (writing a newline clears it).
for dev in /sys/bus/pci/devices/*; do
	[ -r "$dev/driver_override" ] || continue
	[ "$(cat "$dev/driver_override")" = odp_nic ] || continue
	bdf=${dev##*/}
	echo "guest-teardown (odp_nic): clearing driver_override of $bdf"
	if [ -e "$dev/driver" ] && [ "$(basename "$(readlink "$dev/driver")")" = odp_nic ]; then
		# Only possible if the unload failed: leave the device to its driver.
		echo "guest-teardown (odp_nic): $bdf is still bound to odp_nic" >&2
		failed=1
		continue
	fi
	# Read back: "(null)" once cleared.
	if ! echo >"$dev/driver_override" ||
		[ "$(cat "$dev/driver_override")" = odp_nic ]; then
		echo "guest-teardown (odp_nic): could not clear driver_override of $bdf:" \
			"$(cat "$dev/driver_override")" >&2
		failed=1
	fi
done

exit "$failed"
