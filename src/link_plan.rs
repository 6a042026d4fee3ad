// SPDX-License-Identifier: GPL-2.0

//! Planning DMA link and unlink calls over per-page state words.
//!
//! The upstream helper (`hmm_dma_map_pfn()`) links one page and syncs the IOTLB per call. The
//! manager instead links what it can in one call and syncs once per fault batch. This module
//! decides *what* goes into each call; [`crate::hmm_dma_map`] makes the calls.
//!
//! The rules, and why:
//!
//! - A *unit* is what one link call mapped and what must be unmapped together. Each page records
//!   the order of its unit in the map-order field of its state word.
//! - A folio that `hmm_range_fault()` reports with order `k > 0` (a THP or hugetlb page) becomes
//!   one unit of `2^k` pages when all of it is inside the registration and the fault batch,
//!   physically contiguous and of one access class. The IOMMU may then map it with one large
//!   page-table entry, which it cannot later split: an unmap that starts inside a large entry
//!   fails (`generic_pt` refuses it, and `dma_iova_unlink()` warns). So invalidating any page of
//!   a unit unmaps the whole unit.
//! - Other pages are order-0 units. In IOVA mode physically contiguous runs of them share one link
//!   call, but a run never reaches 512 pages: with fewer than 512 pages the IOMMU cannot form a
//!   2 MiB entry, so each page stays separately unmappable. `dma_map_phys()` (fallback) mappings
//!   are unmapped with the address and size they were made with, so there every order-0 page is
//!   its own call.
//! - An unlink call covers a run of consecutive mapped pages of one access class, whole units
//!   only; peer pages mapped by bus address have nothing to unmap and split runs.
//!
//! Pure logic: no kernel dependency, unit-tested on the host (`host-tests/`).

use crate::pfn_flags::{
    HmmPfn,
    MapKind, //
};

/// Pages in the smallest IOMMU large page (2 MiB of 4 KiB pages). An order-0 run stays below it.
pub(crate) const LARGE_PAGE_PAGES: usize = 512;

/// The access class of a mapping: what the DMA direction and attributes of its calls are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkClass {
    /// The device may write (`DMA_BIDIRECTIONAL`), else it may only read (`DMA_TO_DEVICE`).
    pub(crate) writable: bool,
    /// How the page is reached. Never [`MapKind::P2pBus`] for a link call.
    pub(crate) kind: MapKind,
}

/// A page that is to be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Its page frame number.
    pub(crate) pfn: u64,
    /// The map order `hmm_range_fault()` reported for it.
    pub(crate) order: u32,
    /// How it is to be mapped.
    pub(crate) class: LinkClass,
}

/// One link (or `dma_map_phys()`) call: `npages` pages from `pfn` to registration pages
/// `first..first + npages`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Link {
    /// Registration page index of the first page.
    pub(crate) first: usize,
    /// Pages in the call.
    pub(crate) npages: usize,
    /// Page frame number of the first page.
    pub(crate) pfn: u64,
    /// The unit order every page of the call records (0 for a run of order-0 units).
    pub(crate) unit_order: u32,
    /// Direction and attributes.
    pub(crate) class: LinkClass,
}

/// How a registration's pages may be grouped into calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grouping {
    /// Virtual page number of registration page 0 (units are aligned in virtual addresses).
    pub(crate) first_vpn: u64,
    /// Map a whole folio in one call when possible.
    pub(crate) folio_units: bool,
    /// Link physically contiguous order-0 pages in one call (IOVA mode only).
    pub(crate) coalesce: bool,
}

