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
//! 2. the mmap lock, read side, taken by `hmm_range_fault_unlocked_timeout()` (which page faults
//!    may drop and retake), never with `inner` or the engine lock held;
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
        Mutex,
        MutexGuard, //
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
        MapCounters,
        PageView, //
    },
    kapi::{
        completion::KillableCompletion,
        hmm::{
            self,
            Request, //
        },
        interval_notifier::{
            Event,
            FirstPass,
            IntervalNotifier,
            Invalidate,
            Invalidation,
            PassRange, //
        },
        mm::lockdep_prime_reclaim,
        params,
        sched::fatal_signal_pending,
        workqueue,
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
const FAULT_TIMEOUT_MS: u32 = 1000;

/// How many times [`OdpUmem::fault_and_lock`] faults a range that an invalidation hit before it
/// got the lock, before giving up with `EBUSY`.
const LOCK_ATTEMPTS: usize = 16;

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
    /// Fault requests (FAULT ioctls, device accesses that faulted, prefetches).
    pub(crate) fault_calls: u64,
    /// Their total wall time, in nanoseconds.
    pub(crate) fault_latency_ns: u64,
    /// The longest one.
    pub(crate) fault_latency_max_ns: u64,
    /// Pages asynchronous prefetches mapped.
    pub(crate) prefetched_pages: u64,
    /// Asynchronous prefetches that failed.
    pub(crate) prefetch_errors: u64,
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
    /// Chunks of an implicit registration holding per-page state now.
    pub(crate) chunks: u64,
}

impl UmemStats {
    /// Fills the counters and gauges of `out` (`struct odp_hmm_stats`) but `registrations`.
    pub(crate) fn write_to(&self, out: &mut uapi::Stats) {
        out.faults = self.umem.faults;
        out.pages_faulted = self.umem.pages_faulted;
        out.pages_mapped = self.map.pages_mapped;
        out.pages_unmapped = self.map.pages_unmapped;
        out.invalidations = self.umem.invalidations;
        out.invalidations_ignored = self.umem.invalidations_ignored;
        out.fault_retries = self.umem.fault_retries;
        out.link_calls = self.map.link_calls;
        out.sync_calls = self.map.sync_calls;
        out.unlink_calls = self.map.unlink_calls;
        out.p2p_host_bridge_pages = self.map.p2p_host_bridge_pages;
        out.p2p_bus_pages = self.map.p2p_bus_pages;
        out.p2p_refused_pages = self.map.p2p_refused_pages;
        out.iova_bytes = self.iova_bytes;
        out.bookkeeping_bytes = self.bookkeeping_bytes;
        out.pages_now = self.pages_now;
        out.fault_ns = self.umem.fault_ns;
        out.map_ns = self.umem.map_ns;
        out.sync_ns = self.map.sync_ns;
        out.unmap_ns = self.umem.unmap_ns;
        out.link_ns = self.map.link_ns;
        out.invalidations_nonblocking = self.umem.invalidations_nonblocking;
        out.fault_calls = self.umem.fault_calls;
        out.fault_latency_ns = self.umem.fault_latency_ns;
        out.fault_latency_max_ns = self.umem.fault_latency_max_ns;
        out.prefetched_pages = self.umem.prefetched_pages;
        out.prefetch_errors = self.umem.prefetch_errors;
        out.chunks = self.chunks;
    }

