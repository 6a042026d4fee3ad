#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test VM, with no driver bound to the edu devices (odp_hmm unloaded): gives each
# edu's IOMMU group a default domain of TYPE, as `iommu.passthrough=1` or `iommu.strict=` would
# have at boot, for that group only (the kernel's sysfs interface, Documentation/ABI/testing/
# sysfs-kernel-iommu_groups). One boot then serves entries in several IOMMU modes.
#
# Usage: guest-domain.sh identity|DMA|DMA-FQ|auto   (auto: the boot's default type again)

set -euo pipefail
want=$1
# Every edu first: a refusal must not leave some groups switched and others not.
edus=()
for dev in /sys/bus/pci/devices/*; do
	[ "$(cat "$dev/vendor")" = 0x1234 ] && [ "$(cat "$dev/device")" = 0x11e8 ] || continue
	[ -e "$dev/iommu_group/type" ] || { echo "guest-domain: ${dev##*/} has no IOMMU group" >&2; exit 1; }
	[ ! -e "$dev/driver" ] || { echo "guest-domain: ${dev##*/} has a driver bound" >&2; exit 1; }
	edus+=("$dev")
done
[ ${#edus[@]} -gt 0 ] || { echo "guest-domain: no edu device" >&2; exit 1; }
for dev in "${edus[@]}"; do
	type=$dev/iommu_group/type
	before=$(cat "$type")
	echo "$want" >"$type"
	echo "guest-domain: ${dev##*/}: IOMMU group type $before -> $(cat "$type")"
	if [ "$want" != auto ] && [ "$(cat "$type")" != "$want" ]; then
		echo "guest-domain: ${dev##*/}: asked for $want" >&2
		exit 1
	fi
done
