#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots the test kernel under QEMU (virtme-ng, TCG) on q35 with an emulated IOMMU and the QEMU
# `edu` DMA device, loads odp_hmm, runs one command in the guest and returns its exit code.
# Afterwards it scans the guest's kernel log and kmemleak and fails the run on any report
# (WARNING, BUG, Oops, lockdep, KFENCE, kmemleak, DMA-API, IOMMU fault), printing it.
#
# With --plan, one boot runs several entries in turn, each with its own module arguments (the
# module is unloaded and loaded again between them): a boot under TCG costs most of a minute, so
# the suite boots once per machine configuration. Each entry passes or fails on its own: its exit
# code and the part of the kernel log between its markers; a report outside every entry's part
# (boot, kmemleak) fails them all.
#
# Usage: scripts/vm-run.sh [options] [--] COMMAND [ARG...]
#        scripts/vm-run.sh [options] --plan FILE [--report FILE]
#   --topology NAME   devices and CPU model (default: edu):
#                       edu           edu on the q35 root complex, -cpu EPYC
#                       p2p-rc        edu + nvme (16 MiB CMB) on the root complex, -cpu EPYC
#                       p2p-rc-intel  the same with -cpu Skylake-Client
#                       p2p-switch    edu + nvme behind one PCIe switch, ACS redirect off
#                       nic           edu + a second edu at 0000:00:10.0 for the sample NIC
#                                     driver (samples/odp_nic; the selftests hand it over)
#   --iommu MODEL     the emulated IOMMU (default: intel-cm):
#                       intel-cm      Intel VT-d, caching-mode=on (every map is flushed, as a
#                                     VM's vIOMMU must)
#                       intel         Intel VT-d, caching-mode=off (no flush on map: bare metal)
#                       amd           AMD-Vi (v1 page table: any power-of-two page size)
#                       virtio        virtio-iommu-pci (one request per map and unmap)
#   --append ARGS     extra kernel command line (e.g. iommu.passthrough=1, iommu.strict=0)
#   --qemu ARGS       extra QEMU arguments
#   --module-args A   arguments for insmod odp_hmm.ko
#   --no-module       do not load odp_hmm
#   --module PATH     the module to load (default: ./odp_hmm.ko of the repository)
#   --modprobe        load it with `modprobe odp_hmm` (as installed in the guest, see --setup)
#                     and unload it with `modprobe -r`, instead of insmod/rmmod of a file
#   --setup CMD       a shell command the guest runs in the repository before it loads the
#                     module (e.g. a DKMS install); the run fails if it fails
#   --teardown CMD    the same, after the module is unloaded (e.g. dkms remove)
#   --kernel DIR      kernel build tree (default: the cached test kernel)
#   --memory SIZE     guest memory (default: 2G)
#   --keep DIR        keep the guest's logs (dmesg.txt, kmemleak.txt) in DIR
#   --rwdir DIR       share host directory DIR with the guest, writable (at the same path)
#   --plan FILE       run the entries of FILE instead of one command: one per line, fields
#                     separated by tabs, "-" for none: NAME MODULE_ARGS COMMAND, optionally
#                     followed by SETUP TEARDOWN MODULE (MODULE: a .ko path, or a module name
#                     for modprobe; default: as --module/--modprobe say)
#   --report FILE     with --plan: write one line per entry, tab-separated: PASS|FAIL, seconds,
#                     name, and for a failure why
#
# IOMMU faults (DMAR lines) are expected only between the markers a test writes to /dev/kmsg:
#   "odp_hmm-test: expect iommu fault begin" ... "odp_hmm-test: expect iommu fault end";
# there at least one must appear, anywhere else none may.
#
# KVM is off (nested KVM hangs on this kind of machine); ODP_HMM_KVM=1 turns it on.
# ODP_HMM_VM_TIME_FILE names a file to write the seconds the VM ran to (without the wait for the
# lock).

