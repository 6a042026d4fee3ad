#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test VM (started by scripts/vm-run.sh): for each entry of the run's plan, runs
# its setup command, loads odp_hmm with the entry's arguments, runs its command, unloads the
# module and runs its teardown; then lets kmemleak scan, and leaves the kernel log, the kmemleak
# report and each entry's exit code and duration in the results directory shared with the host.
# Each entry's part of the kernel log lies between "odp_hmm-vm: entry N begin" and "... end", so
# that the host can tell which entry a report belongs to.
#
# Usage: guest-run.sh RESULTS_DIR
#   RESULTS_DIR/env    ODP_TOP, ODP_HMM_ENTRY_TIMEOUT (seconds an entry's command may take)
#   RESULTS_DIR/plan   one entry per line, fields separated by tabs, "-" for none:
#                      NAME SETUP MODULE MODULE_ARGS COMMAND TEARDOWN
#                      (MODULE: a .ko file for insmod/rmmod, or a module name for modprobe and
#                      modprobe -r, as installed in the guest by SETUP)
#   writes RESULTS_DIR/entries (N RC SECONDS per line), dmesg.txt, kmemleak.txt, rc

set -u
results=$1
# shellcheck source=/dev/null
. "$results/env"

kmsg() { echo "odp_hmm-vm: $*" >/dev/kmsg; }

entry_timeout=${ODP_HMM_ENTRY_TIMEOUT:-1200}

mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
kmemleak=/sys/kernel/debug/kmemleak
# Objects allocated during boot are not this run's; forget them.
[ -w "$kmemleak" ] && echo clear >"$kmemleak"

# Runs a setup or teardown command of an entry ("-": none).
hook() {
	local what=$1 cmd=$2
	[ "$cmd" != - ] || return 0
	kmsg "$what: $cmd"
	(cd "$ODP_TOP" && eval "$cmd") && return 0
	echo "odp_hmm-vm: $what failed" >&2
	return 1
}

# One entry: setup, load, command, unload, teardown. Its exit code: the command's, or 126 when
# the entry's own machinery (setup, load, unload, teardown) failed.
run_entry() {
	local setup=$1 module=$2 args=$3 cmd=$4 teardown=$5 rc=0 load=insmod unload=rmmod
	[ "$module" = - ] && module=
	[ "$args" = - ] && args=
	# A module name without a slash is loaded with modprobe, from the guest's /lib/modules.
	[ -z "$module" ] || [ "$module" != "${module##*/}" ] || load=modprobe unload="modprobe -r"
	# Tests that reload the module reload it the same way.
	export ODP_HMM_MODULE="$module" ODP_HMM_MODULE_ARGS="$args"
	hook setup "$setup" || rc=126
	if [ "$rc" = 0 ] && [ -n "$module" ]; then
		kmsg "$load $module $args"
		# shellcheck disable=SC2086
		if ! $load "$module" $args; then
			echo "odp_hmm-vm: $load failed" >&2
			rc=126
		fi
	fi
	if [ "$rc" = 0 ]; then
		kmsg "run: $cmd"
		# A hung entry must not take the boot's other entries down with it: it is killed after
		# ODP_HMM_ENTRY_TIMEOUT seconds, and the tasks still blocked then are shown in its log.
		timeout --kill-after=30 "$entry_timeout" bash -c "cd $(printf '%q' "$ODP_TOP") && $cmd"
		rc=$?
		if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
			kmsg "command timed out after $entry_timeout s; blocked tasks:"
			echo w >/proc/sysrq-trigger 2>/dev/null
		fi
		kmsg "command exited with $rc"
	fi
	# Modules that use odp_hmm (the sample NIC driver) go first, or odp_hmm cannot.
	local holder
	for holder in /sys/module/odp_hmm/holders/*; do
		[ -e "$holder" ] || continue
		echo "odp_hmm-vm: ${holder##*/} still uses odp_hmm: unloading it" >&2
		rmmod "${holder##*/}" || rc=126
	done
	if [ -n "$module" ] && grep -q '^odp_hmm ' /proc/modules; then
		if ! $unload odp_hmm || grep -q '^odp_hmm ' /proc/modules; then
			echo "odp_hmm-vm: $unload failed" >&2
			[ "$rc" != 0 ] || rc=126
		fi
	fi
	hook teardown "$teardown" || [ "$rc" != 0 ] || rc=126
	return "$rc"
}

n=0 all=0
: >"$results/entries"
: >"$results/dmesg.txt"
while IFS=$'\t' read -r name setup module args cmd teardown <&3; do
	n=$((n + 1))
	echo "odp_hmm-vm: ==== entry $n: $name" >&2
	kmsg "entry $n begin: $name"
	start=$(date +%s)
	run_entry "$setup" "$module" "$args" "$cmd" "$teardown" 3<&-
	rc=$?
	kmsg "entry $n end: rc $rc"
	# Collected entry by entry, so that a long run cannot push an early report out of the ring.
	dmesg -c >>"$results/dmesg.txt"
	echo "$n $rc $(($(date +%s) - start))" >>"$results/entries"
	[ "$rc" = 0 ] || all=$rc
done 3<"$results/plan"

if [ -w "$kmemleak" ]; then
	# kmemleak reports an object only once it has been unreferenced for 5 s; scan twice, as
	# Documentation/dev-tools/kmemleak.rst advises against transient false positives.
	sleep 6
	echo scan >"$kmemleak"
	echo scan >"$kmemleak"
	cat "$kmemleak" >"$results/kmemleak.txt"
fi
dmesg -c >>"$results/dmesg.txt"
echo "$all" >"$results/rc"
exit "$all"
