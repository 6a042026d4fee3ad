// SPDX-License-Identifier: GPL-2.0

//! Implicit ODP: one registration over a huge range (the whole user address space, as mlx5's
//! implicit MR), without per-page state for all of it up front.
//!
//! The range is cut into chunks of [`CHUNK_SIZE`] bytes, aligned in virtual addresses. A chunk
//! becomes an ordinary registration of its own ([`OdpUmem`]: state words, IOVA window, interval
//! notifier) at the first fault or device access in it, so bookkeeping and IOVA grow with what
//! the device touched. Chunks need not be mapped: holes fail the faults that reach them
//! (`EFAULT`), later mmaps work.
//!
//! A chunk that maps nothing after an invalidation (an munmap, usually) is freed at the next call
//! on the registration: each chunk's invalidation raises a flag ([`ChunkWatch`]), and the next
//! call reaps the empty ones. A call that failed raises it too: it may have made a chunk for an
//! unmapped address, which would otherwise hold its IOVA and budget until unregister. A call
//! that raced the reap of its chunk (`ENOENT` from it) makes a new one and tries again.
//!
//! # Locking
//!
//! [`ImplicitUmem::chunks`] protects the chunk table and the counters of freed chunks. It is held
//! to look up, add or remove a chunk, never across a fault, a device access or a chunk's lock;
//! a chunk's callbacks never take it (they only raise the reap flag).

use core::sync::atomic::{
    AtomicBool,
    Ordering, //
};

use kernel::{
    mm::Mm,
    new_mutex,
    page::PAGE_SHIFT,
    prelude::*,
    rbtree::RBTree,
    sync::{
        aref::ARef,
        Arc,
        Mutex, //
    },
};

use crate::{
    dma_device::DmaDevice,
    hmm_dma_map::Backend,
    kapi::{
        hmm::Request,
        workqueue, //
    },
    odp_umem::{
        Faulted,
        OdpUmem,
        Revoked,
        UmemClient,
        UmemCounters,
        UmemStats, //
    },
    range::{
        PageSpan,
        UserRange, //
    },
    registration::{
        AccessPiece,
        Budget, //
    },
    uapi,
};

/// Bytes per chunk (2 MiB: one fault batch, one PMD).
pub(crate) const CHUNK_SIZE: u64 = 2 << 20;

/// How often a call retries a chunk that was reaped under it.
const REAP_RETRIES: usize = 4;

/// Tells the implicit registration that a chunk was invalidated (it may be empty now).
struct ChunkWatch {
    maybe_empty: Arc<AtomicFlag>,
}

/// A flag shared between the chunks and their registration.
struct AtomicFlag {
    flag: AtomicBool,
}

impl UmemClient for ChunkWatch {
    fn invalidate(&self, _start: u64, _end: u64, _blockable: bool) -> bool {
        self.maybe_empty.flag.store(true, Ordering::Relaxed);
        true
    }
}

/// The chunk table.
struct Chunks {
    /// The live chunks, by chunk number (address / [`CHUNK_SIZE`]).
    map: RBTree<u64, Arc<OdpUmem>>,
    /// Counters of the chunks freed so far.
    retired: UmemStats,
    /// Set once the registration is unregistered: no chunk may be added.
    revoked: Option<Revoked>,
}

/// An implicit registration.
#[pin_data]
pub(crate) struct ImplicitUmem {
    /// The registered address space (an `mmgrab` reference; chunks take `mmget`).
    mm: ARef<Mm>,
    dev: Arc<DmaDevice>,
    range: UserRange,
    writable: bool,
    backend: Backend,
    /// The file's budget, that chunks are charged to.
    budget: Arc<Budget>,
    #[pin]
    chunks: Mutex<Chunks>,
    /// Counters of what the registration did itself (asynchronous prefetches).
    #[pin]
    counters: Mutex<UmemCounters>,
    maybe_empty: Arc<AtomicFlag>,
}

