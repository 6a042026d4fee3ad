#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The whole test suite, as CI runs it (.ci/run): set-up (idempotent), build, static checks, host
# unit tests, DKMS packaging, and the selftests inside the VM in every configuration. Each step
# prints one PASS/FAIL line in the summary; the exit code is non-zero if any failed.
#
# Usage: scripts/test.sh [STEP...]    (default: all steps; see `steps` below)

. "$(dirname "$0")/lib.sh"

results=()
failed=0

# Runs one step, records its outcome and duration.
step() {
	local name=$1 start rc
	shift
	log "---- $name"
	start=$(date +%s)
	set +e
	"$@"
	rc=$?
	set -e
	local took=$(($(date +%s) - start))
	if [ "$rc" = 0 ]; then
		results+=("PASS  $name (${took}s)")
	else
		results+=("FAIL  $name (${took}s, exit $rc)")
		failed=$((failed + 1))
	fi
}

kdir() { "$ODP_TOP/scripts/kernel.sh" dir test; }

# Warnings fail the module's clippy build (the kernel's own lint set applies).
module_clippy() {
	make -s -C "$ODP_TOP" KDIR="$(kdir)" RUSTC="$KRUSTC" BINDGEN="$BINDGEN" \
		CLIPPY=1 KRUSTFLAGS=-Dwarnings KCFLAGS=-Werror modules &&
		# Rebuild without clippy: clippy may change code generation.
		make -s -C "$ODP_TOP" KDIR="$(kdir)" RUSTC="$KRUSTC" BINDGEN="$BINDGEN" \
			KRUSTFLAGS=-Dwarnings KCFLAGS=-Werror modules
}

rustfmt_check() {
	(cd "$ODP_TOP" && rustfmt --edition 2021 --check $(git ls-files '*.rs'))
}

userspace_clippy() {
	(cd "$ODP_TOP" && cargo clippy --quiet --locked --workspace --all-targets -- -D warnings)
}

host_tests() {
	(cd "$ODP_TOP" && cargo test --quiet --locked -p odp-hmm-host-tests -p odp-hmm-uapi -p odpctl)
}

# ODP_HMM_SELFTESTS_ENV: VAR=value words for the selftests' environment in the guest.
selftests() {
	local group=$1
	shift
	# shellcheck disable=SC2086
	"$ODP_TOP/scripts/vm-run.sh" "$@" -- env ${ODP_HMM_SELFTESTS_ENV:-} \
		"$ODP_TOP/target/release/odp_hmm_selftests" $group
}

# The groups that repeat foundation + odp under another backend or IOMMU cycle the module 3 times,
# not 20 (the load/unload test is not about the IOMMU, and each cycle is seconds under TCG).
few_cycles() {
	ODP_HMM_SELFTESTS_ENV=ODP_HMM_LOAD_CYCLES=3 "$@"
}

