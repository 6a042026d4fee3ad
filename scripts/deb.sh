#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the Debian source package `odp-hmm` and its binary package `odp-hmm-dkms` (Debian's
# debhelper and dh-dkms) from the repository's files as a release would ship them: the tracked
# files only, exported to a scratch directory, so no build product of the work tree gets in.
#
# Usage: scripts/deb.sh OUTDIR     (OUTDIR receives the .dsc, .tar.xz, .deb, .buildinfo, .changes)

. "$(dirname "$0")/lib.sh"

out=${1:?usage: deb.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
command -v dh_dkms >/dev/null || die "dh_dkms is missing (scripts/setup.sh installs dh-dkms)"

version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$ODP_TOP/dkms.conf")
deb_version=$(cd "$ODP_TOP" && dpkg-parsechangelog -S Version)
# dh_dkms takes the module's version from dkms.conf and the package's from the changelog; a
# native package keeps them equal so that `dpkg -l` and `dkms status` name one version.
[ "$deb_version" = "$version" ] ||
	die "debian/changelog is at $deb_version but dkms.conf at $version: bump both"

work=$(mktemp -d /tmp/odp-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/odp-hmm-$version
mkdir -p "$src"
(cd "$ODP_TOP" && git ls-files -z --cached --others --exclude-standard |
	xargs -0 tar -cf - --no-recursion) | tar -xf - -C "$src"

# -us -uc: nothing is signed; the full build makes the source package and the arch-all .deb.
(cd "$src" && dpkg-buildpackage -us -uc) >"$work/build.log" 2>&1 ||
	{ tail -n 40 "$work/build.log" >&2; die "dpkg-buildpackage failed"; }
cp "$work"/odp-hmm_"$version"* "$work"/odp-hmm-dkms_"$version"_all.deb "$out"/
log "built $(cd "$out" && ls odp-hmm*)"
