// SPDX-License-Identifier: GPL-2.0

//! The `/dev/odp_hmm` character device: one [`OdpFile`] per open file, and its ioctls.
//!
//! The ABI is `include/uapi/linux/odp_hmm.h`; the errno of every refusal is documented there.
//! Registrations belong to the open file and to the address space that opened it: every call that
//! acts on registrations (register, unregister, fault, snapshot, device copy) must come from that
//! address space (`EPERM` otherwise: a forked child or a process the file was passed to);
//! `INFO` and `STATS` read only, and any holder of the file may call them. Closing the file (or
//! the process exiting) unregisters everything.
//!
//! # Locking
//!
//! [`OdpFile::inner`] protects the handle table and the counters of dropped registrations. It is
//! held only to look a registration up, add or remove one: never across a fault, a device access
//! or any other lock.

use core::sync::atomic::{
    AtomicU64,
    Ordering, //
};

use kernel::{
    fs::File,
    miscdevice::{
        MiscDevice,
        MiscDeviceRegistration, //
    },
    mm::Mm,
    new_mutex,
    page::{
        PAGE_SHIFT,
        PAGE_SIZE, //
    },
    prelude::*,
    rbtree::RBTree,
    seq_file::{
        seq_print,
        SeqFile, //
    },
    sync::{
        aref::ARef,
        Arc,
        Mutex, //
    },
    transmute::AsBytes,
    uaccess::UserSlice,
};

use crate::{
    dma_copy, dma_device, gauges,
    hmm_dma_map::Backend,
    implicit::ImplicitUmem,
    kapi::{hmm::Request, mm::task_size, params},
    odp_umem::{
        check_mapped,
        OdpUmem,
        UmemStats, //
    },
    range::{
        RangeError,
        UserRange, //
    },
    registration::{
        Budget,
        Registration, //
    },
    uapi::{
        self,
        ArgPtr, //
    },
};

/// Snapshot entries gathered under the update lock before they are copied out.
const SNAPSHOT_CHUNK: usize = 256;

/// The errno of a refused range (see the uAPI header).
pub(crate) fn range_errno(err: RangeError) -> Error {
    match err {
        RangeError::Unaligned | RangeError::Empty => EINVAL,
        RangeError::Overflow => EOVERFLOW,
        RangeError::OutOfRegistration => ERANGE,
    }
}

/// The registrations of one open file.
struct FileInner {
    next_handle: u64,
    umems: RBTree<u64, Registration>,
    /// Counters of the registrations dropped so far.
    retired: UmemStats,
}

/// The identity of the next open file: never reused, unlike the file's address.
static NEXT_FILE_ID: AtomicU64 = AtomicU64::new(1);

/// One open file of `/dev/odp_hmm`.
#[pin_data(PinnedDrop)]
pub(crate) struct OdpFile {
    /// The address space that opened the file; registrations are made in it.
    mm: ARef<Mm>,
    /// Never 0, never another file's.
    id: u64,
    /// What its registrations hold, against `file_limit_mb`.
    budget: Arc<Budget>,
    #[pin]
    inner: Mutex<FileInner>,
}

#[vtable]
impl MiscDevice for OdpFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Self::Ptr> {
        let current = current!();
        let mm = current.mm().ok_or(EINVAL)?;
        KBox::try_pin_init(
            try_pin_init!(Self {
                mm: ARef::from(&**mm),
                id: NEXT_FILE_ID.fetch_add(1, Ordering::Relaxed),
                budget: Budget::new()?,
                inner <- new_mutex!(
                    FileInner {
                        next_handle: 1,
                        umems: RBTree::new(),
                        retired: UmemStats::default(),
                    },
                    "OdpFile::inner"
                ),
            }),
            GFP_KERNEL,
        )
    }

    fn ioctl(me: Pin<&OdpFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        // The size in the number is the caller's structure size; `ArgPtr::read` checks it.
        let ioc = |known: u32| uapi::without_size(known) == uapi::without_size(cmd);
        let arg = ArgPtr::new(cmd, arg);
        if ioc(uapi::IOC_INFO) {
            me.info(arg)
        } else if ioc(uapi::IOC_REGISTER) {
            me.register(arg)
        } else if ioc(uapi::IOC_UNREGISTER) {
            me.unregister(arg)
        } else if ioc(uapi::IOC_FAULT) {
            me.fault(arg)
        } else if ioc(uapi::IOC_SNAPSHOT) {
            me.snapshot(arg)
        } else if ioc(uapi::IOC_STATS) {
            me.stats(arg)
        } else if ioc(uapi::IOC_DMA) {
            me.dma(arg)
        } else {
            Err(ENOTTY)
        }?;
        Ok(0)
    }

    /// `/proc/PID/fdinfo/FD`: one line per registration, with its counters (`odpctl fdinfo`
    /// reads it, for any process).
    fn show_fdinfo(me: Pin<&OdpFile>, m: &SeqFile, _file: &File) {
        let Ok(umems) = me.live() else {
            return;
        };
        for (handle, umem) in umems.iter() {
            let (backend, mode) = match umem.mapping_info() {
                Ok((backend, mode, _)) => (backend.name(), uapi::dma_mode_name(mode)),
                Err(_) => ("-", "revoked"),
            };
            let st = umem.stats();
            seq_print!(
                m,
                "odp_hmm-registration: handle={} start={:#x} length={:#x} backend={} mode={} \
                 faults={} pages_faulted={} pages_now={} invalidations={} prefetched={} \
                 prefetch_errors={} fault_calls={} fault_latency_ns={} fault_latency_max_ns={} \
                 iova_bytes={} bookkeeping_bytes={} chunks={}\n",
                handle,
                umem.range().start(),
                umem.range().len(),
                backend,
                mode,
                st.umem.faults,
                st.umem.pages_faulted,
                st.pages_now,
                st.umem.invalidations,
                st.umem.prefetched_pages,
                st.umem.prefetch_errors,
                st.umem.fault_calls,
                st.umem.fault_latency_ns,
                st.umem.fault_latency_max_ns,
                st.iova_bytes,
                st.bookkeeping_bytes,
                st.chunks,
            );
        }
    }
}

