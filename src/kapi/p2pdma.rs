// SPDX-License-Identifier: GPL-2.0

//! PCI peer-to-peer DMA memory.
//!
//! C header: [`include/linux/pci-p2pdma.h`](srctree/include/linux/pci-p2pdma.h),
//! [`include/linux/memremap.h`](srctree/include/linux/memremap.h).

use crate::bindings as odp;

/// Whether page frame `pfn` (reported by `hmm_range_fault()`) is PCI peer memory.
pub(crate) fn is_p2p_pfn(pfn: u64) -> bool {
    // SAFETY: `pfn` came from `hmm_range_fault()` and has a `struct page`.
    // CAST: PFNs are `unsigned long`, 64 bits wide here (see `kapi`).
    unsafe { !odp::odp_shim_pfn_p2p_pgmap(pfn as usize).is_null() }
}