. "$(dirname "$0")/lib.sh"

topology=edu
iommu=intel-cm
append=
qemu_extra=
module_args=
load_module=1
module=$ODP_TOP/odp_hmm.ko
kernel=
memory=2G
keep=
rwdirs=()
setup=
teardown=
plan=
report=

while [ $# -gt 0 ]; do
	case "$1" in
	--topology) topology=$2; shift 2 ;;
	--iommu) iommu=$2; shift 2 ;;
	--append) append="$append $2"; shift 2 ;;
	--qemu) qemu_extra="$qemu_extra $2"; shift 2 ;;
	--module-args) module_args=$2; shift 2 ;;
	--no-module) load_module=0; shift ;;
	--module) module=$2; shift 2 ;;
	--modprobe) module=odp_hmm; shift ;;
	--setup) setup=$2; shift 2 ;;
	--teardown) teardown=$2; shift 2 ;;
	--kernel) kernel=$2; shift 2 ;;
	--memory) memory=$2; shift 2 ;;
	--keep) keep=$2; shift 2 ;;
	--rwdir) rwdirs+=(--rwdir="$2"); shift 2 ;;
	--plan) plan=$2; shift 2 ;;
	--report) report=$2; shift 2 ;;
	--) shift; break ;;
	-*) die "unknown option $1" ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || [ -n "$plan" ] || die "no command to run in the guest"
[ -z "$plan" ] || [ $# = 0 ] || die "--plan and a command: give one"
[ -n "$kernel" ] || kernel=$("$ODP_TOP/scripts/kernel.sh" dir test)
[ -f "$kernel/arch/x86/boot/bzImage" ] || die "no kernel in $kernel: run scripts/setup.sh"
# A module name without a slash is loaded with modprobe, from the guest's /lib/modules.
[ "$load_module" = 0 ] || [ "$module" = "${module##*/}" ] || [ -f "$module" ] ||
	die "$module missing: run make first"

# An AMD Zen guest CPU: Linux lets peer-to-peer DMA cross its host bridge. The features TCG cannot
# emulate are turned off rather than warned about at every boot.
EPYC="EPYC,-fxsr-opt,-misalignsse,-osvw,-topoext,-nrip-save,-xsavec"

# The IOMMU comes first: devices created before it would not be translated. Strict invalidation
# unless the caller appends iommu.strict=0 (the test kernel's own default is lazy).
case "$iommu" in
intel-cm) iommu_dev="-device intel-iommu,intremap=on,caching-mode=on" iommu_cmdline="intel_iommu=on" ;;
intel) iommu_dev="-device intel-iommu,intremap=on,caching-mode=off" iommu_cmdline="intel_iommu=on" ;;
amd) iommu_dev="-device amd-iommu,intremap=on,pt=off" iommu_cmdline="amd_iommu=pgtbl_v1" ;;
virtio) iommu_dev="-device virtio-iommu-pci" iommu_cmdline="" ;;
*) die "unknown IOMMU model '$iommu' (intel-cm, intel, amd, virtio)" ;;
esac
qemu="-machine q35,kernel-irqchip=split $iommu_dev"
edu="-device edu,dma_mask=0xffffffffffffffff"
nvme_disk=
case "$topology" in
edu)
	qemu="$qemu -cpu $EPYC $edu" ;;
nic)
	# odp_hmm's edu keeps its address (0000:00:0a.0); the second one has a fixed slot.
	qemu="$qemu -cpu $EPYC $edu ${edu},addr=0x10" ;;
