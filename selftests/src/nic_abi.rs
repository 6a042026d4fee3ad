// SPDX-License-Identifier: GPL-2.0

//! Mirror of `samples/odp_nic/odp_nic.h`, the uAPI of the sample NIC driver: the same names,
//! values and layouts. The `nic_layout` test of the `odp-hmm-uapi` crate checks this file against
//! the header compiled by the C compiler.

#![allow(non_camel_case_types, dead_code)]

use core::mem::size_of;

/// The device node.
pub const ODP_NIC_DEVICE_PATH: &str = "/dev/odp_nic";

pub const ODP_NIC_WORK_MAX_LEN: u32 = 4096;
pub const ODP_NIC_WORK_RETRIES: u32 = 64;
pub const ODP_NIC_MAX_PAGES: u32 = 1 << 18;
pub const ODP_NIC_TABLE_MAX: u32 = 512;
pub const ODP_NIC_EVENTS_MAX: u32 = 128;
pub const ODP_NIC_RAW_SENTINEL: u32 = 0xe7;

pub const ODP_NIC_ACCESS_READ: u32 = 1 << 0;
pub const ODP_NIC_ACCESS_WRITE: u32 = 1 << 1;

pub const ODP_NIC_REG_TWO_PASS: u32 = 1 << 0;

pub const ODP_NIC_WORK_READ: u32 = 0;
pub const ODP_NIC_WORK_WRITE: u32 = 1;

pub const ODP_NIC_PREFETCH_WRITE: u32 = 1 << 0;

pub const ODP_NIC_SLOT_VALID: u32 = 1 << 0;
pub const ODP_NIC_SLOT_WRITE: u32 = 1 << 1;

pub const ODP_NIC_EV_INVALIDATE: u32 = 1;
pub const ODP_NIC_EV_START: u32 = 2;
pub const ODP_NIC_EV_FINISH: u32 = 3;
pub const ODP_NIC_EV_FILL: u32 = 4;
pub const ODP_NIC_EV_REFUSED: u32 = 5;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_nic_register {
    pub addr: u64,
    pub length: u64,
    pub access: u32,
    pub flags: u32,
    pub handle: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_nic_work {
    pub handle: u32,
    pub dir: u32,
    pub addr: u64,
    pub length: u64,
    pub buf: u64,
    pub faults: u32,
    pub retries: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_nic_prefetch {
    pub handle: u32,
    pub flags: u32,
    pub addr: u64,
    pub length: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_nic_slot {
    pub dma_addr: u64,
    pub state: u32,
    pub odp_flags: u32,
    pub odp_dma_addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_nic_table {
    pub handle: u32,
    pub count: u32,
    pub first: u64,
    pub slots: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_nic_event {
    pub seq: u64,
    pub kind: u32,
    pub pages: u32,
    pub start: u64,
    pub end: u64,
    pub slots_filled: u32,
    pub slots_linked: u32,
    pub pages_linked: u32,
    pub slots_zapped: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_nic_events {
    pub handle: u32,
    pub count: u32,
    pub after: u64,
    pub events: u64,
    pub last_seq: u64,
    pub lost: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_nic_counters {
    pub handle: u32,
    pub reserved: u32,
    pub work_requests: u64,
    pub work_bytes: u64,
    pub faults_raised: u64,
    pub faults_resolved: u64,
    pub fault_errors: u64,
    pub slots_filled: u64,
    pub invalidations: u64,
    pub invalidate_starts: u64,
    pub invalidate_finishes: u64,
    pub slots_zapped: u64,
    pub stale_slots: u64,
    pub refilled_between_passes: u64,
    pub fills_between_passes: u64,
    pub dma_check_failures: u64,
    pub refused_nonblocking: u64,
    pub dma_transfers: u64,
    pub prefetches: u64,
    pub map_unreachable: u64,
    pub live_registrations: u64,
    pub odp_faults: u64,
    pub odp_pages_mapped: u64,
    pub odp_pages_unmapped: u64,
    pub odp_invalidations: u64,
    pub odp_pages_now: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct odp_nic_raw_read {
    pub dma_addr: u64,
    pub length: u64,
    pub buf: u64,
}

pub const ODP_NIC_IOC_MAGIC: u32 = 0xBB;

/// `_IOC(dir, type, nr, size)` of the asm-generic ioctl encoding (x86, arm64).
const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    // CAST: The ioctl structures are far below the 14-bit size limit.
    (dir << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

pub const ODP_NIC_IOC_REGISTER: u32 =
    ioc(3, ODP_NIC_IOC_MAGIC, 0x00, size_of::<odp_nic_register>());
pub const ODP_NIC_IOC_UNREGISTER: u32 = ioc(1, ODP_NIC_IOC_MAGIC, 0x01, size_of::<u32>());
pub const ODP_NIC_IOC_WORK: u32 = ioc(3, ODP_NIC_IOC_MAGIC, 0x02, size_of::<odp_nic_work>());
pub const ODP_NIC_IOC_PREFETCH: u32 =
    ioc(1, ODP_NIC_IOC_MAGIC, 0x03, size_of::<odp_nic_prefetch>());
pub const ODP_NIC_IOC_TABLE: u32 = ioc(1, ODP_NIC_IOC_MAGIC, 0x04, size_of::<odp_nic_table>());
pub const ODP_NIC_IOC_EVENTS: u32 = ioc(3, ODP_NIC_IOC_MAGIC, 0x05, size_of::<odp_nic_events>());
pub const ODP_NIC_IOC_COUNTERS: u32 =
    ioc(3, ODP_NIC_IOC_MAGIC, 0x06, size_of::<odp_nic_counters>());
pub const ODP_NIC_IOC_RAW_READ: u32 =
    ioc(1, ODP_NIC_IOC_MAGIC, 0x07, size_of::<odp_nic_raw_read>());
