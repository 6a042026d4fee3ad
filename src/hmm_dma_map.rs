// SPDX-License-Identifier: GPL-2.0

//! The HMM DMA mapping manager: the device's view of one registration.
//!
//! For each registered page it keeps one state word ([`HmmPfn`], the `HMM_PFN_*` layout) and
//! makes the page reachable by the device when a fault asks for it, unreachable again when an
//! invalidation covers it. Where the device sits behind a translating IOMMU, the whole
//! registration gets one IOVA window when it is created and page `i` always lives at offset
//! `i * PAGE_SIZE` in it: mapping is a page-table update, with no IOVA allocation and no DMA
//! address to store. Elsewhere (no IOMMU, identity domain) pages are mapped one unit at a time
//! with `dma_map_phys()`, and their addresses kept only when `dma_need_unmap()` says they are
//! needed to unmap.
//!
//! Compared with the kernel's `hmm_dma_map_pfn()` it links physically contiguous pages and whole
//! folios in one call, syncs the IOTLB once per fault batch, maps read-only what the device may
//! only read (so the IOMMU, not just the device, enforces it), and reports every failure as an
//! errno. [`link_plan`](crate::link_plan) documents the grouping rules.
//!
//! The kernel's helper itself (`backend=kernel`), the pre-IOVA design (`legacy`: `dma_map_phys()`
//! and a stored address per page), no mapping at all (`none`, the cost of faulting alone) and no
//! ODP at all (`pinned`: every page pinned and linked at registration, as a classic RDMA memory
//! region) sit behind the same interface, for A/B tests and benchmarks.
//!
//! Every method runs under the registration's update lock (see `odp_umem.rs`) and allocates
//! nothing: that lock is taken by invalidations that may come from memory reclaim.

use kernel::{
    mm::Mm,
    page::{
        PAGE_SHIFT,
        PAGE_SIZE, //
    },
    prelude::*,
    time::{
        Instant,
        Monotonic, //
    },
};

use crate::{
    gauges,
    kapi::{
        dma::{
            Access,
            DmaDev,
            IovaWindow, //
        },
        gup::PinnedPages,
        hmm::HmmPage,
        kernel_hmm_dma::{
            KernelHmmDmaMap,
            P2pState, //
        },
        kvmem::StateArray,
        mm::set_pfn_dirty,
        p2pdma::any_p2p,
        params,
        sched::{
            cond_resched,
            fatal_signal_pending, //
        },
    },
    link_plan::{
        Candidate,
        Grouping,
        Link,
        LinkClass,
        MapOps,
        Mapped,
        Unlink,
        RELAX_PAGES, //
    },
    p2p::{
        P2pCache,
        P2pClass, //
    },
    pfn_flags::{
        HmmPfn,
        MapKind, //
    },
    uapi,
};

/// Which implementation maps the pages (`ODP_HMM_BACKEND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// This manager.
    Rust,
    /// The kernel's `hmm_dma_map_pfn()`.
    Kernel,
    /// `dma_map_phys()` per page with a stored address per page.
    Legacy,
    /// Fault only; nothing is mapped.
    None,
    /// Not ODP: every page pinned and mapped (as this manager maps) at registration.
    Pinned,
}

impl Backend {
    /// The backend for an `ODP_HMM_BACKEND_*` value (not `DEFAULT`).
    pub(crate) fn from_uapi(value: u32) -> Result<Self> {
        match value {
            uapi::BACKEND_RUST => Ok(Self::Rust),
            uapi::BACKEND_KERNEL => Ok(Self::Kernel),
            uapi::BACKEND_LEGACY => Ok(Self::Legacy),
            uapi::BACKEND_NONE => Ok(Self::None),
            uapi::BACKEND_PINNED => Ok(Self::Pinned),
            _ => Err(EINVAL),
        }
    }

    /// The name `backend=` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Kernel => "kernel",
            Self::Legacy => "legacy",
            Self::None => "none",
            Self::Pinned => "pinned",
        }
    }

    /// The `ODP_HMM_BACKEND_*` value.
    pub(crate) fn to_uapi(self) -> u32 {
        match self {
            Self::Rust => uapi::BACKEND_RUST,
            Self::Kernel => uapi::BACKEND_KERNEL,
            Self::Legacy => uapi::BACKEND_LEGACY,
            Self::None => uapi::BACKEND_NONE,
            Self::Pinned => uapi::BACKEND_PINNED,
        }
    }
}

/// Counters of what the manager did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MapCounters {
    /// Pages made reachable.
    pub(crate) pages_mapped: u64,
    /// Pages made unreachable.
    pub(crate) pages_unmapped: u64,
    /// `dma_iova_link()` or `dma_map_phys()` calls (the kernel backend: pages it mapped).
    pub(crate) link_calls: u64,
    /// `dma_iova_sync()` calls (the kernel backend syncs once per page it links).
    pub(crate) sync_calls: u64,
    /// `dma_iova_unlink()` or `dma_unmap_phys()` calls.
    pub(crate) unlink_calls: u64,
    /// Peer pages mapped through the host bridge.
    pub(crate) p2p_host_bridge_pages: u64,
    /// Peer pages mapped by bus address.
    pub(crate) p2p_bus_pages: u64,
    /// Peer pages the topology could not reach.
    pub(crate) p2p_refused_pages: u64,
    /// Nanoseconds spent in `dma_iova_sync()`.
    pub(crate) sync_ns: u64,
    /// Nanoseconds spent in `dma_iova_link()` or `dma_map_phys()`.
    pub(crate) link_ns: u64,
}