#[pinned_drop]
impl PinnedDrop for OdpFile {
    fn drop(self: Pin<&mut Self>) {
        let umems = core::mem::replace(&mut self.inner.lock().umems, RBTree::new());
        for reg in umems.values() {
            reg.retire();
        }
    }
}

impl OdpFile {
    /// Refuses calls with user addresses from another address space than the opener's.
    fn check_caller(&self) -> Result {
        let current = current!();
        let mm = current.mm().ok_or(EPERM)?;
        if mm.as_raw() != self.mm.as_raw() {
            return Err(EPERM);
        }
        Ok(())
    }

    /// The registration named `handle`.
    fn lookup(&self, handle: u64) -> Result<Registration> {
        self.inner.lock().umems.get(&handle).cloned().ok_or(ENOENT)
    }

    fn info(&self, arg: ArgPtr) -> Result {
        let req: uapi::Info = arg.read()?;
        let mut info = dma_device::current()?.info();
        info.version = req.version;
        info.live_registrations = gauges::REGISTRATIONS.get();
        info.live_pages_mapped = gauges::PAGES_MAPPED.get();
        info.live_iova_bytes = gauges::IOVA_BYTES.get();
        info.live_bookkeeping_bytes = gauges::BOOKKEEPING_BYTES.get();
        arg.write(&info)
    }

    fn register(&self, arg: ArgPtr) -> Result {
        let mut req: uapi::Register = arg.read()?;
        let known = uapi::ACCESS_READ | uapi::ACCESS_WRITE | uapi::REGISTER_IMPLICIT;
        if req.flags & !known != 0 || req.flags & uapi::ACCESS_READ == 0 {
            return Err(EINVAL);
        }
        let backend = match req.backend {
            uapi::BACKEND_DEFAULT => Backend::from_uapi(params::backend())?,
            other => Backend::from_uapi(other)?,
        };
        self.check_caller()?;
        let current = current!();
        let mm = current.mm().ok_or(EPERM)?;
        let implicit = req.flags & uapi::REGISTER_IMPLICIT != 0;
        // Pinning needs the pages to exist: an implicit registration has none yet.
        if implicit && backend == Backend::Pinned {
            return Err(EINVAL);
        }
        let (addr, length) = match (req.addr, req.length) {
            // The whole user address space (from the first page: 0 is never mapped).
            (0, 0) if implicit => (PAGE_SIZE as u64, task_size(mm) - PAGE_SIZE as u64),
            range => range,
        };
        let range =
            UserRange::new(addr, length, PAGE_SHIFT as u32, task_size(mm)).map_err(range_errno)?;
        let dev = dma_device::current()?;
        let writable = req.flags & uapi::ACCESS_WRITE != 0;
        let handle = self.next_handle()?;
        let reg = if implicit {
            Registration::Implicit(ImplicitUmem::new(
                mm,
                dev,
                range,
                writable,
                backend,
                self.budget.clone(),
            )?)
        } else {
            check_mapped(mm, &range)?;
            self.budget.charge(range.len())?;
            match OdpUmem::new(mm, dev, range, writable, backend, None) {
                Ok(umem) => Registration::Explicit(umem),
                Err(err) => {
                    self.budget.refund(range.len());
                    return Err(err);
                }
            }
        };
        let published = reg
            .mapping_info()
            .and_then(|(backend, dma_mode, iova_base)| {
                req.backend = backend.to_uapi();
                req.dma_mode = dma_mode;
                req.handle = handle;
                req.iova_base = iova_base;
                arg.write(&req)
            })
            .and_then(|()| {
                self.inner
                    .lock()
                    .umems
                    .try_create_and_insert(handle, reg.clone(), GFP_KERNEL)
                    .map(drop)
            });
        if let Err(err) = published {
            self.drop_registration(&reg);
            return Err(err);
        }
        Ok(())
    }

