#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The main job: sets the machine up if needed (scripts/setup.sh), builds the module and odpctl,
# boots the test kernel in QEMU with an emulated IOMMU and the edu device, loads odp_hmm, and runs
# `odpctl demo`: a region is faulted, copied by the device through the IOMMU, invalidated by
# munmap and refaulted, with the counters after each step.

. "$(dirname "$0")/lib.sh"

"$ODP_TOP/scripts/setup.sh"
"$ODP_TOP/scripts/build.sh"
log "booting the test kernel (QEMU, TCG) and running odpctl demo"
exec "$ODP_TOP/scripts/vm-run.sh" -- "$ODP_TOP/target/release/odpctl" demo
