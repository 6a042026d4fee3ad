#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds odp_hmm.ko against the cached test kernel, the sample driver of its in-kernel API
# (samples/odp_nic/odp_nic.ko) against both, and the userspace crates (release).
#
# Usage: scripts/build.sh [make arguments...]

. "$(dirname "$0")/lib.sh"

kdir=$("$ODP_TOP/scripts/kernel.sh" dir test)
[ -f "$kdir/vmlinux" ] || die "no test kernel in $kdir: run scripts/setup.sh"
log "building odp_hmm.ko against $kdir"
make -s -C "$ODP_TOP" KDIR="$kdir" RUSTC="$KRUSTC" BINDGEN="$BINDGEN" "$@" modules
log "building the sample NIC driver samples/odp_nic/odp_nic.ko"
make -s -C "$ODP_TOP/samples/odp_nic" KDIR="$kdir" ODP_HMM="$ODP_TOP" modules
log "building odpctl and the selftests"
(cd "$ODP_TOP" && cargo build --quiet --release --locked -p odpctl -p odp-hmm-selftests)
