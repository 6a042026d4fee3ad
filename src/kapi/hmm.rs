// SPDX-License-Identifier: GPL-2.0

//! `hmm_range_fault()`: reading (and faulting in) the page tables of a range.
//!
//! C header: [`include/linux/hmm.h`](srctree/include/linux/hmm.h).

use kernel::{
    error::to_result,
    mm::MmapReadGuard,
    prelude::*, //
};

use crate::{
    bindings as odp,
    kapi::interval_notifier::{
        IntervalNotifier,
        Invalidate, //
    },
};

/// What to ask of each page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// Report what is present; fault nothing in.
    Snapshot,
    /// Fault every page in, readable.
    Read,
    /// Fault every page in, writable (breaking copy-on-write).
    Write,
}

/// Fills `pfns` with the state of the pages of `start..start + pfns.len() * PAGE_SIZE`, which
/// must lie inside `notifier`'s range, faulting them in as `request` asks.
///
/// `seq` is from [`IntervalNotifier::read_begin`], and `_mmap` proves the mmap lock of the
/// notifier's mm is held. The words in `pfns` are in the `HMM_PFN_*` layout; their request bits
/// are overwritten. Nothing is pinned: the result is only valid once the caller has checked
/// [`IntervalNotifier::read_retry`] under its update lock.
///
/// # Errors
///
/// `EBUSY` if the range was invalidated meanwhile (retry with a new `seq`), `EFAULT` if a page
/// cannot be faulted in (no VMA, `VM_IO`/`VM_PFNMAP`, not readable), `EPERM` if a write is asked
/// of a read-only VMA, `ENOMEM`.
pub(crate) fn range_fault<T: Invalidate>(
    notifier: &IntervalNotifier<T>,
    seq: u64,
    start: u64,
    pfns: &mut [u64],
    request: Request,
    _mmap: &MmapReadGuard<'_>,
) -> Result {
    let default_flags = match request {
        Request::Snapshot => 0,
        Request::Read => crate::pfn_flags::REQ_FAULT,
        Request::Write => crate::pfn_flags::REQ_FAULT | crate::pfn_flags::REQ_WRITE,
    };
    // CAST: The page count of a fault batch fits in an address-space-sized `u64`.
    let len = (pfns.len() as u64) << kernel::page::PAGE_SHIFT;
    // CAST: `unsigned long` is 64 bits wide on the targets this module builds for (see `kapi`).
    let mut range = odp::hmm_range {
        notifier: notifier.as_raw(),
        notifier_seq: seq as usize,
        start: start as usize,
        end: (start + len) as usize,
        hmm_pfns: pfns.as_mut_ptr().cast::<usize>(),
        default_flags: default_flags as usize,
        pfn_flags_mask: 0,
        dev_private_owner: core::ptr::null_mut(),
    };
    // SAFETY: `range` describes `pfns.len()` pages backed by `pfns`, its notifier is inserted,
    // and the caller holds the mmap read lock of the notifier's mm.
    to_result(unsafe { odp::hmm_range_fault(&mut range) })
}
