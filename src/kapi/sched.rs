// SPDX-License-Identifier: GPL-2.0

//! Scheduling helpers the `kernel` crate does not provide.
//!
//! C headers: [`include/linux/sched.h`](srctree/include/linux/sched.h),
//! [`include/linux/sched/signal.h`](srctree/include/linux/sched/signal.h).

use crate::bindings as odp;

/// Lets other tasks run if this one has used its time (`cond_resched()`). It may sleep, like
/// taking a mutex: not for atomic context (`CONFIG_DEBUG_ATOMIC_SLEEP` reports such a call).
pub(crate) fn cond_resched() {
    // SAFETY: `cond_resched()` has no memory-safety precondition.
    unsafe { odp::odp_shim_cond_resched() };
}

/// Whether the current task has been sent a fatal signal (`fatal_signal_pending(current)`).
pub(crate) fn fatal_signal_pending() -> bool {
    // SAFETY: Always safe to call from process context.
    unsafe { odp::odp_shim_fatal_signal_pending() }
}
