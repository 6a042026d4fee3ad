// SPDX-License-Identifier: GPL-2.0

//! ODP registrations: ranges of a process's memory the device may access on demand.
//!
//! A registration pins nothing. It watches its range with an mmu interval notifier; pages are
//! faulted with `hmm_range_fault()` and mapped for the device when asked (a fault call, or a
//! device access that finds them unmapped, as a NIC page fault would), and unmapped when the mm
//! invalidates them (munmap, mprotect, migration, copy-on-write, reclaim, exit).
//!
//! # Locking
//!
//! [`UmemState::inner`] is the registration's *update lock* in the sense of
//! `Documentation/mm/hmm.rst`: a fault commits what `hmm_range_fault()` read only under it and
//! only if `mmu_interval_read_retry()` (checked under it) says nothing changed; the invalidation
//! callback takes it to publish its sequence number and unmap. It protects the mapping state
//! ([`HmmDmaMap`]), the P2P cache and the counters. Lock order:
//!
//! 1. the device engine lock (`DmaDevice::engine`), held across the transfers of a device copy
//!    (never across a fault: a copy faults its pages in first, then takes it);
//! 2. the mmap lock, read side, only around `hmm_range_fault()`, never with `inner` or the engine
//!    lock held;
//! 3. `inner`.
//!
//! The mm calls the callback with its own locks held (the mmap lock during munmap) and from
//! memory reclaim. So under `inner` nothing allocates (allocation could recurse into reclaim and
//! this very callback; lockdep is told so at registration), nothing touches user memory (a fault
//! could need the mmap lock or invalidate this registration), and the callback only try-locks it
//! when it may not sleep.

use kernel::{
    mm::{
        Mm,
        MmWithUser, //
    },
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        aref::ARef,
        Arc,
        Mutex, //
    },
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
};

use crate::{
    dma_device::DmaDevice,
    gauges,
    hmm_dma_map::{
        elapsed_ns,
        Backend,
        Committed,
        HmmDmaMap,
        MapCounters, //
    },
    kapi::{
        hmm::{
            self,
            Request, //
        },
        interval_notifier::{
            Event,
            IntervalNotifier,
            Invalidate,
            Invalidation, //
        },
        mm::lockdep_prime_reclaim,
        sched::fatal_signal_pending,
    },
    link_plan::Link,
    p2p::P2pCache,
    pfn_flags::HmmPfn,
    range::{
        dma_segments,
        DmaSeg,
        PageSpan,
        UserRange, //
    },
    uapi,
};

/// Pages faulted per `hmm_range_fault()` call (2 MiB): one update-lock hold and one IOTLB sync
/// each, and the scratch buffers stay small.
pub(crate) const FAULT_BATCH: usize = 512;

/// How long a fault keeps retrying a range that keeps changing (`HMM_RANGE_DEFAULT_TIMEOUT`).
const FAULT_TIMEOUT_MS: i64 = 1000;

/// Pages one device access may span: `ODP_HMM_DMA_MAX_LEN` (one page) at any offset.
const MAX_ACCESS_PAGES: usize = 2;

/// Counters of one registration, besides the mapping manager's.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UmemCounters {
    /// Commits of `hmm_range_fault()` results.
    pub(crate) faults: u64,
    /// Pages `hmm_range_fault()` reported valid.
    pub(crate) pages_faulted: u64,
    /// Invalidations that unmapped something.
    pub(crate) invalidations: u64,
    /// Invalidations that found nothing to unmap.
    pub(crate) invalidations_ignored: u64,
    /// Invalidations that must not sleep (the OOM reaper), whatever they unmapped.
    pub(crate) invalidations_nonblocking: u64,
    /// Faults repeated because the range changed under them.
    pub(crate) fault_retries: u64,
    /// Nanoseconds spent in `hmm_range_fault()`.
    pub(crate) fault_ns: u64,
    /// Nanoseconds spent committing faults (mapping).
    pub(crate) map_ns: u64,
    /// Nanoseconds invalidations spent unmapping.
    pub(crate) unmap_ns: u64,
}

