// SPDX-License-Identifier: GPL-2.0

//! Planning DMA link and unlink calls over per-page state words, and carrying them out.
//!
//! The upstream helper (`hmm_dma_map_pfn()`) links one page and syncs the IOTLB per call. The
//! manager instead links what it can in one call and syncs once per fault batch. This module
//! decides *what* goes into each call and keeps the state words in step with the calls; the
//! calls themselves are made through [`MapOps`] (the DMA API in [`crate::hmm_dma_map`], a model
//! IOMMU in the host tests).
//!
//! # The unit rule
//!
//! The IOMMU API cannot subdivide a mapping that one map call created; it may remove several
//! whole ones at once (`iommu_unmap()`'s kernel-doc). How big a mapping becomes depends on the
//! IOMMU: Intel VT-d has 4 KiB, 2 MiB and 1 GiB entries, so a run of fewer than 512 pages *looks*
//! separately unmappable there; AMD's v1 page table has every power of two (an aligned 2-page
//! run is one 8 KiB entry: an unlink starting inside it unmaps nothing, one at its start takes
//! the neighbour too), and virtio-iommu refuses any partial unmap. So, on every IOMMU:
//!
//! - A *unit* is what one link call maps: `2^k` pages, naturally aligned in virtual page numbers
//!   (`vpn % 2^k == 0`). Every page of it records `k` in the map-order field of its state word,
//!   so the unit of any mapped page is known from that page's word alone.
//! - Every unlink covers whole units only, consecutive and without holes (the IOMMU would unmap
//!   less than asked across a hole, which `dma_iova_unlink()` warns about). Invalidating one page
//!   unmaps its whole unit; the device refaults the other pages when it needs them.
//!   Over-invalidation is allowed, under-invalidation never.
//! - A folio that `hmm_range_fault()` reports with order `k > 0` (a THP or hugetlb page) becomes
//!   one unit of order `k` when all of it is inside the registration and the fault batch, aligned
//!   in both virtual and physical addresses, and of one access class.
//! - Other pages, in IOVA mode: a physically contiguous run of one class is linked as the largest
//!   aligned blocks it holds, of at most `2^MAX_RUN_ORDER` pages each. The bound keeps what an
//!   invalidation of one page takes with it to 63 neighbours while a contiguous run still needs
//!   few calls.
//! - With `dma_map_phys()` (no IOVA window; and the legacy design), each call gets its own IOVA
//!   and must be unmapped with exactly its address and size: there an unlink is always one unit,
//!   and order-0 pages are their own calls.
//! - Peer pages mapped by bus address have nothing to unmap; they split runs.
//!
//! Pure logic: no kernel dependency, unit-tested on the host (`host-tests/`), including a
//! property test that checks the unit rule against a model IOMMU for every mode that links.

use crate::pfn_flags::{
    HmmPfn,
    MapKind,
    ORDER_SHIFT, //
};

/// Largest order of a unit of order-0 pages (64 pages, 256 KiB).
pub(crate) const MAX_RUN_ORDER: u32 = 6;

/// How many pages an unmap walks between two calls of [`MapOps::relax`].
pub(crate) const RELAX_PAGES: usize = 1 << 14;

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

/// What the pages of a batch are to be mapped as: asked about a page more than once (to see
/// whether a folio or a run continues), so it should be cheap. A closure `FnMut(usize) ->
/// Option<Candidate>` is one; [`MemoryWords`] is the fast one for a batch of ordinary memory.
pub(crate) trait Candidates {
    /// What batch page `i` is to be mapped as, or `None` if it is not to be mapped.
    fn get(&mut self, i: usize) -> Option<Candidate>;

    /// Whether batch pages `i + 1..i + n` continue `head`, which is `self.get(i)`: each a
    /// candidate of `head`'s class at the next page frame.
    fn continues(&mut self, i: usize, n: usize, head: Candidate) -> bool {
        continues_by_get(self, i, n, head)
    }

