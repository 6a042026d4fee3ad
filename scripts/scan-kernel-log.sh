#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Fails (exit 1) when a guest kernel log holds a report that makes a test run invalid, and prints
# each with its context. IOMMU faults (Intel DMAR, AMD-Vi IO_PAGE_FAULT, virtio-iommu) are allowed
# only inside the windows a test opens with "odp_hmm-test: expect iommu fault begin" / "... end",
# and such a window must see one (a test whose IOMMU reports no faults to the guest says so with
# "odp_hmm-test: expect no iommu fault report" after the begin marker).
#
# Usage: scan-kernel-log.sh DMESG_FILE [KMEMLEAK_FILE]

set -u
dmesg=$1
kmemleak=${2:-}
[ -f "$dmesg" ] || { echo "scan-kernel-log: no kernel log $dmesg" >&2; exit 1; }

awk '
BEGIN {
	bad = 0; window = 0; seen = 0
	# Report headers of the checkers the test kernel enables (see kernel/debug.config).
	report = "(WARNING:|BUG:|Oops|general protection fault|Kernel panic|kernel BUG at|" \
		 "Call Trace:|possible circular locking|possible recursive locking|" \
		 "inconsistent lock state|suspicious RCU usage|UBSAN:|KFENCE:|KASAN:|" \
		 "DMA-API: [^ ]+ [^ ]+: |DMA-API: debugging out of memory|" \
		 "list_(add|del) corruption|refcount_t:|blocked for more than|rcu: INFO:|" \
		 "detected stall|kmemleak: [0-9]+ new suspected)"
	iommu_fault = "DMAR: \\[DMA (Read|Write)|DMAR: DRHD: handling fault|DMAR: .*fault addr|" \
		      "IO_PAGE_FAULT|fault from EP [0-9]+"
}
/odp_hmm-test: expect iommu fault begin/ { window = 1; seen = 0; unreported = 0; next }
/odp_hmm-test: expect no iommu fault report/ { unreported = 1; next }
/odp_hmm-test: expect iommu fault end/ {
	if (!seen && !unreported) { print "scan-kernel-log: an expected IOMMU fault did not happen before: " $0; bad = 1 }
	window = 0; next
}
$0 ~ iommu_fault {
	if (window) { seen = 1; next }
	print "scan-kernel-log: unexpected IOMMU fault: " $0; bad = 1; next
}
$0 ~ report {
	if (!bad || shown < 200) { print "scan-kernel-log: " $0; shown++ }
	bad = 1; ctx = 40; next
}
ctx > 0 { print "    " $0; ctx-- }
END {
	if (window) { print "scan-kernel-log: an expected-IOMMU-fault window was never closed (the test died in it?)"; bad = 1 }
	exit bad
}
' "$dmesg"
rc=$?

if [ -n "$kmemleak" ] && [ -s "$kmemleak" ]; then
	echo "scan-kernel-log: kmemleak reports leaks:" >&2
	head -n 80 "$kmemleak" >&2
	rc=1
fi
exit $rc
