// SPDX-License-Identifier: GPL-2.0

//! Checks the selftests' mirror of the sample NIC's uAPI (`selftests/src/nic_abi.rs`) against
//! its C header (`samples/odp_nic/odp_nic.h`), as `layout` does for odp_hmm's own header: the
//! header is compiled by the C compiler into a program that prints every size, offset, constant
//! and ioctl number, and each printed value must equal the Rust one.

use std::{
    collections::BTreeMap,
    mem::{offset_of, size_of},
    path::PathBuf,
};

#[macro_use]
mod common;

#[path = "../../../selftests/src/nic_abi.rs"]
mod nic_abi;

use nic_abi::*;

fn header_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../samples/odp_nic")
}

#[test]
fn nic_header_and_mirror_agree() {
    let mut c = String::new();
    let mut rust = BTreeMap::new();
    check_struct!(
        c,
        rust,
        odp_nic_register {
            addr,
            length,
            access,
            flags,
            handle,
            reserved
        }
    );
    check_struct!(
        c,
        rust,
        odp_nic_work {
            handle,
            dir,
            addr,
            length,
            buf,
            faults,
            retries
        }
    );
    check_struct!(
        c,
        rust,
        odp_nic_prefetch {
            handle,
            flags,
            addr,
            length
        }
    );
    check_struct!(
        c,
        rust,
        odp_nic_slot {
            dma_addr,
            state,
            odp_flags,
            odp_dma_addr
        }
    );
    check_struct!(
        c,
        rust,
        odp_nic_table {
            handle,
            count,
            first,
            slots
        }
    );
    check_struct!(
        c,
        rust,
        odp_nic_event {
            seq,
            kind,
            pages,
            start,
            end,
            slots_filled,
            slots_linked,
            pages_linked,
            slots_zapped,
        }
    );
    check_struct!(
        c,
        rust,
        odp_nic_events {
            handle,
            count,
            after,
            events,
            last_seq,
            lost
        }
    );
    check_struct!(
        c,
        rust,
        odp_nic_counters {
            handle,
            reserved,
            work_requests,
            work_bytes,
            faults_raised,
            faults_resolved,
            fault_errors,
            slots_filled,
            invalidations,
            invalidate_starts,
            invalidate_finishes,
            slots_zapped,
            stale_slots,
            refilled_between_passes,
            fills_between_passes,
            dma_check_failures,
            refused_nonblocking,
            dma_transfers,
            prefetches,
            map_unreachable,
            live_registrations,
            odp_faults,
            odp_pages_mapped,
            odp_pages_unmapped,
            odp_invalidations,
            odp_pages_now,
        }
    );
    check_struct!(
        c,
        rust,
        odp_nic_raw_read {
            dma_addr,
            length,
            buf
        }
    );
    check_consts!(
        c,
        rust,
        ODP_NIC_WORK_MAX_LEN,
        ODP_NIC_WORK_RETRIES,
        ODP_NIC_MAX_PAGES,
        ODP_NIC_TABLE_MAX,
        ODP_NIC_EVENTS_MAX,
        ODP_NIC_RAW_SENTINEL,
        ODP_NIC_ACCESS_READ,
        ODP_NIC_ACCESS_WRITE,
        ODP_NIC_REG_TWO_PASS,
        ODP_NIC_WORK_READ,
        ODP_NIC_WORK_WRITE,
        ODP_NIC_PREFETCH_WRITE,
        ODP_NIC_SLOT_VALID,
        ODP_NIC_SLOT_WRITE,
        ODP_NIC_EV_INVALIDATE,
        ODP_NIC_EV_START,
        ODP_NIC_EV_FINISH,
        ODP_NIC_EV_FILL,
        ODP_NIC_EV_REFUSED,
        ODP_NIC_IOC_MAGIC,
        ODP_NIC_IOC_REGISTER,
        ODP_NIC_IOC_UNREGISTER,
        ODP_NIC_IOC_WORK,
        ODP_NIC_IOC_PREFETCH,
        ODP_NIC_IOC_TABLE,
        ODP_NIC_IOC_EVENTS,
        ODP_NIC_IOC_COUNTERS,
        ODP_NIC_IOC_RAW_READ,
    );
    let prelude = "#include <stdio.h>\n#include <stddef.h>\n#include \"odp_nic.h\"\n\
                   #define P(name, v) printf(\"%s %llu\\n\", name, (unsigned long long)(v))";
    let from_c: BTreeMap<String, u64> =
        common::values(&common::run_c(prelude, &c, &[&header_dir()]));
    assert_eq!(from_c.len(), rust.len(), "every checked item printed once");
    for (name, value) in &rust {
        assert_eq!(from_c.get(name), Some(value), "{name}: C and Rust differ");
    }
}

#[test]
fn nic_device_path_matches_header() {
    let header = std::fs::read_to_string(header_dir().join("odp_nic.h")).expect("header");
    assert!(header.contains(&format!("\"{ODP_NIC_DEVICE_PATH}\"")));
}