/// Everything `ODP_HMM_IOC_STATS` reports about one registration.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UmemStats {
    /// The registration's own counters.
    pub(crate) umem: UmemCounters,
    /// The mapping manager's counters.
    pub(crate) map: MapCounters,
    /// IOVA reserved now.
    pub(crate) iova_bytes: u64,
    /// Per-page state held now.
    pub(crate) bookkeeping_bytes: u64,
    /// Pages mapped now.
    pub(crate) pages_now: u64,
}

/// What a fault call did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Faulted {
    /// Pages newly mapped.
    pub(crate) mapped: u64,
    /// Pages of the range mapped afterwards.
    pub(crate) valid: u64,
    /// Peer pages the device cannot reach (left unmapped).
    pub(crate) refused: u64,
}

/// Scratch space of one fault batch.
struct Scratch<'a> {
    /// What `hmm_range_fault()` reports.
    words: &'a mut [u64],
    /// The links the mapping manager plans.
    links: &'a mut [Link],
}

impl Scratch<'_> {
    fn reborrow(&mut self) -> Scratch<'_> {
        Scratch {
            words: self.words,
            links: self.links,
        }
    }
}

/// Why a registration no longer maps anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Revoked {
    /// It was unregistered (or its file closed): later calls on it fail with `ENOENT`.
    Unregistered,
    /// Its device is going away: later calls fail with `ENODEV`.
    DeviceGone,
}

impl From<Revoked> for Error {
    fn from(why: Revoked) -> Self {
        match why {
            Revoked::Unregistered => ENOENT,
            Revoked::DeviceGone => ENODEV,
        }
    }
}

/// The mapping of a registration, or why there is none any more.
struct MapSlot {
    /// `None` once revoked.
    map: Option<HmmDmaMap>,
    /// Why, once revoked.
    revoked: Revoked,
}

impl MapSlot {
    /// The live mapping; `ENOENT` once unregistered, `ENODEV` once the device went.
    fn live(&mut self) -> Result<&mut HmmDmaMap> {
        self.map.as_mut().ok_or(self.revoked.into())
    }

    /// Takes the mapping out, if it is still there, for the reason `why`.
    fn revoke(&mut self, why: Revoked) -> Option<HmmDmaMap> {
        let map = self.map.take();
        if map.is_some() {
            self.revoked = why;
        }
        map
    }
}

/// The state the update lock protects.
struct Inner {
    map: MapSlot,
    counters: UmemCounters,
}

/// The part of a registration the invalidation callback works on.
#[pin_data]
pub(crate) struct UmemState {
    /// The update lock.
    #[pin]
    inner: Mutex<Inner>,
    range: UserRange,
}

impl Invalidate for UmemState {
    fn invalidate(&self, inv: &Invalidation<'_>) -> bool {
        // Where the callback must not sleep, a busy lock makes the caller (the OOM reaper) try
        // again later rather than wait.
        let blockable = inv.blockable();
        let mut inner = if blockable {
            self.inner.lock()
        } else {
            match self.inner.try_lock() {
                Some(inner) => inner,
                None => return false,
            }
        };
        if !blockable {
            inner.counters.invalidations_nonblocking += 1;
        }
        inv.set_seq();
        let span = match inv.event() {
            Event::Release => Some(PageSpan {
                first: 0,
                end: self.range.npages(),
            }),
            Event::Other => self.range.overlap(inv.start(), inv.end()),
        };
        let start = Instant::<Monotonic>::now();
        let unmapped = match (span, inner.map.live()) {
            (Some(span), Ok(map)) => map.unmap(span.first, span.end, blockable),
            _ => 0,
        };
        inner.counters.unmap_ns += elapsed_ns(start);
        if unmapped > 0 {
            inner.counters.invalidations += 1;
        } else {
            inner.counters.invalidations_ignored += 1;
        }
        true
    }
}

/// One ODP registration.
pub(crate) struct OdpUmem {
    notifier: IntervalNotifier<UmemState>,
    /// The registered address space (an `mmgrab` reference; faults take `mmget`).
    mm: ARef<Mm>,
    dev: Arc<DmaDevice>,
    writable: bool,
}

