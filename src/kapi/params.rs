// SPDX-License-Identifier: GPL-2.0

//! The module parameters.
//!
//! They are declared in the C shim (`src/shim/odp_shim.c`), because the `module!` macro has no
//! string parameters; the shim validates them when the module is loaded, so what is read here
//! is always well-formed. The writable ones are read afresh at each use.

use kernel::{
    prelude::*,
    str::CStr, //
};

use crate::bindings as odp;

/// `backend=`: the default mapping backend, as `ODP_HMM_BACKEND_*` (never 0).
pub(crate) fn backend() -> u32 {
    // SAFETY: Reads a module parameter; always safe.
    let raw = unsafe { odp::odp_shim_param_backend() };
    // CAST: The shim only stores `enum odp_shim_backend` values, which are small and positive.
    raw as u32
}

/// `dma_device=`: the PCI address of the device to map for, if one was given.
pub(crate) fn dma_device() -> Option<&'static CStr> {
    // SAFETY: The shim returns its parameter buffer, a NUL-terminated string that lives as long
    // as the module and is read-only after load (mode 0444).
    let name = unsafe { CStr::from_char_ptr(odp::odp_shim_param_dma_device()) };
    (!name.is_empty()).then_some(name)
}

/// `debug_raw_dma=`: whether the raw-IOVA device read is allowed.
pub(crate) fn debug_raw_dma() -> bool {
    // SAFETY: Reads a module parameter; always safe.
    unsafe { odp::odp_shim_param_debug_raw_dma() }
}

/// `copy_timeout_ms=`: how long a device transfer may take (writable at run time).
pub(crate) fn copy_timeout_ms() -> u32 {
    // SAFETY: Reads a module parameter; always safe.
    unsafe { odp::odp_shim_param_copy_timeout_ms() }
}

/// `file_limit_mb=`: the most memory one open file may have registered, in bytes; `None` for no
/// limit (writable at run time).
pub(crate) fn file_limit_bytes() -> Option<u64> {
    // SAFETY: Reads a module parameter; always safe.
    let mb = unsafe { odp::odp_shim_param_file_limit_mb() };
    // CAST: `unsigned long` is 64 bits wide here (see `kapi`).
    match mb as u64 {
        0 => None,
        mb => Some(mb.saturating_mul(1 << 20)),
    }
}

/// `device_fault_timeout_ms=`: how long a device copy waits for the pages it faults in
/// (writable at run time).
pub(crate) fn device_fault_timeout_ms() -> u32 {
    // SAFETY: Reads a module parameter; always safe.
    unsafe { odp::odp_shim_param_device_fault_timeout_ms() }
}

/// `dma_call_timers=`: whether the mapping manager times its link and sync calls (writable at run
/// time).
pub(crate) fn dma_call_timers() -> bool {
    // SAFETY: Reads a module parameter; always safe.
    unsafe { odp::odp_shim_param_dma_call_timers() }
}