/// What a commit did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Committed {
    /// Pages newly mapped.
    pub(crate) mapped: usize,
    /// Pages of the batch mapped after the commit.
    pub(crate) valid: usize,
    /// Peer pages left unmapped because the device cannot reach them.
    pub(crate) refused: usize,
}

/// The device's view of a page, for snapshots and device accesses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageView {
    /// The state word.
    pub(crate) state: HmmPfn,
    /// The DMA address, when the page is mapped.
    pub(crate) dma_addr: Option<u64>,
}

/// Where the Rust manager's links go.
enum Sink<'a> {
    /// Into the IOVA window.
    Iova(&'a mut IovaWindow),
    /// Through `dma_map_phys()`, with the addresses kept if the device needs them to unmap.
    Map(Option<&'a mut StateArray<u64>>),
}

/// How the pages are mapped.
enum Store {
    /// This manager's state words, pages linked into an IOVA window.
    Iova {
        states: StateArray<HmmPfn>,
        window: IovaWindow,
    },
    /// This manager's state words, pages mapped with `dma_map_phys()`; the address of each
    /// mapped page when the device needs it to unmap.
    Map {
        states: StateArray<HmmPfn>,
        addrs: Option<StateArray<u64>>,
    },
    /// The kernel's `struct hmm_dma_map`.
    Kernel(KernelHmmDmaMap),
    /// Nothing is mapped; the state words only record what was faulted.
    Unmapped { states: StateArray<HmmPfn> },
}

impl Store {
    /// This manager's state words and where it maps pages (the Rust manager and the legacy
    /// design); `None` for the kernel's map and for one that maps nothing.
    fn own(&mut self) -> Option<(&mut [HmmPfn], Sink<'_>)> {
        match self {
            Store::Iova { states, window } => Some((&mut states[..], Sink::Iova(window))),
            Store::Map { states, addrs } => Some((&mut states[..], Sink::Map(addrs.as_mut()))),
            Store::Kernel(_) | Store::Unmapped { .. } => None,
        }
    }
}

/// The DMA mapping state of one registration.
///
/// # Invariants
///
/// - A page whose state word has `DMA_MAPPED` is reachable by the device at [`Self::page`]'s
///   address, and no page without it is (except inside [`Self::commit`] and [`Self::unmap`]).
/// - The page frame of a word with `DMA_MAPPED` is a page `hmm_range_fault()` reported for that
///   address under a sequence number that was still current when it was mapped; the mm cannot
///   unmap or free it without invalidating the registration first, and the invalidation unmaps
///   it (under the update lock every method runs under). So it stays mapped in the registered
///   address space as long as its word says `DMA_MAPPED`. In a pinned map (`pinned` is `Some`)
///   the invalidations unmap nothing: the pin, which outlives every mapping of the map, keeps
///   the page alive instead (the mm may unmap it; the device keeps the pinned page, as with any
///   pinned registration).
/// - Mapped pages form whole units, as recorded in their order fields (see `link_plan`).
pub(crate) struct HmmDmaMap {
    dev: DmaDev,
    backend: Backend,
    grouping: Grouping,
    store: Store,
    npages: usize,
    counters: MapCounters,
    /// What this map added to [`gauges::PAGES_MAPPED`] so far.
    published_pages: u64,
    /// What it added to [`gauges::IOVA_BYTES`] and [`gauges::BOOKKEEPING_BYTES`].
    published_bytes: (u64, u64),
    /// The pages of a pinned registration (`Backend::Pinned`), unpinned after everything was
    /// unmapped (a field drops after [`Drop::drop`] ran).
    pinned: Option<PinnedPages>,
}

/// The Rust manager's calls into the DMA API, counted and timed.
struct DmaOps<'a> {
    dev: &'a DmaDev,
    sink: Sink<'a>,
    counters: &'a mut MapCounters,
    /// Whether a long unmap may reschedule (not in a non-blocking invalidation).
    may_sleep: bool,
    /// Whether to time the link and sync calls (`dma_call_timers=`): a clock read each, which a
    /// one-page fault notices.
    timed: bool,
    /// When the last link call returned: the sync that follows it (see `map_batch`) starts
    /// there, which saves a clock read per batch.
    linked_at: Option<Instant<Monotonic>>,
    /// Whether to mark written pages dirty when they are unmapped: not for pinned pages, which
    /// `unpin_user_pages_dirty_lock()` marks when it unpins them (they may no longer be mapped
    /// in the mm, so the invalidation's rule for dirtying does not hold for them).
    mark_dirty: bool,
}

