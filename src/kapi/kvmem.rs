// SPDX-License-Identifier: GPL-2.0

//! Large arrays whose size a user chooses: the per-page state of a registration.
//!
//! C header: [`include/linux/slab.h`](srctree/include/linux/slab.h) (`kvcalloc()`).
//!
//! `KVVec` allocates with the flags it is given, and the `kernel` crate has no
//! `__GFP_RETRY_MAYFAIL`. A registration's state is sized by the caller, so its allocation must
//! be charged to the caller's memory cgroup (`__GFP_ACCOUNT`), stay silent above `INT_MAX` bytes
//! or when memory is short (`__GFP_NOWARN`: `kvmalloc()` warns otherwise), and fail instead of
//! invoking the OOM killer (`__GFP_RETRY_MAYFAIL`).

use core::{
    ops::{
        Deref,
        DerefMut, //
    },
    ptr::NonNull,
    slice,
};

use kernel::{
    bindings,
    prelude::*,
    transmute::FromBytes, //
};

use crate::{
    bindings as odp,
    pfn_flags::HmmPfn, //
};

// SAFETY: `HmmPfn` is a `#[repr(transparent)]` `u64`, and every `u64` is a state word (its type
// invariants): any bit pattern, all-zero included, is valid.
unsafe impl FromBytes for HmmPfn {}

/// A zeroed array of `len` values of `T` from `kvcalloc()`, freed on drop.
///
/// # Invariants
///
/// `ptr` points to `len` initialised values of `T` (all-zero bytes are a valid `T`), allocated
/// by `odp_shim_state_array_alloc()` and owned by this value.
pub(crate) struct StateArray<T: FromBytes> {
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: The array is owned memory of `T`s; sending it sends the `T`s.
unsafe impl<T: FromBytes + Send> Send for StateArray<T> {}
// SAFETY: Shared access only reads the `T`s.
unsafe impl<T: FromBytes + Sync> Sync for StateArray<T> {}

impl<T: FromBytes> StateArray<T> {
    /// Allocates `len` zeroed values; `ENOMEM` (silently) if they cannot be had.
    pub(crate) fn zeroed(len: usize) -> Result<Self> {
        if len == 0 {
            return Ok(Self {
                ptr: NonNull::dangling(),
                len,
            });
        }
        // SAFETY: Any sizes may be passed; `kvcalloc()` checks the product for overflow.
        let raw = unsafe { odp::odp_shim_state_array_alloc(len, size_of::<T>()) };
        let ptr = NonNull::new(raw.cast::<T>()).ok_or(ENOMEM)?;
        // INVARIANT: `kvcalloc()` returned `len` zeroed, suitably aligned values of `T`, and
        // zeroed memory is a valid `T` (`FromBytes`).
        Ok(Self { ptr, len })
    }
}

impl<T: FromBytes> Deref for StateArray<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` holds `len` initialised values by the type invariants.
        unsafe { slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: FromBytes> DerefMut for StateArray<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: As above, and `&mut self` makes this the only access.
        unsafe { slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: FromBytes> Drop for StateArray<T> {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: `ptr` came from `kvcalloc()` by the type invariants and is not used again.
            unsafe { bindings::kvfree(self.ptr.as_ptr().cast()) };
        }
    }
}
