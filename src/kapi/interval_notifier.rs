// SPDX-License-Identifier: GPL-2.0

//! MMU interval notifiers: being told before a range of an address space changes.
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h).
//!
//! The contract (`Documentation/mm/hmm.rst`): a reader takes a sequence number
//! (`mmu_interval_read_begin()`, inside `hmm_range_fault_unlocked_timeout()`), reads the page
//! tables, then takes its *update lock* and commits only if [`IntervalNotifier::read_retry`] says
//! no invalidation ran in between. The invalidation callback takes the same update lock and calls
//! [`Invalidation::set_seq`] under it before it tears anything down.

use core::{
    marker::PhantomPinned,
    ptr::NonNull, //
};

use kernel::{
    bindings,
    error::to_result,
    mm::MmWithUser,
    prelude::*,
    types::Opaque, //
};

use crate::bindings as odp;

/// What an [`IntervalNotifier`] calls when its range is about to change.
pub(crate) trait Invalidate: Send + Sync {
    /// Called before `inv.start()..inv.end()` of the address space changes.
    ///
    /// It must take the update lock, call [`Invalidation::set_seq`] under it, and stop the device
    /// from using the range before it returns. If [`Invalidation::blockable`] is false it must not
    /// sleep: it may only try the lock, and return `false` if that fails (the mm then retries).
    fn invalidate(&self, inv: &Invalidation<'_>) -> bool;
}

/// Why a range is invalidated (`enum mmu_notifier_event`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The address space is going away (process exit): everything is invalidated.
    Release,
    /// Anything else: unmap, protection change, migration, ...
    Other,
}

/// One invalidation, as the callback sees it.
pub(crate) struct Invalidation<'a> {
    sub: *mut bindings::mmu_interval_notifier,
    range: &'a bindings::mmu_notifier_range,
    cur_seq: c_ulong,
}

impl Invalidation<'_> {
    /// First address of the range.
    pub(crate) fn start(&self) -> u64 {
        // CAST: `unsigned long` is 64 bits wide here (see `kapi`).
        self.range.start as u64
    }

    /// One past the last address of the range.
    pub(crate) fn end(&self) -> u64 {
        // CAST: As above.
        self.range.end as u64
    }

    /// Why the range changes.
    pub(crate) fn event(&self) -> Event {
        if self.range.event == bindings::mmu_notifier_event_MMU_NOTIFY_RELEASE {
            Event::Release
        } else {
            Event::Other
        }
    }

    /// Whether the callback may sleep.
    pub(crate) fn blockable(&self) -> bool {
        // SAFETY: `range` is the live range the mm passed to the callback.
        unsafe { odp::odp_shim_mmu_notifier_range_blockable(self.range) }
    }

    /// Publishes the new sequence number: readers that began before it will retry. Must be
    /// called with the update lock held.
    pub(crate) fn set_seq(&self) {
        // SAFETY: `sub` is the notifier the callback runs for, valid during the callback.
        unsafe { odp::odp_shim_mmu_interval_set_seq(self.sub, self.cur_seq) };
    }
}

/// The notifier and its data, in an allocation of their own that never moves: the interval tree
/// points at `raw`, and a callback may use `data` until the notifier is removed.
#[pin_data]
struct Node<T: Invalidate> {
    #[pin]
    raw: Opaque<bindings::mmu_interval_notifier>,
    #[pin]
    data: T,
    #[pin]
    _pin: PhantomPinned,
}

/// An mmu interval notifier over a range of one address space, with the data `T` its callback
/// works on.
///
/// # Invariants
///
/// `node` points to a pinned [`Node`] allocated by `KBox` and owned by this value, whose `raw` is
/// inserted in the interval tree of an mm with ops that call `T::invalidate` on its `data`. The
/// node is reached only through shared references (here and from the callback) and only freed
/// after the notifier is removed, so no `&mut` to it ever coexists with a running callback.
pub(crate) struct IntervalNotifier<T: Invalidate> {
    node: NonNull<Node<T>>,
}

// SAFETY: The C notifier may be used from any thread; `T` is `Send + Sync`, and the node is owned.
unsafe impl<T: Invalidate> Send for IntervalNotifier<T> {}
// SAFETY: The only `&self` operations on the C notifier (`read_begin`, `read_retry`) are safe to
// call concurrently; `T` is `Sync`.
unsafe impl<T: Invalidate> Sync for IntervalNotifier<T> {}

