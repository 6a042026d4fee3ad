// SPDX-License-Identifier: GPL-2.0

//! Mirror of `include/uapi/linux/odp_hmm.h`: the same names, values and layouts.
//!
//! See the header for what each field and errno means. The `layout` test checks this file
//! against the header compiled by the C compiler.

#![allow(non_camel_case_types)]

/// The device node.
pub const ODP_HMM_DEVICE_PATH: &str = "/dev/odp_hmm";
/// The ABI version every argument structure carries.
pub const ODP_HMM_ABI_VERSION: u32 = 2;
/// The size of `struct odp_hmm_info` in ABI version 1.
pub const ODP_HMM_INFO_SIZE_V1: u32 = 48;
/// The size of `struct odp_hmm_stats` in ABI version 1.
pub const ODP_HMM_STATS_SIZE_V1: u32 = 200;

/// Largest snapshot, in pages.
pub const ODP_HMM_SNAPSHOT_MAX_PAGES: u32 = 1 << 20;
/// Largest device copy, in bytes.
pub const ODP_HMM_DMA_MAX_LEN: u32 = 4096;

pub const ODP_HMM_INFO_COPY_ENGINE: u32 = 1 << 0;
pub const ODP_HMM_INFO_IOVA: u32 = 1 << 1;
pub const ODP_HMM_INFO_DEBUG_RAW_DMA: u32 = 1 << 2;
pub const ODP_HMM_INFO_IMPLICIT: u32 = 1 << 3;
pub const ODP_HMM_INFO_ASYNC_PREFETCH: u32 = 1 << 4;
pub const ODP_HMM_INFO_USERFAULTFD: u32 = 1 << 5;
pub const ODP_HMM_INFO_P2P_HOST_BRIDGE: u32 = 1 << 6;
pub const ODP_HMM_INFO_P2P_BUS: u32 = 1 << 7;

pub const ODP_HMM_DOMAIN_NONE: u32 = 0;
pub const ODP_HMM_DOMAIN_IDENTITY: u32 = 1;
pub const ODP_HMM_DOMAIN_DMA: u32 = 2;
pub const ODP_HMM_DOMAIN_DMA_FQ: u32 = 3;
pub const ODP_HMM_DOMAIN_OTHER: u32 = 4;

pub const ODP_HMM_BACKEND_DEFAULT: u32 = 0;
pub const ODP_HMM_BACKEND_RUST: u32 = 1;
pub const ODP_HMM_BACKEND_KERNEL: u32 = 2;
pub const ODP_HMM_BACKEND_LEGACY: u32 = 3;
pub const ODP_HMM_BACKEND_NONE: u32 = 4;
pub const ODP_HMM_BACKEND_PINNED: u32 = 5;

pub const ODP_HMM_DMA_MODE_NONE: u32 = 0;
pub const ODP_HMM_DMA_MODE_IOVA: u32 = 1;
pub const ODP_HMM_DMA_MODE_MAP: u32 = 2;

pub const ODP_HMM_ACCESS_READ: u32 = 1 << 0;
pub const ODP_HMM_ACCESS_WRITE: u32 = 1 << 1;
pub const ODP_HMM_REGISTER_IMPLICIT: u32 = 1 << 2;

pub const ODP_HMM_FAULT_WRITE: u32 = 1 << 0;
pub const ODP_HMM_FAULT_NO_FAULT: u32 = 1 << 1;
pub const ODP_HMM_FAULT_ASYNC: u32 = 1 << 2;

pub const ODP_HMM_PAGE_VALID: u32 = 1 << 0;
pub const ODP_HMM_PAGE_WRITE: u32 = 1 << 1;
pub const ODP_HMM_PAGE_DMA_MAPPED: u32 = 1 << 2;
pub const ODP_HMM_PAGE_P2P: u32 = 1 << 3;
pub const ODP_HMM_PAGE_P2P_BUS: u32 = 1 << 4;