impl MapOps for DmaOps<'_> {
    type Error = Error;

    fn link(&mut self, links: &[Link]) -> (usize, Result) {
        // The calls are timed as one: a clock read per call would cost as much as a
        // `dma_map_phys()` in passthrough mode, where every page is its own call.
        let start = self.timed.then(Instant::<Monotonic>::now);
        let mut made = 0;
        let mut result = Ok(());
        for link in links {
            let access = Access::from(link.class);
            let linked = match &mut self.sink {
                // SAFETY: The link is a unit of pages that `hmm_range_fault()` reported and that
                // is not mapped yet (`link_plan` plans only unmapped pages, inside the
                // registration, so inside the window); the pages stay mapped in the mm until an
                // invalidation, which unlinks them first (the type invariants).
                Sink::Iova(window) => unsafe {
                    window.link(
                        phys(link.pfn),
                        bytes(link.first),
                        bytes(link.npages),
                        access,
                    )
                },
                // SAFETY: As above; the mapping is unmapped with exactly its address and size
                // (`link_plan` never merges `dma_map_phys()` units).
                Sink::Map(addrs) => unsafe {
                    self.dev
                        .map_phys(phys(link.pfn), bytes(link.npages), access)
                }
                .map(|addr| {
                    if let Some(addrs) = addrs {
                        let unit = &mut addrs[link.first..link.first + link.npages];
                        for (slot, k) in unit.iter_mut().zip(0..) {
                            *slot = addr + k * PAGE_SIZE as u64;
                        }
                    }
                }),
            };
            if let Err(err) = linked {
                result = Err(err);
                break;
            }
            made += 1;
        }
        if let Some(start) = start {
            let end = Instant::<Monotonic>::now();
            self.counters.link_ns += ns_between(start, end);
            self.linked_at = Some(end);
        }
        // CAST: A call count fits `u64`.
        self.counters.link_calls += made as u64 + u64::from(result.is_err());
        (made, result)
    }

    fn sync(&mut self, first: usize, end: usize) -> Result {
        let Sink::Iova(window) = &mut self.sink else {
            return Ok(());
        };
        self.counters.sync_calls += 1;
        if !self.timed {
            return window.sync(bytes(first), bytes(end - first));
        }
        let start = self
            .linked_at
            .take()
            .unwrap_or_else(Instant::<Monotonic>::now);
        let synced = window.sync(bytes(first), bytes(end - first));
        self.counters.sync_ns += elapsed_ns(start);
        synced
    }

    fn unlink(&mut self, unlink: &Unlink) {
        let access = Access::from(unlink.class);
        match &mut self.sink {
            Sink::Iova(window) => {
                // SAFETY: `link_plan` unlinks whole linked units of one class, all mapped.
                unsafe { window.unlink(bytes(unlink.first), bytes(unlink.npages), access) };
            }
            Sink::Map(Some(addrs)) => {
                // SAFETY: Without coalescing, an unlink is exactly one unit: the address and
                // size of one `map_phys` call, with its access.
                unsafe {
                    self.dev
                        .unmap_phys(addrs[unlink.first], bytes(unlink.npages), access)
                };
            }
            // dma-direct without unmap bookkeeping: nothing to undo.
            Sink::Map(None) => return,
        }
        self.counters.unlink_calls += 1;
    }

    fn dirty(&mut self, pfn: u64) {
        if !self.mark_dirty {
            return;
        }
        // SAFETY: `link_plan` marks only pages whose words say `DMA_MAPPED`, before it clears
        // them: they are still mapped in the mm (the type invariants of `HmmDmaMap`; pinned
        // pages are not marked here).
        unsafe { set_pfn_dirty(pfn) };
    }

    fn relax(&mut self) {
        if self.may_sleep {
            cond_resched();
        }
    }
}

/// Nanoseconds since `start`.
pub(crate) fn elapsed_ns(start: Instant<Monotonic>) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(0)
}

/// Nanoseconds from `start` to `end`.
fn ns_between(start: Instant<Monotonic>, end: Instant<Monotonic>) -> u64 {
    u64::try_from((end - start).as_nanos()).unwrap_or(0)
}

impl From<LinkClass> for Access {
    /// The direction and attributes of the calls that map or unmap pages of `class`.
    fn from(class: LinkClass) -> Self {
        Self {
            writable: class.writable,
            mmio: class.kind == MapKind::P2pHostBridge,
        }
    }
}

/// Pages a pinned registration maps per IOTLB sync (as a fault batch does).
const PIN_MAP_BATCH: usize = 512;

/// Bytes of `npages` pages.
fn bytes(npages: usize) -> usize {
    npages << PAGE_SHIFT
}

/// Physical address of page frame `pfn`.
fn phys(pfn: u64) -> u64 {
    pfn << PAGE_SHIFT
}

