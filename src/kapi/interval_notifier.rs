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
    /// What a first pass hands to its second pass.
    type Pending: Send;

    /// Called before `inv.start()..inv.end()` of the address space changes.
    ///
    /// It must take the update lock, call [`Invalidation::set_seq`] under it, and stop the device
    /// from using the range before it returns. If [`Invalidation::blockable`] is false it must not
    /// sleep: it may only try the lock, and return `false` if that fails (the mm then retries).
    fn invalidate(&self, inv: &Invalidation<'_>) -> bool;

    /// The first pass of a two-pass invalidation (notifiers inserted with `two_pass`): as
    /// [`Self::invalidate`], but it may leave the rest to [`Self::invalidate_finish`], which the
    /// mm calls once every notifier of the range ran its first pass, before the range changes.
    fn invalidate_start(&self, inv: &Invalidation<'_>) -> FirstPass<Self::Pending> {
        FirstPass::Done(self.invalidate(inv))
    }

    /// The second pass, for what [`Self::invalidate_start`] left (it returned
    /// [`FirstPass::Finish`] with `pending`): called exactly once for each such first pass. It
    /// may sleep (the first pass of a non-blockable invalidation never asks for one).
    fn invalidate_finish(&self, _range: &PassRange, _pending: Self::Pending) {}
}

/// What the first pass of a two-pass invalidation leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FirstPass<P> {
    /// Nothing: the invalidation is complete (`true`) or refused (`false`, as
    /// [`Invalidate::invalidate`] may refuse).
    Done(bool),
    /// The second pass, [`Invalidate::invalidate_finish`], completes it, with this.
    Finish(P),
}

/// The range of an invalidation, as the second pass sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PassRange {
    /// First address.
    pub(crate) start: u64,
    /// One past the last address.
    pub(crate) end: u64,
    /// Why it changes.
    pub(crate) event: Event,
}

/// The second pass of one invalidation: its link in the mm's list, its range, and what its first
/// pass left it.
#[repr(C)]
struct Finish<P> {
    raw: bindings::mmu_interval_notifier_finish,
    range: PassRange,
    pending: P,
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

    /// The range, for a second pass.
    pub(crate) fn pass_range(&self) -> PassRange {
        PassRange {
            start: self.start(),
            end: self.end(),
            event: self.event(),
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
    /// inserts it: with the two-pass callbacks if `two_pass`. It must not be called with `mm`'s
    /// mmap lock held.
    pub(crate) fn insert(
        mm: &MmWithUser,
        start: u64,
        len: u64,
        two_pass: bool,
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
                if two_pass {
                    &Self::TWO_PASS_OPS
                } else {
                    &Self::OPS
                },
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

    const TWO_PASS_OPS: bindings::mmu_interval_notifier_ops = bindings::mmu_interval_notifier_ops {
        invalidate_start: Some(Self::invalidate_start_callback),
        invalidate_finish: Some(Self::invalidate_finish_callback),
        ..pin_init::zeroed()
    };

    /// The node whose `raw` field is `sub`.
    ///
    /// # Safety
    ///
    /// `sub` must be the `raw` field of a live `Node<T>`, alive for `'a`.
    unsafe fn node_of<'a>(sub: *mut bindings::mmu_interval_notifier) -> &'a Node<T> {
        let raw = Opaque::cast_from(sub).cast_mut();
        // SAFETY: `sub` is the `raw` field of a live `Node<T>` (the caller's guarantee); the node
        // is only ever shared.
        unsafe { &*kernel::container_of!(raw, Node<T>, raw) }
    }

    /// The node and the invalidation a first-pass callback is called for.
    ///
    /// # Safety
    ///
    /// As [`Self::invalidate_callback`]: the mm's arguments, valid for `'a`.
    unsafe fn callback_args<'a>(
        sub: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: c_ulong,
    ) -> (&'a Node<T>, Invalidation<'a>) {
        // SAFETY: `sub` is the `raw` field of a `Node<T>`, which stays alive while it is inserted
        // (it is removed, waiting for running callbacks and their second passes, before it is
        // freed).
        let node = unsafe { Self::node_of(sub) };
        let inv = Invalidation {
            sub,
            // SAFETY: The mm passes a valid range for the duration of the callback.
            range: unsafe { &*range },
            cur_seq,
        };
        (node, inv)
    }

    /// # Safety
    ///
    /// As [`Self::invalidate_callback`]; `finish` points to a `NULL` pointer the mm reads after.
    unsafe extern "C" fn invalidate_start_callback(
        sub: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: c_ulong,
        finish: *mut *mut bindings::mmu_interval_notifier_finish,
    ) -> bool {
        // SAFETY: The mm's arguments (the caller's guarantee).
        let (node, inv) = unsafe { Self::callback_args(sub, range, cur_seq) };
        match node.data.invalidate_start(&inv) {
            FirstPass::Done(done) => done,
            FirstPass::Finish(pending) => {
                let range = inv.pass_range();
                // Each invalidation needs its own second-pass record; the callback may run from
                // reclaim, so the allocation may not sleep. Without one, finish now.
                match KBox::<Finish<T::Pending>>::new_uninit(GFP_NOWAIT | __GFP_NOWARN) {
                    Ok(slot) => {
                        let pass = slot.write(Finish {
                            raw: pin_init::zeroed(),
                            range,
                            pending,
                        });
                        // SAFETY: `finish` is valid for writes (the caller's guarantee); the mm
                        // hands the record back to `invalidate_finish_callback`, which frees it.
                        unsafe { *finish = KBox::into_raw(pass).cast() };
                    }
                    Err(_) => node.data.invalidate_finish(&range, pending),
                }
                true
            }
        }
    }

    /// # Safety
    ///
    /// Called by the mm with a record that `invalidate_start_callback` returned, whose
    /// `notifier` the mm set to the notifier it ran for; once.
    unsafe extern "C" fn invalidate_finish_callback(
        finish: *mut bindings::mmu_interval_notifier_finish,
    ) {
        // SAFETY: `finish` came from `KBox::into_raw` of a `Finish<T::Pending>` (whose first field
        // it is, and `Finish` is `repr(C)`), and is handed back once.
        let pass = unsafe { KBox::from_raw(finish.cast::<Finish<T::Pending>>()) };
        // SAFETY: The mm set `notifier` to the notifier whose first pass made the record; it is
        // still inserted (removal waits for the invalidation to end).
        let node = unsafe { Self::node_of(pass.raw.notifier) };
        let Finish { range, pending, .. } = KBox::into_inner(pass);
        node.data.invalidate_finish(&range, pending);
    }

    /// # Safety
    ///
    /// Called by the mm with `sub` the `raw` field of a live `Node<T>` (inserted with
    /// [`Self::OPS`]) and `range` a valid range, for the duration of the call.
    unsafe extern "C" fn invalidate_callback(
        sub: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: c_ulong,
    ) -> bool {
        // SAFETY: The mm's arguments (the caller's guarantee).
        let (node, inv) = unsafe { Self::callback_args(sub, range, cur_seq) };
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