    /// A new handle (`ENOSPC` when they run out).
    fn next_handle(&self) -> Result<u64> {
        let mut inner = self.inner.lock();
        let handle = inner.next_handle;
        inner.next_handle = handle.checked_add(1).ok_or(ENOSPC)?;
        Ok(handle)
    }

    /// Tears `reg` down and gives back what it was charged; returns its final counters.
    fn drop_registration(&self, reg: &Registration) -> UmemStats {
        let last = reg.retire();
        if let Registration::Explicit(umem) = reg {
            self.budget.refund(umem.range().len());
        }
        last
    }

    fn unregister(&self, arg: ArgPtr) -> Result {
        let req: uapi::Unregister = arg.read()?;
        if req.reserved != 0 {
            return Err(EINVAL);
        }
        self.check_caller()?;
        let reg = self.inner.lock().umems.remove(&req.handle).ok_or(ENOENT)?;
        let last = self.drop_registration(&reg);
        self.inner.lock().retired.add(&last);
        Ok(())
    }

    fn fault(&self, arg: ArgPtr) -> Result {
        let mut req: uapi::Fault = arg.read()?;
        let request = match req.flags & !uapi::FAULT_ASYNC {
            0 => Request::Read,
            uapi::FAULT_WRITE => Request::Write,
            uapi::FAULT_NO_FAULT => Request::Snapshot,
            _ => return Err(EINVAL),
        };
        self.check_caller()?;
        let umem = self.lookup(req.handle)?;
        let span = umem
            .range()
            .sub_range(req.addr, req.length)
            .map_err(range_errno)?;
        if req.flags & uapi::FAULT_ASYNC != 0 {
            umem.prefetch_async(span, request)?;
            req.pages_mapped = 0;
            req.pages_valid = 0;
            return arg.write(&req);
        }
        let done = umem.fault(span, request)?;
        req.pages_mapped = done.mapped;
        req.pages_valid = done.valid;
        arg.write(&req)?;
        if done.refused > 0 {
            return Err(EREMOTEIO);
        }
        Ok(())
    }

    fn snapshot(&self, arg: ArgPtr) -> Result {
        let req: uapi::Snapshot = arg.read()?;
        if req.flags != 0 || req.npages == 0 {
            return Err(EINVAL);
        }
        if req.npages > u64::from(uapi::SNAPSHOT_MAX_PAGES) {
            return Err(E2BIG);
        }
        self.check_caller()?;
        let umem = self.lookup(req.handle)?;
        let len = req.npages.checked_mul(PAGE_SIZE as u64).ok_or(EOVERFLOW)?;
        let span = umem.range().sub_range(req.addr, len).map_err(range_errno)?;
        let entry = size_of::<uapi::Page>();
        // CAST: `npages` is at most `SNAPSHOT_MAX_PAGES`.
        let out_len = req.npages as usize * entry;
        let mut out = UserSlice::new(UserPtr::from_addr(req.pages as usize), out_len).writer();
        let mut buf = KVec::from_elem(
            uapi::Page {
                dma_addr: 0,
                flags: 0,
                order: 0,
            },
            SNAPSHOT_CHUNK.min(span.len()),
            GFP_KERNEL,
        )?;
        for chunk in span.chunks(SNAPSHOT_CHUNK) {
            let buf = &mut buf[..chunk.len()];
            umem.snapshot(chunk.first, buf)?;
            // Copied out with the update lock released: the copy may fault.
            out.write_slice(buf.as_bytes())?;
        }
        Ok(())
    }

    /// The live registrations with their handles, taken out of the lock.
    fn live(&self) -> Result<KVec<(u64, Registration)>> {
        let inner = self.inner.lock();
        let mut umems = KVec::with_capacity(inner.umems.iter().count(), GFP_KERNEL)?;
        for (&handle, umem) in inner.umems.iter() {
            umems.push((handle, umem.clone()), GFP_KERNEL)?;
        }
        Ok(umems)
    }

    fn stats(&self, arg: ArgPtr) -> Result {
        let mut req: uapi::Stats = arg.read()?;
        if req.reserved != 0 {
            return Err(EINVAL);
        }
        let (total, live) = if req.handle == 0 {
            let mut total = self.inner.lock().retired;
            let umems = self.live()?;
            for (_, umem) in umems.iter() {
                total.add(&umem.stats());
            }
            (total, umems.len())
        } else {
            (self.lookup(req.handle)?.stats(), 1)
        };
        total.write_to(&mut req);
        // CAST: A count of registrations fits `u64`.
        req.registrations = live as u64;
        arg.write(&req)
    }

    fn dma(&self, arg: ArgPtr) -> Result {
        let mut req: uapi::Dma = arg.read()?;
        self.check_caller()?;
        req.faults = dma_copy::copy(&req, self.id, |handle| self.lookup(handle))?;
        arg.write(&req)
    }
}
