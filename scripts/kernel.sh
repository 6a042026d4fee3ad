#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The test kernel: fetch the pinned Debian kernel source and build it into a cache entry keyed
# by everything that changes the result (source version, config fragments, rustc, gcc, bindgen
# and this recipe). An entry is reused as long as its key matches, and rebuilt otherwise.
#
# Usage:
#   scripts/kernel.sh fetch                 download and unpack the pinned source (once)
#   scripts/kernel.sh build [PROFILE]       build PROFILE (test|perf) unless cached
#   scripts/kernel.sh dir [PROFILE]         print the build tree of PROFILE (KDIR), built or not
#   scripts/kernel.sh key [PROFILE]         print the cache key of PROFILE

. "$(dirname "$0")/lib.sh"

# Bump when the way a kernel is configured or built below changes.
RECIPE_VERSION=2

SRC_TARBALL_DIR=$ODP_CACHE/src/$LINUX_SOURCE_PACKAGE-$LINUX_SOURCE_VERSION

profile_fragments() {
	case "$1" in
	test) echo "$ODP_TOP/kernel/base.config $ODP_TOP/kernel/debug.config" ;;
	perf) echo "$ODP_TOP/kernel/base.config $ODP_TOP/kernel/perf.config" ;;
	*) die "unknown kernel profile '$1' (test or perf)" ;;
	esac
}

tarball() {
	local t
	t=$(find "$SRC_TARBALL_DIR" -maxdepth 4 -name "$LINUX_SOURCE_PACKAGE.tar.xz" 2>/dev/null | head -n1)
	echo "$t"
}

cmd_fetch() {
	local mirror work deb
	if [ -n "$(tarball)" ]; then
		log "kernel source $LINUX_SOURCE_PACKAGE $LINUX_SOURCE_VERSION: present"
		return
	fi
	mirror=$(debian_mirror)
	[ -n "$mirror" ] || die "no Debian mirror found in the apt sources"
	log "fetching $LINUX_SOURCE_PACKAGE=$LINUX_SOURCE_VERSION from $LINUX_SOURCE_SUITE via $mirror"
	work=$(mktemp -d "$ODP_CACHE/fetch.XXXXXX")
	mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/parts"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $LINUX_SOURCE_SUITE main" \
		>"$work/sources.list"
	# A private apt configuration: the machine's own sources, lists and packages stay untouched.
	local apt_opts=(
		-o "Dir::Etc::SourceList=$work/sources.list"
		-o "Dir::Etc::SourceParts=$work/parts"
		-o "Dir::State::Lists=$work/lists"
		-o "Dir::Cache=$work/cache"
		-o "Debug::NoLocking=1"
		-o "APT::Sandbox::User=root"
	)
	apt-get "${apt_opts[@]}" -q update >/dev/null
	(cd "$work" && apt-get "${apt_opts[@]}" -q download \
		"$LINUX_SOURCE_PACKAGE=$LINUX_SOURCE_VERSION") >/dev/null
	deb=$(ls "$work"/*.deb)
	mkdir -p "$SRC_TARBALL_DIR"
	dpkg-deb -x "$deb" "$SRC_TARBALL_DIR"
	rm -rf "$work"
	[ -n "$(tarball)" ] || die "$deb holds no $LINUX_SOURCE_PACKAGE.tar.xz"
}

cache_key() {
	local profile=$1 f
	{
		echo "recipe $RECIPE_VERSION"
		echo "source $LINUX_SOURCE_PACKAGE $LINUX_SOURCE_VERSION"
		for f in $(profile_fragments "$profile"); do
			echo "fragment $(basename "$f")"
			cat "$f"
		done
		"$KRUSTC" --version
		echo "llvm $KLLVM"
		"${KLLVM}clang" --version 2>/dev/null | head -n1 || echo "clang missing"
		"$BINDGEN" --version 2>/dev/null || echo "bindgen missing"
	} | sha256sum | cut -c1-16
}

kernel_dir() {
	local profile=$1
	echo "$ODP_CACHE/kernels/$profile-$(cache_key "$profile")/linux"
}

# Built with LLVM (clang, lld, llvm-ar, ...): a Rust-enabled kernel can have KASAN only when its C
# is compiled by clang.
kmake() {
	make -s -C "$1" LLVM="$KLLVM" RUSTC="$KRUSTC" HOSTRUSTC="$KRUSTC" BINDGEN="$BINDGEN" "${@:2}"
}

# Every option a fragment asks for must survive olddefconfig: a missing dependency (for example
# no usable rustc, which silently drops CONFIG_RUST) must stop the build here, not later.
check_config() {
	local dir=$1 frag line bad=0
	for frag in "${@:2}"; do
		while IFS= read -r line; do
			case "$line" in
			CONFIG_*=n) ! grep -q "^${line%=n}=[ym]$" "$dir/.config" ||
				{ log "config: wanted $line"; bad=1; } ;;
			CONFIG_*) grep -qx "$line" "$dir/.config" || { log "config: wanted $line, got: $(grep "^${line%%=*}=" "$dir/.config" || echo unset)"; bad=1; } ;;
			esac
		done <"$frag"
	done
	[ "$bad" = 0 ] || die "the kernel configuration lacks options the fragments ask for (above)"
}

cmd_build() {
	local profile=${1:-test} dir root frags start
	dir=$(kernel_dir "$profile")
	root=$(dirname "$dir")
	if [ -f "$root/complete" ]; then
		log "test kernel ($profile): cached in $dir"
		return
	fi
	[ -n "$(tarball)" ] || cmd_fetch
	"$KRUSTC" --version >/dev/null 2>&1 || die "$KRUSTC missing: run scripts/setup.sh"
	[ -x "$BINDGEN" ] || die "bindgen missing: run scripts/setup.sh"
	[ -x "${KLLVM}clang" ] || die "${KLLVM}clang missing: run scripts/setup.sh"
	read -r -a frags <<<"$(profile_fragments "$profile")"
	log "building the $profile kernel in $dir (cold build: about 20 min on 2 cores)"
	start=$(date +%s)
	rm -rf "$root"
	mkdir -p "$root"
	tar -xJf "$(tarball)" -C "$root"
	mv "$root/$LINUX_SOURCE_PACKAGE" "$dir"
	{
		(cd "$dir" && virtme-configkernel --allnoconfig </dev/null)
		(cd "$dir" && scripts/kconfig/merge_config.sh -m .config "${frags[@]}")
		kmake "$dir" olddefconfig
	} >"$root/config.log" 2>&1 || die "configuring the kernel failed: see $root/config.log"
	check_config "$dir" "${frags[@]}"
	kmake "$dir" -j"$(($(nproc) + 1))" all
	echo "$(($(date +%s) - start)) s" >"$root/build-time"
	touch "$root/complete"
	log "kernel built in $(cat "$root/build-time"): $dir"
	# Entries of this profile with another key are stale: free their disk.
	find "$ODP_CACHE/kernels" -mindepth 1 -maxdepth 1 -name "$profile-*" ! -path "$root" \
		-exec rm -rf {} +
}

case "${1:-}" in
fetch) cmd_fetch ;;
build) cmd_build "${2:-test}" ;;
dir) kernel_dir "${2:-test}" ;;
key) cache_key "${2:-test}" ;;
*) die "usage: $0 fetch|build [PROFILE]|dir [PROFILE]|key [PROFILE]" ;;
esac
