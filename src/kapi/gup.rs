// SPDX-License-Identifier: GPL-2.0

//! Long-term pins of user pages: the non-ODP registration (`backend=pinned`).
//!
//! C headers: [`include/linux/mm.h`](srctree/include/linux/mm.h) (`pin_user_pages_fast()`,
//! `unpin_user_pages_dirty_lock()`), [`include/linux/mm_types.h`](srctree/include/linux/mm_types.h)
//! (`FOLL_*`, `mm_struct::pinned_vm`).
//!
//! [`PinnedPages`] pins a range of the current task's memory with `FOLL_LONGTERM`, the way
//! `ib_umem_get()` does for an RDMA memory region that is not ODP: the pages are charged to the
//! address space's `pinned_vm` against `RLIMIT_MEMLOCK` (unless the caller has `CAP_IPC_LOCK`),
//! and stay allocated, whatever later happens to the mapping, until the value is dropped.

use core::ptr::NonNull;

use kernel::{
    bindings,
    error::to_result,
    mm::Mm,
    page::PAGE_SIZE,
    prelude::*,
    sync::aref::ARef, //
};

use crate::{
    bindings as odp,
    kapi::sched::{
        cond_resched,
        fatal_signal_pending, //
    },
};

/// Pages pinned per `pin_user_pages_fast()` call: its count is an `int`, and a fatal signal is
/// noticed between calls.
const PIN_CHUNK: usize = 1 << 14;

/// A pinned page: its page frame number, and the order of its folio (0 for a small page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PinnedPage {
    /// Page frame number.
    pub(crate) pfn: u64,
    /// `folio_order()` of the folio holding it.
    pub(crate) folio_order: u32,
}

/// `len` pages of one address space, pinned with `FOLL_LONGTERM`.
///
/// # Invariants
///
/// - `pages` points to a `kvcalloc()` array of `len` pointers, owned by this value, each to a
///   page pinned by `pin_user_pages_fast()` for this value (one pin each).
/// - `mm`'s `pinned_vm` was charged `len` pages for this value.
pub(crate) struct PinnedPages {
    pages: NonNull<*mut bindings::page>,
    len: usize,
    mm: ARef<Mm>,
    /// The pages were pinned for writing: mark them dirty when they are unpinned.
    dirty: bool,
}

// SAFETY: The value owns its pins and its array; nothing in it is tied to the task that made it
// (`ib_umem_release()` unpins from another task too). Its drop sleeps (folio locks, `kvfree()`):
// it is dropped in process context only, like every registration.
unsafe impl Send for PinnedPages {}
// SAFETY: Shared access only reads the page pointers.
unsafe impl Sync for PinnedPages {}

