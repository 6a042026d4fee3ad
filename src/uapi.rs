// SPDX-License-Identifier: GPL-2.0

//! The ioctl ABI of `/dev/odp_hmm`, from the one C header that defines it.
//!
//! C header: `include/uapi/linux/odp_hmm.h` (this module's own). The structures and constants are
//! generated from it at build time (see `Kbuild`); the ioctl numbers too, through the shim's
//! `enum odp_shim_ioctl`, so the module cannot drift from the header.

use kernel::{
    bindings, ioctl,
    prelude::*,
    transmute::{
        AsBytes,
        FromBytes, //
    },
    uaccess::UserSlice,
};

use crate::bindings as odp;

pub(crate) use crate::bindings::{
    odp_hmm_dma as Dma, odp_hmm_fault as Fault, odp_hmm_info as Info, odp_hmm_page as Page,
    odp_hmm_register as Register, odp_hmm_snapshot as Snapshot, odp_hmm_stats as Stats,
    odp_hmm_unregister as Unregister, ODP_HMM_ABI_VERSION as ABI_VERSION,
    ODP_HMM_ACCESS_READ as ACCESS_READ, ODP_HMM_ACCESS_WRITE as ACCESS_WRITE,
    ODP_HMM_BACKEND_DEFAULT as BACKEND_DEFAULT, ODP_HMM_BACKEND_KERNEL as BACKEND_KERNEL,
    ODP_HMM_BACKEND_LEGACY as BACKEND_LEGACY, ODP_HMM_BACKEND_NONE as BACKEND_NONE,
    ODP_HMM_BACKEND_PINNED as BACKEND_PINNED, ODP_HMM_BACKEND_RUST as BACKEND_RUST,
    ODP_HMM_DMA_DST_DEVBUF as DMA_DST_DEVBUF, ODP_HMM_DMA_MAX_LEN as DMA_MAX_LEN,
    ODP_HMM_DMA_MODE_IOVA as DMA_MODE_IOVA, ODP_HMM_DMA_MODE_MAP as DMA_MODE_MAP,
    ODP_HMM_DMA_MODE_NONE as DMA_MODE_NONE, ODP_HMM_DMA_SRC_DEVBUF as DMA_SRC_DEVBUF,
    ODP_HMM_DMA_SRC_RAW_IOVA as DMA_SRC_RAW_IOVA, ODP_HMM_FAULT_ASYNC as FAULT_ASYNC,
    ODP_HMM_FAULT_NO_FAULT as FAULT_NO_FAULT, ODP_HMM_FAULT_WRITE as FAULT_WRITE,
    ODP_HMM_INFO_ASYNC_PREFETCH as INFO_ASYNC_PREFETCH,
    ODP_HMM_INFO_COPY_ENGINE as INFO_COPY_ENGINE, ODP_HMM_INFO_DEBUG_RAW_DMA as INFO_DEBUG_RAW_DMA,
    ODP_HMM_INFO_IMPLICIT as INFO_IMPLICIT, ODP_HMM_INFO_IOVA as INFO_IOVA,
    ODP_HMM_INFO_P2P_BUS as INFO_P2P_BUS, ODP_HMM_INFO_P2P_HOST_BRIDGE as INFO_P2P_HOST_BRIDGE,
    ODP_HMM_INFO_USERFAULTFD as INFO_USERFAULTFD, ODP_HMM_PAGE_DMA_MAPPED as PAGE_DMA_MAPPED,
    ODP_HMM_PAGE_P2P as PAGE_P2P, ODP_HMM_PAGE_P2P_BUS as PAGE_P2P_BUS,
    ODP_HMM_PAGE_VALID as PAGE_VALID, ODP_HMM_PAGE_WRITE as PAGE_WRITE,
    ODP_HMM_REGISTER_IMPLICIT as REGISTER_IMPLICIT,
    ODP_HMM_SNAPSHOT_MAX_PAGES as SNAPSHOT_MAX_PAGES,
};

/// The name of an `ODP_HMM_DMA_MODE_*` value, as `odpctl` prints it.
pub(crate) fn dma_mode_name(mode: u32) -> &'static str {
    match mode {
        DMA_MODE_IOVA => "iova",
        DMA_MODE_MAP => "map",
        _ => "none",
    }
}