    /// A quick look at how far an order-0 block starting at batch page `i` (candidate `head`,
    /// order 0) runs: `n` in `1..=max` such that pages `i + 1..i + n` are order-0 candidates of
    /// `head`'s class at the next frames; 1 says nothing (the caller asks page by page on).
    fn same_run(&mut self, _i: usize, _max: usize, _head: Candidate) -> usize {
        1
    }
}

impl<F: FnMut(usize) -> Option<Candidate>> Candidates for F {
    fn get(&mut self, i: usize) -> Option<Candidate> {
        self(i)
    }
}

/// [`Candidates::continues`], asking [`Candidates::get`] about every page.
fn continues_by_get<C: Candidates + ?Sized>(
    c: &mut C,
    i: usize,
    n: usize,
    head: Candidate,
) -> bool {
    (1..n).all(|k| {
        matches!(c.get(i + k), Some(p) if p.pfn == head.pfn.wrapping_add(index_u64(k)) && p.class == head.class)
    })
}

/// The candidates of a batch of ordinary memory (no PCI peer pages), straight from the words
/// `hmm_range_fault()` reported for it: every valid page without an error, writable if the fault
/// wants it and the page allows it.
pub(crate) struct MemoryWords<'a> {
    /// The batch's words.
    pub(crate) words: &'a [u64],
    /// Whether the fault maps for writing.
    pub(crate) want_write: bool,
}

impl Candidates for MemoryWords<'_> {
    fn get(&mut self, i: usize) -> Option<Candidate> {
        let word = HmmPfn::from_raw(*self.words.get(i)?);
        if !word.is_valid() || word.is_error() {
            return None;
        }
        Some(Candidate {
            pfn: word.pfn(),
            order: word.order(),
            class: LinkClass {
                writable: self.want_write && word.is_writable(),
                kind: MapKind::Memory,
            },
        })
    }

    /// A word that is the head's plus `k` has the head's flags (so its class) and the head's
    /// frame plus `k`, as long as that stays inside the frame field: one compare per page. That
    /// is sufficient, not necessary (a page may differ in flags that do not make its class, which
    /// `hmm_range_fault()` never reports inside one mapping): where it fails, every page is asked.
    fn continues(&mut self, i: usize, n: usize, head: Candidate) -> bool {
        let run = i.checked_add(n).and_then(|end| self.words.get(i..end));
        let fits = head
            .pfn
            .checked_add(index_u64(n))
            .is_some_and(|end| end <= PFN_LIMIT);
        let same_words = match run {
            Some(run @ [first, ..]) if fits && HmmPfn::from_raw(*first).pfn() == head.pfn => {
                let first = *first;
                run.iter()
                    .zip(0..)
                    .all(|(&w, k)| w == first.wrapping_add(k))
            }
            _ => false,
        };
        same_words || continues_by_get(self, i, n, head)
    }

    /// The words that are the head's plus `k` (order 0, like the head; the head's class).
    fn same_run(&mut self, i: usize, max: usize, head: Candidate) -> usize {
        let fits = head
            .pfn
            .checked_add(index_u64(max))
            .is_some_and(|end| end <= PFN_LIMIT);
        let run = i.checked_add(max).and_then(|end| self.words.get(i..end));
        match run {
            Some(run @ [first, ..])
                if fits && head.order == 0 && HmmPfn::from_raw(*first).pfn() == head.pfn =>
            {
                let first = *first;
                run.iter()
                    .zip(0..)
                    .take_while(|&(&w, k)| w == first.wrapping_add(k))
                    .count()
                    .max(1)
            }
            _ => 1,
        }
    }
}

/// One past the largest page frame number a state word holds.
const PFN_LIMIT: u64 = 1 << ORDER_SHIFT;

/// One link (or `dma_map_phys()`) call: the unit of `2^unit_order` pages from `pfn` to
/// registration pages `first..first + npages`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Link {
    /// Registration page index of the first page.
    pub(crate) first: usize,
    /// Pages in the call: `1 << unit_order`.
    pub(crate) npages: usize,
    /// Page frame number of the first page.
    pub(crate) pfn: u64,
    /// The unit order every page of the call records.
    pub(crate) unit_order: u32,
    /// Direction and attributes.
    pub(crate) class: LinkClass,
}