impl PinnedPages {
    /// Pins the `npages` pages from user address `start` of `mm`, which must be the current
    /// task's address space, for writing if `write` (which breaks copy-on-write first, so that
    /// the device and the process share the pages).
    ///
    /// # Errors
    ///
    /// `EINVAL` if `mm` is not the current task's or `npages` is 0, `ENOMEM` if `RLIMIT_MEMLOCK`
    /// does not allow the pages (and the caller lacks `CAP_IPC_LOCK`) or the page array cannot
    /// be had, `EINTR` on a fatal signal, and what `pin_user_pages_fast()` reports (`EFAULT` for
    /// an address that cannot be pinned: unmapped, `VM_IO`/`VM_PFNMAP`, a file the kernel will
    /// not pin long-term, ...).
    pub(crate) fn pin(mm: &Mm, start: u64, npages: usize, write: bool) -> Result<Self> {
        let current = current!();
        let is_current = current.mm().is_some_and(|cur| cur.as_raw() == mm.as_raw());
        if !is_current || npages == 0 {
            return Err(EINVAL);
        }
        let bytes = npages.checked_mul(PAGE_SIZE).ok_or(EOVERFLOW)?;
        // CAST: User addresses fit `usize` on the 64-bit targets this module builds for.
        let start = start as usize;
        start.checked_add(bytes).ok_or(EOVERFLOW)?;
        // SAFETY: `mm` is a live `mm_struct` (its type invariants); the charge is undone on every
        // path below that does not keep it.
        to_result(unsafe { odp::odp_shim_pinned_vm_charge(mm.as_raw(), npages) })?;
        // SAFETY: Any sizes may be passed; `kvcalloc()` checks the product for overflow.
        let raw =
            unsafe { odp::odp_shim_state_array_alloc(npages, size_of::<*mut bindings::page>()) };
        let Some(pages) = NonNull::new(raw.cast::<*mut bindings::page>()) else {
            // SAFETY: Undoes the charge above.
            unsafe { odp::odp_shim_pinned_vm_uncharge(mm.as_raw(), npages) };
            return Err(ENOMEM);
        };
        // INVARIANT: `len` counts the pages pinned so far: on a failure below, dropping the
        // value unpins them, frees the array and undoes the whole charge.
        let mut pinned = Self {
            pages,
            len: 0,
            mm: ARef::from(mm),
            dirty: write,
        };
        let flags = bindings::FOLL_LONGTERM | if write { bindings::FOLL_WRITE } else { 0 };
        while pinned.len < npages {
            if fatal_signal_pending() {
                pinned.uncharge_unpinned(npages);
                return Err(EINTR);
            }
            let want = (npages - pinned.len).min(PIN_CHUNK);
            // SAFETY: The array has room for `npages` pointers and `pinned.len + want <= npages`.
            let slot = unsafe { pages.as_ptr().add(pinned.len) };
            // CAST: `want` is at most `PIN_CHUNK`, which fits `int`.
            // SAFETY: `slot` has room for `want` pointers; the range is in the current task's
            // address space (checked above), which `pin_user_pages_fast()` works on.
            let got = unsafe {
                bindings::pin_user_pages_fast(
                    start + pinned.len * PAGE_SIZE,
                    want as i32,
                    flags,
                    slot,
                )
            };
            let got = match usize::try_from(got) {
                Ok(0) => Err(EFAULT),
                Ok(n) => Ok(n.min(want)),
                Err(_) => Err(Error::from_errno(got)),
            };
            match got {
                Ok(n) => pinned.len += n,
                Err(err) => {
                    pinned.uncharge_unpinned(npages);
                    return Err(err);
                }
            }
            cond_resched();
        }
        Ok(pinned)
    }

    /// Before a failed [`Self::pin`] drops the value: gives back the charge of the pages that
    /// were not pinned (the drop gives back the rest).
    fn uncharge_unpinned(&mut self, npages: usize) {
        // SAFETY: `npages` were charged and `self.len` of them will be uncharged by the drop.
        unsafe { odp::odp_shim_pinned_vm_uncharge(self.mm.as_raw(), npages - self.len) };
    }

    /// The pinned page `idx`, if `idx < len`.
    pub(crate) fn page(&self, idx: usize) -> Option<PinnedPage> {
        if idx >= self.len {
            return None;
        }
        // SAFETY: `idx < len`, and each of the first `len` entries is a pinned page (the type
        // invariants).
        let page = unsafe { *self.pages.as_ptr().add(idx) };
        let mut folio_order = 0;
        // SAFETY: `page` is pinned, so it is a live page; `folio_order` is a valid destination.
        let pfn = unsafe { odp::odp_shim_pinned_page_pfn(page, &mut folio_order) };
        // CAST: PFNs are `unsigned long`, 64 bits wide here (see `kapi`).
        Some(PinnedPage {
            pfn: pfn as u64,
            folio_order,
        })
    }
}

impl Drop for PinnedPages {
    fn drop(&mut self) {
        // In chunks, with a chance to reschedule between them: a large registration has millions
        // of pages.
        let mut done = 0;
        while done < self.len {
            let n = (self.len - done).min(PIN_CHUNK);
            // SAFETY: The first `len` entries are pages this value pinned, once each (the type
            // invariants); `done + n <= len`, and each chunk is unpinned once and not used again.
            unsafe {
                bindings::unpin_user_pages_dirty_lock(self.pages.as_ptr().add(done), n, self.dirty)
            };
            done += n;
            cond_resched();
        }
        // SAFETY: The charge of the pinned pages is undone here, once (the type invariants).
        unsafe { odp::odp_shim_pinned_vm_uncharge(self.mm.as_raw(), self.len) };
        // SAFETY: The array came from `kvcalloc()` (the type invariants) and is not used again.
        unsafe { bindings::kvfree(self.pages.as_ptr().cast()) };
    }
}