impl HmmDmaMap {
    /// Sets up the mapping of `npages` pages starting at virtual page `first_vpn`, for `dev`.
    ///
    /// # Errors
    ///
    /// `EOPNOTSUPP` if the device would bounce or need cache maintenance (HMM mappings cannot
    /// follow the DMA API's ownership rules), `ENOMEM`.
    pub(crate) fn new(
        dev: &DmaDev,
        backend: Backend,
        first_vpn: u64,
        npages: usize,
    ) -> Result<Self> {
        if backend != Backend::None && !dev.is_coherent_unbounced() {
            return Err(EOPNOTSUPP);
        }
        let window = match backend {
            Backend::Rust | Backend::Pinned => IovaWindow::try_alloc(dev, bytes(npages)),
            _ => None,
        };
        let coalesce = window.is_some();
        let store = match backend {
            Backend::Kernel => Store::Kernel(KernelHmmDmaMap::new(dev, npages)?),
            Backend::None => Store::Unmapped {
                states: StateArray::zeroed(npages)?,
            },
            Backend::Rust | Backend::Legacy | Backend::Pinned => {
                let states = StateArray::zeroed(npages)?;
                match window {
                    Some(window) => Store::Iova { states, window },
                    None => Store::Map {
                        states,
                        addrs: if dev.need_unmap() {
                            Some(StateArray::zeroed(npages)?)
                        } else {
                            None
                        },
                    },
                }
            }
        };
        let mut map = Self {
            dev: dev.clone(),
            backend,
            grouping: Grouping {
                first_vpn,
                folio_units: matches!(backend, Backend::Rust | Backend::Pinned),
                coalesce,
            },
            store,
            npages,
            counters: MapCounters::default(),
            published_pages: 0,
            published_bytes: (0, 0),
            pinned: None,
        };
        map.published_bytes = (map.iova_bytes(), map.bookkeeping_bytes());
        gauges::IOVA_BYTES.add(map.published_bytes.0);
        gauges::BOOKKEEPING_BYTES.add(map.published_bytes.1);
        Ok(map)
    }

    /// Pins the `npages` pages at user address `start` of `mm` (the current task's address
    /// space), virtual page `first_vpn` on, and maps them all for `dev`, writable if `writable`:
    /// a [`Backend::Pinned`] registration, whole before anyone can use it. The pages are mapped
    /// in the units this manager makes for a fault (folios whole, contiguous runs in aligned
    /// blocks), with one IOTLB sync per batch of [`PIN_MAP_BATCH`] pages.
    ///
    /// # Errors
    ///
    /// Those of [`Self::new`] and [`PinnedPages::pin`], `EINTR` on a fatal signal, mapping errors
    /// (what was pinned and mapped is undone).
    pub(crate) fn new_pinned(
        dev: &DmaDev,
        mm: &Mm,
        first_vpn: u64,
        start: u64,
        npages: usize,
        writable: bool,
    ) -> Result<Self> {
        let mut map = Self::new(dev, Backend::Pinned, first_vpn, npages)?;
        map.pinned = Some(PinnedPages::pin(mm, start, npages, writable)?);
        let grown = map.bookkeeping_bytes() - map.published_bytes.1;
        gauges::BOOKKEEPING_BYTES.add(grown);
        map.published_bytes.1 += grown;
        let batch = npages.min(PIN_MAP_BATCH);
        let mut words = KVec::from_elem(0u64, batch, GFP_KERNEL)?;
        let mut links = KVec::from_elem(Link::default(), batch, GFP_KERNEL)?;
        let mut first = 0;
        while first < npages {
            let n = (npages - first).min(batch);
            let pinned = map.pinned.as_ref().ok_or(EINVAL)?;
            for (k, word) in words[..n].iter_mut().enumerate() {
                let page = pinned.page(first + k).ok_or(EINVAL)?;
                // The word `hmm_range_fault()` would report, with the folio's order: the link
                // plan maps the folio whole only where all of it is in the batch and aligned.
                *word = HmmPfn::new_valid(page.pfn, writable, page.folio_order).raw();
            }
            map.commit(first, &words[..n], writable, &mut links[..n])?;
            first += n;
            if fatal_signal_pending() {
                return Err(EINTR);
            }
            cond_resched();
        }
        Ok(map)
    }

    /// Whether invalidations of the address space unmap this map's pages: not those of a pinned
    /// registration, which stay allocated and mapped for the device until it goes.
    pub(crate) fn follows_mm(&self) -> bool {
        self.pinned.is_none()
    }

    /// How many of pages `first..end` are mapped for the device.
    pub(crate) fn mapped_in(&self, first: usize, end: usize) -> usize {
        let end = end.min(self.npages);
        self.states()
            .get(first..end)
            .map_or(0, |s| s.iter().filter(|s| s.is_dma_mapped()).count())
    }

    /// Brings [`gauges::PAGES_MAPPED`] up to date with this map.
    fn publish_pages(&mut self) {
        let now = self.mapped_pages();
        if now >= self.published_pages {
            gauges::PAGES_MAPPED.add(now - self.published_pages);
        } else {
            gauges::PAGES_MAPPED.sub(self.published_pages - now);
        }
        self.published_pages = now;
    }

    /// The backend in use.
    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// `ODP_HMM_DMA_MODE_*`, and the DMA address of page 0 in IOVA mode.
    pub(crate) fn dma_mode(&mut self) -> (u32, u64) {
        match &mut self.store {
            Store::Iova { window, .. } => (uapi::DMA_MODE_IOVA, window.base()),
            Store::Map { .. } => (uapi::DMA_MODE_MAP, 0),
            Store::Kernel(map) => {
                if map.uses_iova() {
                    (uapi::DMA_MODE_IOVA, map.iova_base())
                } else {
                    (uapi::DMA_MODE_MAP, 0)
                }
            }
            Store::Unmapped { .. } => (uapi::DMA_MODE_NONE, 0),
        }
    }

    /// Counters so far.
    pub(crate) fn counters(&self) -> MapCounters {
        self.counters
    }

    /// IOVA space reserved, in bytes.
    pub(crate) fn iova_bytes(&mut self) -> u64 {
        match self.dma_mode().0 {
            // CAST: A registration's size fits `u64`.
            uapi::DMA_MODE_IOVA => bytes(self.npages) as u64,
            _ => 0,
        }
    }