pub const ODP_HMM_DMA_SRC_DEVBUF: u32 = 1 << 0;
pub const ODP_HMM_DMA_DST_DEVBUF: u32 = 1 << 1;
pub const ODP_HMM_DMA_SRC_RAW_IOVA: u32 = 1 << 2;

/// `struct odp_hmm_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_hmm_info {
    pub version: u32,
    pub flags: u32,
    pub pci_segment: u32,
    pub pci_bus: u32,
    pub pci_devfn: u32,
    pub pci_vendor: u32,
    pub pci_device: u32,
    pub domain_type: u32,
    pub backend: u32,
    pub page_size: u32,
    pub dma_mask: u64,
    pub live_registrations: u64,
    pub live_pages_mapped: u64,
    pub live_iova_bytes: u64,
    pub live_bookkeeping_bytes: u64,
    pub link_page_sizes: u64,
}

impl odp_hmm_info {
    /// The PCI address of the DMA device, `DDDD:BB:DD.F`.
    pub fn pci_address(&self) -> String {
        format!(
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.pci_segment,
            self.pci_bus,
            self.pci_devfn >> 3,
            self.pci_devfn & 7
        )
    }

    /// Whether the DMA device is QEMU's edu (1234:11e8), which this module drives.
    pub fn is_edu(&self) -> bool {
        (self.pci_vendor, self.pci_device) == (0x1234, 0x11e8)
    }
}

/// `struct odp_hmm_register`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_hmm_register {
    pub version: u32,
    pub flags: u32,
    pub addr: u64,
    pub length: u64,
    pub backend: u32,
    pub dma_mode: u32,
    pub handle: u64,
    pub iova_base: u64,
}

/// `struct odp_hmm_unregister`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_hmm_unregister {
    pub version: u32,
    pub reserved: u32,
    pub handle: u64,
}

/// `struct odp_hmm_fault`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_hmm_fault {
    pub version: u32,
    pub flags: u32,
    pub handle: u64,
    pub addr: u64,
    pub length: u64,
    pub pages_mapped: u64,
    pub pages_valid: u64,
}

/// `struct odp_hmm_page`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_hmm_page {
    pub dma_addr: u64,
    pub flags: u32,
    pub order: u32,
}

/// `struct odp_hmm_snapshot`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_hmm_snapshot {
    pub version: u32,
    pub flags: u32,
    pub handle: u64,
    pub addr: u64,
    pub npages: u64,
    pub pages: u64,
}

/// `struct odp_hmm_stats`. With the `serde` feature it serializes as its counters (every field but
/// `version` and `reserved`), under the header's names.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct odp_hmm_stats {
    #[cfg_attr(feature = "serde", serde(skip))]
    pub version: u32,
    #[cfg_attr(feature = "serde", serde(skip))]
    pub reserved: u32,
    pub handle: u64,
    pub faults: u64,
    pub pages_faulted: u64,
    pub pages_mapped: u64,
    pub pages_unmapped: u64,
    pub invalidations: u64,
    pub invalidations_ignored: u64,
    pub fault_retries: u64,
    pub link_calls: u64,
    pub sync_calls: u64,
    pub unlink_calls: u64,
    pub p2p_host_bridge_pages: u64,
    pub p2p_bus_pages: u64,
    pub p2p_refused_pages: u64,
    pub iova_bytes: u64,
    pub bookkeeping_bytes: u64,
    pub pages_now: u64,
    pub registrations: u64,
    pub fault_ns: u64,
    pub map_ns: u64,
    pub sync_ns: u64,
    pub unmap_ns: u64,
    pub link_ns: u64,
    pub invalidations_nonblocking: u64,
    pub fault_calls: u64,
    pub fault_latency_ns: u64,
    pub fault_latency_max_ns: u64,
    pub prefetched_pages: u64,
    pub prefetch_errors: u64,
    pub chunks: u64,
}

