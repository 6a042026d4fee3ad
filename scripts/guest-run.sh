#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test VM (started by scripts/vm-run.sh): loads odp_hmm, runs the command, unloads
# the module, lets kmemleak scan, and leaves the kernel log, the kmemleak report and the exit code
# in the results directory shared with the host.
#
# Usage: guest-run.sh RESULTS_DIR

set -u
results=$1
# shellcheck source=/dev/null
. "$results/env"

kmsg() { echo "odp_hmm-vm: $*" >/dev/kmsg; }

mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
kmemleak=/sys/kernel/debug/kmemleak
# Objects allocated during boot are not this run's; forget them.
[ -w "$kmemleak" ] && echo clear >"$kmemleak"

# Tests that reload the module reload it the same way.
export ODP_HMM_MODULE="$MODULE" ODP_HMM_MODULE_ARGS="$MODULE_ARGS"

# MODULE is a file (insmod/rmmod) or, without a slash, a module name for modprobe (installed in
# the guest's /lib/modules by the setup command).
load=insmod unload=rmmod
[ -z "$MODULE" ] || [ "$MODULE" != "${MODULE##*/}" ] || load=modprobe unload="modprobe -r"

# Runs the setup or teardown command vm-run.sh was given, if any.
hook() {
	[ -s "$results/$1" ] || return 0
	kmsg "$1: $(cat "$results/$1")"
	(cd "$ODP_TOP" && eval "$(cat "$results/$1")") && return 0
	echo "odp_hmm-vm: $1 failed" >&2
	return 1
}

rc=0
hook setup || rc=126
if [ "$rc" = 0 ] && [ -n "$MODULE" ]; then
	kmsg "$load $MODULE $MODULE_ARGS"
	# shellcheck disable=SC2086
	if ! $load "$MODULE" $MODULE_ARGS; then
		echo "odp_hmm-vm: $load failed" >&2
		rc=126
	fi
fi

if [ "$rc" = 0 ]; then
	kmsg "run: $(cat "$results/cmd")"
	(cd "$ODP_TOP" && eval "$(cat "$results/cmd")")
	rc=$?
	kmsg "command exited with $rc"
fi

if [ -n "$MODULE" ] && grep -q '^odp_hmm ' /proc/modules; then
	if ! $unload odp_hmm || grep -q '^odp_hmm ' /proc/modules; then
		echo "odp_hmm-vm: $unload failed" >&2
		[ "$rc" != 0 ] || rc=126
	fi
fi
hook teardown || [ "$rc" != 0 ] || rc=126

if [ -w "$kmemleak" ]; then
	# kmemleak reports an object only once it has been unreferenced for 5 s; scan twice, as
	# Documentation/dev-tools/kmemleak.rst advises against transient false positives.
	sleep 6
	echo scan >"$kmemleak"
	echo scan >"$kmemleak"
	cat "$kmemleak" >"$results/kmemleak.txt"
fi
dmesg >"$results/dmesg.txt"
echo "$rc" >"$results/rc"
exit "$rc"
