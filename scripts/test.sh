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

SELFTESTS=$ODP_TOP/target/release/odp_hmm_selftests

# The VM steps. A boot under TCG costs most of a minute, so each machine configuration (IOMMU model
# and mode, PCI topology, kernel command line) boots once and runs several entries, each with its
# own module arguments (vm-run.sh --plan); every entry is a step of the summary, with its own exit
# code and its own part of the kernel log scanned. `scripts/test.sh boot_amd` runs one boot;
# ODP_HMM_ONLY=SUBSTRING keeps only the entries whose name contains it.

plan=()

# entry NAME MODULE_ARGS COMMAND: adds an entry to the next boot ("-": no module arguments).
# ENTRY_SETUP and ENTRY_TEARDOWN (guest commands run before the module is loaded and after it is
# unloaded) and ENTRY_MODULE (a module name for modprobe) apply to it when set.
entry() {
	local name=$1
	[ -z "${ODP_HMM_ONLY:-}" ] || [[ "$name" == *"$ODP_HMM_ONLY"* ]] || return 0
	local IFS=$'\t'
	plan+=("$*$IFS${ENTRY_SETUP:--}$IFS${ENTRY_TEARDOWN:--}${ENTRY_MODULE:+$IFS$ENTRY_MODULE}")
}

# The edu's IOMMU group switched to another default domain type for one entry, and back
# (scripts/guest-domain.sh): passthrough and strict entries share boots with others.
GUEST_DOMAIN="bash $ODP_TOP/scripts/guest-domain.sh"