/// `struct odp_hmm_dma`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_hmm_dma {
    pub version: u32,
    pub flags: u32,
    pub src_handle: u64,
    pub src_addr: u64,
    pub dst_handle: u64,
    pub dst_addr: u64,
    pub length: u64,
    pub faults: u64,
}

pub const ODP_HMM_IOC_MAGIC: u32 = 0xB9;

/// `_IOC(dir, type, nr, size)` of `<asm-generic/ioctl.h>`.
const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    // The size field is 14 bits wide; every structure here is far smaller.
    (dir << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

/// `_IOW(type, nr, T)`.
const fn iow<T>(ty: u32, nr: u32) -> u32 {
    ioc(1, ty, nr, core::mem::size_of::<T>())
}

/// `_IOWR(type, nr, T)`.
const fn iowr<T>(ty: u32, nr: u32) -> u32 {
    ioc(3, ty, nr, core::mem::size_of::<T>())
}

pub const ODP_HMM_IOC_INFO: u32 = iowr::<odp_hmm_info>(ODP_HMM_IOC_MAGIC, 0x00);
pub const ODP_HMM_IOC_REGISTER: u32 = iowr::<odp_hmm_register>(ODP_HMM_IOC_MAGIC, 0x01);
pub const ODP_HMM_IOC_UNREGISTER: u32 = iow::<odp_hmm_unregister>(ODP_HMM_IOC_MAGIC, 0x02);
pub const ODP_HMM_IOC_FAULT: u32 = iowr::<odp_hmm_fault>(ODP_HMM_IOC_MAGIC, 0x03);
pub const ODP_HMM_IOC_SNAPSHOT: u32 = iow::<odp_hmm_snapshot>(ODP_HMM_IOC_MAGIC, 0x04);
pub const ODP_HMM_IOC_STATS: u32 = iowr::<odp_hmm_stats>(ODP_HMM_IOC_MAGIC, 0x05);
pub const ODP_HMM_IOC_DMA: u32 = iowr::<odp_hmm_dma>(ODP_HMM_IOC_MAGIC, 0x06);

/// The name of an `ODP_HMM_DOMAIN_*` value.
pub fn domain_name(domain: u32) -> &'static str {
    match domain {
        ODP_HMM_DOMAIN_NONE => "none (dma-direct)",
        ODP_HMM_DOMAIN_IDENTITY => "identity (passthrough)",
        ODP_HMM_DOMAIN_DMA => "DMA (translated, strict)",
        ODP_HMM_DOMAIN_DMA_FQ => "DMA-FQ (translated, lazy)",
        _ => "other",
    }
}

/// The name of an `ODP_HMM_BACKEND_*` value.
pub fn backend_name(backend: u32) -> &'static str {
    match backend {
        ODP_HMM_BACKEND_DEFAULT => "default",
        ODP_HMM_BACKEND_RUST => "rust",
        ODP_HMM_BACKEND_KERNEL => "kernel",
        ODP_HMM_BACKEND_LEGACY => "legacy",
        ODP_HMM_BACKEND_NONE => "none",
        ODP_HMM_BACKEND_PINNED => "pinned",
        _ => "unknown",
    }
}

/// The `ODP_HMM_BACKEND_*` value of a backend name.
pub fn backend_from_name(name: &str) -> Option<u32> {
    [
        ODP_HMM_BACKEND_DEFAULT,
        ODP_HMM_BACKEND_RUST,
        ODP_HMM_BACKEND_KERNEL,
        ODP_HMM_BACKEND_LEGACY,
        ODP_HMM_BACKEND_NONE,
        ODP_HMM_BACKEND_PINNED,
    ]
    .into_iter()
    .find(|&b| backend_name(b) == name)
}

/// The name of an `ODP_HMM_DMA_MODE_*` value.
pub fn dma_mode_name(mode: u32) -> &'static str {
    match mode {
        ODP_HMM_DMA_MODE_NONE => "none",
        ODP_HMM_DMA_MODE_IOVA => "iova",
        ODP_HMM_DMA_MODE_MAP => "map",
        _ => "unknown",
    }
}