p2p-rc | p2p-rc-intel | p2p-switch)
	nvme_disk=$(mktemp /tmp/odp-nvme.XXXXXX)
	truncate -s 16M "$nvme_disk"
	nvme="-drive file=$nvme_disk,if=none,id=nvm0,format=raw -device nvme,serial=odp0,drive=nvm0,cmb_size_mb=16"
	case "$topology" in
	p2p-rc) qemu="$qemu -cpu $EPYC $edu $nvme" ;;
	p2p-rc-intel) qemu="$qemu -cpu Skylake-Client $edu $nvme" ;;
	p2p-switch)
		qemu="$qemu -cpu $EPYC -device pcie-root-port,id=rp1,chassis=1,slot=1"
		qemu="$qemu -device x3130-upstream,id=up1,bus=rp1"
		qemu="$qemu -device xio3130-downstream,id=dn1,bus=up1,chassis=2,slot=1"
		qemu="$qemu -device xio3130-downstream,id=dn2,bus=up1,chassis=3,slot=2"
		qemu="$qemu ${edu},bus=dn2 ${nvme},bus=dn1"
		# With an IOMMU, Linux turns on ACS redirect in switch downstream ports, which sends
		# peer traffic up to the root; turn it off for QEMU's (TI XIO3130, 104c:8233) so that
		# the two devices can talk through the switch.
		append="$append pci=disable_acs_redir=pci:104c:8233"
		;;
	esac
	;;
*) die "unknown topology '$topology'" ;;
esac

# One VM at a time on this machine (2 cores under TCG): concurrent runs wait for each other.
mkdir -p "$ODP_CACHE"
exec 9>"$ODP_CACHE/vm.lock"
flock 9

results=$(mktemp -d /tmp/odp-vm.XXXXXX)
cleanup() {
	rm -rf "$results"
	[ -z "$nvme_disk" ] || rm -f "$nvme_disk"
}
trap cleanup EXIT

# The guest's plan: fields separated by tabs, "-" for an empty one.
field() { [ -n "$1" ] && printf '%s' "$1" || printf -- -; }
default_module=
[ "$load_module" = 0 ] || default_module=$module
{
	if [ -n "$plan" ]; then
		while IFS=$'\t' read -r name args cmd esetup eteardown emodule; do
			[ -n "$name" ] || continue
			[ -n "${emodule:-}" ] || emodule=$(field "$default_module")
			printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "${esetup:--}" "$emodule" \
				"$args" "$cmd" "${eteardown:--}"
		done <"$plan"
	else
		printf '%s\t%s\t%s\t%s\t%s\t%s\n' run "$(field "$setup")" "$(field "$default_module")" \
			"$(field "$module_args")" "$(printf '%q ' "$@")" "$(field "$teardown")"
	fi
} >"$results/plan"
entries=$(wc -l <"$results/plan")
[ "$entries" -gt 0 ] || die "the plan $plan has no entries"
entry_timeout=${ODP_HMM_ENTRY_TIMEOUT:-1200}
{
	echo "ODP_TOP=$(printf '%q' "$ODP_TOP")"
	echo "ODP_HMM_ENTRY_TIMEOUT=$entry_timeout"
} >"$results/env"

vm_start=$(date +%s)
kvm_opt=--disable-kvm
[ "${ODP_HMM_KVM:-0}" = 1 ] && kvm_opt=

set +e
# The guest's output goes through a pipe: QEMU reopens /proc/self/fd/1 and /proc/self/fd/2 with
# O_TRUNC, which would empty a log file the caller redirected us to. The guest's exit code comes
# back in $results/rc, not from vng.
# shellcheck disable=SC2086
timeout --foreground $((600 + (entry_timeout + 60) * entries)) vng --run "$kernel/arch/x86/boot/bzImage" --disable-microvm $kvm_opt \
	--memory "$memory" --cpus 2 --rwdir="$results" "${rwdirs[@]}" \
	--append "$iommu_cmdline iommu.strict=1 log_buf_len=8M $append" \
	--qemu-opts="$qemu $qemu_extra" \
	--exec "bash $ODP_TOP/scripts/guest-run.sh $results" </dev/null 2>&1 | cat
