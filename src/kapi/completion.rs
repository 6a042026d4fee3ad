// SPDX-License-Identifier: GPL-2.0

//! A completion that a waiter can give up on: killable, with a timeout.
//!
//! C header: [`include/linux/completion.h`](srctree/include/linux/completion.h).
//!
//! `kernel::sync::Completion` waits uninterruptibly and for ever; a device access that waits for a
//! fault running elsewhere (a userfaultfd handler may never answer) must be killable and bounded.

use kernel::{
    bindings,
    prelude::*,
    time::msecs_to_jiffies,
    types::Opaque, //
};

/// A `struct completion`, completed for all waiters at once.
///
/// # Invariants
///
/// `inner` was initialised by `init_completion()` and never moves (it is pinned).
#[pin_data]
pub(crate) struct KillableCompletion {
    #[pin]
    inner: Opaque<bindings::completion>,
}

// SAFETY: A completion may be completed and waited for from any task.
unsafe impl Send for KillableCompletion {}
// SAFETY: As above; its operations are thread-safe.
unsafe impl Sync for KillableCompletion {}

impl KillableCompletion {
    /// A completion not completed yet.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes; `init_completion()` initialises it in place.
            inner <- Opaque::ffi_init(|slot| unsafe { bindings::init_completion(slot) }),
        })
    }

    /// Wakes every waiter, now and later.
    pub(crate) fn complete_all(&self) {
        // SAFETY: `inner` is initialised (the type invariants).
        unsafe { bindings::complete_all(self.inner.get()) };
    }

    /// Waits until completed (`Ok(true)`), for at most `timeout_ms` (`Ok(false)`), or until the
    /// task is sent a fatal signal (`EINTR`).
    pub(crate) fn wait_killable_timeout(&self, timeout_ms: u32) -> Result<bool> {
        // SAFETY: `inner` is initialised (the type invariants).
        let left = unsafe {
            bindings::wait_for_completion_killable_timeout(
                self.inner.get(),
                msecs_to_jiffies(timeout_ms),
            )
        };
        match left {
            0 => Ok(false),
            n if n > 0 => Ok(true),
            _ => Err(EINTR),
        }
    }
}
