// SPDX-License-Identifier: GPL-2.0

//! The C ABI of the in-kernel API (`include/linux/odp_hmm.h`): the exported functions, and the
//! driver's callbacks as a [`UmemClient`].
//!
//! The functions are defined here with the header's names and exported by the C shim
//! (`EXPORT_SYMBOL_GPL`). Each turns the raw pointers it gets into references under the
//! header's contract and calls the safe front-end, [`crate::driver_api`]. A `struct
//! odp_hmm_umem *` is a [`DriverUmem`] in a `KBox`.

use core::{
    ffi::c_void,
    ptr::NonNull, //
};

use kernel::{
    bindings,
    prelude::*, //
};

use crate::{bindings as odp, driver_api::DriverUmem, kapi::pci::get_pci_of, odp_umem::UmemClient};

/// The driver's callbacks and their argument.
///
/// # Invariants
///
/// `ops` points to a `struct odp_hmm_umem_ops` with `invalidate` set, and `invalidate_start` set
/// exactly when `invalidate_finish` is, that outlives the registration (the header's contract).
struct CallbackOps {
    ops: NonNull<odp::odp_hmm_umem_ops>,
    arg: *mut c_void,
}

// SAFETY: The header requires the callbacks to work from whatever task invalidates the range, and
// `arg` is only passed back to them.
unsafe impl Send for CallbackOps {}
// SAFETY: As above; the callbacks may run concurrently for different ranges (the header says so).
unsafe impl Sync for CallbackOps {}

impl CallbackOps {
    fn ops(&self) -> &odp::odp_hmm_umem_ops {
        // SAFETY: `ops` is valid while the registration lives (the type invariants).
        unsafe { self.ops.as_ref() }
    }
}

impl UmemClient for CallbackOps {
    fn invalidate(&self, start: u64, end: u64, blockable: bool) -> bool {
        match self.ops().invalidate {
            // SAFETY: A callback of the driver's, with its argument (the type invariants).
            Some(invalidate) => unsafe { invalidate(self.arg, start, end, blockable) },
            None => true,
        }
    }

    fn two_pass(&self) -> bool {
        self.ops().invalidate_start.is_some() && self.ops().invalidate_finish.is_some()
    }

    fn invalidate_start(&self, start: u64, end: u64) {
        if let Some(start_pass) = self.ops().invalidate_start {
            // SAFETY: As in `invalidate`.
            unsafe { start_pass(self.arg, start, end) };
        }
    }

    fn invalidate_finish(&self, start: u64, end: u64) {
        if let Some(finish) = self.ops().invalidate_finish {
            // SAFETY: As in `invalidate`.
            unsafe { finish(self.arg, start, end) };
        }
    }
}

/// The registration behind a handle.
///
/// # Safety
///
/// `umem` must be a handle `odp_hmm_umem_get()` returned and that is not released yet, for `'a`.
unsafe fn handle<'a>(umem: *mut odp::odp_hmm_umem) -> &'a DriverUmem {
    // SAFETY: Handles are `KBox<DriverUmem>` pointers, alive until released (the caller's
    // guarantee).
    unsafe { &*umem.cast::<DriverUmem>() }
}

/// A negative errno as a C `int`, or a count.
fn int_result(result: Result<usize>) -> c_int {
    match result {
        Ok(n) => c_int::try_from(n).unwrap_or(c_int::MAX),
        Err(err) => err.to_errno(),
    }
}

/// `odp_hmm_umem_get()`.
///
/// # Safety
///
/// `dev` is a valid device, `ops` valid as the header says (or NULL), for the registration's life.
#[no_mangle]
unsafe extern "C" fn odp_hmm_umem_get(
    dev: *mut bindings::device,
    addr: u64,
    length: u64,
    access: u32,
    ops: *const odp::odp_hmm_umem_ops,
    arg: *mut c_void,
) -> *mut odp::odp_hmm_umem {
    let get = || -> Result<KBox<DriverUmem>> {
        let ops = NonNull::new(ops.cast_mut()).ok_or(EINVAL)?;
        // SAFETY: A non-NULL `ops` is valid (the caller's guarantee).
        let table = unsafe { ops.as_ref() };
        if table.invalidate.is_none()
            || table.invalidate_start.is_some() != table.invalidate_finish.is_some()
        {
            return Err(EINVAL);
        }
        // INVARIANT: Checked above; the caller keeps `ops` alive.
        let client = KBox::new(CallbackOps { ops, arg }, GFP_KERNEL)?;
        // SAFETY: `dev` is a valid device (the caller's guarantee).
        let pci = unsafe { get_pci_of(dev) }.ok_or(EOPNOTSUPP)?;
        let umem = DriverUmem::new(pci, addr, length, access, client)?;
        KBox::new(umem, GFP_KERNEL).map_err(Error::from)
    };
    match get() {
        Ok(umem) => KBox::into_raw(umem).cast(),
        Err(err) => err.to_ptr(),
    }
}

/// `odp_hmm_umem_release()`.
///
/// # Safety
///
/// `umem` is a live handle, not locked, not used again.
#[no_mangle]
unsafe extern "C" fn odp_hmm_umem_release(umem: *mut odp::odp_hmm_umem) {
    // SAFETY: The handle is a `KBox<DriverUmem>` that nothing uses any more (the caller's
    // guarantee).
    drop(unsafe { KBox::from_raw(umem.cast::<DriverUmem>()) });
}

