// SPDX-License-Identifier: GPL-2.0

//! The kernel module's pure-logic files, compiled for the host so that `cargo test` can check
//! them. They use only `core`; each is included as it is built into `odp_hmm.ko`, and its tests
//! live beside it here (`*_tests.rs`), so the kernel sources carry no host-only code.

#![allow(dead_code)]

#[path = "../../src/pfn_flags.rs"]
pub(crate) mod pfn_flags;

#[path = "../../src/range.rs"]
pub(crate) mod range;

#[path = "../../src/link_plan.rs"]
pub(crate) mod link_plan;

#[path = "../../src/pci_addr.rs"]
pub(crate) mod pci_addr;

#[cfg(test)]
mod pfn_flags_tests;

#[cfg(test)]
mod range_tests;

#[cfg(test)]
mod link_plan_tests;

#[cfg(test)]
mod pci_addr_tests;