impl OdpUmem {
    /// Registers `range` of `mm` (which must be fully mapped now) for `dev`.
    ///
    /// # Errors
    ///
    /// `EFAULT` if part of the range is not mapped, `EOPNOTSUPP` if the device cannot take HMM
    /// mappings, `ENODEV` if it is going away, `ENOMEM`.
    pub(crate) fn new(
        mm: &MmWithUser,
        dev: Arc<DmaDevice>,
        range: UserRange,
        writable: bool,
        backend: Backend,
    ) -> Result<Arc<Self>> {
        check_mapped(mm, &range)?;
        let map = HmmDmaMap::new(dev.dma(), backend, range.first_vpn(), range.npages())?;
        let notifier = IntervalNotifier::insert(
            mm,
            range.start(),
            range.len(),
            try_pin_init!(UmemState {
                inner <- new_mutex!(
                    Inner {
                        map: MapSlot {
                            map: Some(map),
                            revoked: Revoked::Unregistered,
                        },
                        counters: UmemCounters::default(),
                    },
                    "UmemState::inner"
                ),
                range,
            }),
        )?;
        let umem = Arc::new(
            Self {
                notifier,
                mm: ARef::from(&**mm),
                dev,
                writable,
            },
            GFP_KERNEL,
        )?;
        gauges::REGISTRATIONS.add(1);
        lockdep_prime_reclaim(&umem.state().inner);
        umem.dev.add_user(umem.clone())?;
        Ok(umem)
    }

    fn state(&self) -> &UmemState {
        self.notifier.data()
    }

    /// The registered range.
    pub(crate) fn range(&self) -> &UserRange {
        &self.state().range
    }

    /// The device the registration maps for.
    pub(crate) fn device(&self) -> &Arc<DmaDevice> {
        &self.dev
    }

    /// The backend, `ODP_HMM_DMA_MODE_*` and the IOVA of the first page (0 if none).
    pub(crate) fn mapping_info(&self) -> Result<(Backend, u32, u64)> {
        let mut inner = self.state().inner.lock();
        let map = inner.map.live()?;
        let (mode, base) = map.dma_mode();
        Ok((map.backend(), mode, base))
    }

    /// Faults pages `span` in as `request` asks and maps them for the device.
    ///
    /// # Errors
    ///
    /// `EPERM` for a write to a read-only registration or mapping, `EFAULT` if a page cannot be
    /// faulted in, `ESRCH` if the address space exited, `ENOENT` once unregistered, `ENODEV` once
    /// the device went, `EBUSY` if a batch kept changing for [`FAULT_TIMEOUT_MS`], `EINTR` if the
    /// caller was sent a fatal signal (checked between batches and retries), and mapping errors.
    pub(crate) fn fault(&self, span: PageSpan, request: Request) -> Result<Faulted> {
        if request == Request::Write && !self.writable {
            return Err(EPERM);
        }
        let mm = self.mm.mmget_not_zero().ok_or(ESRCH)?;
        // Scratch space, allocated here: nothing may allocate under the update lock.
        let batch = span.len().min(FAULT_BATCH);
        let mut words = KVec::from_elem(0u64, batch, GFP_KERNEL)?;
        let mut links = KVec::from_elem(Link::default(), batch, GFP_KERNEL)?;
        let mut done = Faulted::default();
        for chunk in span.chunks(FAULT_BATCH) {
            if fatal_signal_pending() {
                return Err(EINTR);
            }
            let begun = Instant::<Monotonic>::now();
            let mut scratch = Scratch {
                words: &mut words[..chunk.len()],
                links: &mut links[..chunk.len()],
            };
            let committed = loop {
                if let Some(c) = self.fault_batch(&mm, chunk, request, scratch.reborrow())? {
                    break c;
                }
                self.state().inner.lock().counters.fault_retries += 1;
                if begun.elapsed() > Delta::from_millis(FAULT_TIMEOUT_MS) {
                    return Err(EBUSY);
                }
                if fatal_signal_pending() {
                    return Err(EINTR);
                }
            };
            // CAST: Page counts fit `u64`.
            done.mapped += committed.mapped as u64;
            done.valid += committed.valid as u64;
            done.refused += committed.refused as u64;
        }
        Ok(done)
    }

