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
    kapi::{hmm::Request, mm::task_size, params},
    odp_umem::{
        OdpUmem,
        Revoked,
        UmemStats, //
    },
    range::{
        RangeError,
        UserRange, //
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
    umems: RBTree<u64, Arc<OdpUmem>>,
    /// Bytes registered by the live registrations (and those being made), against
    /// `file_limit_mb`.
    registered: u64,
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
                inner <- new_mutex!(
                    FileInner {
                        next_handle: 1,
                        umems: RBTree::new(),
                        registered: 0,
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
}

#[pinned_drop]
impl PinnedDrop for OdpFile {
    fn drop(self: Pin<&mut Self>) {
        let umems = core::mem::replace(&mut self.inner.lock().umems, RBTree::new());
        for umem in umems.values() {
            retire(umem);
        }
    }
}

/// Tears a registration down: the device stops reaching its pages now (later calls that still
/// hold it get `ENOENT`); the notifier goes when the last reference does. Returns its final
/// counters.
fn retire(umem: &Arc<OdpUmem>) -> UmemStats {
    umem.device().remove_user(umem);
    umem.revoke(Revoked::Unregistered)
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
    fn lookup(&self, handle: u64) -> Result<Arc<OdpUmem>> {
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
        if req.flags & !(uapi::ACCESS_READ | uapi::ACCESS_WRITE) != 0
            || req.flags & uapi::ACCESS_READ == 0
        {
            return Err(EINVAL);
        }
        let backend = match req.backend {
            uapi::BACKEND_DEFAULT => Backend::from_uapi(params::backend())?,
            other => Backend::from_uapi(other)?,
        };
        self.check_caller()?;
        let current = current!();
        let mm = current.mm().ok_or(EPERM)?;
        let range = UserRange::new(req.addr, req.length, PAGE_SHIFT as u32, task_size(mm))
            .map_err(range_errno)?;
        let dev = dma_device::current()?;
        let handle = self.reserve(range.len())?;
        let writable = req.flags & uapi::ACCESS_WRITE != 0;
        let umem = match OdpUmem::new(mm, dev, range, writable, backend) {
            Ok(umem) => umem,
            Err(err) => {
                let mut inner = self.inner.lock();
                inner.registered = inner.registered.saturating_sub(range.len());
                return Err(err);
            }
        };
        let published = umem
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
                    .try_create_and_insert(handle, umem.clone(), GFP_KERNEL)
                    .map(drop)
            });
        if let Err(err) = published {
            retire(&umem);
            let mut inner = self.inner.lock();
            inner.registered = inner.registered.saturating_sub(range.len());
            return Err(err);
        }
        Ok(())
    }

    /// Takes a handle for a registration of `len` bytes and counts the bytes against the file's
    /// limit (`ENOSPC` beyond it, or when handles run out).
    fn reserve(&self, len: u64) -> Result<u64> {
        let mut inner = self.inner.lock();
        let registered = inner.registered.checked_add(len).ok_or(ENOSPC)?;
        if params::file_limit_bytes().is_some_and(|limit| registered > limit) {
            return Err(ENOSPC);
        }
        let handle = inner.next_handle;
        inner.next_handle = handle.checked_add(1).ok_or(ENOSPC)?;
        inner.registered = registered;
        Ok(handle)
    }

    fn unregister(&self, arg: ArgPtr) -> Result {
        let req: uapi::Unregister = arg.read()?;
        if req.reserved != 0 {
            return Err(EINVAL);
        }
        self.check_caller()?;
        let umem = self.inner.lock().umems.remove(&req.handle).ok_or(ENOENT)?;
        let last = retire(&umem);
        let mut inner = self.inner.lock();
        inner.registered = inner.registered.saturating_sub(umem.range().len());
        add_stats(&mut inner.retired, &last);
        Ok(())
    }

    fn fault(&self, arg: ArgPtr) -> Result {
        let mut req: uapi::Fault = arg.read()?;
        let request = match req.flags {
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

    fn stats(&self, arg: ArgPtr) -> Result {
        let mut req: uapi::Stats = arg.read()?;
        if req.reserved != 0 {
            return Err(EINVAL);
        }
        let (total, live) = if req.handle == 0 {
            let (mut total, umems) = {
                let inner = self.inner.lock();
                let mut umems = KVec::with_capacity(16, GFP_KERNEL)?;
                for umem in inner.umems.values() {
                    umems.push(umem.clone(), GFP_KERNEL)?;
                }
                (inner.retired, umems)
            };
            for umem in umems.iter() {
                add_stats(&mut total, &umem.stats());
            }
            (total, umems.len())
        } else {
            (self.lookup(req.handle)?.stats(), 1)
        };
        req.faults = total.umem.faults;
        req.pages_faulted = total.umem.pages_faulted;
        req.pages_mapped = total.map.pages_mapped;
        req.pages_unmapped = total.map.pages_unmapped;
        req.invalidations = total.umem.invalidations;
        req.invalidations_ignored = total.umem.invalidations_ignored;
        req.fault_retries = total.umem.fault_retries;
        req.link_calls = total.map.link_calls;
        req.sync_calls = total.map.sync_calls;
        req.unlink_calls = total.map.unlink_calls;
        req.p2p_host_bridge_pages = total.map.p2p_host_bridge_pages;
        req.p2p_bus_pages = total.map.p2p_bus_pages;
        req.p2p_refused_pages = total.map.p2p_refused_pages;
        req.iova_bytes = total.iova_bytes;
        req.bookkeeping_bytes = total.bookkeeping_bytes;
        req.pages_now = total.pages_now;
        // CAST: A count of registrations fits `u64`.
        req.registrations = live as u64;
        req.fault_ns = total.umem.fault_ns;
        req.map_ns = total.umem.map_ns;
        req.sync_ns = total.map.sync_ns;
        req.unmap_ns = total.umem.unmap_ns;
        req.link_ns = total.map.link_ns;
        req.invalidations_nonblocking = total.umem.invalidations_nonblocking;
        arg.write(&req)
    }

    fn dma(&self, arg: ArgPtr) -> Result {
        let mut req: uapi::Dma = arg.read()?;
        self.check_caller()?;
        req.faults = dma_copy::copy(&req, self.id, |handle| self.lookup(handle))?;
        arg.write(&req)
    }
}

/// Adds the counters and gauges of `b` to `a`.
fn add_stats(a: &mut UmemStats, b: &UmemStats) {
    a.umem.faults += b.umem.faults;
    a.umem.pages_faulted += b.umem.pages_faulted;
    a.umem.invalidations += b.umem.invalidations;
    a.umem.invalidations_ignored += b.umem.invalidations_ignored;
    a.umem.invalidations_nonblocking += b.umem.invalidations_nonblocking;
    a.umem.fault_retries += b.umem.fault_retries;
    a.umem.fault_ns += b.umem.fault_ns;
    a.umem.map_ns += b.umem.map_ns;
    a.umem.unmap_ns += b.umem.unmap_ns;
    a.map.sync_ns += b.map.sync_ns;
    a.map.link_ns += b.map.link_ns;
    a.map.pages_mapped += b.map.pages_mapped;
    a.map.pages_unmapped += b.map.pages_unmapped;
    a.map.link_calls += b.map.link_calls;
    a.map.sync_calls += b.map.sync_calls;
    a.map.unlink_calls += b.map.unlink_calls;
    a.map.p2p_host_bridge_pages += b.map.p2p_host_bridge_pages;
    a.map.p2p_bus_pages += b.map.p2p_bus_pages;
    a.map.p2p_refused_pages += b.map.p2p_refused_pages;
    a.iova_bytes += b.iova_bytes;
    a.bookkeeping_bytes += b.bookkeeping_bytes;
    a.pages_now += b.pages_now;
}