    /// Adds the counters and gauges of `other` (the longest fault is the longer one).
    pub(crate) fn add(&mut self, other: &Self) {
        let (a, b) = (&mut self.umem, &other.umem);
        a.faults += b.faults;
        a.pages_faulted += b.pages_faulted;
        a.invalidations += b.invalidations;
        a.invalidations_ignored += b.invalidations_ignored;
        a.invalidations_nonblocking += b.invalidations_nonblocking;
        a.fault_retries += b.fault_retries;
        a.fault_ns += b.fault_ns;
        a.map_ns += b.map_ns;
        a.unmap_ns += b.unmap_ns;
        a.fault_calls += b.fault_calls;
        a.fault_latency_ns += b.fault_latency_ns;
        a.fault_latency_max_ns = a.fault_latency_max_ns.max(b.fault_latency_max_ns);
        a.prefetched_pages += b.prefetched_pages;
        a.prefetch_errors += b.prefetch_errors;
        let (a, b) = (&mut self.map, &other.map);
        a.sync_ns += b.sync_ns;
        a.link_ns += b.link_ns;
        a.pages_mapped += b.pages_mapped;
        a.pages_unmapped += b.pages_unmapped;
        a.link_calls += b.link_calls;
        a.sync_calls += b.sync_calls;
        a.unlink_calls += b.unlink_calls;
        a.p2p_host_bridge_pages += b.p2p_host_bridge_pages;
        a.p2p_bus_pages += b.p2p_bus_pages;
        a.p2p_refused_pages += b.p2p_refused_pages;
        self.iova_bytes += other.iova_bytes;
        self.bookkeeping_bytes += other.bookkeeping_bytes;
        self.pages_now += other.pages_now;
        self.chunks += other.chunks;
    }
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

/// A fault that runs on the workqueue while its caller waits, or gives up ([`OdpUmem::fault_waiting`]).
#[pin_data]
struct FaultJob {
    /// Completed once `result` is set.
    #[pin]
    done: KillableCompletion,
    #[pin]
    result: Mutex<Option<Result<Faulted>>>,
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
    /// Pages of two-pass invalidations between their passes.
    zapping: Zapping,
}

/// The pages of the two-pass invalidations whose first pass ran and whose second has not: the
/// driver was told to zap them, but they stay linked until the second pass. Meanwhile the update
/// lock is free, and a driver that takes it must not see them as reachable, or it would program
/// its table with addresses that the second pass unlinks. Each pending invalidation is kept
/// exactly, so that no other page is hidden from the driver: several can be between their passes
/// at once (`MADV_DONTNEED` and the zap of a munmap hold the mmap lock only for reading). Past
/// [`Self::EXACT`] of them the rest are kept as one span covering them all: hiding a page for a
/// while only makes the driver refault it, and a fault waits for the invalidations to end.
#[derive(Default)]
struct Zapping {
    /// The pending invalidations' pages, `first..end` each, in `exact[..len]`.
    exact: [(usize, usize); Zapping::EXACT],
    len: usize,
    /// Pending invalidations beyond those, and the span covering their pages (meaningful while
    /// `overflow > 0`).
    overflow: usize,
    overflow_span: (usize, usize),
}

impl Zapping {
    /// Pending invalidations kept exactly.
    const EXACT: usize = 8;

    /// A first pass left pages `first..end` to its second pass.
    fn begin(&mut self, first: usize, end: usize) {
        if let Some(slot) = self.exact.get_mut(self.len) {
            *slot = (first, end);
            self.len += 1;
        } else {
            let (f, e) = self.overflow_span;
            self.overflow_span = if self.overflow == 0 {
                (first, end)
            } else {
                (f.min(first), e.max(end))
            };
            self.overflow += 1;
        }
    }

    /// The second pass of the invalidation whose first left pages `first..end` ran.
    fn end(&mut self, first: usize, end: usize) {
        let pending = &self.exact[..self.len];
        if let Some(i) = pending.iter().position(|&r| r == (first, end)) {
            self.len -= 1;
            self.exact.swap(i, self.len);
        } else {
            // Kept in the overflow span (begin and end are paired by the notifier).
            self.overflow = self.overflow.saturating_sub(1);
        }
    }

    /// Whether page `idx` is being zapped.
    fn covers(&self, idx: usize) -> bool {
        let within = |(first, end): (usize, usize)| (first..end).contains(&idx);
        self.exact[..self.len].iter().any(|&r| within(r))
            || (self.overflow > 0 && within(self.overflow_span))
    }
}

/// What the first pass of a two-pass invalidation leaves to its second: the pages the driver was
/// told about, which it hears of again, the same, in the second pass.
pub(crate) struct ZapPass {
    first: usize,
    end: usize,
}

/// A driver that keeps translations of a registration's pages of its own (the in-kernel API,
/// `driver_api.rs`): told about an invalidation before any page of it is unlinked, so that it can
/// zap its entries and fence its device first.
///
/// Every method runs under the update lock, from the mm's invalidation (possibly from memory
/// reclaim): it must not allocate memory that could recurse into reclaim, nor take a lock that is
/// held while the update lock is taken. The range is in user addresses and may be wider than the
/// mm's: whole link units, clipped to the registration.
pub(crate) trait UmemClient: Send + Sync {
    /// Zaps `start..end` and fences the device before returning. When `blockable` is false it
    /// must not sleep; returning `false` makes the mm try again later.
    fn invalidate(&self, start: u64, end: u64, blockable: bool) -> bool;