    /// One attempt at faulting and committing `chunk`: `None` if the range changed meanwhile
    /// (the caller retries), as the `mmu_interval_read_begin()`/`read_retry()` contract asks.
    fn fault_batch(
        &self,
        mm: &MmWithUser,
        chunk: PageSpan,
        request: Request,
        scratch: Scratch<'_>,
    ) -> Result<Option<Committed>> {
        let state = self.state();
        let seq = self.notifier.read_begin();
        scratch.words.fill(0);
        let walk = Instant::<Monotonic>::now();
        let read = {
            let mmap = mm.mmap_read_lock();
            let start = state.range.addr_of(chunk.first);
            hmm::range_fault(&self.notifier, seq, start, scratch.words, request, &mmap)
        };
        let walk_ns = elapsed_ns(walk);
        match read {
            Err(err) if err == EBUSY => return Ok(None),
            other => other?,
        }
        let mut inner = state.inner.lock();
        inner.counters.fault_ns += walk_ns;
        if self.notifier.read_retry(seq) {
            return Ok(None);
        }
        let committing = Instant::<Monotonic>::now();
        let Inner { map, counters } = &mut *inner;
        let map = map.live()?;
        counters.faults += 1;
        let valid = scratch
            .words
            .iter()
            .filter(|&&w| HmmPfn::from_raw(w).is_valid());
        // CAST: A page count fits `u64`.
        counters.pages_faulted += valid.count() as u64;
        let want_write = request == Request::Write;
        let committed = map.commit(chunk.first, scratch.words, want_write, scratch.links)?;
        counters.map_ns += elapsed_ns(committing);
        Ok(Some(committed))
    }

    /// Fills `out` with the device's view of pages `first..first + out.len()`.
    pub(crate) fn snapshot(&self, first: usize, out: &mut [uapi::Page]) -> Result {
        let mut p2p = P2pCache::new(self.dev.dma().pci());
        let mut inner = self.state().inner.lock();
        let map = inner.map.live()?;
        for (i, slot) in out.iter_mut().enumerate() {
            let view = map.page(first + i, &mut p2p);
            *slot = page_entry(view.state, view.dma_addr);
        }
        Ok(())
    }

    /// The pages of a device access of `len` bytes (1..=one page) at user address `addr`.
    ///
    /// # Errors
    ///
    /// `EOVERFLOW` if the access wraps the address space, `ERANGE` if it leaves the
    /// registration, `E2BIG` if it spans more pages than a device access may.
    fn access_span(&self, addr: u64, len: usize) -> Result<PageSpan> {
        let page = PAGE_SIZE as u64;
        // CAST: `len` is at most `ODP_HMM_DMA_MAX_LEN`.
        let end = addr.checked_add(len as u64).ok_or(EOVERFLOW)?;
        let first_page = addr - addr % page;
        let end_page = end.checked_next_multiple_of(page).ok_or(EOVERFLOW)?;
        let span = self
            .range()
            .sub_range(first_page, end_page - first_page)
            .map_err(crate::device::range_errno)?;
        if span.len() > MAX_ACCESS_PAGES {
            return Err(E2BIG);
        }
        Ok(span)
    }

    /// Makes the pages of a device access of `len` bytes at `addr` reachable (writable if
    /// `write`), faulting the missing ones in, as a device with ODP would on a page fault.
    /// Returns the number of pages that were missing. Takes no device lock: faulting may wait
    /// for the mm (a slow file, a userfaultfd handler).
    ///
    /// # Errors
    ///
    /// As [`Self::fault`], and those of the range checks (`EOVERFLOW`, `ERANGE`, `E2BIG`);
    /// `EREMOTEIO` if a page is peer memory the device cannot reach.
    pub(crate) fn prepare_access(&self, addr: u64, len: usize, write: bool) -> Result<u64> {
        let span = self.access_span(addr, len)?;
        let missing = {
            let mut p2p = P2pCache::new(self.dev.dma().pci());
            let mut inner = self.state().inner.lock();
            let map = inner.map.live()?;
            (span.first..span.end)
                .filter(|&idx| {
                    let view = map.page(idx, &mut p2p);
                    view.dma_addr.is_none() || (write && !view.state.is_writable())
                })
                .count()
        };
        if missing > 0 {
            let request = if write { Request::Write } else { Request::Read };
            if self.fault(span, request)?.refused > 0 {
                return Err(EREMOTEIO);
            }
        }
        // CAST: At most `MAX_ACCESS_PAGES`.
        Ok(missing as u64)
    }