impl ImplicitUmem {
    /// An implicit registration of `range` of `mm` for `dev`; nothing is allocated per page yet.
    pub(crate) fn new(
        mm: &Mm,
        dev: Arc<DmaDevice>,
        range: UserRange,
        writable: bool,
        backend: Backend,
        budget: Arc<Budget>,
    ) -> Result<Arc<Self>> {
        let maybe_empty = Arc::new(
            AtomicFlag {
                flag: AtomicBool::new(false),
            },
            GFP_KERNEL,
        )?;
        Arc::pin_init(
            try_pin_init!(Self {
                mm: ARef::from(mm),
                dev,
                range,
                writable,
                backend,
                budget,
                chunks <- new_mutex!(
                    Chunks {
                        map: RBTree::new(),
                        retired: UmemStats::default(),
                        revoked: None,
                    },
                    "ImplicitUmem::chunks"
                ),
                counters <- new_mutex!(UmemCounters::default(), "ImplicitUmem::counters"),
                maybe_empty,
            }),
            GFP_KERNEL,
        )
    }

    /// The registered range.
    pub(crate) fn range(&self) -> &UserRange {
        &self.range
    }

    /// The device the chunks map for.
    pub(crate) fn device(&self) -> &Arc<DmaDevice> {
        &self.dev
    }

    /// The backend, and the `ODP_HMM_DMA_MODE_*` chunks are made in (IOVA where the device's
    /// domain translates); `ENOENT` once unregistered.
    pub(crate) fn mapping_info(&self) -> Result<(Backend, u32, u64)> {
        if let Some(why) = self.chunks.lock().revoked {
            return Err(why.into());
        }
        let mode = match self.backend {
            Backend::None => uapi::DMA_MODE_NONE,
            _ if self.dev.info().flags & uapi::INFO_IOVA != 0 => uapi::DMA_MODE_IOVA,
            _ => uapi::DMA_MODE_MAP,
        };
        Ok((self.backend, mode, 0))
    }

    /// The chunk number of registration page `idx`.
    fn chunk_of(&self, idx: usize) -> u64 {
        self.range.addr_of(idx) / CHUNK_SIZE
    }

    /// The registration pages of chunk `chunk`.
    fn chunk_span(&self, chunk: u64) -> PageSpan {
        let start = (chunk * CHUNK_SIZE).max(self.range.start());
        let end = chunk
            .saturating_add(1)
            .saturating_mul(CHUNK_SIZE)
            .min(self.range.end());
        // `start..end` lies inside the registration: the overlap exists.
        self.range
            .overlap(start, end)
            .unwrap_or(PageSpan { first: 0, end: 0 })
    }