    /// Kernel memory held for per-page state, in bytes.
    pub(crate) fn bookkeeping_bytes(&self) -> u64 {
        // A pinned registration also keeps a pointer per page (`struct page *`).
        let pins = self.pinned.as_ref().map_or(0, |_| size_of::<usize>());
        let per_page = pins
            + match &self.store {
                Store::Iova { .. } | Store::Unmapped { .. } => size_of::<HmmPfn>(),
                Store::Map { addrs, .. } => {
                    size_of::<HmmPfn>() + addrs.as_ref().map_or(0, |_| size_of::<u64>())
                }
                Store::Kernel(map) => {
                    size_of::<u64>()
                        + if map.has_dma_list() {
                            size_of::<u64>()
                        } else {
                            0
                        }
                }
            };
        // CAST: A registration's size fits `u64`.
        (per_page * self.npages) as u64
    }

    /// Every page's state word.
    fn states(&self) -> &[HmmPfn] {
        match &self.store {
            Store::Iova { states, .. } | Store::Map { states, .. } | Store::Unmapped { states } => {
                states
            }
            Store::Kernel(map) => map.pfns(),
        }
    }

    /// The state word of page `idx`.
    fn state(&self, idx: usize) -> HmmPfn {
        self.states().get(idx).copied().unwrap_or(HmmPfn::EMPTY)
    }

    /// Pages mapped now.
    pub(crate) fn mapped_pages(&self) -> u64 {
        // Every page made reachable is counted once, and once again when it is made unreachable.
        self.counters.pages_mapped - self.counters.pages_unmapped
    }

    /// The device's view of page `idx`; `p2p` caches the classification of peer pages.
    pub(crate) fn page(&mut self, idx: usize, p2p: &mut P2pCache<'_>) -> PageView {
        let state = self.state(idx);
        let dma_addr = match state.map_kind() {
            None => None,
            // SAFETY: The word is `DMA_MAPPED`: its page stays mapped until its invalidation,
            // which waits for the update lock we run under (the type invariants).
            Some(MapKind::P2pBus) => p2p.bus_address(unsafe { HmmPage::new(state.pfn()) }),
            Some(kind) => match &mut self.store {
                // CAST: A page index fits `u64`.
                Store::Iova { window, .. } => Some(window.base() + bytes(idx) as u64),
                Store::Map {
                    addrs: Some(addrs), ..
                } => addrs.get(idx).copied(),
                // dma-direct without unmap bookkeeping: mapping is stateless, so mapping the page
                // again yields its address (as `hmm_dma_map_pfn()` does).
                Store::Map { addrs: None, .. } => {
                    let class = LinkClass {
                        writable: state.is_writable(),
                        kind,
                    };
                    // SAFETY: The page is mapped for the device, so it stays mapped in the mm
                    // until it is unmapped here (the type invariants); dma-direct keeps no state
                    // (`need_unmap()` is false), so this mapping needs no unmap of its own.
                    unsafe {
                        self.dev
                            .map_phys(phys(state.pfn()), PAGE_SIZE, class.into())
                    }
                    .ok()
                }
                // SAFETY: The word is mapped, so it holds a live page (the type invariants); the
                // helper returns the address of a page it mapped already.
                Store::Kernel(map) => unsafe { map.map_pfn(idx, &mut P2pState::new()) }.ok(),
                Store::Unmapped { .. } => None,
            },
        };
        PageView { state, dma_addr }
    }

    /// Commits what `hmm_range_fault()` reported for pages `first..first + faulted.len()`: maps
    /// every valid page that is not mapped yet, writable if `want_write`.
    ///
    /// The caller holds the update lock and checked `mmu_interval_read_retry()` under it: the
    /// words describe pages that are mapped in the mm now. `links` is scratch space of at least
    /// `faulted.len()` entries, allocated by the caller outside the update lock.
    ///
    /// # Errors
    ///
    /// The first mapping failure (`EIO`, `ENOMEM`, ...). Pages mapped before it stay mapped, so
    /// the state stays consistent.
    pub(crate) fn commit(
        &mut self,
        first: usize,
        faulted: &[u64],
        want_write: bool,
        links: &mut [Link],
    ) -> Result<Committed> {
        let end = first.checked_add(faulted.len()).ok_or(EINVAL)?;
        if end > self.npages || links.len() < faulted.len() {
            return Err(EINVAL);
        }
        let mut done = Committed::default();
        // Peer pages are classified once per provider and batch, and only batches that hold
        // some are classified at all.
        let result = if any_p2p(faulted) {
            let dev = self.dev.clone();
            let mut cache = P2pCache::new(dev.pci());
            self.commit_with(
                first,
                faulted,
                want_write,
                links,
                Some(&mut cache),
                &mut done,
            )
        } else {
            self.commit_with(first, faulted, want_write, links, None, &mut done)
        };
        // What was mapped before a failure stays mapped, and counts.
        self.publish_pages();
        result?;
        Ok(done)
    }