    /// Whether the client has the two-pass callbacks below (used whenever the invalidation may
    /// sleep; [`Self::invalidate`] otherwise).
    fn two_pass(&self) -> bool {
        false
    }

    /// First pass: starts the shootdown of `start..end`; may sleep.
    fn invalidate_start(&self, _start: u64, _end: u64) {}

    /// Second pass, once every notifier of the range ran its first: waits until the device
    /// stopped using `start..end`; may sleep. The pages are unlinked after it returns.
    fn invalidate_finish(&self, _start: u64, _end: u64) {}
}

/// The part of a registration the invalidation callback works on.
#[pin_data]
pub(crate) struct UmemState {
    /// The update lock.
    #[pin]
    inner: Mutex<Inner>,
    range: UserRange,
    /// The driver that keeps its own translations, if any.
    client: Option<KBox<dyn UmemClient>>,
}

impl UmemState {
    /// The pages of the registration that an invalidation of `range` covers.
    fn span_of(&self, range: &PassRange) -> Option<PageSpan> {
        match range.event {
            Event::Release => Some(PageSpan {
                first: 0,
                end: self.range.npages(),
            }),
            Event::Other => self.range.overlap(range.start, range.end),
        }
    }

    /// Unmaps the pages of `range` (the client's second pass, if any, ran); with the update lock
    /// held.
    fn unmap(&self, inner: &mut Inner, range: &PassRange, blockable: bool) {
        let start = Instant::<Monotonic>::now();
        let unmapped = match (self.span_of(range), inner.map.live()) {
            // A pinned registration keeps its pages whatever the mm does (see the uAPI header).
            (Some(span), Ok(map)) if map.follows_mm() => map.unmap(span.first, span.end, blockable),
            _ => 0,
        };
        inner.counters.unmap_ns += elapsed_ns(start);
        if unmapped > 0 {
            inner.counters.invalidations += 1;
        } else {
            inner.counters.invalidations_ignored += 1;
        }
    }

    /// The pages an unmap of `range` unmaps (whole link units), if the client must hear of them.
    fn client_span(&self, inner: &mut Inner, range: &PassRange) -> Option<(usize, usize)> {
        self.client.as_ref()?;
        let span = self.span_of(range)?;
        Some(inner.map.live().ok()?.unit_span(span.first, span.end))
    }

    /// The user addresses of pages `first..end`.
    fn addrs(&self, (first, end): (usize, usize)) -> (u64, u64) {
        (self.range.addr_of(first), self.range.addr_of(end))
    }

    /// Takes the update lock for invalidation `inv` (only tries when it must not sleep) and
    /// publishes its sequence number.
    fn lock_for(&self, inv: &Invalidation<'_>) -> Option<MutexGuard<'_, Inner>> {
        // Where the callback must not sleep, a busy lock makes the caller (the OOM reaper) try
        // again later rather than wait.
        let inner = if inv.blockable() {
            self.inner.lock()
        } else {
            let mut inner = self.inner.try_lock()?;
            inner.counters.invalidations_nonblocking += 1;
            inner
        };
        inv.set_seq();
        Some(inner)
    }
}

impl Invalidate for UmemState {
    type Pending = ZapPass;

    fn invalidate(&self, inv: &Invalidation<'_>) -> bool {
        let Some(mut inner) = self.lock_for(inv) else {
            return false;
        };
        let range = inv.pass_range();
        if let (Some(client), Some(span)) =
            (self.client.as_ref(), self.client_span(&mut inner, &range))
        {
            let (start, end) = self.addrs(span);
            if !client.invalidate(start, end, inv.blockable()) {
                return false;
            }
        }
        self.unmap(&mut inner, &range, inv.blockable());
        true
    }

    fn invalidate_start(&self, inv: &Invalidation<'_>) -> FirstPass<ZapPass> {
        let two_pass = self.client.as_ref().is_some_and(|c| c.two_pass());
        if !two_pass || !inv.blockable() {
            return FirstPass::Done(self.invalidate(inv));
        }
        let Some(mut inner) = self.lock_for(inv) else {
            return FirstPass::Done(false);
        };
        let range = inv.pass_range();
        match (self.client.as_ref(), self.client_span(&mut inner, &range)) {
            (Some(client), Some((first, end))) => {
                let (start, end_addr) = self.addrs((first, end));
                client.invalidate_start(start, end_addr);
                // No fault can commit until the invalidation ends (`set_seq`), so the lock may
                // go until the second pass; what a driver reads under it meanwhile must not
                // offer these pages.
                inner.zapping.begin(first, end);
                FirstPass::Finish(ZapPass { first, end })
            }
            _ => {
                self.unmap(&mut inner, &range, true);
                FirstPass::Done(true)
            }
        }
    }

