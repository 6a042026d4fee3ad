#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test VM (scripts/test-install.sh starts it): installs odp_hmm the way a host
# does and checks each step.
#
#   guest-install.sh dkms       dkms add, build and install of the sources for the running
#                               kernel, so that `modprobe odp_hmm` finds the module (vm-run.sh
#                               --setup; vm-run.sh --modprobe then loads it)
#   guest-install.sh dkms-remove  dkms remove, checked clean (vm-run.sh --teardown)
#   guest-install.sh deb DEB    dpkg -i of the odp-hmm-dkms package (its postinst builds and
#                               installs the module), autoload by udev, the udev rule's group
#                               access, modprobe -r and dpkg --purge, checked clean
#
# Nothing here may reach the host. The guest's root is the host's file system, exported by QEMU
# read-only (virtme-ng's `readonly=on` 9p export); virtme-ng mounts throw-away overlays on /etc,
# /lib, /usr, /var and /tmp whose upper layers live in guest memory. So dpkg's database
# (/var/lib/dpkg), the DKMS tree (/var/lib/dkms), /usr/src, the udev rules and /etc/modprobe.d
# that this script changes are the guest's copies; private_dirs() refuses to go on unless each
# is such a copy. The one directory virtme-ng does not give the guest a copy of is the kernel's
# module directory (a link to the test kernel's build tree in the host's cache); private_dirs()
# lays an overlay over it in place, with its upper layer in guest memory too.

. "$(dirname "$0")/lib.sh"

# Each line says how far into the step it is: under TCG some steps take minutes.
log() { printf '[odp_hmm] [%4ss] %s\n' "$SECONDS" "$*" >&2; }

krel=$(uname -r)
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$ODP_TOP/dkms.conf")
ko=/lib/modules/$krel/updates/dkms/odp_hmm.ko

# The file system type of the mount that holds $1.
fstype() { findmnt -n -o FSTYPE --target "$1"; }

# Whether writes to $1 stay in guest memory: a tmpfs, or an overlay whose upper layer is on one.
in_guest_memory() {
	local t upper
	t=$(fstype "$1")
	[ "$t" = tmpfs ] && return 0
	[ "$t" = overlay ] || return 1
	upper=$(findmnt -n -o OPTIONS --target "$1" | tr , '\n' | sed -n 's/^upperdir=//p')
	[ -n "$upper" ] && [ "$(fstype "$upper")" = tmpfs ]
}

# dpkg installs a new directory as NAME.dpkg-new and renames it. In an overlay, moving a directory
# into one that the lower layer has too takes an xattr on the upper layer, which the test kernel's
# tmpfs cannot store (no CONFIG_TMPFS_XATTR): the rename fails with EXDEV. Where that fails, a
# plain tmpfs (still guest memory) takes the overlay's place, holding links to what was there.
renames_dirs() {
	local probe=$1/.odp-install-probe
	# rename(2) itself, as dpkg calls it: mv would fall back to copying on EXDEV.
	mkdir "$probe.new" && perl -e 'rename $ARGV[0], $ARGV[1] or exit 1' "$probe.new" "$probe"
	local ok=$?
	rmdir "$probe.new" "$probe" 2>/dev/null || true
	return $ok
}

