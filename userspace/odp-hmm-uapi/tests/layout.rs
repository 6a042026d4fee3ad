// SPDX-License-Identifier: GPL-2.0

//! Checks the Rust mirror against the C header it mirrors: the header is compiled by the C
//! compiler into a program that prints every size, offset, constant and ioctl number, and each
//! printed value must equal the Rust one.

use std::{
    collections::BTreeMap,
    mem::{offset_of, size_of},
    path::PathBuf,
};

use odp_hmm_uapi::*;

#[macro_use]
mod common;

fn header_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../include")
}

/// Compiles and runs `body` (C statements) with the header included; returns `name value` lines.
fn c_values(body: &str) -> BTreeMap<String, u64> {
    let prelude = "#include <stdio.h>\n#include <stddef.h>\n#include \"uapi/linux/odp_hmm.h\"\n\
                   #define P(name, v) printf(\"%s %llu\\n\", name, (unsigned long long)(v))";
    common::values(&common::run_c(prelude, body, &[&header_dir()]))
}

#[test]
fn header_and_mirror_agree() {
    let mut c = String::new();
    let mut rust = BTreeMap::new();
    check_struct!(
        c,
        rust,
        odp_hmm_info {
            version,
            flags,
            pci_segment,
            pci_bus,
            pci_devfn,
            pci_vendor,
            pci_device,
            domain_type,
            backend,
            page_size,
            dma_mask,
            live_registrations,
            live_pages_mapped,
            live_iova_bytes,
            live_bookkeeping_bytes,
            link_page_sizes,
        }
    );
    check_struct!(
        c,
        rust,
        odp_hmm_register {
            version,
            flags,
            addr,
            length,
            backend,
            dma_mode,
            handle,
            iova_base,
        }
    );
    check_struct!(
        c,
        rust,
        odp_hmm_unregister {
            version,
            reserved,
            handle
        }
    );
    check_struct!(
        c,
        rust,
        odp_hmm_fault {
            version,
            flags,
            handle,
            addr,
            length,
            pages_mapped,
            pages_valid,
        }
    );
    check_struct!(
        c,
        rust,
        odp_hmm_page {
            dma_addr,
            flags,
            order
        }
    );
    check_struct!(
        c,
        rust,
        odp_hmm_snapshot {
            version,
            flags,
            handle,
            addr,
            npages,
            pages
        }
    );
    check_struct!(
        c,
        rust,
        odp_hmm_stats {
            version,
            reserved,
            handle,
            faults,
            pages_faulted,
            pages_mapped,
            pages_unmapped,
            invalidations,
            invalidations_ignored,
            fault_retries,
            link_calls,
            sync_calls,
            unlink_calls,
            p2p_host_bridge_pages,
            p2p_bus_pages,
            p2p_refused_pages,
            iova_bytes,
            bookkeeping_bytes,
            pages_now,
            registrations,
            fault_ns,
            map_ns,
            sync_ns,
            unmap_ns,
            link_ns,
            invalidations_nonblocking,
            fault_calls,
            fault_latency_ns,
            fault_latency_max_ns,
            prefetched_pages,
            prefetch_errors,
            chunks,
        }
    );
    check_struct!(
        c,
        rust,
        odp_hmm_dma {
            version,
            flags,
            src_handle,
            src_addr,
            dst_handle,
            dst_addr,
            length,
            faults,
        }
    );
    check_consts!(
        c,
        rust,
        ODP_HMM_ABI_VERSION,
        ODP_HMM_INFO_SIZE_V1,
        ODP_HMM_STATS_SIZE_V1,
        ODP_HMM_INFO_IMPLICIT,
        ODP_HMM_INFO_ASYNC_PREFETCH,
        ODP_HMM_INFO_USERFAULTFD,
        ODP_HMM_INFO_P2P_HOST_BRIDGE,
        ODP_HMM_INFO_P2P_BUS,
        ODP_HMM_REGISTER_IMPLICIT,
        ODP_HMM_FAULT_ASYNC,
        ODP_HMM_SNAPSHOT_MAX_PAGES,
        ODP_HMM_DMA_MAX_LEN,
        ODP_HMM_INFO_COPY_ENGINE,
        ODP_HMM_INFO_IOVA,
        ODP_HMM_INFO_DEBUG_RAW_DMA,
        ODP_HMM_DOMAIN_NONE,
        ODP_HMM_DOMAIN_IDENTITY,
        ODP_HMM_DOMAIN_DMA,
        ODP_HMM_DOMAIN_DMA_FQ,
        ODP_HMM_DOMAIN_OTHER,
        ODP_HMM_BACKEND_DEFAULT,
        ODP_HMM_BACKEND_RUST,
        ODP_HMM_BACKEND_KERNEL,
        ODP_HMM_BACKEND_LEGACY,
        ODP_HMM_BACKEND_NONE,
        ODP_HMM_BACKEND_PINNED,
        ODP_HMM_DMA_MODE_NONE,
        ODP_HMM_DMA_MODE_IOVA,
        ODP_HMM_DMA_MODE_MAP,
        ODP_HMM_ACCESS_READ,
        ODP_HMM_ACCESS_WRITE,
        ODP_HMM_FAULT_WRITE,
        ODP_HMM_FAULT_NO_FAULT,
        ODP_HMM_PAGE_VALID,
        ODP_HMM_PAGE_WRITE,
        ODP_HMM_PAGE_DMA_MAPPED,
        ODP_HMM_PAGE_P2P,
        ODP_HMM_PAGE_P2P_BUS,
        ODP_HMM_DMA_SRC_DEVBUF,
        ODP_HMM_DMA_DST_DEVBUF,
        ODP_HMM_DMA_SRC_RAW_IOVA,
        ODP_HMM_IOC_MAGIC,
        ODP_HMM_IOC_INFO,
        ODP_HMM_IOC_REGISTER,
        ODP_HMM_IOC_UNREGISTER,
        ODP_HMM_IOC_FAULT,
        ODP_HMM_IOC_SNAPSHOT,
        ODP_HMM_IOC_STATS,
        ODP_HMM_IOC_DMA,
    );
    let from_c = c_values(&c);
    assert_eq!(from_c.len(), rust.len(), "every checked item printed once");
    for (name, value) in &rust {
        assert_eq!(from_c.get(name), Some(value), "{name}: C and Rust differ");
    }
}

#[test]
fn device_path_matches_header() {
    let header =
        std::fs::read_to_string(header_dir().join("uapi/linux/odp_hmm.h")).expect("header");
    assert!(header.contains(&format!("\"{ODP_HMM_DEVICE_PATH}\"")));
}