    /// [`Self::commit`] by the backend, with the peer-page classification if the batch has any.
    fn commit_with(
        &mut self,
        first: usize,
        faulted: &[u64],
        want_write: bool,
        links: &mut [Link],
        p2p: Option<&mut P2pCache<'_>>,
        done: &mut Committed,
    ) -> Result {
        match self.backend {
            Backend::Kernel => self.commit_kernel(first, faulted, want_write, p2p, done),
            Backend::None => {
                done.valid = self.commit_unmapped(first, faulted);
                Ok(())
            }
            Backend::Rust if p2p.is_none() => match faulted {
                [word] => match self.commit_one(first, *word, want_write, done) {
                    Some(result) => result,
                    None => self.commit_own(first, faulted, want_write, links, p2p, done),
                },
                _ => self.commit_own(first, faulted, want_write, links, p2p, done),
            },
            Backend::Rust | Backend::Legacy | Backend::Pinned => {
                self.commit_own(first, faulted, want_write, links, p2p, done)
            }
        }
    }

    /// [`Self::commit`] of one page of ordinary memory that is not mapped yet (a NIC's 1-page
    /// fault), without the planner and its bookkeeping: the plan of a one-page batch is one
    /// order-0 unit (`Grouping::commit_memory` makes the same), here linked and synced, or mapped
    /// with `dma_map_phys()`, directly. `None` for anything else (the page is mapped or invalid,
    /// the calls are timed): the caller takes the general path.
    fn commit_one(
        &mut self,
        idx: usize,
        word: u64,
        want_write: bool,
        done: &mut Committed,
    ) -> Option<Result> {
        let (states, sink) = self.store.own()?;
        let state = states.get_mut(idx)?;
        let new = HmmPfn::from_raw(word);
        if state.is_dma_mapped() || !new.is_valid() || new.is_error() || params::dma_call_timers() {
            return None;
        }
        let writable = want_write && new.is_writable();
        let access = Access {
            writable,
            mmio: false,
        };
        self.counters.link_calls += 1;
        match sink {
            Sink::Iova(window) => {
                // SAFETY: The page is one `hmm_range_fault()` reported for this batch, checked
                // under the update lock, not mapped (its word says so), inside the registration
                // (`get_mut`), so inside the window; it stays mapped in the mm until an
                // invalidation, which unlinks it first (the type invariants).
                let linked = unsafe { window.link(phys(new.pfn()), bytes(idx), PAGE_SIZE, access) };
                if let Err(err) = linked {
                    return Some(Err(err));
                }
                self.counters.sync_calls += 1;
                if let Err(err) = window.sync(bytes(idx), PAGE_SIZE) {
                    // The link may not be visible: take it back, as `Grouping::map_batch` does.
                    // SAFETY: Exactly the unit just linked, with its access.
                    unsafe { window.unlink(bytes(idx), PAGE_SIZE, access) };
                    self.counters.unlink_calls += 1;
                    if writable {
                        // SAFETY: The page is still mapped in the mm (see above).
                        unsafe { set_pfn_dirty(new.pfn()) };
                    }
                    return Some(Err(err));
                }
            }
            Sink::Map(addrs) => {
                // SAFETY: As above; the mapping is unmapped with exactly this address and size
                // (an order-0 unit of its own).
                let mapped = unsafe { self.dev.map_phys(phys(new.pfn()), PAGE_SIZE, access) };
                match (mapped, addrs) {
                    (Err(err), _) => return Some(Err(err)),
                    (Ok(addr), Some(addrs)) => match addrs.get_mut(idx) {
                        Some(slot) => *slot = addr,
                        None => {
                            // Never: the addresses have a slot per state word.
                            // SAFETY: The mapping just made, whole, with its access.
                            unsafe { self.dev.unmap_phys(addr, PAGE_SIZE, access) };
                            return Some(Err(EINVAL));
                        }
                    },
                    // dma-direct without unmap bookkeeping: nothing to keep.
                    (Ok(_), None) => {}
                }
            }
        }
        *state = HmmPfn::new_valid(new.pfn(), writable, 0).mapped(MapKind::Memory, 0);
        self.counters.pages_mapped += 1;
        done.mapped += 1;
        done.valid = 1;
        Some(Ok(()))
    }

    /// The state words and the DMA calls of the Rust manager and the legacy design.
    fn own_parts(&mut self, may_sleep: bool) -> Option<(&mut [HmmPfn], DmaOps<'_>, Grouping)> {
        let Self {
            dev,
            grouping,
            store,
            counters,
            pinned,
            ..
        } = self;
        let (states, sink) = store.own()?;
        let ops = DmaOps {
            dev,
            sink,
            counters,
            may_sleep,
            timed: params::dma_call_timers(),
            linked_at: None,
            mark_dirty: pinned.is_none(),
        };
        Some((states, ops, *grouping))
    }