impl<T: Invalidate> IntervalNotifier<T> {
    /// Creates a notifier over `start..start + len` of `mm` with `data` for its callback, and
    /// inserts it. It must not be called with `mm`'s mmap lock held.
    pub(crate) fn insert(
        mm: &MmWithUser,
        start: u64,
        len: u64,
        data: impl PinInit<T, Error>,
    ) -> Result<Self> {
        let node = KBox::pin_init(
            try_pin_init!(Node {
                raw: Opaque::zeroed(),
                data <- data,
                _pin: PhantomPinned,
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: The node is never moved out of its allocation: it is only reached through the
        // pointer from now on, and freed in place (`Drop`).
        let node = NonNull::from(KBox::leak(unsafe { Pin::into_inner_unchecked(node) }));
        // SAFETY: `raw` is zeroed and will not move (above); `mm` has users, as the caller holds
        // it; `OPS` calls back into `Node<T>` through `container_of`; the node is alive.
        let inserted = to_result(unsafe {
            bindings::mmu_interval_notifier_insert(
                node.as_ref().raw.get(),
                mm.as_raw(),
                // CAST: User addresses fit `unsigned long` (see `kapi`).
                start as usize,
                len as usize,
                &Self::OPS,
            )
        });
        if let Err(err) = inserted {
            // SAFETY: The node came from `KBox` above and was never inserted: nothing else can
            // reach it.
            drop(unsafe { KBox::from_raw(node.as_ptr()) });
            return Err(err);
        }
        // INVARIANT: The notifier is inserted, in a node owned by the value returned.
        Ok(Self { node })
    }

    fn node(&self) -> &Node<T> {
        // SAFETY: The node is alive while `self` is (the type invariants), and only ever shared.
        unsafe { self.node.as_ref() }
    }

    fn raw(&self) -> *mut bindings::mmu_interval_notifier {
        self.node().raw.get()
    }

    /// The data the callback works on.
    pub(crate) fn data(&self) -> &T {
        &self.node().data
    }

    /// Whether an invalidation ran since `seq` was read: if so, what was read must be discarded.
    /// Must be called with the update lock held (the lock [`Invalidate::invalidate`] takes).
    pub(crate) fn read_retry(&self, seq: u64) -> bool {
        // SAFETY: `raw` is inserted by the type invariants.
        // CAST: `seq` came from `read_begin` as an `unsigned long`.
        unsafe { odp::odp_shim_mmu_interval_read_retry(self.raw(), seq as usize) }
    }

    /// The raw notifier, for `struct hmm_range`.
    pub(crate) fn as_raw(&self) -> *mut bindings::mmu_interval_notifier {
        self.raw()
    }

    const OPS: bindings::mmu_interval_notifier_ops = bindings::mmu_interval_notifier_ops {
        invalidate: Some(Self::invalidate_callback),
        ..pin_init::zeroed()
    };

    /// # Safety
    ///
    /// Called by the mm with `sub` the `raw` field of a live `Node<T>` (inserted with
    /// [`Self::OPS`]) and `range` a valid range, for the duration of the call.
    unsafe extern "C" fn invalidate_callback(
        sub: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: c_ulong,
    ) -> bool {
        let raw = Opaque::cast_from(sub).cast_mut();
        // SAFETY: `sub` is the `raw` field of a `Node<T>`, which stays alive while it is inserted
        // (it is removed, waiting for running callbacks, before it is freed); it is only shared.
        let node = unsafe { &*kernel::container_of!(raw, Node<T>, raw) };
        let inv = Invalidation {
            sub,
            // SAFETY: The mm passes a valid range for the duration of the callback.
            range: unsafe { &*range },
            cur_seq,
        };
        node.data.invalidate(&inv)
    }
}

impl<T: Invalidate> Drop for IntervalNotifier<T> {
    fn drop(&mut self) {
        // SAFETY: The notifier is inserted by the type invariants; removing it waits for any
        // running callback, after which none runs again. The caller holds no lock the callback
        // takes (drops happen outside the update lock).
        unsafe { bindings::mmu_interval_notifier_remove(self.raw()) };
        // SAFETY: The node came from `KBox` and nothing can reach it any more: the notifier is
        // removed, and `self` goes.
        drop(unsafe { KBox::from_raw(self.node.as_ptr()) });
    }
}
