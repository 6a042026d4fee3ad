#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `dkms build` (Debian's dkms) of this source tree against the test kernel's build tree, in a
# private DKMS tree (nothing is installed on the machine), and a check that it produced a module
# that is odp_hmm for that kernel, carrying the edu device's modalias. Then dkms.conf's
# BUILD_EXCLUSIVE_* must refuse kernels that cannot take the module, with dkms's line saying so.

. "$(dirname "$0")/lib.sh"

command -v dkms >/dev/null || die "dkms is not installed (scripts/setup.sh installs it)"
kdir=$("$ODP_TOP/scripts/kernel.sh" dir test)
krel=$(make -s -C "$kdir" kernelrelease)
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$ODP_TOP/dkms.conf")
work=$(mktemp -d /tmp/odp-dkms.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/dkms" "$work/install"

# The sources as the package ships them (make dkms-src): no build products, tests or tools.
make -s -C "$ODP_TOP" dkms-src DESTDIR="$work/root"
mv "$work/root/usr/src" "$work/src"

opts=(--dkmstree "$work/dkms" --sourcetree "$work/src" --installtree "$work/install")
dkms add -m odp_hmm -v "$version" "${opts[@]}"
dkms build -m odp_hmm -v "$version" -k "$krel" --kernelsourcedir "$kdir" "${opts[@]}" ||
	{ cat "$work/dkms/odp_hmm/$version/build/make.log" 2>/dev/null | tail -40; exit 1; }
ko=$(find "$work/dkms/odp_hmm/$version/$krel" -name 'odp_hmm.ko*' | head -n1)
[ -n "$ko" ] || die "dkms build produced no odp_hmm.ko"
info=$(modinfo "$ko")
grep -q "^name: *odp_hmm$" <<<"$info" || die "$ko is not odp_hmm"
grep -q "^vermagic: *$krel " <<<"$info" || die "$ko was not built for $krel: $(grep vermagic <<<"$info")"
# udev loads the module for an edu device (PCI 1234:11e8) through this alias.
grep -q '^alias: *pci:v00001234d000011E8sv\*sd\*bc\*sc\*i\*$' <<<"$info" ||
	die "$ko has no modalias for the edu device: $(grep '^alias' <<<"$info")"
log "dkms built $(basename "$ko") for $krel: $(grep -E '^(vermagic|alias)' <<<"$info" | tr -s ' ' | paste -sd ';')"
dkms status -m odp_hmm "${opts[@]}"

# excluded NAME KERNELVER CONFIG: `dkms build` for a kernel of that release and configuration
# must stop with dkms's BUILD_EXCLUSIVE exit code (77, which `dkms autoinstall` and the package's
# postinst skip quietly) and its sentence. Each case has a release of its own: dkms skips a
# release it has built the module for before looking at anything else.
excluded() {
	local name=$1 kver=$2 dir=$work/kernel-$2 out rc=0
	mkdir -p "$dir"
	cp "$3" "$dir/.config"
	out=$(dkms build -m odp_hmm -v "$version" -k "$kver" --kernelsourcedir "$dir" "${opts[@]}" 2>&1) ||
		rc=$?
	[ "$rc" = 77 ] && grep -q "BUILD_EXCLUSIVE directive which does not match this kernel" <<<"$out" ||
		die "dkms did not refuse $name (exit $rc): $out"
	log "refused $name: $(grep -o 'includes a BUILD_EXCLUSIVE.*' <<<"$out")"
}
excluded "Linux 7.2" 7.2.13 "$kdir/.config"
sed '/^CONFIG_RUST=/d' "$kdir/.config" >"$work/norust.config"
excluded "a kernel without CONFIG_RUST" "$krel-norust" "$work/norust.config"
sed '/^CONFIG_HMM_MIRROR=/d' "$kdir/.config" >"$work/nohmm.config"
excluded "a kernel without CONFIG_HMM_MIRROR" "$krel-nohmm" "$work/nohmm.config"
