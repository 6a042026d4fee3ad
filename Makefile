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
#   make dkms-src          install the module's sources for DKMS: $(DESTDIR)/usr/src/odp_hmm-<version>
#   make clean

KDIR ?= /lib/modules/$(shell uname -r)/build
# The rustc that built KDIR: Rust metadata only loads into that exact compiler.
RUSTC ?= $(shell $(CURDIR)/scripts/kdir-rustc.sh $(KDIR))
CLIPPY_DRIVER ?= $(dir $(shell command -v $(RUSTC)))clippy-driver
BINDGEN ?= bindgen
# The C shim must be built by the kernel's own compiler: for a clang-built kernel, its LLVM.
LLVM ?= $(shell $(CURDIR)/scripts/kdir-llvm.sh $(KDIR))

# An LLVM prefix names the compiler and linker too: DKMS adds CC=clang LD=ld.lld for a clang-built
# kernel, which must not fall back to whatever clang PATH has (or none).
LLVM_TOOLS = $(if $(filter %/,$(LLVM)),CC=$(LLVM)clang LD=$(LLVM)ld.lld) \
	$(if $(filter -%,$(LLVM)),CC=clang$(LLVM) LD=ld.lld$(LLVM))

KMAKE = $(MAKE) -C $(KDIR) M=$(CURDIR) RUSTC=$(RUSTC) CLIPPY_DRIVER=$(CLIPPY_DRIVER) \
	BINDGEN=$(BINDGEN) $(if $(LLVM),LLVM=$(LLVM) $(LLVM_TOOLS)) $(if $(CLIPPY),CLIPPY=$(CLIPPY))

RS_FILES = $(shell git -C $(CURDIR) ls-files '*.rs' 2>/dev/null)

.PHONY: all modules check-kdir clippy userspace rustfmt rustfmtcheck lint host-test check \
	test demo bench install modules_install dkms-clean dkms-src clean

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

# What DKMS builds the module from, and nothing else (no build products, tests or tools). The
# Debian package and the DKMS tests install exactly this.
DKMS_VERSION = $(shell sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' $(CURDIR)/dkms.conf)
DKMS_SRC = $(DESTDIR)/usr/src/odp_hmm-$(DKMS_VERSION)
DKMS_FILES = Kbuild Makefile dkms.conf $(shell cd $(CURDIR) && \
	find src include -type f \( -name '*.rs' -o -name '*.c' -o -name '*.h' \))
DKMS_SCRIPTS = scripts/check-kdir.sh scripts/kdir-rustc.sh scripts/kdir-llvm.sh

# DKMS runs its CLEAN command before and after every build. Kbuild's own clean reads the whole
# kernel build to delete these few files (a minute and more under the test VM's emulation).
dkms-clean:
	find $(CURDIR) -path $(CURDIR)/target -prune -o \( -name '*.o' -o -name '*.ko' -o -name '*.mod' -o -name '*.mod.c' \
		-o -name '.*.cmd' -o -name '.*.d' -o -name Module.symvers -o -name modules.order \) \
		-type f -exec rm -f {} +
	rm -rf $(CURDIR)/generated

dkms-src:
	@set -e; for f in $(DKMS_FILES); do install -D -m644 $(CURDIR)/$$f $(DKMS_SRC)/$$f; done; \
	for f in $(DKMS_SCRIPTS); do install -D -m755 $(CURDIR)/$$f $(DKMS_SRC)/$$f; done

clean:
	+$(KMAKE) clean
	rm -rf $(CURDIR)/generated
