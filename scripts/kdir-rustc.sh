#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Prints the rustc that built KDIR's Rust metadata, searched among the usual places; if none
# matches, prints `rustc` (and check-kdir.sh explains the mismatch).
#
# Usage: kdir-rustc.sh KDIR

kdir=$1
conf=$kdir/include/config/auto.conf
[ -f "$conf" ] || conf=$kdir/.config
want=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT=//p' "$conf" 2>/dev/null | sed 's/^"\(.*\)"$/\1/')
for rustc in $(command -v rustc) /usr/bin/rustc /usr/bin/rustc-1.* /usr/local/bin/rustc; do
	if [ -x "$rustc" ] && [ -n "$want" ] && [ "$("$rustc" --version 2>/dev/null)" = "$want" ]; then
		echo "$rustc"
		exit 0
	fi
done
echo rustc