impl Grouping {
    /// The links for the candidates of one batch of `len` pages: `candidate(i)` says what page
    /// `first + i` is to be mapped as, or `None` if it is not to be mapped. It is asked about a
    /// page more than once (to see whether a folio or a run continues), so it should be cheap.
    pub(crate) fn links<'a>(
        &'a self,
        first: usize,
        len: usize,
        mut candidate: impl FnMut(usize) -> Option<Candidate> + 'a,
    ) -> impl Iterator<Item = Link> + 'a {
        let mut i = 0;
        core::iter::from_fn(move || {
            while i < len {
                let Some(c) = candidate(i) else {
                    i += 1;
                    continue;
                };
                let link = match self.folio_unit(first, len, &mut candidate, i, c) {
                    Some(npages) => Link {
                        first: first + i,
                        npages,
                        pfn: c.pfn,
                        unit_order: c.order,
                        class: c.class,
                    },
                    None => Link {
                        first: first + i,
                        npages: self.run_len(first, len, &mut candidate, i, c),
                        pfn: c.pfn,
                        unit_order: 0,
                        class: c.class,
                    },
                };
                i += link.npages;
                return Some(link);
            }
            None
        })
    }

    /// Pages of the folio unit starting at batch page `i` (candidate `head`), if one can be
    /// mapped whole.
    fn folio_unit(
        &self,
        first: usize,
        len: usize,
        candidate: &mut impl FnMut(usize) -> Option<Candidate>,
        i: usize,
        head: Candidate,
    ) -> Option<usize> {
        if !self.folio_units || head.order == 0 || head.order >= usize::BITS {
            return None;
        }
        let npages = 1usize << head.order;
        let vpn = self.first_vpn + index_u64(first + i);
        let unit_mask = index_u64(npages - 1);
        if vpn & unit_mask != 0 || head.pfn & unit_mask != 0 || i.checked_add(npages)? > len {
            return None;
        }
        let whole = (1..npages).all(|k| {
            matches!(candidate(i + k), Some(p) if p.pfn == head.pfn + index_u64(k) && p.class == head.class)
        });
        whole.then_some(npages)
    }

    /// Pages of the order-0 run starting at batch page `i` (candidate `head`): 1, or more when
    /// coalescing.
    fn run_len(
        &self,
        first: usize,
        len: usize,
        candidate: &mut impl FnMut(usize) -> Option<Candidate>,
        i: usize,
        head: Candidate,
    ) -> usize {
        let mut n = 1;
        if !self.coalesce {
            return n;
        }
        while n < LARGE_PAGE_PAGES - 1 && i + n < len {
            match candidate(i + n) {
                Some(next)
                    if next.pfn == head.pfn + index_u64(n)
                        && next.class == head.class
                        && self
                            .folio_unit(first, len, candidate, i + n, next)
                            .is_none() =>
                {
                    n += 1
                }
                _ => break,
            }
        }
        n
    }

    /// Widens `first..end` to whole units of the mapped pages at its edges.
    pub(crate) fn expand_to_units(
        &self,
        states: &[HmmPfn],
        first: usize,
        end: usize,
    ) -> (usize, usize) {
        if first >= end || end > states.len() {
            return (first, end);
        }
        let (first, _) = self.unit_of(states, first);
        let (_, end) = self.unit_of(states, end - 1);
        (first, end.min(states.len()))
    }

    /// The unit `first..end` that page `i` belongs to.
    fn unit_of(&self, states: &[HmmPfn], i: usize) -> (usize, usize) {
        let state = states[i];
        let order = state.order();
        if !state.is_dma_mapped() || order == 0 || order >= usize::BITS {
            return (i, i + 1);
        }
        let npages = 1usize << order;
        let vpn = self.first_vpn + index_u64(i);
        // CAST: The offset is below `npages`, a `usize`.
        let offset = (vpn & index_u64(npages - 1)) as usize;
        let start = i.saturating_sub(offset);
        (start, start + npages)
    }

    /// The unmap calls for the mapped pages of `first..end`, which must consist of whole units
    /// (see [`Self::expand_to_units`]).
    pub(crate) fn unlinks<'a>(
        &'a self,
        states: &'a [HmmPfn],
        first: usize,
        end: usize,
    ) -> impl Iterator<Item = Unlink> + 'a {
        let mut i = first;
        let end = end.min(states.len());
        core::iter::from_fn(move || {
            while i < end {
                let state = states[i];
                let Some(kind) = state.map_kind() else {
                    i += 1;
                    continue;
                };
                if kind == MapKind::P2pBus {
                    i += 1;
                    continue;
                }
                let class = LinkClass {
                    writable: state.is_writable(),
                    kind,
                };
                let (_, unit_end) = self.unit_of(states, i);
                let mut run_end = unit_end.min(end);
                if self.coalesce {
                    while run_end < end && Self::class_of(states[run_end]) == Some(class) {
                        run_end = self.unit_of(states, run_end).1.min(end);
                    }
                }
                let unlink = Unlink {
                    first: i,
                    npages: run_end - i,
                    class,
                };
                i = run_end;
                return Some(unlink);
            }
            None
        })
    }

    /// The class of a page that an unlink call can include.
    fn class_of(state: HmmPfn) -> Option<LinkClass> {
        match state.map_kind()? {
            MapKind::P2pBus => None,
            kind => Some(LinkClass {
                writable: state.is_writable(),
                kind,
            }),
        }
    }
}

/// One unlink (or `dma_unmap_phys()`) call over registration pages `first..first + npages`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unlink {
    /// Registration page index of the first page.
    pub(crate) first: usize,
    /// Pages in the call.
    pub(crate) npages: usize,
    /// Direction and attributes the pages were mapped with.
    pub(crate) class: LinkClass,
}

/// What a fault must do with a page it found mapped already.
///
/// `old` is the page's state, `new` what `hmm_range_fault()` reported now, `want_write` whether
/// the device asked to write.
pub(crate) fn must_remap(old: HmmPfn, new: HmmPfn, want_write: bool) -> bool {
    if !old.is_dma_mapped() || !new.is_valid() {
        return false;
    }
    // A different page cannot be mapped without an invalidation in between; if it ever is, the
    // stale mapping must go. A read-only mapping that is now to be written is remapped writable.
    old.pfn() != new.pfn() || (want_write && !old.is_writable())
}

/// A `usize` page count or index as `u64`.
fn index_u64(i: usize) -> u64 {
    // CAST: `usize` is at most 64 bits wide on every target this module builds for.
    i as u64
}
