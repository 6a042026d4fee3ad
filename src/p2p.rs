// SPDX-License-Identifier: GPL-2.0

//! PCI peer-to-peer pages: which ones the DMA device can reach, and how.
//!
//! C header: [`include/linux/pci-p2pdma.h`](srctree/include/linux/pci-p2pdma.h).
//!
//! A registration may cover memory of another PCI device (a BAR published as p2pmem and mapped
//! from `/sys/bus/pci/devices/<addr>/p2pmem/allocate`). Each such page is classified the way
//! `pci_p2pdma_state()` does it, into a [`P2pClass`]: mapped through the host bridge like memory
//! (with `DMA_ATTR_MMIO`), reached directly by PCI bus address, or not reachable at all. The
//! answer depends only on the provider and the DMA device, so [`P2pCache`] keeps it for the last
//! provider seen, like `struct pci_p2pdma_map_state`; a cache lives for one batch of pages, as
//! upstream callers zero their state per batch.
//!
//! # The rule, and where it comes from
//!
//! `pci_p2pdma_state()` cannot be used by a module on Linux 7.2 and 7.3: it is an inline that
//! calls `__pci_p2pdma_update_state()`, which is not exported. Where the kernel exports it
//! (`Kbuild` probes `Module.symvers`), the module uses it. Elsewhere [`map_type`] computes the
//! same answer from exported interfaces only, following `calc_map_type_and_dist()` in
//! `drivers/pci/p2pdma.c`:
//!
//! 1. If `pci_p2pdma_distance()` between provider and client is negative, the kernel does not
//!    allow the transfer: `NOT_SUPPORTED`. (That verdict covers the host-bridge allowlist and the
//!    CPU test, `cpu_supports_p2pdma()`, which a module cannot see.)
//! 2. Otherwise walk up from the provider: for each of its upstream ports `a` (the provider
//!    first), look for `a` among the client and its upstream ports. Note every port on the way
//!    that redirects peer-to-peer requests upstream (ACS `RR`, `CR` or `EC`).
//! 3. If a common upstream port is found and no port on either path to it redirects, the two
//!    devices talk directly through that switch: `BUS_ADDR`.
//! 4. Otherwise the transfer crosses the host bridge (and the kernel allowed it in step 1):
//!    `THRU_HOST_BRIDGE`.
//!
//! Bus addresses are the CPU physical address plus the BAR's bus offset, as
//! `pci_p2pdma_bus_addr_map()` computes them.

use kernel::pci;

#[cfg(not(odp_native_p2pdma_state))]
use crate::kapi::p2pdma::Provider;
use crate::kapi::{
    hmm::HmmPage,
    p2pdma, //
};

/// How the DMA device reaches a page (`enum pci_p2pdma_map_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum P2pClass {
    /// Not peer memory (`PCI_P2PDMA_MAP_NONE`).
    Memory,
    /// Through the host bridge (`PCI_P2PDMA_MAP_THRU_HOST_BRIDGE`).
    HostBridge,
    /// By PCI bus address, not through the IOMMU (`PCI_P2PDMA_MAP_BUS_ADDR`).
    BusAddr,
    /// Not at all (`PCI_P2PDMA_MAP_NOT_SUPPORTED`).
    NotSupported,
}

/// The classification of the last provider seen (`struct pci_p2pdma_map_state`).
pub(crate) struct P2pCache<'a> {
    /// The DMA device.
    client: &'a pci::Device,
    /// The last provider's pagemap, its class and bus offset.
    last: Option<(usize, P2pClass, u64)>,
}

impl<'a> P2pCache<'a> {
    /// An empty cache for pages the DMA device `client` accesses.
    pub(crate) fn new(client: &'a pci::Device) -> Self {
        Self { client, last: None }
    }

    /// How the DMA device reaches `page`, and the bus offset of a peer page.
    fn lookup(&mut self, page: HmmPage) -> (P2pClass, u64) {
        let Some(key) = p2pdma::p2p_pgmap(page) else {
            return (P2pClass::Memory, 0);
        };
        if let Some((k, class, offset)) = self.last {
            if k == key {
                return (class, offset);
            }
        }
        let (class, offset) = classify_provider(self.client, page);
        self.last = Some((key, class, offset));
        (class, offset)
    }

    /// How the DMA device reaches `page`.
    pub(crate) fn classify(&mut self, page: HmmPage) -> P2pClass {
        self.lookup(page).0
    }

    /// The PCI bus address of peer page `page`, when the DMA device reaches it by bus address.
    pub(crate) fn bus_address(&mut self, page: HmmPage) -> Option<u64> {
        match self.lookup(page) {
            (P2pClass::BusAddr, offset) => {
                Some((page.pfn() << kernel::page::PAGE_SHIFT).wrapping_add(offset))
            }
            _ => None,
        }
    }
}

/// The class and bus offset of the provider of peer page `page`, for `client`.
#[cfg(not(odp_native_p2pdma_state))]
fn classify_provider(client: &pci::Device, page: HmmPage) -> (P2pClass, u64) {
    match Provider::of(page) {
        Some(provider) => (map_type(provider.device(), client), provider.bus_offset()),
        None => (P2pClass::NotSupported, 0),
    }
}

/// The class and bus offset of the provider of peer page `page`, for `client`, by the kernel.
#[cfg(odp_native_p2pdma_state)]
fn classify_provider(client: &pci::Device, page: HmmPage) -> (P2pClass, u64) {
    let mut state = p2pdma::NativeState::new();
    let (ty, bus_addr) = state.classify(client, page);
    let class = match ty {
        kernel::bindings::pci_p2pdma_map_type_PCI_P2PDMA_MAP_BUS_ADDR => P2pClass::BusAddr,
        kernel::bindings::pci_p2pdma_map_type_PCI_P2PDMA_MAP_THRU_HOST_BRIDGE => {
            P2pClass::HostBridge
        }
        kernel::bindings::pci_p2pdma_map_type_PCI_P2PDMA_MAP_NONE => P2pClass::Memory,
        _ => P2pClass::NotSupported,
    };
    let offset = bus_addr.wrapping_sub(pfn << kernel::page::PAGE_SHIFT);
    (class, offset)
}

/// The map type between `provider` and `client`: the rule in the module documentation.
#[cfg_attr(odp_native_p2pdma_state, allow(dead_code))]
fn map_type(provider: &pci::Device, client: &pci::Device) -> P2pClass {
    if !p2pdma::distance_allows(provider, client) {
        return P2pClass::NotSupported;
    }
    let mut redirects = false;
    let mut a = Some(provider);
    while let Some(port) = a {
        redirects |= p2pdma::acs_redirects(port);
        if let Some(common) = chain(client).find(|&b| p2pdma::same(b, port)) {
            // Count the client's side up to (not including) the common port.
            redirects |= chain(client)
                .take_while(|&b| !p2pdma::same(b, common))
                .any(p2pdma::acs_redirects);
            return if redirects {
                P2pClass::HostBridge
            } else {
                P2pClass::BusAddr
            };
        }
        a = p2pdma::upstream_bridge(port);
    }
    P2pClass::HostBridge
}

/// `dev` and the bridges above it, up to the root.
fn chain(dev: &pci::Device) -> impl Iterator<Item = &pci::Device> {
    core::iter::successors(Some(dev), |&d| p2pdma::upstream_bridge(d))
}