# selftests_entry NAME MODULE_ARGS GROUPS [VAR=value...]: an entry running selftest groups.
selftests_entry() {
	local name=$1 args=$2 groups=$3 vars=
	shift 3
	[ $# = 0 ] || vars=$(printf '%q ' "$@")
	entry "$name" "$args" "env $vars$SELFTESTS $groups"
}

# boot [vm-run.sh options]: runs the entries added since the last boot in one VM, and records each
# as a step (PASS/FAIL with the guest's time; the boot's own time shows in the summary's total).
boot() {
	[ ${#plan[@]} -gt 0 ] || return 0
	local file report name status secs why
	file=$(mktemp /tmp/odp-plan.XXXXXX)
	report=$(mktemp /tmp/odp-report.XXXXXX)
	printf '%s\n' "${plan[@]}" >"$file"
	log "---- boot ($*): ${#plan[@]} entries"
	"$ODP_TOP/scripts/vm-run.sh" "$@" --plan "$file" --report "$report" || true
	if [ ! -s "$report" ]; then
		# vm-run.sh stopped before the guest ran: every entry failed.
		for e in "${plan[@]}"; do printf 'FAIL\t0\t%s\tthe VM did not run\n' "${e%%$'\t'*}"; done >"$report"
	fi
	while IFS=$'\t' read -r status secs name why; do
		if [ "$status" = PASS ]; then
			results+=("PASS  $name (${secs}s)")
		else
			results+=("FAIL  $name (${secs}s, $why)")
			failed=$((failed + 1))
		fi
	done <"$report"
	rm -f "$file" "$report"
	plan=()
}

# The IOMMU matrix and the groups of issue 9. foundation + odp run under every IOMMU model QEMU
# emulates with the Rust backend; the kernel backend and passthrough under the default one
# (intel-iommu with caching mode): they exercise the backends, not the IOMMU. Groups that repeat
# foundation + odp cycle the module 3 times, not 20 (the load/unload test is not about the IOMMU).
FEW_CYCLES=ODP_HMM_LOAD_CYCLES=3

# intel-iommu, caching-mode=on, strict: what a VM's vIOMMU does; the suite's default machine.
# Passthrough (the dma_map_phys fallback) is the edu's IOMMU group switched to an identity domain,
# as iommu.passthrough=1 would give it.
boot_intel_cm() {
	selftests_entry "VM: foundation + odp, backend=rust, intel-iommu caching-mode=on" \
		"debug_raw_dma=1" "foundation odp"
	selftests_entry "VM: foundation + odp, backend=kernel (the kernel's hmm_dma_map), intel-iommu caching-mode=on" \
		"debug_raw_dma=1 backend=kernel" "foundation odp" "$FEW_CYCLES"
	ENTRY_SETUP="$GUEST_DOMAIN identity" ENTRY_TEARDOWN="$GUEST_DOMAIN auto" \
		selftests_entry "VM: foundation + odp, intel-iommu caching-mode=on in passthrough (identity domain: dma_map_phys fallback)" \
		"debug_raw_dma=1" "foundation odp" "$FEW_CYCLES"
	selftests_entry "VM: robustness (copy timeout and edu rebind, a killed 1 GiB fault), intel-iommu caching-mode=on" \
		- robustness
	# The ioctl fuzzer (selftests/src/fuzz.rs). It prints its seed; ODP_HMM_FUZZ_SEED=N (and
	# ODP_HMM_FUZZ_CALLS, ODP_HMM_FUZZ_COPIES) in this script's environment reach the guest.
	local fuzz_env=() var
	for var in ODP_HMM_FUZZ_SEED ODP_HMM_FUZZ_CALLS ODP_HMM_FUZZ_COPIES; do
		[ -z "${!var:-}" ] || fuzz_env+=("$var=${!var}")
	done
	selftests_entry "VM: fuzz (${ODP_HMM_FUZZ_CALLS:-100000} seeded random ioctls on 4 files, mappings churned), backend=rust, intel-iommu caching-mode=on" \
		"debug_raw_dma=1" fuzz "${fuzz_env[@]}"
	# The ODP features of ABI version 2 (selftests/src/features.rs). The kernel backend serves the
	# same uAPI (implicit chunks, prefetch and device faults are the module's, whatever maps the
	# pages), so it runs the whole group too.
	selftests_entry "VM: features (implicit ODP, async prefetch, userfaultfd, counters, test_odp-style traffic), backend=rust" \
		- features
	selftests_entry "VM: features (implicit ODP, async prefetch, userfaultfd, counters, test_odp-style traffic), backend=kernel" \
		"backend=kernel" features
	# The sample NIC driver of the in-kernel API (samples/odp_nic) on the second edu device, which
	# the group's first test hands over with driver_override and its last unloads again; the
	# teardown does that if the group died half way, so that the demo starts clean.
	ENTRY_TEARDOWN="bash $ODP_TOP/samples/odp_nic/guest-teardown.sh" selftests_entry "VM: sample NIC (odp_nic on a second edu: work requests, ordering, 10 s races one- and two-pass), backend=rust, intel-iommu caching-mode=on" \
		- nic
	entry "VM: demo (odpctl demo)" - "$ODP_TOP/target/release/odpctl demo"
	boot --iommu intel-cm --topology nic
}

# intel-iommu without caching mode (no flush on map: what bare metal does), booted lazy
# (iommu.strict=0, DMA-FQ domains). Lazy IOTLB flushing: after an invalidation returns, nothing it
# covered may be reachable, in IOVA mode and with dma_map_phys() (backend=legacy). (Under
# caching-mode=on intel-iommu forces strict mode, "IOMMU batching disallowed due to
# virtualization", and so does amd-iommu in a VM.) Then foundation + odp on a strict domain: the
# edu's group switched to type DMA.
boot_intel() {
	selftests_entry "VM: lazy (iommu.strict=0, DMA-FQ), raw-IOVA proofs, IOVA mode (backend=rust), intel-iommu caching-mode=off" \
		"debug_raw_dma=1" lazy
	selftests_entry "VM: lazy (iommu.strict=0, DMA-FQ), raw-IOVA proofs, dma_map_phys (backend=legacy), intel-iommu caching-mode=off" \
		"debug_raw_dma=1 backend=legacy" lazy
	ENTRY_SETUP="$GUEST_DOMAIN DMA" ENTRY_TEARDOWN="$GUEST_DOMAIN auto" \
		selftests_entry "VM: foundation + odp, backend=rust, intel-iommu caching-mode=off (strict: the group's domain type DMA)" \
		"debug_raw_dma=1" "foundation odp" "$FEW_CYCLES"
	boot --iommu intel --append "iommu.strict=0"
}

boot_amd() {
	selftests_entry "VM: foundation + odp, backend=rust, amd-iommu (v1 page table)" \
		"debug_raw_dma=1" "foundation odp" "$FEW_CYCLES"
	boot --iommu amd
}

boot_virtio() {
	selftests_entry "VM: foundation + odp, backend=rust, virtio-iommu" \
		"debug_raw_dma=1" "foundation odp" "$FEW_CYCLES"
	boot --iommu virtio
}

# edu and an NVMe controller with a CMB on the root complex, an AMD CPU: P2P through the host
# bridge; then dma_device= the NVMe controller (QEMU places it at 00:0b.0 in this topology, after
# virtme's devices and edu), and last its removal from the PCI bus.
boot_p2p_rc() {
	selftests_entry "VM: P2P through the host bridge (edu + nvme CMB on the root complex, AMD CPU)" \
		- p2p-host-bridge
	selftests_entry "VM: dma_device= another PCI device (the NVMe controller; no copy engine)" \
		"dma_device=0000:00:0b.0" dma-device-param
	selftests_entry "VM: dma_device= removed from the PCI bus (the NVMe controller) revokes registrations" \
		"dma_device=0000:00:0b.0" dma-device-remove
	boot --topology p2p-rc
}

boot_p2p_switch() {
	selftests_entry "VM: P2P by bus address (edu + nvme behind one PCIe switch)" - p2p-bus
	boot --topology p2p-switch
}

boot_p2p_refused() {
	selftests_entry "VM: P2P refused (root complex, Intel CPU model)" - p2p-refused
	boot --topology p2p-rc-intel
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
	boot_intel_cm
	boot_intel
	boot_amd
	boot_virtio
	boot_p2p_rc
	boot_p2p_switch
	boot_p2p_refused
	step "VM: benchmark code, quick pass (scripts/bench.sh --quick)" \
		"$ODP_TOP/scripts/bench.sh" --quick
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
