#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `dkms build` (Debian's dkms) of this source tree against the test kernel's build tree, in a
# private DKMS tree (nothing is installed on the machine), and a check that it produced a module
# that is odp_hmm for that kernel.

. "$(dirname "$0")/lib.sh"

command -v dkms >/dev/null || die "dkms is not installed (scripts/setup.sh installs it)"
kdir=$("$ODP_TOP/scripts/kernel.sh" dir test)
krel=$(make -s -C "$kdir" kernelrelease)
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$ODP_TOP/dkms.conf")
work=$(mktemp -d /tmp/odp-dkms.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/src/odp_hmm-$version
mkdir -p "$src" "$work/dkms" "$work/install"

# The sources as a package would ship them: the tracked files, no build products.
(cd "$ODP_TOP" && git ls-files -z --cached --others --exclude-standard |
	grep -zv '^\(target\|host-tests\|selftests\|userspace\)/' |
	xargs -0 tar -cf - --no-recursion) | tar -xf - -C "$src"

opts=(--dkmstree "$work/dkms" --sourcetree "$work/src" --installtree "$work/install")
dkms add -m odp_hmm -v "$version" "${opts[@]}"
dkms build -m odp_hmm -v "$version" -k "$krel" --kernelsourcedir "$kdir" "${opts[@]}" ||
	{ cat "$work/dkms/odp_hmm/$version/build/make.log" 2>/dev/null | tail -40; exit 1; }
ko=$(find "$work/dkms/odp_hmm/$version/$krel" -name 'odp_hmm.ko*' | head -n1)
[ -n "$ko" ] || die "dkms build produced no odp_hmm.ko"
info=$(modinfo "$ko")
grep -q "^name: *odp_hmm$" <<<"$info" || die "$ko is not odp_hmm"
grep -q "^vermagic: *$krel " <<<"$info" || die "$ko was not built for $krel: $(grep vermagic <<<"$info")"
log "dkms built $(basename "$ko") for $krel: $(grep '^vermagic' <<<"$info")"
dkms status -m odp_hmm "${opts[@]}"