/// `odp_hmm_umem_map_and_lock()`.
///
/// # Safety
///
/// `umem` is a live handle that the calling task has not locked.
#[no_mangle]
unsafe extern "C" fn odp_hmm_umem_map_and_lock(
    umem: *mut odp::odp_hmm_umem,
    addr: u64,
    length: u64,
    flags: u32,
) -> c_int {
    // SAFETY: A live handle (the caller's guarantee).
    let umem = unsafe { handle(umem) };
    int_result(umem.map_and_lock(addr, length, flags).map(|(locked, n)| {
        // The driver unlocks with `odp_hmm_umem_unlock()`.
        locked.keep();
        n
    }))
}

/// `odp_hmm_umem_prefetch()`.
///
/// # Safety
///
/// `umem` is a live handle that the calling task has not locked.
#[no_mangle]
unsafe extern "C" fn odp_hmm_umem_prefetch(
    umem: *mut odp::odp_hmm_umem,
    addr: u64,
    length: u64,
    flags: u32,
) -> c_int {
    // SAFETY: A live handle (the caller's guarantee).
    let umem = unsafe { handle(umem) };
    int_result(umem.prefetch(addr, length, flags).map(|n| {
        // CAST: A page count of one registration fits `usize`.
        n as usize
    }))
}

/// `odp_hmm_umem_lock()`.
///
/// # Safety
///
/// `umem` is a live handle that the calling task has not locked.
#[no_mangle]
unsafe extern "C" fn odp_hmm_umem_lock(umem: *mut odp::odp_hmm_umem) {
    // SAFETY: A live handle (the caller's guarantee).
    unsafe { handle(umem) }.lock().keep();
}

/// `odp_hmm_umem_unlock()`.
///
/// # Safety
///
/// `umem` is a live handle that the calling task locked.
#[no_mangle]
unsafe extern "C" fn odp_hmm_umem_unlock(umem: *mut odp::odp_hmm_umem) {
    // SAFETY: A live handle, locked by this task (the caller's guarantee); dropping the guard
    // unlocks.
    drop(unsafe { handle(umem).kept() });
}

/// `odp_hmm_umem_assert_held()`.
///
/// # Safety
///
/// `umem` is a live handle that the calling task locked.
#[no_mangle]
unsafe extern "C" fn odp_hmm_umem_assert_held(umem: *mut odp::odp_hmm_umem) {
    // SAFETY: As for `odp_hmm_umem_unlock()`; making the guard asserts the lock is held (lockdep),
    // and keeping it leaves it held.
    unsafe { handle(umem).kept() }.keep();
}

/// `odp_hmm_umem_dma_addr()`.
///
/// # Safety
///
/// `umem` is a live handle that the calling task locked; `dma` is valid for a write, and
/// `page_flags` too unless NULL.
#[no_mangle]
unsafe extern "C" fn odp_hmm_umem_dma_addr(
    umem: *mut odp::odp_hmm_umem,
    addr: u64,
    dma: *mut bindings::dma_addr_t,
    page_flags: *mut u32,
) -> c_int {
    // SAFETY: A live handle (the caller's guarantee).
    let umem = unsafe { handle(umem) };
    // SAFETY: This task holds the lock (the caller's guarantee); it is kept below.
    let mut locked = unsafe { umem.kept() };
    let (addr, flags) = umem.dma_addr(&mut locked, addr);
    locked.keep();
    if let (Some(flags), Some(out)) = (flags, NonNull::new(page_flags)) {
        // SAFETY: A non-NULL `page_flags` is valid for a write (the caller's guarantee).
        unsafe { out.write(flags) };
    }
    match addr {
        Ok(addr) => {
            // SAFETY: `dma` is valid for a write (the caller's guarantee).
            unsafe { dma.write(addr) };
            0
        }
        Err(err) => err.to_errno(),
    }
}

/// `odp_hmm_umem_stats()`.
///
/// # Safety
///
/// `umem` is a live handle that the calling task has not locked; `stats` is valid for a write.
#[no_mangle]
unsafe extern "C" fn odp_hmm_umem_stats(
    umem: *mut odp::odp_hmm_umem,
    stats: *mut odp::odp_hmm_stats,
) {
    // SAFETY: A live handle (the caller's guarantee).
    let out = unsafe { handle(umem) }.stats();
    // SAFETY: `stats` is valid for a write (the caller's guarantee).
    unsafe { stats.write(out) };
}

/// `odp_hmm_umem_start()`.
///
/// # Safety
///
/// `umem` is a live handle.
#[no_mangle]
unsafe extern "C" fn odp_hmm_umem_start(umem: *mut odp::odp_hmm_umem) -> u64 {
    // SAFETY: A live handle (the caller's guarantee).
    unsafe { handle(umem) }.range().start()
}

/// `odp_hmm_umem_end()`.
///
/// # Safety
///
/// `umem` is a live handle.
#[no_mangle]
unsafe extern "C" fn odp_hmm_umem_end(umem: *mut odp::odp_hmm_umem) -> u64 {
    // SAFETY: A live handle (the caller's guarantee).
    unsafe { handle(umem) }.range().end()
}