rc=${PIPESTATUS[0]}
set -e
vm_took=$(($(date +%s) - vm_start))
# How long the VM ran, without the wait for the lock (scripts/bench.sh reports it).
[ -z "${ODP_HMM_VM_TIME_FILE:-}" ] || echo "$vm_took" >"$ODP_HMM_VM_TIME_FILE"

[ -z "$keep" ] || { mkdir -p "$keep" && cp "$results"/*.txt "$keep"/ 2>/dev/null || true; }

# One report line per entry (see --report).
verdicts=$(mktemp /tmp/odp-verdicts.XXXXXX)
trap 'cleanup; rm -f "$verdicts"' EXIT
verdict() { printf '%s\t%s\t%s\t%s\n' "$2" "$3" "$(sed -n "${1}p" "$results/plan" | cut -f1)" "$4" >>"$verdicts"; }

finish() {
	local status=0 ok=0
	while IFS= read -r line; do
		case "$line" in PASS*) ok=$((ok + 1)) ;; esac
	done <"$verdicts"
	[ -z "$report" ] || cp "$verdicts" "$report"
	log "the VM ran for ${vm_took} s; $ok of $entries entries passed (verdict, seconds in the guest, name, why):"
	sed 's/^/[odp_hmm]   /' "$verdicts" >&2
	if [ -n "$plan" ]; then
		[ "$ok" = "$entries" ] || status=1
		exit "$status"
	fi
	exit "$1"
}

finished=1
if [ ! -f "$results/rc" ]; then
	# The entries that ended before are judged on their own parts of the log as usual; the one
	# running and the rest fail.
	log "the guest did not finish (vng returned $rc): crash, panic or timeout"
	finished=0
	touch "$results/entries" "$results/dmesg.txt"
fi

# The kernel log, cut into the part of each entry and the rest (boot, kmemleak's scan).
segments=$results/segments
mkdir -p "$segments"
awk -v dir="$segments" '
	/odp_hmm-vm: entry [0-9]+ begin/ { match($0, /entry [0-9]+/); cur = substr($0, RSTART + 6, RLENGTH - 6) }
	{ print > (dir "/" (cur == "" ? "vm" : cur)) }
	/odp_hmm-vm: entry [0-9]+ end/ { cur = "" }
' "$results/dmesg.txt"
touch "$segments/vm"
vm_clean=1
if ! "$ODP_TOP/scripts/scan-kernel-log.sh" "$segments/vm" "$results/kmemleak.txt"; then
	log "the guest kernel log has reports outside every entry (above): every entry failed"
	vm_clean=0
fi
first_rc=
while read -r n erc secs; do
	[ -n "$first_rc" ] || first_rc=$erc
	touch "$segments/$n"
	if [ "$vm_clean" = 0 ]; then
		verdict "$n" FAIL "$secs" "kernel log reports outside the entries"
	elif ! grep -q "odp_hmm-vm: entry $n end" "$segments/$n"; then
		verdict "$n" FAIL "$secs" "kernel log reports cannot be ruled out: its part of the log is incomplete"
	elif ! "$ODP_TOP/scripts/scan-kernel-log.sh" "$segments/$n"; then
		log "entry $n: the guest kernel log has reports (above): it failed whatever it printed"
		verdict "$n" FAIL "$secs" "kernel log reports"
	elif [ "$erc" != 0 ]; then
		verdict "$n" FAIL "$secs" "exit $erc"
	else
		verdict "$n" PASS "$secs" ""
	fi
done <"$results/entries"
# Entries the guest never reached, or did not end.
for n in $(seq "$(($(wc -l <"$results/entries") + 1))" "$entries"); do
	verdict "$n" FAIL 0 "$([ "$finished" = 1 ] && echo "not run" || echo "the guest did not finish")"
done
[ "$finished" = 1 ] || finish 125
if grep -q "kernel log reports" "$verdicts"; then
	finish 124
fi
finish "${first_rc:-125}"