    /// [`Self::commit`] for the Rust manager and the legacy design.
    fn commit_own(
        &mut self,
        first: usize,
        faulted: &[u64],
        want_write: bool,
        links: &mut [Link],
        p2p: Option<&mut P2pCache<'_>>,
        done: &mut Committed,
    ) -> Result {
        let Some((states, mut ops, grouping)) = self.own_parts(true) else {
            return Err(EINVAL);
        };
        let n = faulted.len();
        let Some(p2p) = p2p else {
            // Ordinary memory only (nearly every batch): straight from the words. Mappings that
            // no longer fit are dropped first (see below).
            let (dropped, mapped, result) =
                grouping.commit_memory(states, first, faulted, want_write, links, &mut ops);
            return self.committed(dropped, mapped, result, done);
        };

        // Mappings that no longer fit are dropped first: a read-only page to be written, or
        // (never expected) a different page under the same address. Whole units go; the batch
        // maps their pages again.
        let dropped = grouping.drop_stale(states, first, faulted, want_write, &mut ops);

        // Peer pages reached by bus address need no link, unreachable ones are refused: settled
        // first, in the rare batches that hold peer pages.
        for (old, &word) in states[first..first + n].iter_mut().zip(faulted) {
            let new = HmmPfn::from_raw(word);
            if !new.is_valid() || new.is_error() || old.is_dma_mapped() {
                continue;
            }
            // SAFETY: A valid word of this batch, which the caller checked under the update
            // lock (see `commit`).
            match p2p.classify(unsafe { HmmPage::new(new.pfn()) }) {
                P2pClass::BusAddr => {
                    let writable = want_write && new.is_writable();
                    *old = HmmPfn::new_valid(new.pfn(), writable, 0).mapped(MapKind::P2pBus, 0);
                    ops.counters.p2p_bus_pages += 1;
                    ops.counters.pages_mapped += 1;
                    done.mapped += 1;
                }
                P2pClass::NotSupported => {
                    ops.counters.p2p_refused_pages += 1;
                    done.refused += 1;
                }
                P2pClass::Memory | P2pClass::HostBridge => {}
            }
        }

        let candidate = |i: usize| -> Option<Candidate> {
            let new = HmmPfn::from_raw(faulted[i]);
            if !new.is_valid() || new.is_error() {
                return None;
            }
            // SAFETY: As above.
            let page = unsafe { HmmPage::new(new.pfn()) };
            let kind = match p2p.classify(page) {
                P2pClass::Memory => MapKind::Memory,
                P2pClass::HostBridge => MapKind::P2pHostBridge,
                P2pClass::BusAddr | P2pClass::NotSupported => return None,
            };
            Some(Candidate {
                pfn: new.pfn(),
                order: new.order(),
                class: LinkClass {
                    writable: want_write && new.is_writable(),
                    kind,
                },
            })
        };
        let (mapped, result) = grouping.map_batch(states, first, n, candidate, links, &mut ops);
        self.committed(dropped, mapped, result, done)
    }

    /// The end of [`Self::commit_own`]: counts what it `dropped` and `mapped`, flushes a lazy
    /// domain after `dma_unmap_phys()` calls, returns `result`.
    fn committed(
        &mut self,
        dropped: usize,
        mapped: Mapped,
        result: Result,
        done: &mut Committed,
    ) -> Result {
        let counters = &mut self.counters;
        // CAST: Page counts fit `u64`.
        counters.pages_unmapped += (dropped + mapped.rolled_back) as u64;
        counters.pages_mapped += mapped.pages as u64;
        counters.p2p_host_bridge_pages += mapped.host_bridge_pages as u64;
        done.mapped += mapped.pages - mapped.rolled_back.min(mapped.pages);
        // Mapped now: what was (peer pages reached by bus address included), and what was linked.
        done.valid = mapped.already + mapped.pages - mapped.rolled_back.min(mapped.pages);
        let flush = matches!(self.store, Store::Map { .. }) && dropped + mapped.rolled_back > 0;
        if flush {
            self.dev.flush_lazy();
        }
        result
    }

    /// [`Self::commit`] through the kernel's `hmm_dma_map_pfn()`, one page at a time.
    fn commit_kernel(
        &mut self,
        first: usize,
        faulted: &[u64],
        want_write: bool,
        mut p2p: Option<&mut P2pCache<'_>>,
        done: &mut Committed,
    ) -> Result {
        let Store::Kernel(map) = &mut self.store else {
            return Err(EINVAL);
        };
        let iova = map.uses_iova();
        let mut state = P2pState::new();
        for (i, &word) in faulted.iter().enumerate() {
            let idx = first + i;
            let new = HmmPfn::from_raw(word);
            let old = map.pfns()[idx];
            let was_mapped = old.is_dma_mapped();
            if !new.is_valid() || new.is_error() {
                done.valid += usize::from(was_mapped);
                continue;
            }
            // Take the word from HMM (the sticky DMA bits stay). The device may write only what
            // a write fault mapped (the kernel helper maps everything bidirectional).
            let writable = (was_mapped && old.is_writable()) || want_write;
            map.set_word(idx, new.with_write(writable && new.is_writable()));
            if was_mapped {
                done.valid += 1;
                continue;
            }
            // SAFETY: The word now holds the page `hmm_range_fault()` reported, and the caller
            // checked under the update lock that the range did not change since: it stays mapped
            // until an invalidation, which unmaps it first (the type invariants).
            if let Err(err) = unsafe { map.map_pfn(idx, &mut state) } {
                map.set_word(idx, HmmPfn::EMPTY);
                // The kernel helper refuses a peer page it cannot reach with a bare mapping
                // error: report it as such, not as an I/O error.
                // SAFETY: A valid word of this batch, which the caller checked under the update
                // lock (see `commit`).
                let page = unsafe { HmmPage::new(new.pfn()) };
                let class = p2p.as_mut().map_or(P2pClass::Memory, |p| p.classify(page));
                if class != P2pClass::Memory {
                    self.counters.p2p_refused_pages += 1;
                    done.refused += 1;
                    continue;
                }
                return Err(err);
            }
            let mapped = map.pfns()[idx];
            self.counters.link_calls += 1;
            if iova && mapped.map_kind() != Some(MapKind::P2pBus) {
                self.counters.sync_calls += 1;
            }
            match mapped.map_kind() {
                Some(MapKind::P2pBus) => self.counters.p2p_bus_pages += 1,
                Some(MapKind::P2pHostBridge) => self.counters.p2p_host_bridge_pages += 1,
                _ => {}
            }
            self.counters.pages_mapped += 1;
            done.mapped += 1;
            done.valid += 1;
        }
        Ok(())
    }

