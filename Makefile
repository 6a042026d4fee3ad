# SPDX-License-Identifier: GPL-2.0
#
# odp_hmm: build the module, the userspace tools and the tests.
#
#   make [KDIR=...]        build odp_hmm.ko (KDIR: a Rust-enabled kernel build tree;
#                          default /lib/modules/$(uname -r)/build)
#   make CLIPPY=1          the same, with clippy on the module's Rust code
#   make userspace         odpctl and the selftests (cargo, release)
#   make check             rustfmt, clippy (module and userspace), host unit tests
#   make test              everything CI runs (scripts/test.sh): set-up, build, checks, VM tests
#   make demo              the demo in the VM (scripts/demo.sh)
#   make bench             the benchmarks in the VM (scripts/bench.sh)
#   make install           install the module into /lib/modules/<KDIR's release>/extra
#   make clean

KDIR ?= /lib/modules/$(shell uname -r)/build
# The rustc that built KDIR: Rust metadata only loads into that exact compiler.
RUSTC ?= $(shell $(CURDIR)/scripts/kdir-rustc.sh $(KDIR))
CLIPPY_DRIVER ?= $(dir $(shell command -v $(RUSTC)))clippy-driver
BINDGEN ?= bindgen
# The C shim must be built by the kernel's own compiler: for a clang-built kernel, its LLVM.
LLVM ?= $(shell $(CURDIR)/scripts/kdir-llvm.sh $(KDIR))

KMAKE = $(MAKE) -C $(KDIR) M=$(CURDIR) RUSTC=$(RUSTC) CLIPPY_DRIVER=$(CLIPPY_DRIVER) \
	BINDGEN=$(BINDGEN) $(if $(LLVM),LLVM=$(LLVM)) $(if $(CLIPPY),CLIPPY=$(CLIPPY))

RS_FILES = $(shell git -C $(CURDIR) ls-files '*.rs' 2>/dev/null)

.PHONY: all modules check-kdir clippy userspace rustfmt rustfmtcheck lint host-test check \
	test demo bench install modules_install clean

all: modules

modules: check-kdir
	+$(KMAKE) modules

check-kdir:
	@$(CURDIR)/scripts/check-kdir.sh $(KDIR) $(RUSTC) $(BINDGEN)

clippy: check-kdir
	+$(KMAKE) CLIPPY=1 modules

userspace:
	cargo build --release --locked -p odpctl -p odp-hmm-selftests

rustfmt:
	rustfmt --edition 2021 $(RS_FILES)

rustfmtcheck:
	rustfmt --edition 2021 --check $(RS_FILES)

lint: rustfmtcheck clippy
	cargo clippy --locked --workspace --all-targets -- -D warnings

host-test:
	cargo test --locked -p odp-hmm-host-tests -p odp-hmm-uapi -p odpctl

check: lint host-test

test:
	$(CURDIR)/scripts/test.sh

demo:
	$(CURDIR)/scripts/demo.sh

bench:
	$(CURDIR)/scripts/bench.sh

install modules_install: modules
	+$(KMAKE) INSTALL_MOD_DIR=extra modules_install

clean:
	+$(KMAKE) clean
	rm -rf $(CURDIR)/generated
