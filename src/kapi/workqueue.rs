// SPDX-License-Identifier: GPL-2.0

//! The module's own workqueue, for work that must be over before the module's code goes.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h).
//!
//! The `kernel` crate offers the system queues, which outlive the module: a work item of ours
//! still queued there at unload would run freed code. [`ModuleQueue`] owns a queue of its own,
//! and destroying it (module exit) waits for every item queued on it.

use core::{
    ptr::{
        self,
        NonNull, //
    },
    sync::atomic::{
        AtomicPtr,
        Ordering, //
    },
};

use kernel::{
    bindings,
    prelude::*,
    workqueue::Queue, //
};

use crate::bindings as odp;

/// The queue while the module is loaded (null before [`ModuleQueue::new`] and after its drop).
static QUEUE: AtomicPtr<bindings::workqueue_struct> = AtomicPtr::new(ptr::null_mut());

/// The module's workqueue. One exists while the module is loaded (module init makes it).
///
/// # Invariants
///
/// `raw` is a workqueue from `alloc_workqueue()`, also published in [`QUEUE`], destroyed on drop.
pub(crate) struct ModuleQueue {
    raw: NonNull<bindings::workqueue_struct>,
}

// SAFETY: Workqueues may be used and destroyed from any task.
unsafe impl Send for ModuleQueue {}
// SAFETY: As above.
unsafe impl Sync for ModuleQueue {}

impl ModuleQueue {
    /// Allocates the queue and publishes it for [`spawn`].
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: Always safe to call; the result is NULL or a new queue we own.
        let raw = NonNull::new(unsafe { odp::odp_shim_alloc_workqueue() }).ok_or(ENOMEM)?;
        QUEUE.store(raw.as_ptr(), Ordering::Release);
        // INVARIANT: Allocated and published.
        Ok(Self { raw })
    }
}

impl Drop for ModuleQueue {
    fn drop(&mut self) {
        QUEUE.store(ptr::null_mut(), Ordering::Release);
        // SAFETY: The queue is ours (the type invariants); destroying it waits for every item on
        // it. Nothing queues more: the module's files are closed and its drivers gone by now
        // (the queue is the last thing module exit drops).
        unsafe { bindings::destroy_workqueue(self.raw.as_ptr()) };
    }
}

/// Runs `func` on the module's workqueue; `ENODEV` if there is none (module init or exit).
pub(crate) fn spawn(func: impl FnOnce() + Send + 'static) -> Result {
    let raw = QUEUE.load(Ordering::Acquire);
    if raw.is_null() {
        return Err(ENODEV);
    }
    // SAFETY: A published queue stays valid until `ModuleQueue` is dropped, which happens only
    // when no file of the module is open, and so no caller of `spawn` runs.
    let queue = unsafe { Queue::from_raw(raw) };
    queue.try_spawn(GFP_KERNEL, func).map_err(|_| ENOMEM)
}
