#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Checks that KDIR can build odp_hmm before the kernel's build is started, and says in one
# sentence what is missing if not.
#
# Usage: check-kdir.sh KDIR RUSTC BINDGEN

set -u
kdir=$1 rustc=$2 bindgen=$3

fail() {
	echo "odp_hmm: $*" >&2
	exit 1
}

[ -f "$kdir/Makefile" ] ||
	fail "KDIR=$kdir is not a kernel build tree (no Makefile there): install the build files of the running kernel or pass KDIR=<a built kernel tree>."
conf=$kdir/include/config/auto.conf
[ -f "$conf" ] || conf=$kdir/.config
[ -f "$conf" ] || fail "KDIR=$kdir is not configured (no include/config/auto.conf or .config)."
has() { grep -q "^$1=[ym]" "$conf"; }

has CONFIG_RUST ||
	fail "KDIR=$kdir was configured without CONFIG_RUST=y: odp_hmm is written in Rust and needs a Rust-enabled kernel."
[ -f "$kdir/rust/libkernel.rmeta" ] ||
	fail "KDIR=$kdir has CONFIG_RUST=y but no rust/*.rmeta: its headers package ships none (this is the case for Debian's linux-headers, and most distributions'), and out-of-tree Rust modules are compiled against them; build against a full kernel build tree instead (scripts/kernel.sh build)."
for opt in CONFIG_MMU_NOTIFIER CONFIG_HMM_MIRROR CONFIG_IOMMU_DMA CONFIG_PCI; do
	has "$opt" || fail "KDIR=$kdir lacks $opt, which odp_hmm needs (HMM, the IOVA DMA API and PCI)."
done

want=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT=//p' "$conf" | sed 's/^"\(.*\)"$/\1/')
have=$("$rustc" --version 2>/dev/null) || fail "no rustc at RUSTC=$rustc: install the rustc that built KDIR ($want) or pass RUSTC=<it>."
[ "$have" = "$want" ] ||
	fail "KDIR=$kdir was built by '$want' but RUSTC=$rustc is '$have': Rust metadata only loads into the exact compiler that wrote it, so pass RUSTC=<the rustc that built KDIR>."

"$bindgen" --version >/dev/null 2>&1 ||
	fail "no bindgen at BINDGEN=$bindgen: install bindgen-cli (cargo install bindgen-cli --version 0.72.1) or pass BINDGEN=<path>."
exit 0
