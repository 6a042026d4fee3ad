// SPDX-License-Identifier: GPL-2.0

//! Module-wide gauges: what all registrations of all open files hold now (`ODP_HMM_IOC_INFO`,
//! version 2). A test, or an administrator, can see from them that nothing is left behind.
//!
//! Each gauge is raised by the code that takes a resource and lowered by the code that gives it
//! back, in the same type (registrations in `odp_umem.rs`, the rest in `hmm_dma_map.rs`).
//!
//! Pure logic: no kernel dependency.

use core::sync::atomic::{
    AtomicU64,
    Ordering, //
};

/// One gauge.
pub(crate) struct Gauge(AtomicU64);

impl Gauge {
    const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Adds `n`.
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` (what an earlier [`Self::add`] added).
    pub(crate) fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    /// The value now.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Registrations alive.
pub(crate) static REGISTRATIONS: Gauge = Gauge::new();
/// Pages the device can reach.
pub(crate) static PAGES_MAPPED: Gauge = Gauge::new();
/// IOVA space reserved, in bytes.
pub(crate) static IOVA_BYTES: Gauge = Gauge::new();
/// Kernel memory held for per-page state, in bytes.
pub(crate) static BOOKKEEPING_BYTES: Gauge = Gauge::new();