# The VM steps of the IOMMU matrix and the groups of issue 9, one function each so that one can
# run alone (scripts/test.sh vm_odp_amd). The Rust backend runs under every IOMMU model QEMU
# emulates; the kernel backend and passthrough only under the default one (intel-iommu with
# caching mode), to keep the suite's time down: they exercise the backends, not the IOMMU.
vm_odp_intel_cm() {
	step "VM: foundation + odp, backend=rust, intel-iommu caching-mode=on" \
		selftests "foundation odp" --iommu intel-cm --module-args "debug_raw_dma=1"
}
vm_odp_kernel() {
	few_cycles step "VM: foundation + odp, backend=kernel (the kernel's hmm_dma_map), intel-iommu caching-mode=on" \
		selftests "foundation odp" --iommu intel-cm --module-args "debug_raw_dma=1 backend=kernel"
}
vm_odp_passthrough() {
	few_cycles step "VM: foundation + odp, intel-iommu caching-mode=on in passthrough (dma_map_phys fallback)" \
		selftests "foundation odp" --iommu intel-cm --module-args "debug_raw_dma=1" \
		--append "iommu.passthrough=1"
}
vm_odp_intel() {
	few_cycles step "VM: foundation + odp, backend=rust, intel-iommu caching-mode=off" \
		selftests "foundation odp" --iommu intel --module-args "debug_raw_dma=1"
}
vm_odp_amd() {
	few_cycles step "VM: foundation + odp, backend=rust, amd-iommu (v1 page table)" \
		selftests "foundation odp" --iommu amd --module-args "debug_raw_dma=1"
}
vm_odp_virtio() {
	few_cycles step "VM: foundation + odp, backend=rust, virtio-iommu" \
		selftests "foundation odp" --iommu virtio --module-args "debug_raw_dma=1"
}
# Lazy IOTLB flushing (a DMA-FQ domain): after an invalidation returns, nothing it covered may
# be reachable, in IOVA mode and with dma_map_phys() (backend=legacy). Under caching-mode=on
# intel-iommu forces strict mode ("IOMMU batching disallowed due to virtualization"), and so
# does amd-iommu in a VM: the lazy groups boot intel-iommu with caching-mode=off.
vm_lazy_iova() {
	step "VM: lazy (iommu.strict=0, DMA-FQ), raw-IOVA proofs, IOVA mode (backend=rust), intel-iommu caching-mode=off" \
		selftests lazy --iommu intel --module-args "debug_raw_dma=1" --append "iommu.strict=0"
}
vm_lazy_legacy() {
	step "VM: lazy (iommu.strict=0, DMA-FQ), raw-IOVA proofs, dma_map_phys (backend=legacy), intel-iommu caching-mode=off" \
		selftests lazy --iommu intel --module-args "debug_raw_dma=1 backend=legacy" \
		--append "iommu.strict=0"
}
vm_robustness() {
	step "VM: robustness (copy timeout and edu rebind, a killed 1 GiB fault)" \
		selftests robustness
}
# The ODP features of ABI version 2 (selftests/src/features.rs). The kernel backend serves the
# same uAPI (implicit chunks, prefetch and device faults are the module's, whatever maps the
# pages), so it runs the whole group too.
vm_features() {
	step "VM: features (implicit ODP, async prefetch, userfaultfd, counters, test_odp-style traffic), backend=rust" \
		selftests features
}
vm_features_kernel() {
	step "VM: features (implicit ODP, async prefetch, userfaultfd, counters, test_odp-style traffic), backend=kernel" \
		selftests features --module-args "backend=kernel"
}
# QEMU places the NVMe controller at 00:0b.0 in this topology (see dma-device-param).
vm_dma_device_remove() {
	step "VM: dma_device= removed from the PCI bus (the NVMe controller) revokes registrations" \
		selftests dma-device-remove --topology p2p-rc --module-args "dma_device=0000:00:0b.0"
}
# The sample NIC driver of the in-kernel API (samples/odp_nic) on a second edu device, which the
# group's first test hands over with driver_override and its last unloads again.
vm_nic() {
	step "VM: sample NIC (odp_nic on a second edu: work requests, ordering, 10 s races one- and two-pass), backend=rust, intel-iommu caching-mode=on" \
		selftests nic --topology nic
}

steps() {
	step "set-up (scripts/setup.sh)" "$ODP_TOP/scripts/setup.sh"
	step "build (module, odpctl, selftests)" "$ODP_TOP/scripts/build.sh"
	step "rustfmt --check" rustfmt_check
	step "clippy: module (make CLIPPY=1, warnings are errors)" module_clippy
	step "clippy: userspace crates" userspace_clippy
	step "host unit tests (cargo test)" host_tests
	step "KDIR checks refuse unusable kernels" "$ODP_TOP/scripts/test-check-kdir.sh"
	step "dkms build against the test kernel; BUILD_EXCLUSIVE refuses unfit kernels" \
		"$ODP_TOP/scripts/test-dkms.sh"
	step "VM: odp-hmm-dkms .deb: dpkg -i (dkms install), udev autoload, group odp access, foundation selftests on the modprobe'd module, modprobe -r, dpkg --purge" \
		"$ODP_TOP/scripts/test-install.sh" deb
	vm_odp_intel_cm
	vm_odp_kernel
	vm_odp_passthrough
	vm_odp_intel
	vm_odp_amd
	vm_odp_virtio
	vm_lazy_iova
	vm_lazy_legacy
	vm_robustness
	vm_features
	vm_features_kernel
	step "VM: P2P through the host bridge (edu + nvme CMB on the root complex, AMD CPU)" \
		selftests p2p-host-bridge --topology p2p-rc
	step "VM: P2P by bus address (edu + nvme behind one PCIe switch)" \
		selftests p2p-bus --topology p2p-switch
	step "VM: P2P refused (root complex, Intel CPU model)" \
		selftests p2p-refused --topology p2p-rc-intel
	# QEMU places the NVMe controller at 00:0b.0 in this topology (after virtme's devices and edu).
	step "VM: dma_device= another PCI device (the NVMe controller; no copy engine)" \
		selftests dma-device-param --topology p2p-rc --module-args "dma_device=0000:00:0b.0"
	vm_dma_device_remove
	vm_nic
	step "VM: benchmark code, quick pass (scripts/bench.sh --quick)" \
		"$ODP_TOP/scripts/bench.sh" --quick
	step "VM: demo (odpctl demo)" \
		"$ODP_TOP/scripts/vm-run.sh" -- "$ODP_TOP/target/release/odpctl" demo
}

start=$(date +%s)
if [ $# -gt 0 ]; then
	for s in "$@"; do "$s"; done
else
	steps
fi
echo
echo "==== odp_hmm test summary ($(($(date +%s) - start)) s)"
printf '%s\n' "${results[@]}"
echo "==== $((${#results[@]} - failed)) passed, $failed failed"
[ "$failed" = 0 ]
