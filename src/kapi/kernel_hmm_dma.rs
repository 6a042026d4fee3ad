// SPDX-License-Identifier: GPL-2.0

//! The kernel's own HMM DMA mapping helper, `struct hmm_dma_map` (the `backend=kernel` path).
//!
//! C header: [`include/linux/hmm-dma.h`](srctree/include/linux/hmm-dma.h); implementation in
//! `mm/hmm.c`. It maps one page per call: `hmm_dma_map_pfn()` links a page and syncs the IOTLB,
//! `hmm_dma_unmap_pfn()` unlinks it. It serves as the reference the Rust manager is checked and
//! measured against.

use core::slice;

use kernel::{
    bindings,
    error::to_result,
    page::PAGE_SIZE,
    prelude::*, //
};

use crate::{
    bindings as odp,
    kapi::dma::{
        raw_device,
        DmaDev, //
    },
    pfn_flags::{
        self,
        HmmPfn, //
    },
};

/// A P2P classification cache for one batch of `hmm_dma_map_pfn()` calls.
pub(crate) struct P2pState(bindings::pci_p2pdma_map_state);

impl P2pState {
    /// An empty cache: the first peer page looks its provider up.
    pub(crate) fn new() -> Self {
        Self(pin_init::zeroed())
    }
}

/// A `struct hmm_dma_map` over `npages` pages.
///
/// # Invariants
///
/// - `map` was set up by `hmm_dma_map_alloc()` for `dev` with `npages` entries of `PAGE_SIZE`,
///   and is freed by `hmm_dma_map_free()` on drop; every entry is unmapped before (the owner's
///   job, as for `hmm_dma_map_free()` itself).
/// - `dev` stays bound while `map` is alive (see [`DmaDev`]).
pub(crate) struct KernelHmmDmaMap {
    dev: DmaDev,
    map: odp::hmm_dma_map,
    npages: usize,
}

// SAFETY: The map's arrays are owned by this value alone; the C helpers may run on any thread.
unsafe impl Send for KernelHmmDmaMap {}
// SAFETY: `&self` methods only read the arrays.
unsafe impl Sync for KernelHmmDmaMap {}

impl KernelHmmDmaMap {
    /// Allocates the map: the PFN array, and the IOVA window or (fallback) the DMA address list.
    ///
    /// # Errors
    ///
    /// `EOPNOTSUPP` if the device would bounce or sync (HMM cannot), `ENOMEM`.
    pub(crate) fn new(dev: &DmaDev, npages: usize) -> Result<Self> {
        let mut map = odp::hmm_dma_map::default();
        // SAFETY: `dev` is a valid, bound device; `map` is a valid destination.
        to_result(unsafe {
            odp::hmm_dma_map_alloc(raw_device(dev.device()), &mut map, npages, PAGE_SIZE)
        })?;
        // INVARIANT: `hmm_dma_map_alloc` succeeded with `npages` entries of `PAGE_SIZE`.
        Ok(Self {
            dev: dev.clone(),
            map,
            npages,
        })
    }

    /// Whether the map uses an IOVA window (else `dma_map_phys()` per page).
    pub(crate) fn uses_iova(&mut self) -> bool {
        // SAFETY: `map.state` was initialised by `hmm_dma_map_alloc`.
        unsafe { odp::odp_shim_dma_use_iova(&mut self.map.state) }
    }

    /// Whether the map keeps a DMA address per page (fallback mode with `dma_need_unmap()`).
    pub(crate) fn has_dma_list(&self) -> bool {
        !self.map.dma_list.is_null()
    }

    /// The DMA address of page 0 in IOVA mode.
    pub(crate) fn iova_base(&self) -> u64 {
        self.map.state.addr
    }

    /// The per-page words (`HMM_PFN_*` layout, with the sticky DMA bits).
    pub(crate) fn pfns(&self) -> &[HmmPfn] {
        // SAFETY: `pfn_list` holds `npages` words by the type invariants; `HmmPfn` is a
        // transparent `u64`, and `unsigned long` is 64 bits wide here (see `kapi`).
        unsafe { slice::from_raw_parts(self.map.pfn_list.cast::<HmmPfn>(), self.npages) }
    }

    /// Stores `word` (what `hmm_range_fault()` reported) as page `idx`'s word. The sticky DMA
    /// bits stay as the C helpers set them: they say what is mapped, and only those helpers
    /// may change them.
    pub(crate) fn set_word(&mut self, idx: usize, word: HmmPfn) {
        if idx >= self.npages {
            return;
        }
        // SAFETY: `pfn_list` holds `npages` words by the type invariants, `idx` is in bounds,
        // and `&mut self` makes this the only access.
        let slot = unsafe { &mut *self.map.pfn_list.add(idx) };
        let sticky = pfn_flags::INOUT_FLAGS;
        // CAST: `unsigned long` is 64 bits wide here (see `kapi`).
        *slot = ((word.raw() & !sticky) | (*slot as u64 & sticky)) as usize;
    }

    /// Maps page `idx` and returns its DMA address; for a page that is mapped already, returns
    /// its address.
    ///
    /// # Safety
    ///
    /// The word of page `idx` must hold a page that `hmm_range_fault()` reported for it and that
    /// stays mapped in the registered address space until [`Self::unmap_pfn`] (the invalidation
    /// callback unmaps it before the mm lets it go).
    pub(crate) unsafe fn map_pfn(&mut self, idx: usize, p2p: &mut P2pState) -> Result<u64> {
        if idx >= self.npages {
            return Err(EINVAL);
        }
        let dev = raw_device(self.dev.device());
        // SAFETY: The map is live, `idx` is in bounds and its word holds a live page (the
        // caller's guarantee); the caller serialises calls on this map (the registration lock).
        let addr = unsafe { odp::hmm_dma_map_pfn(dev, &mut self.map, idx, &mut p2p.0) };
        // SAFETY: `dev` is a valid device.
        if unsafe { odp::odp_shim_dma_mapping_error(dev, addr) } {
            return Err(EIO);
        }
        Ok(addr)
    }

    /// Unmaps page `idx`; `false` if it was not mapped.
    pub(crate) fn unmap_pfn(&mut self, idx: usize) -> bool {
        if idx >= self.npages {
            return false;
        }
        // SAFETY: The map is live and `idx` is in bounds; the caller serialises calls.
        unsafe { odp::hmm_dma_unmap_pfn(raw_device(self.dev.device()), &mut self.map, idx) }
    }
}

impl Drop for KernelHmmDmaMap {
    fn drop(&mut self) {
        // SAFETY: By the type invariants the map is live and every entry is unmapped.
        unsafe { odp::hmm_dma_map_free(raw_device(self.dev.device()), &mut self.map) };
    }
}
