// SPDX-License-Identifier: GPL-2.0

//! `hmm_range_fault()`: reading (and faulting in) the page tables of a range.
//!
//! C header: [`include/linux/hmm.h`](srctree/include/linux/hmm.h).

use kernel::{
    error::to_result,
    mm::MmWithUser,
    prelude::*,
    time::msecs_to_jiffies, //
};

use crate::{
    bindings as odp,
    kapi::interval_notifier::{
        IntervalNotifier,
        Invalidate, //
    },
};

/// A page frame that `hmm_range_fault()` reported valid and that stays mapped in the registered
/// address space while this value is used: it has a `struct page`, which lives. The functions
/// that look a page up by frame number take one, so that they cannot be handed any number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HmmPage(u64);

impl HmmPage {
    /// Wraps `pfn`.
    ///
    /// # Safety
    ///
    /// `pfn` is the frame of a page that `hmm_range_fault()` reported valid under a sequence
    /// number checked under the update lock (held while the value is used), or of a state word
    /// the mapping manager keeps `DMA_MAPPED` (the page stays mapped until its invalidation,
    /// which takes the same lock).
    pub(crate) unsafe fn new(pfn: u64) -> Self {
        Self(pfn)
    }

    /// The page frame number.
    pub(crate) fn pfn(self) -> u64 {
        self.0
    }
}

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
/// must lie inside `notifier`'s range, faulting them in as `request` asks, with
/// `hmm_range_fault_unlocked_timeout()`: it takes the mmap lock itself and lets page faults drop
/// it (so a userfaultfd handler or a slow file can supply the pages), and retries ranges that an
/// invalidation hit, for up to `timeout_ms`. `mm` (with users) must be the notifier's mm, and the
/// caller must not hold its mmap lock.
///
/// Returns the sequence number the words are valid for: nothing is pinned, so the result may
/// only be used once the caller has checked [`IntervalNotifier::read_retry`] with it under its
/// update lock. The words are in the `HMM_PFN_*` layout; their request bits are overwritten.
///
/// # Errors
///
/// `EBUSY` if the range kept being invalidated for `timeout_ms`, `EFAULT` if a page cannot be
/// faulted in (no VMA, `VM_IO`/`VM_PFNMAP`, not readable) or the mm is exiting, `EPERM` if a
/// write is asked of a read-only VMA, `EINTR` on a fatal signal, `ENOMEM`.
pub(crate) fn range_fault<T: Invalidate>(
    notifier: &IntervalNotifier<T>,
    _mm: &MmWithUser,
    start: u64,
    pfns: &mut [u64],
    request: Request,
    timeout_ms: u32,
) -> Result<u64> {
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
        notifier_seq: 0,
        start: start as usize,
        end: (start + len) as usize,
        hmm_pfns: pfns.as_mut_ptr().cast::<usize>(),
        default_flags: default_flags as usize,
        pfn_flags_mask: 0,
        dev_private_owner: core::ptr::null_mut(),
    };
    // At least one jiffy: 0 would mean "retry forever".
    let timeout = msecs_to_jiffies(timeout_ms).max(1);
    // SAFETY: `range` describes `pfns.len()` pages backed by `pfns`, inside the range of its
    // inserted notifier, whose mm has users (`_mm`); the caller holds no mmap lock.
    to_result(unsafe { odp::hmm_range_fault_unlocked_timeout(&mut range, timeout) })?;
    // CAST: As above.
    Ok(range.notifier_seq as u64)
}