shadow_dir() {
	local d=$1 keep=/run/odp-install/lower$1 e
	in_guest_memory "$d" || die "$d is not the guest's own copy ($(fstype "$d")): refusing to install"
	renames_dirs "$d" && return 0
	mkdir -p "$keep"
	mount --bind "$d" "$keep"
	mount -t tmpfs odp-install "$d"
	# One ln for all of them: a process per entry costs minutes under TCG (/usr/share/doc has
	# thousands).
	local entries=()
	for e in "$keep"/* "$keep"/.[!.]*; do
		[ -e "$e" ] || [ -L "$e" ] || continue
		entries+=("$e")
	done
	[ ${#entries[@]} = 0 ] || ln -s "${entries[@]}" "$d/"
	renames_dirs "$d" || die "$d: directories still cannot be renamed"
	log "$d: a tmpfs with links to its entries (the overlay cannot rename directories into it)"
}

private_dirs() {
	local moddir d
	# virtme-ng links /lib/modules/$(uname -r) to <kernel>/.virtme_mods/lib/modules/0.0.0 in the
	# host's cache, shared by every VM run. An overlay in place keeps the module's relative links
	# (build -> the kernel tree) working and makes the directory writable in this guest only.
	moddir=$(readlink -f "/lib/modules/$krel")
	mkdir -p /run/odp-install
	mountpoint -q /run/odp-install || mount -t tmpfs odp-install /run/odp-install
	mkdir -p /run/odp-install/modules /run/odp-install/modules.work
	mount -t overlay odp-modules -o "lowerdir=$moddir,upperdir=/run/odp-install/modules,workdir=/run/odp-install/modules.work" "$moddir"
	# The parents of the directories the package adds (its sources and its doc directory).
	shadow_dir /usr/src
	shadow_dir /usr/share/doc
	for d in "$moddir" /var/lib/dpkg /var/lib/dkms /usr/src /usr/lib/udev/rules.d \
		/etc/modprobe.d /etc/group /etc/gshadow; do
		in_guest_memory "$d" || die "$d is not the guest's own copy ($(fstype "$d")): refusing to install"
	done
	log "guest-private: /lib/modules/$krel, /var/lib/dpkg, /var/lib/dkms, /usr/src, udev rules, /etc"
}

loaded() { grep -q '^odp_hmm ' /proc/modules; }

# The installed module is the one modprobe finds, built for this kernel, with the edu modalias.
check_installed() {
	local info
	[ -f "$ko" ] || die "no $ko after the install"
	[ "$(modinfo -n odp_hmm)" = "$ko" ] || die "modprobe would load $(modinfo -n odp_hmm), not $ko"
	info=$(modinfo odp_hmm)
	grep -q "^vermagic: *$krel " <<<"$info" || die "$ko is not built for $krel"
	grep -q '^alias: *pci:v00001234d000011E8sv\*sd\*bc\*sc\*i\*$' <<<"$info" ||
		die "$ko has no modalias for the edu device"
	modinfo odp_hmm | grep -E '^(filename|alias|vermagic|parm):'
	log "dkms status"
	dkms status
}

install_dkms() {
	private_dirs
	# What `sudo make dkms-src` does on a host (README, "Install on a host").
	make -s dkms-src
	dkms add odp_hmm/"$version"
	dkms build odp_hmm/"$version" -k "$krel" ||
		{ tail -n 40 /var/lib/dkms/odp_hmm/"$version"/build/make.log; die "dkms build failed"; }
	dkms install odp_hmm/"$version" -k "$krel"
	check_installed
}

remove_dkms() {
	dkms remove odp_hmm/"$version" --all
	rm -r /usr/src/odp_hmm-"$version"
	[ ! -e /var/lib/dkms/odp_hmm ] && [ ! -e "$ko" ] || die "dkms remove left the DKMS tree or $ko"
	! modinfo odp_hmm >/dev/null 2>&1 || die "modprobe still finds odp_hmm after dkms remove"
	echo "removed: no DKMS tree, sources or module left; modinfo finds no odp_hmm"
}

# Where dh-dkms's postinst looks for a prebuilt DKMS tarball (/usr/lib/dkms/common.postinst:
# its TARBALL_ROOT, /usr/share/<package>).
prebuilt_root=/usr/share/odp_hmm-dkms

install_deb() {
	local deb=$1 prebuilt=${2:-} edu d gid out
	private_dirs
	udevadm control --ping || die "udevd is not running in the guest"
	# modprobe reads options from /etc/modprobe.d, for udev's loads too: this one must show.
	echo "options odp_hmm backend=kernel" >/etc/modprobe.d/odp-hmm-test.conf
	if [ -n "$prebuilt" ]; then
		# The module as the host's DKMS built it from the same sources for this kernel
		# (test-install.sh): the postinst loads it (dkms ldtarball) instead of compiling,
		# which under TCG takes a quarter of an hour. It still runs dkms install.
		mkdir -p "$prebuilt_root"
		in_guest_memory "$prebuilt_root" || die "$prebuilt_root is not the guest's own copy"
		cp "$prebuilt" "$prebuilt_root/odp_hmm-$version.dkms.tar.gz"
		log "prebuilt: $(basename "$prebuilt") in $prebuilt_root"
	fi

	log "dpkg -i $(basename "$deb")"
	# The postinst builds (or loads) the module with DKMS and installs it; it hides the build's
	# output, its make.log keeps it.
	DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" ||
		{ tail -n 40 /var/lib/dkms/odp_hmm/"$version"/build/make.log; die "dpkg -i failed"; }
	dpkg -s odp-hmm-dkms | grep -E '^(Status|Version):'
	check_installed
	dkms status odp_hmm | grep -q "^odp_hmm/$version, $krel, [^:]*: installed" ||
		die "dkms does not list odp_hmm/$version as installed for $krel"
	gid=$(getent group odp | cut -d: -f3)
	[ -n "$gid" ] || die "the package did not create the group odp"
	[ -f /usr/lib/udev/rules.d/60-odp-hmm.rules ] || die "the package's udev rule is missing"

	# Autoload: nothing has loaded odp_hmm yet; a PCI "add" event for the edu device makes udev
	# look its modalias up and load it.
	! loaded || die "odp_hmm is loaded before udev was asked to"
	edu=
	for d in /sys/bus/pci/devices/*; do
		[ "$(cat "$d/vendor"):$(cat "$d/device")" = 0x1234:0x11e8 ] && edu=${d##*/}
	done
	[ -n "$edu" ] || die "no edu device in the guest"
	udevadm trigger --action=add --subsystem-match=pci --attr-match=vendor=0x1234 \
		--attr-match=device=0x11e8
	udevadm settle --timeout=120
	loaded || die "udev did not load odp_hmm for $edu"
	[ -e "/sys/bus/pci/drivers/odp_hmm_edu/$edu" ] || die "odp_hmm is loaded but not bound to $edu"
	[ -c /dev/odp_hmm ] || die "no /dev/odp_hmm after the autoload"
	log "udev loaded odp_hmm for $edu: $(stat -c '%A %U:%G %n' /dev/odp_hmm)"
	[ "$(stat -c '%a %U %G' /dev/odp_hmm)" = "660 root odp" ] ||
		die "/dev/odp_hmm is $(stat -c '%a %U %G' /dev/odp_hmm), not 660 root odp (the udev rule)"
	[ "$(cat /sys/module/odp_hmm/parameters/backend)" = kernel ] ||
		die "the /etc/modprobe.d option did not reach udev's load: backend=$(cat /sys/module/odp_hmm/parameters/backend)"

	# The group's members can open the device and register; other users cannot open it. Two
	# unprivileged users of the guest's /etc (virtme-ng's /etc/shadow cannot take new users):
	# nobody, made a member as an administrator would, and daemon, left out.
	local odpctl=$ODP_TOP/target/release/odpctl
	adduser nobody odp
	out=$(runuser -u nobody -- "$odpctl" --json info alloc 1M register fault 0 64K snapshot 0 16 stats) ||
		die "a member of the group odp could not register: $out"
	log "member: $(id nobody)"
	echo "$out"
	/usr/bin/python3 - "$out" <<-'EOF' || die "the member's odpctl --json output is not what it did"
		import json, sys
		info, snap, stats = (json.loads(l) for l in sys.argv[1].splitlines())
		assert info["command"] == "info" and info["edu"] and info["default_backend"] == "kernel", info
		assert snap["command"] == "snapshot" and snap["mapped"] == 16, snap
		assert all("dma-mapped" in p["flags"] for p in snap["pages"]), snap
		assert stats["command"] == "stats" and stats["pages_now"] == 16, stats
	EOF
	if out=$(runuser -u daemon -- "$odpctl" info 2>&1); then
		die "a user outside the group odp opened /dev/odp_hmm: $out"
	fi
	grep -q "Permission denied" <<<"$out" || die "unexpected failure for a non-member: $out"
	echo "not a member: $(id daemon)"
	echo "$out"

	# The selftests run next against the module as loaded here (vm-run.sh --modprobe), then
	# `purge_deb` (the teardown) removes everything.
}

