#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Idempotent set-up of a fresh Debian 12 machine for building and testing odp_hmm:
# Debian packages, QEMU 10 from backports, bindgen, virtme-ng (in a venv), the pinned kernel
# source and the test kernel built from it. Every step checks before it acts, so a second run
# only verifies. Run as root or with sudo available.
#
# Usage: scripts/setup.sh [--no-kernel]

. "$(dirname "$0")/lib.sh"

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

APT_PACKAGES=(
	# Rust toolchain for the kernel: rustc 1.96 with its `core` sources.
	rustc-web rust-web-src rust-web-clippy
	# The kernel's compiler and linker (LLVM=1: KASAN with Rust needs a clang-built kernel) and
	# bindgen's libclang, all of one LLVM release (the default libclang 14 is too old).
	"clang-$LLVM_MAJOR" "lld-$LLVM_MAJOR" "llvm-$LLVM_MAJOR"
	"libclang-$LLVM_MAJOR-dev" "libclang1-$LLVM_MAJOR"
	# Kernel build dependencies.
	build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils rsync
	# virtme-ng needs depmod and udev (without udevd the guest's exit code is lost).
	kmod udev
	# Packaging tests: DKMS, and the Debian package's build (debhelper with dh_dkms).
	dkms debhelper dh-dkms
	# Benchmark plots (scripts/bench-report.py).
	python3-matplotlib
)

apt_missing() {
	local p
	for p in "$@"; do
		dpkg-query -W -f='${Status}\n' "${p%%/*}" 2>/dev/null | grep -q '^install ok installed$' ||
			echo "$p"
	done
}

step_apt() {
	local missing
	missing=$(apt_missing "${APT_PACKAGES[@]}")
	if [ -z "$missing" ]; then
		log "Debian packages: present"
		return
	fi
	log "installing Debian packages:" $missing
	$SUDO apt-get update -q
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
}

qemu_major() {
	command -v qemu-system-x86_64 >/dev/null || return 0
	qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\).*/\1/p'
}

# QEMU from backports, through the machine's own mirror. Backports is NotAutomatic (priority
# 100), so adding it upgrades nothing by itself; only the named packages come from it.
step_qemu() {
	local major mirror list=/etc/apt/sources.list.d/odp-hmm-$QEMU_SUITE.list
	major=$(qemu_major)
	if [ -n "$major" ] && [ "$major" -ge 10 ]; then
		log "QEMU $major: present"
		return
	fi
	mirror=$(debian_mirror)
	[ -n "$mirror" ] || die "no Debian mirror found in the apt sources"
	log "installing qemu-system-x86 from $QEMU_SUITE via $mirror"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $QEMU_SUITE main" |
		$SUDO tee "$list" >/dev/null
	$SUDO apt-get update -q
	# `-t` lets the packages this install pulls in (seabios, ...) come from backports too;
	# packages outside this transaction stay as they are.
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
		-t "$QEMU_SUITE" qemu-system-x86
	major=$(qemu_major)
	[ -n "$major" ] && [ "$major" -ge 10 ] || die "QEMU >= 10 expected, got '$major'"
}

step_bindgen() {
	if "$BINDGEN" --version 2>/dev/null | grep -qx "bindgen $BINDGEN_VERSION"; then
		log "bindgen $BINDGEN_VERSION: present"
		return
	fi
	log "building bindgen-cli $BINDGEN_VERSION"
	cargo install --quiet --locked --root "$ODP_TOOLS" bindgen-cli --version "$BINDGEN_VERSION"
}

step_virtme() {
	if "$ODP_VENV/bin/vng" --version 2>/dev/null | grep -q "virtme-ng $VIRTME_NG_VERSION"; then
		log "virtme-ng $VIRTME_NG_VERSION: present"
		return
	fi
	log "installing virtme-ng $VIRTME_NG_VERSION in $ODP_VENV"
	python3 -m venv "$ODP_VENV"
	"$ODP_VENV/bin/pip" install --quiet --disable-pip-version-check "virtme-ng==$VIRTME_NG_VERSION"
}

main() {
	local build_kernel=1
	[ "${1:-}" = --no-kernel ] && build_kernel=0
	mkdir -p "$ODP_CACHE" "$ODP_TOOLS"
	step_apt
	step_qemu
	step_bindgen
	step_virtme
	"$ODP_TOP/scripts/kernel.sh" fetch
	[ "$build_kernel" = 0 ] || "$ODP_TOP/scripts/kernel.sh" build
}

main "$@"
