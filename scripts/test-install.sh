#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Installs odp_hmm in the test VM the way a host does (scripts/guest-install.sh runs the guest's
# part), then checks that nothing of it reached this machine.
#
#   test-install.sh dkms    dkms add/build/install in the guest, modprobe odp_hmm, the
#                           foundation selftests against it, modprobe -r, dkms remove
#   test-install.sh deb     builds the odp-hmm-dkms package (scripts/deb.sh) and in the guest:
#                           dpkg -i (its postinst runs dkms add/build/install), autoload by
#                           udev, group access, the foundation selftests against the module
#                           modprobe loads, modprobe -r, dpkg --purge
#
# CI runs only `deb`: it goes through every DKMS step, and the module is built in the guest only
# once (under TCG that build takes most of the step's time).

. "$(dirname "$0")/lib.sh"

mode=${1:?usage: test-install.sh dkms|deb}
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$ODP_TOP/dkms.conf")
kdir=$("$ODP_TOP/scripts/kernel.sh" dir test)
krel=$(make -s -C "$kdir" kernelrelease)
guest=(env ODP_HMM_CACHE="$ODP_CACHE" bash "$ODP_TOP/scripts/guest-install.sh")

# The guest changed only its own copies (guest-install.sh says how): the host has no trace of
# the package, the DKMS tree, the sources or the module, in its system or in the kernel cache.
host_untouched() {
	local left
	left=$(ls -d /var/lib/dkms/odp_hmm /usr/src/odp_hmm-"$version" /usr/lib/udev/rules.d/60-odp-hmm.rules \
		/etc/modprobe.d/odp_hmm.conf "$kdir"/.virtme_mods/lib/modules/*/updates 2>/dev/null || true)
	[ -z "$left" ] || die "the VM run left files on the host: $left"
	! dpkg -s odp-hmm-dkms >/dev/null 2>&1 || die "the host's dpkg lists odp-hmm-dkms"
	log "host untouched: no odp-hmm-dkms in its dpkg database, no DKMS tree, sources or module"
}

# The module built by the host's DKMS, in a private tree, from the sources the package ships, for
# the test kernel, as a binaries-only DKMS tarball at $1: what the package's postinst loads in
# the guest instead of compiling under TCG (ODP_HMM_GUEST_BUILD=1 makes the guest compile).
prebuild() {
	local tree
	tree=$(mktemp -d /tmp/odp-prebuild.XXXXXX)
	make -s -C "$ODP_TOP" dkms-src DESTDIR="$tree/root"
	mkdir -p "$tree/dkms" "$tree/install"
	local opts=(--dkmstree "$tree/dkms" --sourcetree "$tree/root/usr/src" --installtree "$tree/install")
	dkms add -m odp_hmm -v "$version" "${opts[@]}" >/dev/null
	dkms build -m odp_hmm -v "$version" -k "$krel" --kernelsourcedir "$kdir" "${opts[@]}" >/dev/null ||
		{ tail -n 40 "$tree/dkms/odp_hmm/$version/build/make.log"; die "dkms build failed"; }
	dkms mktarball -m odp_hmm -v "$version" -k "$krel" --binaries-only --archive "$1" \
		"${opts[@]}" >/dev/null
	rm -rf "$tree"
	log "prebuilt $(basename "$1") for $krel"
}

host_untouched
case "$mode" in
dkms)
	"$ODP_TOP/scripts/vm-run.sh" --modprobe --module-args "backend=rust" \
		--setup "$(printf '%q ' "${guest[@]}" dkms)" \
		--teardown "$(printf '%q ' "${guest[@]}" dkms-remove)" \
		-- "$ODP_TOP/target/release/odp_hmm_selftests" foundation
	;;
deb)
	out=$(mktemp -d /tmp/odp-deb.XXXXXX)
	trap 'rm -rf "$out"' EXIT
	"$ODP_TOP/scripts/deb.sh" "$out"
	echo "# dpkg -c odp-hmm-dkms_${version}_all.deb"
	dpkg -c "$out/odp-hmm-dkms_${version}_all.deb"
	prebuilt=
	if [ "${ODP_HMM_GUEST_BUILD:-0}" != 1 ]; then
		prebuilt=$out/odp_hmm-$version.dkms.tar.gz
		prebuild "$prebuilt"
	fi
	# The guest sees the host's /tmp (through its own overlay), so it reads the package there.
	"$ODP_TOP/scripts/vm-run.sh" --modprobe \
		--setup "$(printf '%q ' "${guest[@]}" deb "$out/odp-hmm-dkms_${version}_all.deb" "$prebuilt")" \
		--teardown "$(printf '%q ' "${guest[@]}" deb-purge)" \
		-- "$ODP_TOP/target/release/odp_hmm_selftests" foundation
	;;
*) die "usage: test-install.sh dkms|deb" ;;
esac
host_untouched