    /// Splits `span` at chunk boundaries: each piece with its chunk number.
    fn pieces(&self, span: PageSpan) -> impl Iterator<Item = (u64, PageSpan)> + '_ {
        let mut first = span.first;
        core::iter::from_fn(move || {
            if first >= span.end {
                return None;
            }
            let chunk = self.chunk_of(first);
            let end = self.chunk_span(chunk).end.min(span.end).max(first + 1);
            let piece = PageSpan { first, end };
            first = end;
            Some((chunk, piece))
        })
    }

    /// The chunk `chunk`, if it exists.
    fn chunk(&self, chunk: u64) -> Option<Arc<OdpUmem>> {
        self.chunks.lock().map.get(&chunk).cloned()
    }

    /// The chunk `chunk`, made if it does not exist yet (charged to the file's budget).
    fn chunk_or_new(&self, chunk: u64) -> Result<Arc<OdpUmem>> {
        self.reap();
        if let Some(umem) = self.chunk(chunk) {
            return Ok(umem);
        }
        let span = self.chunk_span(chunk);
        let start = self.range.addr_of(span.first);
        let len = self.range.addr_of(span.end) - start;
        let range =
            UserRange::new(start, len, PAGE_SHIFT as u32, self.range.end()).map_err(|_| EINVAL)?;
        self.budget.charge(len)?;
        let made = self.make_chunk(range, chunk);
        if made.is_err() {
            self.budget.refund(len);
        }
        made
    }

    /// Makes the chunk `chunk` over `range`, unless another call made it meanwhile.
    fn make_chunk(&self, range: UserRange, chunk: u64) -> Result<Arc<OdpUmem>> {
        let mm = self.mm.mmget_not_zero().ok_or(ESRCH)?;
        let watch = KBox::new(
            ChunkWatch {
                maybe_empty: self.maybe_empty.clone(),
            },
            GFP_KERNEL,
        )?;
        let umem = OdpUmem::new(
            &mm,
            self.dev.clone(),
            range,
            self.writable,
            self.backend,
            Some(watch),
        )?;
        let mut chunks = self.chunks.lock();
        let existing = match chunks.revoked {
            Some(why) => Err(Error::from(why)),
            None => Ok(chunks.map.get(&chunk).cloned()),
        };
        let kept = match existing {
            Ok(Some(other)) => Ok(other),
            Ok(None) => chunks
                .map
                .try_create_and_insert(chunk, umem.clone(), GFP_KERNEL)
                .map(|_| umem.clone()),
            Err(err) => Err(err),
        };
        drop(chunks);
        if !kept.as_ref().is_ok_and(|k| Arc::ptr_eq(k, &umem)) {
            // Not needed after all (another call won, or the registration went).
            self.budget.refund(range.len());
            retire_chunk(&umem);
        }
        kept
    }

    /// Frees the chunks that map nothing, if an invalidation may have emptied one.
    fn reap(&self) {
        if !self.maybe_empty.flag.swap(false, Ordering::Relaxed) {
            return;
        }
        let mut freed = KVec::new();
        {
            let mut chunks = self.chunks.lock();
            let empty: KVec<u64> = {
                let mut empty = KVec::new();
                for (&key, umem) in chunks.map.iter() {
                    if umem.stats().pages_now == 0 && empty.push(key, GFP_KERNEL).is_err() {
                        // Out of memory: try again at the next call.
                        self.maybe_empty.flag.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                empty
            };
            for key in empty.iter() {
                if let Some(umem) = chunks.map.remove(key) {
                    if freed.push(umem, GFP_KERNEL).is_err() {
                        break;
                    }
                }
            }
        }
        // Outside the lock: a chunk's last reference removes its notifier, which waits for its
        // callbacks.
        for umem in freed.iter() {
            self.budget.refund(umem.range().len());
            let last = retire_chunk(umem);
            self.chunks.lock().retired.add(&last);
        }
    }

    /// Runs `f` on the chunk of each piece of `span` (made if `make`), retrying a piece whose
    /// chunk was reaped under it.
    fn for_each_piece(
        &self,
        span: PageSpan,
        make: bool,
        mut f: impl FnMut(Option<&Arc<OdpUmem>>, PageSpan, PageSpan) -> Result,
    ) -> Result {
        for (chunk, piece) in self.pieces(span) {
            let mut tries = 0;
            loop {
                let umem = if make {
                    Some(self.chunk_or_new(chunk)?)
                } else {
                    self.chunk(chunk)
                };
                // The piece in the chunk's own page numbers.
                let base = self.chunk_span(chunk).first;
                let local = PageSpan {
                    first: piece.first - base,
                    end: piece.end - base,
                };
                match f(umem.as_ref(), piece, local) {
                    Err(err) if err == ENOENT && tries < REAP_RETRIES => tries += 1,
                    other => break other?,
                }
            }
        }
        Ok(())
    }

    /// A call failed after it may have made a chunk that maps nothing (a fault or device access
    /// of an unmapped address): the next call reaps the empty chunks.
    pub(crate) fn call_failed(&self) {
        self.maybe_empty.flag.store(true, Ordering::Relaxed);
    }

    /// Faults `span` in and maps it, chunk by chunk (see [`OdpUmem::fault`]).
    pub(crate) fn fault(&self, span: PageSpan, request: Request) -> Result<Faulted> {
        if request == Request::Write && !self.writable {
            return Err(EPERM);
        }
        let mut done = Faulted::default();
        let faulted = self.for_each_piece(span, true, |umem, _, local| {
            let f = umem.ok_or(ENOENT)?.fault(local, request)?;
            done.mapped += f.mapped;
            done.valid += f.valid;
            done.refused += f.refused;
            Ok(())
        });
        if faulted.is_err() {
            self.call_failed();
        }
        faulted.map(|()| done)
    }

    /// [`Self::fault`] on the module's workqueue (see [`OdpUmem::prefetch_async`]).
    pub(crate) fn prefetch_async(self: &Arc<Self>, span: PageSpan, request: Request) -> Result {
        if request == Request::Write && !self.writable {
            return Err(EPERM);
        }
        let me = self.clone();
        workqueue::spawn(move || {
            let done = me.fault(span, request);
            let mut counters = me.counters.lock();
            match done {
                Ok(done) => counters.prefetched_pages += done.mapped,
                Err(_) => counters.prefetch_errors += 1,
            }
        })
    }

    /// Fills `out` with the device's view of pages `first..first + out.len()`: nothing for pages
    /// of chunks that do not exist.
    pub(crate) fn snapshot(&self, first: usize, out: &mut [uapi::Page]) -> Result {
        let span = PageSpan {
            first,
            end: first + out.len(),
        };
        self.for_each_piece(span, false, |umem, piece, local| {
            let slots = &mut out[piece.first - first..piece.end - first];
            match umem {
                Some(umem) => umem.snapshot(local.first, slots),
                None => {
                    slots.fill(uapi::Page::default());
                    Ok(())
                }
            }
        })
    }

    /// The chunks a device access of `len` bytes at `addr` touches: one, or two where it crosses
    /// a chunk boundary, each with its part of the access (address, length, offset in it).
    pub(crate) fn access_pieces(&self, addr: u64, len: usize) -> Result<[Option<AccessPiece>; 2]> {
        // CAST: `len` is at most `ODP_HMM_DMA_MAX_LEN`.
        let end = addr.checked_add(len as u64).ok_or(EOVERFLOW)?;
        if addr < self.range.start() || end > self.range.end() {
            return Err(ERANGE);
        }
        let split = (addr / CHUNK_SIZE + 1) * CHUNK_SIZE;
        let first = self.chunk_or_new(addr / CHUNK_SIZE)?;
        if end <= split {
            return Ok([Some((first, addr, len, 0)), None]);
        }
        // CAST: Below `len`.
        let head = (split - addr) as usize;
        let second = self.chunk_or_new(split / CHUNK_SIZE)?;
        Ok([
            Some((first, addr, head, 0)),
            Some((second, split, len - head, head)),
        ])
    }

    /// Counters and gauges: of the live chunks, the freed ones and the registration itself.
    pub(crate) fn stats(&self) -> UmemStats {
        self.reap();
        let (mut total, live) = {
            let chunks = self.chunks.lock();
            let mut live = KVec::new();
            for umem in chunks.map.values() {
                if live.push(umem.clone(), GFP_KERNEL).is_err() {
                    break;
                }
            }
            (chunks.retired, live)
        };
        for umem in live.iter() {
            total.add(&umem.stats());
        }
        total.add(&UmemStats {
            umem: *self.counters.lock(),
            ..Default::default()
        });
        // CAST: A count of chunks fits `u64`.
        total.chunks = live.len() as u64;
        total
    }

    /// Unregisters: every chunk is unmapped and freed; later calls fail with `ENOENT`. Returns
    /// the final counters.
    pub(crate) fn revoke(&self) -> UmemStats {
        let map = {
            let mut chunks = self.chunks.lock();
            chunks.revoked = Some(Revoked::Unregistered);
            core::mem::replace(&mut chunks.map, RBTree::new())
        };
        for umem in map.values() {
            self.budget.refund(umem.range().len());
            let last = retire_chunk(umem);
            self.chunks.lock().retired.add(&last);
        }
        drop(map);
        let mut total = self.chunks.lock().retired;
        total.add(&UmemStats {
            umem: *self.counters.lock(),
            ..Default::default()
        });
        total
    }
}

/// Unmaps chunk `umem` and forgets it (its device's list too); returns its final counters.
fn retire_chunk(umem: &Arc<OdpUmem>) -> UmemStats {
    umem.device().remove_user(umem);
    umem.revoke(Revoked::Unregistered)
}
