// SPDX-License-Identifier: GPL-2.0

//! PCI peer-to-peer pages: which ones the DMA device can reach, and how.
//!
//! C header: [`include/linux/pci-p2pdma.h`](srctree/include/linux/pci-p2pdma.h).
//!
//! A registration may cover memory of another PCI device (a BAR published as p2pmem). Each such
//! page is classified the way `pci_p2pdma_state()` does it: mapped through the host bridge like
//! memory (with `DMA_ATTR_MMIO`), reached directly by PCI bus address, or not reachable at all.
//! The answer depends only on the provider and the DMA device, so it is cached per provider.

use crate::kapi::dma::DmaDev;

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
#[derive(Default)]
pub(crate) struct P2pCache {}

impl P2pCache {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        Self {}
    }

    /// How `dev` reaches page frame `pfn`.
    pub(crate) fn classify(&mut self, _dev: &DmaDev, pfn: u64) -> P2pClass {
        if crate::kapi::p2pdma::is_p2p_pfn(pfn) {
            // Peer memory needs the topology walk of the P2P support; until then the device is
            // told it cannot reach it, which is always safe.
            P2pClass::NotSupported
        } else {
            P2pClass::Memory
        }
    }

    /// The bus address of peer page `pfn` for `dev`, when it is reached by bus address.
    pub(crate) fn bus_address(&mut self, _dev: &DmaDev, _pfn: u64) -> Option<u64> {
        None
    }
}