    /// Runs `access` on the DMA segments of `addr..addr + len` if every page is reachable
    /// (writable if `write`); `None`, without running it, if one is not (an invalidation came
    /// after [`Self::prepare_access`]: prepare again). It runs under the update lock: the range
    /// cannot be invalidated until the access is over.
    pub(crate) fn access_mapped<R>(
        &self,
        addr: u64,
        len: usize,
        write: bool,
        access: impl FnOnce(&[DmaSeg]) -> Result<R>,
    ) -> Result<Option<R>> {
        let span = self.access_span(addr, len)?;
        let mut dma = [0u64; MAX_ACCESS_PAGES];
        let mut p2p = P2pCache::new(self.dev.dma().pci());
        let mut inner = self.state().inner.lock();
        let map = inner.map.live()?;
        for (slot, idx) in dma.iter_mut().zip(span.first..span.end) {
            let view = map.page(idx, &mut p2p);
            match view.dma_addr {
                Some(dma_addr) if !write || view.state.is_writable() => *slot = dma_addr,
                _ => return Ok(None),
            }
        }
        // PANIC: `span` has at most `MAX_ACCESS_PAGES` pages (`access_span`).
        let segs = dma_segments(addr, len, PAGE_SIZE as u64, &dma[..span.len()]);
        access(segs.as_slice()).map(Some)
    }

    /// Counters and gauges; `ENODEV` once revoked.
    pub(crate) fn stats(&self) -> UmemStats {
        let mut inner = self.state().inner.lock();
        let counters = inner.counters;
        match inner.map.live() {
            Ok(map) => UmemStats {
                umem: counters,
                map: map.counters(),
                iova_bytes: map.iova_bytes(),
                bookkeeping_bytes: map.bookkeeping_bytes(),
                pages_now: map.mapped_pages(),
            },
            Err(_) => UmemStats {
                umem: counters,
                ..Default::default()
            },
        }
    }

    /// Unmaps everything and releases the IOVA window; later calls fail with the errno of `why`.
    /// Used when the registration is unregistered and when its device goes away (the notifier
    /// stays until the registration is freed). Returns the final counters.
    pub(crate) fn revoke(&self, why: Revoked) -> UmemStats {
        let mut inner = self.state().inner.lock();
        let mut stats = UmemStats {
            umem: inner.counters,
            ..Default::default()
        };
        if let Some(mut map) = inner.map.revoke(why) {
            // Under the lock: until the pages are unmapped, an invalidation must still wait for
            // them (once the slot is revoked it finds nothing to do).
            map.unmap_all();
            stats.map = map.counters();
            drop(map);
        }
        stats
    }
}

impl Drop for OdpUmem {
    fn drop(&mut self) {
        gauges::REGISTRATIONS.sub(1);
    }
}

/// The snapshot entry of a page.
fn page_entry(state: HmmPfn, dma_addr: Option<u64>) -> uapi::Page {
    use crate::pfn_flags::MapKind;
    let mut flags = 0;
    if state.is_valid() {
        flags |= uapi::PAGE_VALID;
    }
    if state.is_writable() {
        flags |= uapi::PAGE_WRITE;
    }
    match state.map_kind() {
        Some(MapKind::Memory) => flags |= uapi::PAGE_DMA_MAPPED,
        Some(MapKind::P2pHostBridge) => flags |= uapi::PAGE_DMA_MAPPED | uapi::PAGE_P2P,
        Some(MapKind::P2pBus) => flags |= uapi::PAGE_DMA_MAPPED | uapi::PAGE_P2P_BUS,
        None => {}
    }
    uapi::Page {
        dma_addr: dma_addr.unwrap_or(0),
        flags,
        order: if state.is_valid() { state.order() } else { 0 },
    }
}

/// Checks that every page of `range` is mapped in `mm` (`EFAULT` if not).
fn check_mapped(mm: &MmWithUser, range: &UserRange) -> Result {
    let mmap = mm.mmap_read_lock();
    let mut addr = range.start();
    while addr < range.end() {
        // CAST: User addresses fit `usize` on the 64-bit targets this module builds for.
        let vma = mmap.vma_lookup(addr as usize).ok_or(EFAULT)?;
        addr = vma.end() as u64;
    }
    Ok(())
}
