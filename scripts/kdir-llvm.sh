#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Prints what `make LLVM=` must be to build modules for KDIR with the compiler that built it:
# nothing for a gcc-built kernel; for a clang-built one the LLVM prefix of its clang version
# (Debian installs LLVM N in /usr/lib/llvm-N/bin/), or `-N` if only clang-N is in PATH, or `1`
# (clang in PATH).
#
# Usage: kdir-llvm.sh KDIR

kdir=$1
conf=$kdir/include/config/auto.conf
[ -f "$conf" ] || conf=$kdir/.config
grep -qs '^CONFIG_CC_IS_CLANG=y' "$conf" || exit 0
version=$(sed -n 's/^CONFIG_CLANG_VERSION=//p' "$conf")
major=$((${version:-0} / 10000))
if [ -x "/usr/lib/llvm-$major/bin/clang" ]; then
	echo "/usr/lib/llvm-$major/bin/"
elif command -v "clang-$major" >/dev/null; then
	echo "-$major"
else
	echo 1
fi