# After the selftests: modprobe -r, then the purge takes the DKMS tree, the module and the files
# away.
purge_deb() {
	if loaded; then
		modprobe -r odp_hmm
	fi
	! loaded && [ ! -e /dev/odp_hmm ] || die "modprobe -r left odp_hmm loaded"
	rm -f /etc/modprobe.d/odp-hmm-test.conf
	rm -rf "$prebuilt_root"
	log "dpkg --purge odp-hmm-dkms"
	DEBIAN_FRONTEND=noninteractive dpkg --purge odp-hmm-dkms
	local left
	left=$(ls -d /var/lib/dkms/odp_hmm /usr/src/odp_hmm-"$version" "$ko" \
		/usr/lib/udev/rules.d/60-odp-hmm.rules /etc/modprobe.d/odp_hmm.conf 2>/dev/null || true)
	[ -z "$left" ] || die "the purge left: $left"
	! modinfo odp_hmm >/dev/null 2>&1 || die "modprobe still finds odp_hmm after the purge"
	! dpkg -s odp-hmm-dkms >/dev/null 2>&1 || die "dpkg still knows odp-hmm-dkms after the purge"
	[ -z "$(dkms status odp_hmm)" ] || die "dkms still lists odp_hmm: $(dkms status odp_hmm)"
	log "purged: no DKMS tree, sources, module, udev rule or modprobe.d file left; modinfo finds no odp_hmm"
}

case "${1:-}" in
dkms) install_dkms ;;
dkms-remove) remove_dkms ;;
deb) install_deb "${2:?usage: guest-install.sh deb DEB [PREBUILT]}" "${3:-}" ;;
deb-purge) purge_deb ;;
*) die "usage: guest-install.sh dkms | dkms-remove | deb DEB | deb-purge" ;;
esac
