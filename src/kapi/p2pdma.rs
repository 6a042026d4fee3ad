// SPDX-License-Identifier: GPL-2.0

//! PCI peer-to-peer DMA memory and the PCI topology between a provider and a client.
//!
//! C header: [`include/linux/pci-p2pdma.h`](srctree/include/linux/pci-p2pdma.h),
//! [`include/linux/memremap.h`](srctree/include/linux/memremap.h).

use core::ptr::{
    self,
    NonNull, //
};

use kernel::{
    bindings,
    pci, //
};

use crate::{
    bindings as odp,
    kapi::{
        dma::raw_device,
        hmm::HmmPage,
        pci::raw_pci, //
    },
};

/// The pagemap of peer page `page` (one per provider BAR), as an opaque key; `None` for any
/// other page.
pub(crate) fn p2p_pgmap(page: HmmPage) -> Option<usize> {
    // CAST: PFNs are `unsigned long`, 64 bits wide here (see `kapi`).
    // SAFETY: `page` has a live `struct page` (its type's guarantee).
    let pgmap = unsafe { odp::odp_shim_pfn_p2p_pgmap(page.pfn() as usize) };
    // CAST: Only compared, never dereferenced.
    (!pgmap.is_null()).then_some(pgmap as usize)
}

/// Whether any valid word of a `hmm_range_fault()` result is a PCI peer page.
pub(crate) fn any_p2p(words: &[u64]) -> bool {
    // SAFETY: `words` holds `words.len()` words from `hmm_range_fault()`; `unsigned long` is
    // `u64` here (see `kapi`).
    unsafe { odp::odp_shim_pfns_have_p2p(words.as_ptr().cast::<usize>(), words.len()) }
}

/// The PCI function that provides a peer page.
///
/// # Invariants
///
/// `pdev` holds a reference on a valid `struct pci_dev`, dropped on drop.
#[cfg_attr(odp_native_p2pdma_state, allow(dead_code))]
pub(crate) struct Provider {
    pdev: NonNull<bindings::pci_dev>,
    bus_offset: u64,
}

#[cfg_attr(odp_native_p2pdma_state, allow(dead_code))]
impl Provider {
    /// The provider of peer page `page`; `None` if it is not PCI peer memory.
    pub(crate) fn of(page: HmmPage) -> Option<Self> {
        let mut bus_offset = 0;
        // CAST: As in `p2p_pgmap`.
        // SAFETY: `page` has a live `struct page`; `bus_offset` is a valid destination.
        let pdev = unsafe { odp::odp_shim_p2p_provider(page.pfn() as usize, &mut bus_offset) };
        // INVARIANT: The shim returns the device with a reference taken.
        NonNull::new(pdev).map(|pdev| Self { pdev, bus_offset })
    }

    /// What to add to a CPU physical address of its memory to get the PCI bus address.
    pub(crate) fn bus_offset(&self) -> u64 {
        self.bus_offset
    }

    /// The provider as a PCI device.
    pub(crate) fn device(&self) -> &pci::Device {
        // SAFETY: `pdev` is valid while `self` holds its reference (type invariants), and
        // `pci::Device` is a transparent wrapper around `struct pci_dev`.
        unsafe { &*self.pdev.as_ptr().cast::<pci::Device>() }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        // SAFETY: By the type invariants we own a reference.
        unsafe { odp::odp_shim_pci_dev_put(self.pdev.as_ptr()) };
    }
}

// SAFETY: A reference on a PCI device may be dropped on any thread.
unsafe impl Send for Provider {}

/// The bridge directly above `dev`, or `None` at the root. `dev` holds a reference on it, so it
/// lives at least as long as the borrow of `dev`.
pub(crate) fn upstream_bridge(dev: &pci::Device) -> Option<&pci::Device> {
    // SAFETY: `dev` is a valid `struct pci_dev`.
    let bridge = unsafe { odp::odp_shim_pci_upstream_bridge(raw_pci(dev)) };
    // SAFETY: A child holds a reference on its upstream bridge for as long as it exists, and
    // `pci::Device` is a transparent wrapper around `struct pci_dev`.
    NonNull::new(bridge).map(|b| unsafe { &*b.as_ptr().cast::<pci::Device>() })
}

/// Whether `dev` redirects peer-to-peer requests upstream (ACS redirect or egress control).
pub(crate) fn acs_redirects(dev: &pci::Device) -> bool {
    // SAFETY: `dev` is a valid `struct pci_dev`.
    unsafe { odp::odp_shim_pci_acs_redirects(raw_pci(dev)) }
}

/// Whether the kernel allows peer-to-peer DMA between `provider` and `client` at all
/// (`pci_p2pdma_distance()` is not negative): its verdict covers the host-bridge allowlist and
/// the CPU, which this module cannot see.
pub(crate) fn distance_allows(provider: &pci::Device, client: &pci::Device) -> bool {
    let client: &kernel::device::Device = client.as_ref();
    // SAFETY: Both devices are valid.
    unsafe { odp::odp_shim_p2pdma_distance(raw_pci(provider), raw_device(client)) >= 0 }
}

/// The same PCI function?
pub(crate) fn same(a: &pci::Device, b: &pci::Device) -> bool {
    ptr::eq(raw_pci(a), raw_pci(b))
}

/// The kernel's own classification (`pci_p2pdma_state()`), where the kernel exports what it
/// needs (see `Kbuild`).
#[cfg(odp_native_p2pdma_state)]
pub(crate) struct NativeState(bindings::pci_p2pdma_map_state);

#[cfg(odp_native_p2pdma_state)]
impl NativeState {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        Self(pin_init::zeroed())
    }

    /// `PCI_P2PDMA_MAP_*` of peer page `page` for `client`, and its bus address if it is
    /// reached by bus address.
    pub(crate) fn classify(&mut self, client: &pci::Device, page: HmmPage) -> (u32, u64) {
        let client: &kernel::device::Device = client.as_ref();
        let mut bus_addr = 0;
        // CAST: As in `p2p_pgmap`.
        // SAFETY: `page` is a live peer page; `self.0` is this batch's cache.
        let ty = unsafe {
            odp::odp_shim_p2pdma_state(
                &mut self.0,
                raw_device(client),
                page.pfn() as usize,
                &mut bus_addr,
            )
        };
        // CAST: The map types are small non-negative values.
        (ty as u32, bus_addr)
    }
}