/// One unlink (or `dma_unmap_phys()`) call over registration pages `first..first + npages`:
/// whole units, all mapped, of one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unlink {
    /// Registration page index of the first page.
    pub(crate) first: usize,
    /// Pages in the call.
    pub(crate) npages: usize,
    /// Direction and attributes the pages were mapped with.
    pub(crate) class: LinkClass,
}

/// The calls that make pages reachable and unreachable for the device.
pub(crate) trait MapOps {
    /// Why a call failed.
    type Error;

    /// Makes the pages of each link reachable, in order, stopping at the first failure. Returns
    /// how many links were made, and the failure if there was one.
    fn link(&mut self, links: &[Link]) -> (usize, Result<(), Self::Error>);

    /// Makes the links made in registration pages `first..end` visible to the device.
    fn sync(&mut self, first: usize, end: usize) -> Result<(), Self::Error>;

    /// Makes the pages of `unlink` unreachable by the device before it returns.
    fn unlink(&mut self, unlink: &Unlink);

    /// Marks page frame `pfn` dirty: it was mapped writable for the device.
    fn dirty(&mut self, pfn: u64);

    /// Called every [`RELAX_PAGES`] pages of a long unmap: a chance to reschedule.
    fn relax(&mut self) {}
}

/// What [`Grouping::map_batch`] mapped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mapped {
    /// Pages made reachable (before a rollback, if the sync failed).
    pub(crate) pages: usize,
    /// Of which PCI peer pages reached through the host bridge.
    pub(crate) host_bridge_pages: usize,
    /// Pages unmapped again because the IOTLB sync failed.
    pub(crate) rolled_back: usize,
    /// Pages of the batch that were mapped already (and left as they were).
    pub(crate) already: usize,
}

/// How a registration's pages may be grouped into calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grouping {
    /// Virtual page number of registration page 0 (units are aligned in virtual addresses).
    pub(crate) first_vpn: u64,
    /// Map a whole folio in one call when possible.
    pub(crate) folio_units: bool,
    /// Link physically contiguous order-0 pages in one call, and unlink consecutive units in one
    /// call (IOVA mode only).
    pub(crate) coalesce: bool,
}