    /// [`Self::commit`] without mapping: records what was faulted (the benchmark floor).
    /// Returns the number of valid pages.
    fn commit_unmapped(&mut self, first: usize, faulted: &[u64]) -> usize {
        let Store::Unmapped { states } = &mut self.store else {
            return 0;
        };
        let mut valid = 0;
        for (slot, &word) in states[first..first + faulted.len()].iter_mut().zip(faulted) {
            let new = HmmPfn::from_raw(word);
            *slot = if new.is_valid() && !new.is_error() {
                valid += 1;
                HmmPfn::new_valid(new.pfn(), new.is_writable(), new.order())
            } else {
                HmmPfn::EMPTY
            };
        }
        valid
    }

    /// Makes pages `first..end` unreachable by the device, and forgets them: when this returns
    /// the device can reach none of them, whatever the IOMMU mode. Units that straddle an edge
    /// are unmapped whole. Pages the device may have written are marked dirty. `may_sleep` says
    /// whether a long walk may reschedule. Returns the number of pages unmapped.
    pub(crate) fn unmap(&mut self, first: usize, end: usize, may_sleep: bool) -> usize {
        let n = self.unmap_pages(first, end, may_sleep);
        self.publish_pages();
        n
    }

    /// [`Self::unmap`], without the gauge.
    fn unmap_pages(&mut self, first: usize, end: usize, may_sleep: bool) -> usize {
        let end = end.min(self.npages);
        if first >= end {
            return 0;
        }
        if let Some((states, mut ops, grouping)) = self.own_parts(may_sleep) {
            let unlinks_before = ops.counters.unlink_calls;
            let n = grouping.unmap(states, first, end, &mut ops);
            // CAST: A page count fits `u64`.
            ops.counters.pages_unmapped += n as u64;
            // `dma_unmap_phys()` on a lazy domain leaves the IOTLB flush to a timer.
            let flush =
                matches!(ops.sink, Sink::Map(_)) && ops.counters.unlink_calls != unlinks_before;
            if flush {
                self.dev.flush_lazy();
            }
            return n;
        }
        let n = match &mut self.store {
            Store::Kernel(map) => {
                let mut n = 0;
                for idx in first..end {
                    let word = map.pfns()[idx];
                    if map.unmap_pfn(idx) {
                        n += 1;
                        self.counters.unlink_calls +=
                            u64::from(word.map_kind() != Some(MapKind::P2pBus));
                        if word.is_writable() && word.map_kind() == Some(MapKind::Memory) {
                            // SAFETY: The word was mapped until now: its page is still mapped in
                            // the mm (the type invariants).
                            unsafe { set_pfn_dirty(word.pfn()) };
                        }
                    }
                    map.set_word(idx, HmmPfn::EMPTY);
                    if may_sleep && idx % RELAX_PAGES == RELAX_PAGES - 1 {
                        cond_resched();
                    }
                }
                // Without an IOVA window the helper unmaps with `dma_unmap_phys()`, which a
                // lazy domain does not flush.
                if n > 0 && !map.uses_iova() {
                    self.dev.flush_lazy();
                }
                n
            }
            Store::Unmapped { states } => {
                for s in &mut states[first..end] {
                    *s = HmmPfn::EMPTY;
                }
                return 0;
            }
            Store::Iova { .. } | Store::Map { .. } => 0,
        };
        // CAST: A page count fits `u64`.
        self.counters.pages_unmapped += n as u64;
        n
    }

    /// The pages an unmap of `first..end` unmaps: widened to whole link units (see `link_plan`).
    pub(crate) fn unit_span(&self, first: usize, end: usize) -> (usize, usize) {
        let end = end.min(self.npages);
        match &self.store {
            Store::Iova { states, .. } | Store::Map { states, .. } => {
                self.grouping.expand_to_units(states, first, end)
            }
            Store::Kernel(_) | Store::Unmapped { .. } => (first, end),
        }
    }

    /// Unmaps every page (before the registration goes, or the device does).
    pub(crate) fn unmap_all(&mut self) -> usize {
        self.unmap(0, self.npages, true)
    }
}

impl Drop for HmmDmaMap {
    fn drop(&mut self) {
        // `dma_iova_free()` and `hmm_dma_map_free()` require that nothing is mapped any more.
        self.unmap_all();
        gauges::IOVA_BYTES.sub(self.published_bytes.0);
        gauges::BOOKKEEPING_BYTES.sub(self.published_bytes.1);
    }
}