/// `ODP_HMM_IOC_INFO`.
pub(crate) const IOC_INFO: u32 = odp::odp_shim_ioctl_ODP_SHIM_IOC_INFO;
/// `ODP_HMM_IOC_REGISTER`.
pub(crate) const IOC_REGISTER: u32 = odp::odp_shim_ioctl_ODP_SHIM_IOC_REGISTER;
/// `ODP_HMM_IOC_UNREGISTER`.
pub(crate) const IOC_UNREGISTER: u32 = odp::odp_shim_ioctl_ODP_SHIM_IOC_UNREGISTER;
/// `ODP_HMM_IOC_FAULT`.
pub(crate) const IOC_FAULT: u32 = odp::odp_shim_ioctl_ODP_SHIM_IOC_FAULT;
/// `ODP_HMM_IOC_SNAPSHOT`.
pub(crate) const IOC_SNAPSHOT: u32 = odp::odp_shim_ioctl_ODP_SHIM_IOC_SNAPSHOT;
/// `ODP_HMM_IOC_STATS`.
pub(crate) const IOC_STATS: u32 = odp::odp_shim_ioctl_ODP_SHIM_IOC_STATS;
/// `ODP_HMM_IOC_DMA`.
pub(crate) const IOC_DMA: u32 = odp::odp_shim_ioctl_ODP_SHIM_IOC_DMA;

/// An ioctl argument structure.
///
/// # Safety
///
/// Implementors are `#[repr(C)]` structures of `__u32` and `__u64` fields without padding, whose
/// first field is the `__u32 version`: every bit pattern is a valid value, and `Default` is all
/// zeroes.
pub(crate) unsafe trait Arg: FromBytes + AsBytes + Default + Sized {
    /// The structure's size in ABI version 1: the smallest a caller may pass.
    const MIN_SIZE: usize = size_of::<Self>();

    /// The `version` field.
    fn version(&self) -> u32;
}

macro_rules! impl_arg {
    ($($t:ty $(= $min:expr)?),* $(,)?) => {$(
        // SAFETY: The uAPI header defines the structure with `__u32`/`__u64` fields only and no
        // padding (its layout rules), so every bit pattern is valid and no byte is uninitialised.
        unsafe impl FromBytes for $t {}
        // SAFETY: As above.
        unsafe impl AsBytes for $t {}
        // SAFETY: As above; `version` is the first field of every argument structure.
        unsafe impl Arg for $t {
            $(const MIN_SIZE: usize = $min;)?
            fn version(&self) -> u32 {
                self.version
            }
        }
    )*};
}

impl_arg!(
    // CAST: The header's size constants are small.
    Info = odp::ODP_HMM_INFO_SIZE_V1 as usize,
    Register,
    Unregister,
    Fault,
    Snapshot,
    // CAST: As above.
    Stats = odp::ODP_HMM_STATS_SIZE_V1 as usize,
    Dma,
);

// SAFETY: `struct odp_hmm_page` is `__u64` then two `__u32`: no padding, any bit pattern valid.
unsafe impl AsBytes for Page {}

/// An ioctl command with its size field cleared: it names the call whatever the size of the
/// caller's structure.
pub(crate) const fn without_size(cmd: u32) -> u32 {
    cmd & !(((1 << bindings::_IOC_SIZEBITS) - 1) << bindings::_IOC_SIZESHIFT)
}

/// The argument of an ioctl: where it is, and how many bytes of it the caller has (the size in
/// the ioctl number).
#[derive(Clone, Copy)]
pub(crate) struct ArgPtr {
    ptr: UserPtr,
    size: usize,
}

impl ArgPtr {
    /// The argument of ioctl `cmd` at user address `arg`.
    pub(crate) fn new(cmd: u32, arg: usize) -> Self {
        Self {
            ptr: UserPtr::from_addr(arg),
            size: ioctl::_IOC_SIZE(cmd),
        }
    }

    /// Reads the argument and checks its size (`ENOTTY` unless it is the structure's size in
    /// some ABI version: the call is not one the module knows) and its version
    /// (`EPROTONOSUPPORT` if 0 or newer than the module's). Fields beyond the caller's size read
    /// as 0.
    pub(crate) fn read<T: Arg>(self) -> Result<T> {
        if self.size != T::MIN_SIZE && self.size != size_of::<T>() {
            return Err(ENOTTY);
        }
        let mut value = T::default();
        UserSlice::new(self.ptr, self.size)
            .reader()
            .read_slice(&mut value.as_bytes_mut()[..self.size])?;
        if value.version() == 0 || value.version() > ABI_VERSION {
            return Err(EPROTONOSUPPORT);
        }
        Ok(value)
    }

    /// Writes the (output) argument back: as many bytes as the caller has.
    pub(crate) fn write<T: Arg>(self, value: &T) -> Result {
        let size = self.size.min(size_of::<T>());
        UserSlice::new(self.ptr, size)
            .writer()
            .write_slice(&value.as_bytes()[..size])
    }
}
