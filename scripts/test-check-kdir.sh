#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The build refuses kernel trees it cannot build against, with one clear sentence each: no
# CONFIG_RUST, no Rust metadata (the distro-headers case), metadata of another rustc. Each fake
# KDIR below is built from the real test kernel's files, minus what the case lacks.

. "$(dirname "$0")/lib.sh"

real=$("$ODP_TOP/scripts/kernel.sh" dir test)
work=$(mktemp -d /tmp/odp-kdir.XXXXXX)
trap 'rm -rf "$work"' EXIT
bad=0

# expect NAME KDIR RUSTC PATTERN: `make check-kdir` must fail and print PATTERN.
expect() {
	local name=$1 kdir=$2 rustc=$3 pattern=$4 out
	if out=$(make -s -C "$ODP_TOP" KDIR="$kdir" RUSTC="$rustc" BINDGEN="$BINDGEN" check-kdir 2>&1); then
		echo "FAIL $name: the check accepted it"
		bad=1
	elif ! grep -q "$pattern" <<<"$out"; then
		echo "FAIL $name: unexpected message: $out"
		bad=1
	else
		echo "ok   $name: $out"
	fi
}

fake() {
	local dir=$work/$1
	mkdir -p "$dir/include/config" "$dir/rust"
	cp "$real/Makefile" "$dir/"
	cp "$real/include/config/auto.conf" "$dir/include/config/"
	cp "$real"/rust/*.rmeta "$dir/rust/"
	echo "$dir"
}

norust=$(fake norust)
sed -i '/^CONFIG_RUST=/d' "$norust/include/config/auto.conf"
expect "no CONFIG_RUST" "$norust" "$KRUSTC" "without CONFIG_RUST=y"

normeta=$(fake normeta)
rm -f "$normeta"/rust/*.rmeta
expect "no rust/*.rmeta (distro headers)" "$normeta" "$KRUSTC" "no rust/\*.rmeta.*Debian"

other=$(command -v rustc)
if [ "$("$other" --version)" != "$("$KRUSTC" --version)" ]; then
	expect "another rustc" "$real" "$other" "Rust metadata only loads into the exact compiler"
else
	echo "skip another rustc: only one rustc on this machine"
fi

expect "not a kernel tree" "$work" "$KRUSTC" "is not a kernel build tree"

# And the real tree passes.
if make -s -C "$ODP_TOP" KDIR="$real" RUSTC="$KRUSTC" BINDGEN="$BINDGEN" check-kdir; then
	echo "ok   the test kernel passes the check"
else
	echo "FAIL the test kernel does not pass the check"
	bad=1
fi
exit $bad