    fn invalidate_finish(&self, range: &PassRange, pass: ZapPass) {
        let mut inner = self.inner.lock();
        // The driver hears the range of its first pass again, even if the registration was
        // released in between (its notifier goes only after this pass): its shootdown ends here.
        if let Some(client) = self.client.as_ref() {
            let (start, end) = self.addrs((pass.first, pass.end));
            client.invalidate_finish(start, end);
        }
        // What is still linked of the range: a subset of the first pass's units (pages are only
        // unlinked in between).
        self.unmap(&mut inner, range, true);
        inner.zapping.end(pass.first, pass.end);
    }
}

/// One ODP registration.
pub(crate) struct OdpUmem {
    notifier: IntervalNotifier<UmemState>,
    /// The registered address space (an `mmgrab` reference; faults take `mmget`).
    mm: ARef<Mm>,
    dev: Arc<DmaDevice>,
    writable: bool,
    /// A pinned registration (`Backend::Pinned`): mapped whole when made, faults nothing.
    pinned: bool,
}

impl OdpUmem {
    /// Registers `range` of `mm` for `dev` (explicit registrations check first that it is mapped:
    /// [`check_mapped`]).
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
        client: Option<KBox<dyn UmemClient>>,
    ) -> Result<Arc<Self>> {
        let map = match backend {
            Backend::Pinned => HmmDmaMap::new_pinned(
                dev.dma(),
                mm,
                range.first_vpn(),
                range.start(),
                range.npages(),
                writable,
            )?,
            _ => HmmDmaMap::new(dev.dma(), backend, range.first_vpn(), range.npages())?,
        };
        let two_pass = client.as_ref().is_some_and(|c| c.two_pass());
        let notifier = IntervalNotifier::insert(
            mm,
            range.start(),
            range.len(),
            two_pass,
            try_pin_init!(UmemState {
                inner <- new_mutex!(
                    Inner {
                        map: MapSlot {
                            map: Some(map),
                            revoked: Revoked::Unregistered,
                        },
                        counters: UmemCounters::default(),
                        zapping: Zapping::default(),
                    },
                    "UmemState::inner"
                ),
                range,
                client,
            }),
        )?;
        let umem = Arc::new(
            Self {
                notifier,
                mm: ARef::from(&**mm),
                dev,
                writable,
                pinned: backend == Backend::Pinned,
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
        let begun = Instant::<Monotonic>::now();
        let done = self.fault_pages(span, request);
        let took = elapsed_ns(begun);
        let counters = &mut self.state().inner.lock().counters;
        counters.fault_calls += 1;
        counters.fault_latency_ns += took;
        counters.fault_latency_max_ns = counters.fault_latency_max_ns.max(took);
        done
    }

    /// Queues a fault of `span` to the module's workqueue and returns at once (an asynchronous
    /// prefetch: `ibv_advise_mr()` without `IBV_ADVISE_MR_FLAG_FLUSH`). What it mapped, or that it
    /// failed, shows in the counters. A registration unregistered meanwhile makes it fail at once
    /// (`ENOENT`), an exited process too (`ESRCH`).
    ///
    /// # Errors
    ///
    /// `EPERM` for a write to a read-only registration, `ENOMEM`.
    pub(crate) fn prefetch_async(self: &Arc<Self>, span: PageSpan, request: Request) -> Result {
        if request == Request::Write && !self.writable {
            return Err(EPERM);
        }
        let umem = self.clone();
        workqueue::spawn(move || {
            let done = umem.fault(span, request);
            let counters = &mut umem.state().inner.lock().counters;
            match done {
                Ok(done) => counters.prefetched_pages += done.mapped,
                Err(_) => counters.prefetch_errors += 1,
            }
        })
    }

    /// [`Self::fault`] on the module's workqueue, waited for at most `timeout_ms`: a fault that
    /// waits for a userfaultfd handler cannot be interrupted, but its waiter can give up. The
    /// fault goes on in the background until the handler answers, its file is closed or the
    /// process exits.
    ///
    /// # Errors
    ///
    /// `ETIMEDOUT` when the time is up, `EINTR` on a fatal signal, `ENOMEM`; the fault's own.
    fn fault_waiting(
        self: &Arc<Self>,
        span: PageSpan,
        request: Request,
        timeout_ms: u32,
    ) -> Result<Faulted> {
        let job = Arc::pin_init(
            pin_init!(FaultJob {
                done <- KillableCompletion::new(),
                result <- new_mutex!(None, "FaultJob::result"),
            }),
            GFP_KERNEL,
        )?;
        let (umem, worker) = (self.clone(), job.clone());
        workqueue::spawn(move || {
            let result = umem.fault(span, request);
            *worker.result.lock() = Some(result);
            worker.done.complete_all();
        })?;
        if !job.done.wait_killable_timeout(timeout_ms)? {
            return Err(ETIMEDOUT);
        }
        let result = job.result.lock().take();
        result.unwrap_or(Err(EIO))
    }

    /// The body of [`Self::fault`].
    fn fault_pages(&self, span: PageSpan, request: Request) -> Result<Faulted> {
        if request == Request::Write && !self.writable {
            return Err(EPERM);
        }
        if self.pinned {
            return self.pinned_pages(span);
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
                if begun.elapsed() > Delta::from_millis(i64::from(FAULT_TIMEOUT_MS)) {
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

    /// What a fault of `span` finds in a pinned registration, which mapped everything when it was
    /// made and faults nothing.
    fn pinned_pages(&self, span: PageSpan) -> Result<Faulted> {
        let mut inner = self.state().inner.lock();
        let map = inner.map.live()?;
        Ok(Faulted {
            mapped: 0,
            // CAST: A page count fits `u64`.
            valid: map.mapped_in(span.first, span.end) as u64,
            refused: 0,
        })
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
        scratch.words.fill(0);
        let walk = Instant::<Monotonic>::now();
        let start = state.range.addr_of(chunk.first);
        // It retries invalidated ranges itself, for up to the whole timeout (then `EBUSY`).
        let seq = hmm::range_fault(
            &self.notifier,
            mm,
            start,
            scratch.words,
            request,
            FAULT_TIMEOUT_MS,
        )?;
        let walk_ns = elapsed_ns(walk);
        let mut inner = state.inner.lock();
        inner.counters.fault_ns += walk_ns;
        if self.notifier.read_retry(seq) {
            return Ok(None);
        }
        let committing = Instant::<Monotonic>::now();
        let Inner { map, counters, .. } = &mut *inner;
        let map = map.live()?;
        counters.faults += 1;
        // A fault that asks for the pages gets every one valid, or fails (`HMM_PFN_REQ_FAULT`);
        // only a snapshot needs counting.
        let valid = match request {
            Request::Snapshot => scratch
                .words
                .iter()
                .filter(|&&w| HmmPfn::from_raw(w).is_valid())
                .count(),
            Request::Read | Request::Write => scratch.words.len(),
        };
        // CAST: A page count fits `u64`.
        counters.pages_faulted += valid as u64;
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
    /// for the mm (a slow file, a userfaultfd handler), for up to `device_fault_timeout_ms`.
    ///
    /// # Errors
    ///
    /// As [`Self::fault`], and those of the range checks (`EOVERFLOW`, `ERANGE`, `E2BIG`);
    /// `EREMOTEIO` if a page is peer memory the device cannot reach; `ETIMEDOUT` if the pages did
    /// not come in time.
    pub(crate) fn prepare_access(
        self: &Arc<Self>,
        addr: u64,
        len: usize,
        write: bool,
    ) -> Result<u64> {
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
            let timeout = params::device_fault_timeout_ms();
            if self.fault_waiting(span, request, timeout)?.refused > 0 {
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

    /// Takes the update lock.
    pub(crate) fn lock(&self) -> Locked<'_> {
        Locked {
            umem: self,
            inner: self.state().inner.lock(),
        }
    }

    /// The update lock that the current task kept ([`Locked::keep`]).
    ///
    /// # Safety
    ///
    /// The current task holds the update lock of this registration, and nothing else will
    /// release it.
    pub(crate) unsafe fn kept(&self) -> Locked<'_> {
        Locked {
            umem: self,
            // SAFETY: The current task holds the lock (the caller's guarantee).
            inner: unsafe { MutexGuard::new(&self.state().inner, ()) },
        }
    }

    /// Faults `span` in as `request` asks and maps it, and returns with the update lock held and
    /// every page of `span` reachable by the device (writable for [`Request::Write`]; for
    /// [`Request::Snapshot`], only what was present), with the number of pages reachable.
    ///
    /// # Errors
    ///
    /// As [`Self::fault`]; `EREMOTEIO` if a peer page cannot be reached; `EBUSY` if the range
    /// kept being invalidated between the fault and the lock.
    pub(crate) fn fault_and_lock(
        &self,
        span: PageSpan,
        request: Request,
    ) -> Result<(Locked<'_>, usize)> {
        let write = request == Request::Write;
        for _ in 0..LOCK_ATTEMPTS {
            if self.fault(span, request)?.refused > 0 {
                return Err(EREMOTEIO);
            }
            let mut locked = self.lock();
            let reachable = locked.reachable(span, write)?;
            if request == Request::Snapshot || reachable == span.len() {
                return Ok((locked, reachable));
            }
        }
        Err(EBUSY)
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
                chunks: 0,
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
        let map = inner.map.revoke(why).map(|mut map| {
            // Under the lock: until the pages are unmapped, an invalidation must still wait for
            // them (once the slot is revoked it finds nothing to do).
            map.unmap_all();
            stats.map = map.counters();
            map
        });
        // The map goes after the lock: a pinned map's unpin takes folio locks, and the mm calls
        // our notifier (which takes the update lock) with a folio locked (KSM, reclaim,
        // migration). Nothing is mapped any more, so nothing waits for the rest.
        drop(inner);
        drop(map);
        stats
    }
}

/// The update lock of a registration, held: while it is, no page of the registration can be
/// unlinked (invalidations wait). A driver reads the DMA addresses of its pages under it.
pub(crate) struct Locked<'a> {
    umem: &'a OdpUmem,
    inner: MutexGuard<'a, Inner>,
}

impl Locked<'_> {
    /// The device's view of page `idx` of the registration.
    ///
    /// # Errors
    ///
    /// `ERANGE` outside the registration, `ENOENT` once unregistered, `ENODEV` once the device
    /// went.
    pub(crate) fn page(&mut self, idx: usize) -> Result<PageView> {
        if idx >= self.umem.range().npages() {
            return Err(ERANGE);
        }
        let mut p2p = P2pCache::new(self.umem.dev.dma().pci());
        let Inner { map, zapping, .. } = &mut *self.inner;
        let mut view = map.live()?.page(idx, &mut p2p);
        if zapping.covers(idx) {
            view.dma_addr = None;
        }
        Ok(view)
    }

    /// How many pages of `span` the device can reach (with write access, if `write`).
    fn reachable(&mut self, span: PageSpan, write: bool) -> Result<usize> {
        let mut p2p = P2pCache::new(self.umem.dev.dma().pci());
        let Inner { map, zapping, .. } = &mut *self.inner;
        let map = map.live()?;
        Ok((span.first..span.end)
            .filter(|&idx| {
                let view = map.page(idx, &mut p2p);
                view.dma_addr.is_some()
                    && !zapping.covers(idx)
                    && (!write || view.state.is_writable())
            })
            .count())
    }

    /// Goes without unlocking: the lock stays held by the current task (the in-kernel API hands
    /// it to the driver, which unlocks it later through [`OdpUmem::kept`]).
    pub(crate) fn keep(self) {
        core::mem::forget(self.inner);
    }
}

impl Drop for OdpUmem {
    fn drop(&mut self) {
        gauges::REGISTRATIONS.sub(1);
    }
}

/// The snapshot entry of a page.
pub(crate) fn page_entry(state: HmmPfn, dma_addr: Option<u64>) -> uapi::Page {
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

/// Checks that every page of `range` is mapped in `mm` (`EFAULT` if not): what an explicit
/// registration asks of its range when it is made.
pub(crate) fn check_mapped(mm: &MmWithUser, range: &UserRange) -> Result {
    let mmap = mm.mmap_read_lock();
    let mut addr = range.start();
    while addr < range.end() {
        // CAST: User addresses fit `usize` on the 64-bit targets this module builds for.
        let vma = mmap.vma_lookup(addr as usize).ok_or(EFAULT)?;
        addr = vma.end() as u64;
    }
    Ok(())
}
