// SPDX-License-Identifier: GPL-2.0

//! The in-kernel API for device drivers (NICs and others): registrations a driver makes for its
//! own device, in the process that calls it, with callbacks that let it zap its own translations
//! before pages go.
//!
//! C header: `include/linux/odp_hmm.h` (kernel-doc, contexts, errnos, and the porting table from
//! `ib_umem_odp`); the C ABI and its exports: `kapi/driver_abi.rs`, `shim/odp_shim.c`. This file
//! is the safe half: it turns the driver's arguments into the same core calls that
//! `/dev/odp_hmm` makes ([`OdpUmem`]).
//!
//! A driver's registration maps for the driver's own device, not the module's current DMA
//! device, so nothing here revokes it when that device goes: the driver releases its
//! registrations before its device is unbound, as it would release `ib_umem_odp`s.

use kernel::{
    page::{
        PAGE_SHIFT,
        PAGE_SIZE, //
    },
    pci,
    prelude::*,
    sync::{
        aref::ARef,
        Arc, //
    },
};

use crate::{
    device::range_errno,
    dma_device::DmaDevice,
    hmm_dma_map::Backend,
    kapi::{
        hmm::Request,
        mm::task_size,
        params, //
    },
    odp_umem::{
        check_mapped,
        page_entry,
        Locked,
        OdpUmem,
        Revoked,
        UmemClient, //
    },
    range::{
        PageSpan,
        RangeError,
        UserRange, //
    },
    uapi,
};

/// One registration of a driver.
///
/// # Invariants
///
/// `umem` is live (not revoked) until this value is dropped, which revokes it.
pub(crate) struct DriverUmem {
    umem: Arc<OdpUmem>,
}

impl DriverUmem {
    /// Registers `addr..addr + length` of the calling process's memory for `pci`, with access
    /// `access` (`ODP_HMM_ACCESS_*`), telling `client` of every invalidation.
    ///
    /// # Errors
    ///
    /// `EINVAL` for bad flags, alignment or length, `EOVERFLOW`, `EFAULT` if the range is not
    /// mapped, `EOPNOTSUPP` if the device would bounce, `ENOMEM`.
    pub(crate) fn new(
        pci: ARef<pci::Device>,
        addr: u64,
        length: u64,
        access: u32,
        client: KBox<dyn UmemClient>,
    ) -> Result<Self> {
        if access & !(uapi::ACCESS_READ | uapi::ACCESS_WRITE) != 0
            || access & uapi::ACCESS_READ == 0
        {
            return Err(EINVAL);
        }
        let current = current!();
        let mm = current.mm().ok_or(EINVAL)?;
        let range =
            UserRange::new(addr, length, PAGE_SHIFT as u32, task_size(mm)).map_err(range_errno)?;
        check_mapped(mm, &range)?;
        let dev = DmaDevice::new(pci, None)?;
        let backend = Backend::from_uapi(params::backend())?;
        let writable = access & uapi::ACCESS_WRITE != 0;
        let umem = OdpUmem::new(mm, dev, range, writable, backend, Some(client))?;
        // INVARIANT: Just made, not revoked.
        Ok(Self { umem })
    }

    /// The registered range.
    pub(crate) fn range(&self) -> &UserRange {
        self.umem.range()
    }

    /// The pages of `addr..addr + length`, rounded out to whole pages; `ERANGE` outside the
    /// registration.
    fn span(&self, addr: u64, length: u64) -> Result<PageSpan> {
        let page = PAGE_SIZE as u64;
        if length == 0 {
            return Err(EINVAL);
        }
        let end = addr.checked_add(length).ok_or(EOVERFLOW)?;
        let first = addr - addr % page;
        let end = end.checked_next_multiple_of(page).ok_or(EOVERFLOW)?;
        self.range()
            .sub_range(first, end - first)
            .map_err(|err| match err {
                RangeError::Overflow => EOVERFLOW,
                _ => ERANGE,
            })
    }

    /// What `ODP_HMM_MAP_*` flags ask.
    fn request(flags: u32) -> Result<Request> {
        match flags {
            0 => Ok(Request::Read),
            uapi::FAULT_WRITE => Ok(Request::Write),
            uapi::FAULT_NO_FAULT => Ok(Request::Snapshot),
            _ => Err(EINVAL),
        }
    }

    /// Faults and maps `addr..addr + length` as `flags` ask and returns with the update lock
    /// held, with the number of pages mapped (see `odp_hmm_umem_map_and_lock()`).
    pub(crate) fn map_and_lock(
        &self,
        addr: u64,
        length: u64,
        flags: u32,
    ) -> Result<(Locked<'_>, usize)> {
        let span = self.span(addr, length)?;
        self.umem.fault_and_lock(span, Self::request(flags)?)
    }

    /// Faults and maps `addr..addr + length` as `flags` ask; returns the number of its pages
    /// mapped afterwards.
    pub(crate) fn prefetch(&self, addr: u64, length: u64, flags: u32) -> Result<u64> {
        let span = self.span(addr, length)?;
        let done = self.umem.fault(span, Self::request(flags)?)?;
        if done.refused > 0 {
            return Err(EREMOTEIO);
        }
        Ok(done.valid)
    }

    /// The update lock.
    pub(crate) fn lock(&self) -> Locked<'_> {
        self.umem.lock()
    }

    /// The update lock the current task kept.
    ///
    /// # Safety
    ///
    /// As [`OdpUmem::kept`]: the current task holds it.
    pub(crate) unsafe fn kept(&self) -> Locked<'_> {
        // SAFETY: The caller's guarantee.
        unsafe { self.umem.kept() }
    }

    /// The DMA address of the page of `addr` and its `ODP_HMM_PAGE_*` flags, under the lock;
    /// `ENOENT` (with the flags) if the device cannot reach it.
    pub(crate) fn dma_addr(
        &self,
        locked: &mut Locked<'_>,
        addr: u64,
    ) -> (Result<u64>, Option<u32>) {
        let view = self.span(addr, 1).and_then(|span| locked.page(span.first));
        match view {
            Ok(view) => {
                let entry = page_entry(view.state, view.dma_addr);
                (view.dma_addr.ok_or(ENOENT), Some(entry.flags))
            }
            Err(err) => (Err(err), None),
        }
    }

    /// The counters, as `struct odp_hmm_stats` reports them.
    pub(crate) fn stats(&self) -> uapi::Stats {
        let mut out = uapi::Stats::default();
        self.umem.stats().write_to(&mut out);
        out.registrations = 1;
        out
    }
}

impl Drop for DriverUmem {
    fn drop(&mut self) {
        // Unmapped now; the notifier goes with the last reference, this one: `umem` is dropped
        // after this, and `remove_user` gave the device's back.
        self.umem.device().remove_user(&self.umem);
        self.umem.revoke(Revoked::Unregistered);
    }
}
