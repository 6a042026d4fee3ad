# SPDX-License-Identifier: GPL-2.0
# Shared shell helpers for the odp_hmm scripts. Source it; it sets the project paths.

set -euo pipefail

ODP_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../versions.env
. "$ODP_TOP/versions.env"

# Everything downloaded or built for the tests lives here, outside the repository.
ODP_CACHE=${ODP_HMM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/odp_hmm}
ODP_TOOLS=$ODP_CACHE/tools
ODP_VENV=$ODP_CACHE/venv

# The kernel and its Rust crates must be built by Debian's rustc-web (it ships `rust-src`);
# the rustup toolchain in ~/.cargo/bin has none. Userspace crates keep using cargo's rustc.
export KRUSTC=/usr/bin/rustc
export KRUSTFMT=${KRUSTFMT:-rustfmt}
export LIBCLANG_PATH=/usr/lib/llvm-$LLVM_MAJOR/lib
# The kernel and the module's C shim are built with this LLVM (`make LLVM=<prefix>/`).
export KLLVM=/usr/lib/llvm-$LLVM_MAJOR/bin/
export BINDGEN=$ODP_TOOLS/bin/bindgen
export PATH=$ODP_VENV/bin:$ODP_TOOLS/bin:$PATH

log() { printf '[odp_hmm] %s\n' "$*" >&2; }
die() { printf '[odp_hmm] error: %s\n' "$*" >&2; exit 1; }

# The URI of the Debian archive this machine's apt sources already use.
debian_mirror() {
	apt-get indextargets --format '$(REPO_URI) $(RELEASE)' |
		awk '$2 ~ /^(bookworm|trixie|sid|stable)$/ { print $1; exit }'
}