impl Grouping {
    /// The links for the candidates of one batch of `len` pages: `candidate.get(i)` says what
    /// page `first + i` is to be mapped as, or `None` if it is not to be mapped.
    pub(crate) fn links<'a>(
        &'a self,
        first: usize,
        len: usize,
        mut candidate: impl Candidates + 'a,
    ) -> impl Iterator<Item = Link> + 'a {
        let mut i = 0;
        core::iter::from_fn(move || {
            while i < len {
                let Some(c) = candidate.get(i) else {
                    i += 1;
                    continue;
                };
                let unit_order = match self.folio_unit(first, len, &mut candidate, i, c) {
                    Some(order) => order,
                    None => self.block_order(first, len, &mut candidate, i, c),
                };
                let link = Link {
                    first: first + i,
                    npages: 1 << unit_order,
                    pfn: c.pfn,
                    unit_order,
                    class: c.class,
                };
                i += link.npages;
                return Some(link);
            }
            None
        })
    }

    /// The order of the folio unit starting at batch page `i` (candidate `head`), if the folio
    /// can be mapped whole.
    fn folio_unit(
        &self,
        first: usize,
        len: usize,
        candidate: &mut impl Candidates,
        i: usize,
        head: Candidate,
    ) -> Option<u32> {
        if !self.folio_units || head.order == 0 || head.order >= usize::BITS - 1 {
            return None;
        }
        let npages = 1usize << head.order;
        let unit_mask = index_u64(npages - 1);
        if self.vpn(first + i) & unit_mask != 0
            || head.pfn & unit_mask != 0
            || i.checked_add(npages)? > len
        {
            return None;
        }
        candidate.continues(i, npages, head).then_some(head.order)
    }

    /// The order of the block of order-0 pages starting at batch page `i` (candidate `head`):
    /// the largest aligned power of two of contiguous pages of one class there, up to
    /// [`MAX_RUN_ORDER`]; 0 when not coalescing.
    fn block_order(
        &self,
        first: usize,
        len: usize,
        candidate: &mut impl Candidates,
        i: usize,
        head: Candidate,
    ) -> u32 {
        if !self.coalesce {
            return 0;
        }
        // The block must start aligned to its size: the alignment of the page bounds the order.
        let max = 1usize << self.vpn(first + i).trailing_zeros().min(MAX_RUN_ORDER);
        let mut n = if head.order == 0 && max > 1 {
            candidate.same_run(i, max.min(len - i), head)
        } else {
            1
        };
        while n < max && i + n < len {
            match candidate.get(i + n) {
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
        // The largest power of two that is at most `n` (`n >= 1`).
        usize::BITS - 1 - n.leading_zeros()
    }

    /// Virtual page number of registration page `i`.
    fn vpn(&self, i: usize) -> u64 {
        self.first_vpn.wrapping_add(index_u64(i))
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

    /// The unit `first..end` that page `i` (an index into `states`) belongs to: `i..i + 1` if it
    /// is not mapped.
    fn unit_of(&self, states: &[HmmPfn], i: usize) -> (usize, usize) {
        let Some(&state) = states.get(i) else {
            return (i, i + 1);
        };
        let order = state.order();
        if !state.is_dma_mapped() || order == 0 || order >= usize::BITS - 1 {
            return (i, i + 1);
        }
        let npages = 1usize << order;
        // CAST: The offset is below `npages`, a `usize`.
        let offset = (self.vpn(i) & index_u64(npages - 1)) as usize;
        let start = i.saturating_sub(offset);
        (start, start.saturating_add(npages))
    }

    /// The unlink calls for the mapped pages of `first..end`, which must consist of whole units
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
                let Some(class) = Self::class_of(states[i]) else {
                    i += 1;
                    continue;
                };
                let mut run_end = self.unit_of(states, i).1.min(end);
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

    /// The class of a mapped page that an unlink call can include.
    fn class_of(state: HmmPfn) -> Option<LinkClass> {
        match state.map_kind()? {
            MapKind::P2pBus => None,
            kind => Some(LinkClass {
                writable: state.is_writable(),
                kind,
            }),
        }
    }

    /// Makes pages `first..end` of `states` unreachable, and forgets them. Units that straddle an
    /// edge are unmapped whole. Pages the device may have written are marked dirty. Returns the
    /// number of pages that were mapped.
    pub(crate) fn unmap<O: MapOps>(
        &self,
        states: &mut [HmmPfn],
        first: usize,
        end: usize,
        ops: &mut O,
    ) -> usize {
        let end = end.min(states.len());
        if first >= end {
            return 0;
        }
        let (first, end) = self.expand_to_units(states, first, end);
        let mut walked = 0;
        for u in self.unlinks(states, first, end) {
            ops.unlink(&u);
            walked += u.npages;
            if walked >= RELAX_PAGES {
                walked = 0;
                ops.relax();
            }
        }
        // The device can no longer reach the pages: mark what it may have written, and forget.
        let mut n = 0;
        for (k, state) in states[first..end].iter_mut().enumerate() {
            if state.is_dma_mapped() {
                if state.is_writable() && state.map_kind() == Some(MapKind::Memory) {
                    ops.dirty(state.pfn());
                }
                n += 1;
            }
            *state = HmmPfn::EMPTY;
            if k % RELAX_PAGES == RELAX_PAGES - 1 {
                ops.relax();
            }
        }
        n
    }

    /// Unmaps the pages of the batch at `first` whose mapping no longer fits what
    /// `hmm_range_fault()` reports now (`faulted`), see [`must_remap`]. Returns the number of
    /// pages unmapped; the batch maps the valid ones again.
    pub(crate) fn drop_stale<O: MapOps>(
        &self,
        states: &mut [HmmPfn],
        first: usize,
        faulted: &[u64],
        want_write: bool,
        ops: &mut O,
    ) -> usize {
        let Some(batch) = first
            .checked_add(faulted.len())
            .and_then(|end| states.get(first..end))
        else {
            return 0;
        };
        // Only a mapped page can be stale, and most batches map pages for the first time: one
        // cheap look at the words first.
        if mapped_count(batch) == 0 {
            return 0;
        }
        let stale =
            |(old, &new): (&HmmPfn, &u64)| must_remap(*old, HmmPfn::from_raw(new), want_write);
        // Rare: look before acting.
        if !batch.iter().zip(faulted).any(stale) {
            return 0;
        }
        let mut n = 0;
        for (i, &word) in faulted.iter().enumerate() {
            if must_remap(states[first + i], HmmPfn::from_raw(word), want_write) {
                n += self.unmap(states, first + i, first + i + 1, ops);
            }
        }
        n
    }

    /// Maps the candidates of the batch of `len` pages at `first` that are not mapped yet, in
    /// the fewest units the rules allow, and syncs the IOTLB once for the batch.
    ///
    /// `candidate.get(i)` says what batch page `i` is to be mapped as (see [`Self::links`]); pages
    /// already mapped are skipped whatever it says. `links` is scratch space of at least `len`
    /// entries. If a link fails, what was linked before it stays mapped; if the sync fails,
    /// everything linked (and whatever else is mapped between) is unmapped again.
    pub(crate) fn map_batch<O: MapOps>(
        &self,
        states: &mut [HmmPfn],
        first: usize,
        len: usize,
        candidate: impl Candidates,
        links: &mut [Link],
        ops: &mut O,
    ) -> (Mapped, Result<(), O::Error>) {
        let already = first
            .checked_add(len)
            .and_then(|end| states.get(first..end))
            .map_or(0, mapped_count);
        self.map_counted(states, first, len, already, candidate, links, ops)
    }

    /// [`Self::drop_stale`], then [`Self::map_batch`] of [`MemoryWords`], for a batch of ordinary
    /// memory (no PCI peer pages): the words of the batch are read once to learn that nothing
    /// is mapped yet, the common case, instead of once per step. Returns the pages dropped.
    pub(crate) fn commit_memory<O: MapOps>(
        &self,
        states: &mut [HmmPfn],
        first: usize,
        faulted: &[u64],
        want_write: bool,
        links: &mut [Link],
        ops: &mut O,
    ) -> (usize, Mapped, Result<(), O::Error>) {
        let len = faulted.len();
        let Some(end) = first.checked_add(len).filter(|&end| end <= states.len()) else {
            return (0, Mapped::default(), Ok(()));
        };
        let mut already = mapped_count(&states[first..end]);
        let mut dropped = 0;
        if already > 0 {
            dropped = self.drop_stale(states, first, faulted, want_write, ops);
            already = mapped_count(&states[first..end]);
        }
        let mut words = MemoryWords {
            words: faulted,
            want_write,
        };
        // A single page not mapped yet (a NIC's 1-page fault) needs no planning: a unit larger
        // than the batch cannot be made, so the plan is one order-0 link, if the page is a
        // candidate at all.
        if let ([_], 0, Some(slot)) = (faulted, already, links.first_mut()) {
            let planned = match words.get(0) {
                Some(c) => {
                    *slot = Link {
                        first,
                        npages: 1,
                        pfn: c.pfn,
                        unit_order: 0,
                        class: c.class,
                    };
                    1
                }
                None => 0,
            };
            let (mapped, result) = self.apply(states, &links[..planned], Mapped::default(), ops);
            return (dropped, mapped, result);
        }
        let (mapped, result) = self.map_counted(states, first, len, already, words, links, ops);
        (dropped, mapped, result)
    }

    /// [`Self::map_batch`], knowing that `already` pages of the batch are mapped.
    #[allow(clippy::too_many_arguments)]
    fn map_counted<O: MapOps>(
        &self,
        states: &mut [HmmPfn],
        first: usize,
        len: usize,
        already: usize,
        candidate: impl Candidates,
        links: &mut [Link],
        ops: &mut O,
    ) -> (Mapped, Result<(), O::Error>) {
        let mut done = Mapped::default();
        let Some(batch) = first
            .checked_add(len)
            .and_then(|end| states.get(first..end))
        else {
            return (done, Ok(()));
        };
        if links.len() < len {
            return (done, Ok(()));
        }
        // Plan the links, reading the state words (which need no look in a batch of which
        // nothing is mapped yet, the common case)...
        done.already = already;
        let wanted = Unmapped {
            batch,
            fresh: already == 0,
            inner: candidate,
        };
        let mut planned = 0;
        for (slot, link) in links.iter_mut().zip(self.links(first, len, wanted)) {
            *slot = link;
            planned += 1;
        }
        // ... and make them.
        self.apply(states, &links[..planned], done, ops)
    }

    /// Makes the `planned` links, syncs the IOTLB once for all of them and records them in the
    /// state words; `done` counts what was mapped before (see [`Self::map_batch`]).
    fn apply<O: MapOps>(
        &self,
        states: &mut [HmmPfn],
        planned: &[Link],
        mut done: Mapped,
        ops: &mut O,
    ) -> (Mapped, Result<(), O::Error>) {
        // Make the calls, with one IOTLB sync for every link of the batch ...
        let (made, result) = ops.link(planned);
        let made = &planned[..made.min(planned.len())];
        let span = made
            .iter()
            .fold(None, |span: Option<(usize, usize)>, link| {
                let (lo, hi) = span.unwrap_or((link.first, link.first));
                Some((lo.min(link.first), hi.max(link.first + link.npages)))
            });
        let synced = span.map_or(Ok(()), |(lo, hi)| ops.sync(lo, hi));

        // ... and record what they mapped in the state words.
        for link in made {
            // Every word of a unit is the first one's with the next frame number.
            let head = HmmPfn::new_valid(link.pfn, link.class.writable, 0)
                .mapped(link.class.kind, link.unit_order);
            for (slot, k) in states[link.first..link.first + link.npages]
                .iter_mut()
                .zip(0..)
            {
                *slot = head.with_pfn_offset(k);
            }
            done.pages += link.npages;
            if link.class.kind == MapKind::P2pHostBridge {
                done.host_bridge_pages += link.npages;
            }
        }

        if let (Err(err), Some((lo, hi))) = (synced, span) {
            // The links may not be visible: take them all back.
            done.rolled_back = self.unmap(states, lo, hi, ops);
            return (done, Err(err));
        }
        (done, result)
    }
}

/// The sizes one link maps whole in IOVA mode, as a bitmap (bit `n`: `2^n` bytes) for pages of
/// `2^page_shift` bytes: blocks of up to `2^MAX_RUN_ORDER` order-0 pages, PMD-sized folios
/// (order 9) and PUD-sized hugetlb folios (order 18).
pub(crate) fn link_page_sizes(page_shift: u32) -> u64 {
    let blocks = (0..=MAX_RUN_ORDER).fold(0u64, |acc, order| acc | 1 << (page_shift + order));
    blocks | 1 << (page_shift + 9) | 1 << (page_shift + 18)
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

/// The candidates of `inner` that are not mapped yet.
struct Unmapped<'a, C> {
    /// The batch's state words.
    batch: &'a [HmmPfn],
    /// Nothing in the batch is mapped: no need to look.
    fresh: bool,
    inner: C,
}

impl<C: Candidates> Candidates for Unmapped<'_, C> {
    fn get(&mut self, i: usize) -> Option<Candidate> {
        if !self.fresh && self.batch.get(i).is_some_and(|s| s.is_dma_mapped()) {
            None
        } else {
            self.inner.get(i)
        }
    }

    fn continues(&mut self, i: usize, n: usize, head: Candidate) -> bool {
        if self.fresh {
            self.inner.continues(i, n, head)
        } else {
            continues_by_get(self, i, n, head)
        }
    }

    fn same_run(&mut self, i: usize, max: usize, head: Candidate) -> usize {
        if self.fresh {
            self.inner.same_run(i, max, head)
        } else {
            1
        }
    }
}

/// The number of words of `states` that say `DMA_MAPPED`.
fn mapped_count(states: &[HmmPfn]) -> usize {
    states.iter().filter(|s| s.is_dma_mapped()).count()
}

/// A `usize` page count or index as `u64`.
fn index_u64(i: usize) -> u64 {
    // CAST: `usize` is at most 64 bits wide on every target this module builds for.
    i as u64
}
