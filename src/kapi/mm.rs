// SPDX-License-Identifier: GPL-2.0

//! Memory-management helpers the `kernel` crate does not provide.
//!
//! C headers: [`include/linux/mm.h`](srctree/include/linux/mm.h),
//! [`include/linux/sched/mm.h`](srctree/include/linux/sched/mm.h).

use kernel::{
    bindings,
    mm::Mm,
    sync::Mutex, //
};

use crate::bindings as odp;

/// The end of the user address space of `mm` (`TASK_SIZE` for its task).
pub(crate) fn task_size(mm: &Mm) -> u64 {
    // SAFETY: `mm` is a valid `mm_struct` by its type invariants; `task_size` is set when the
    // address space is created and never changes afterwards.
    let size = unsafe { (*mm.as_raw()).__bindgen_anon_1.task_size };
    // CAST: `unsigned long` is 64 bits wide here (see `kapi`).
    size as u64
}

/// Marks the folio of `pfn` dirty, after the device may have written to it.
///
/// # Safety
///
/// `pfn` must be a page that `hmm_range_fault()` reported and that is still mapped in the address
/// space it was faulted from (the invalidation callback runs before the mapping goes), which keeps
/// the page and its file mapping alive during the call.
pub(crate) unsafe fn set_pfn_dirty(pfn: u64) {
    // SAFETY: The page is mapped, so it and its mapping are alive (the caller's guarantee).
    // CAST: PFNs are `unsigned long`, 64 bits wide here (see `kapi`).
    unsafe { odp::odp_shim_set_pfn_dirty(pfn as usize) };
}

/// Tells lockdep that `lock` may be taken by memory reclaim (an mmu notifier callback can run
/// from reclaim), so that an allocation that could recurse into reclaim while holding it is
/// reported at once rather than when reclaim happens to hit it. The same priming as
/// `ib_init_umem_odp()`.
pub(crate) fn lockdep_prime_reclaim<T>(lock: &Mutex<T>) {
    // SAFETY: Always safe to call; paired with the release below.
    unsafe { odp::odp_shim_fs_reclaim_acquire() };
    drop(lock.lock());
    // SAFETY: Paired with the acquire above.
    unsafe { odp::odp_shim_fs_reclaim_release() };
}

/// Whether the current task has the capability `cap` (`CAP_*`), as `capable()`.
pub(crate) fn capable(cap: u32) -> bool {
    // CAST: Capability numbers are small.
    // SAFETY: Always safe to call from process context.
    unsafe { bindings::capable(cap as i32) }
}
