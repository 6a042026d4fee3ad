// SPDX-License-Identifier: GPL-2.0

//! PCI peer-to-peer pages: an NVMe controller memory buffer (published by Linux as p2pmem)
//! mapped into the test, registered, and classified for the DMA device.
//!
//! Each group expects the class its VM topology gives (scripts/test.sh picks it):
//! - `p2p-host-bridge`: edu and nvme on the q35 root complex, AMD Zen CPU;
//! - `p2p-bus`: edu and nvme behind one PCIe switch, ACS redirect off;
//! - `p2p-refused`: the root complex with an Intel CPU model (q35's host bridge is not on the
//!   kernel's P2P allowlist).
//!
//! Every classification is checked for both backends in the same run: the Rust manager uses the
//! module's own classification (the kernel does not export `__pci_p2pdma_update_state()`), the
//! kernel backend the kernel's `pci_p2pdma_state()` inside `hmm_dma_map_pfn()`. They must agree.

use std::{fs, os::fd::AsRawFd};

use odp_hmm_uapi::*;

use crate::{
    check, check_eq,
    ktap::{
        Outcome,
        Test,
        TestResult, //
    },
    skip,
    util::*,
};

/// Tests for a topology where peer pages go through the host bridge.
pub const HOST_BRIDGE: &[&Test] = &[
    &Test {
        name: "p2p_host_bridge_classification",
        run: || classification(Kind::HostBridge),
    },
    &Test {
        name: "p2p_host_bridge_mixed_registration",
        run: || mixed(Kind::HostBridge),
    },
    &Test {
        name: "p2p_host_bridge_device_copy",
        run: host_bridge_copy,
    },
    &Test {
        name: "p2p_host_bridge_invalidate_munmap",
        run: || invalidate(Kind::HostBridge),
    },
];

/// Tests for a topology where peer pages are reached by bus address.
pub const BUS: &[&Test] = &[
    &Test {
        name: "p2p_bus_classification",
        run: || classification(Kind::Bus),
    },
    &Test {
        name: "p2p_bus_mixed_registration",
        run: || mixed(Kind::Bus),
    },
    &Test {
        name: "p2p_bus_invalidate_munmap",
        run: || invalidate(Kind::Bus),
    },
];

/// Tests for a topology where peer pages cannot be reached.
pub const REFUSED: &[&Test] = &[
    &Test {
        name: "p2p_refused_classification",
        run: || classification(Kind::Refused),
    },
    &Test {
        name: "p2p_refused_mixed_registration",
        run: || mixed(Kind::Refused),
    },
    &Test {
        name: "p2p_refused_device_copy_eremoteio",
        run: refused_copy,
    },
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    HostBridge,
    Bus,
    Refused,
}

/// Pages of peer memory the tests map.
const NPAGES: usize = 4;

/// The p2pmem of the provider: where it is, and a mapping of some of it.
struct P2pMem {
    map: Mapping,
    /// CPU physical range of the BAR that holds it.
    bar: (u64, u64),
}

/// The PCI device that publishes p2pmem.
fn provider() -> Result<String, Outcome> {
    for entry in fs::read_dir("/sys/bus/pci/devices")? {
        let path = entry?.path();
        if fs::read_to_string(path.join("p2pmem/published")).is_ok_and(|p| p.trim() == "1") {
            return Ok(path.to_string_lossy().into_owned());
        }
    }
    skip!("no PCI device publishes p2pmem (run in a p2p-* topology)")
}

/// Maps `NPAGES` of p2pmem at `at` (or anywhere), and finds its BAR.
fn p2pmem(at: Option<u64>) -> Result<P2pMem, Outcome> {
    let dev = provider()?;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("{dev}/p2pmem/allocate"))?;
    let len = NPAGES * page_size();
    let map = match at {
        Some(addr) => {
            // SAFETY: Maps over `len` bytes of the caller's own reserved mapping.
            let p = unsafe {
                libc::mmap(
                    addr as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    file.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error().into());
            }
            Mapping::adopt(addr, len)
        }
        None => Mapping::new(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
        )?,
    };
    let phys = pfn_of(map.addr())? * page_size() as u64;
    let resources = fs::read_to_string(format!("{dev}/resource"))?;
    for line in resources.lines() {
        let mut f = line
            .split_whitespace()
            .map(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16));
        if let (Some(Ok(start)), Some(Ok(end))) = (f.next(), f.next()) {
            if start <= phys && phys <= end && start != 0 {
                return Ok(P2pMem {
                    map,
                    bar: (start, end),
                });
            }
        }
    }
    Err(Outcome::Fail(format!(
        "no BAR of {dev} holds the p2pmem page at {phys:#x}"
    )))
}

/// The flags a read-faulted peer page of `kind` shows.
fn expected_flags(kind: Kind) -> u32 {
    match kind {
        Kind::HostBridge => ODP_HMM_PAGE_VALID | ODP_HMM_PAGE_DMA_MAPPED | ODP_HMM_PAGE_P2P,
        Kind::Bus => ODP_HMM_PAGE_VALID | ODP_HMM_PAGE_DMA_MAPPED | ODP_HMM_PAGE_P2P_BUS,
        Kind::Refused => 0,
    }
}

/// Registers `m` with `backend`, faults it for reading and checks the peer pages `peer` (page
/// indices in `m`) are classified as `kind` and the others mapped as memory. Returns the snapshot.
fn fault_and_check(
    dev: &Device,
    m: &Mapping,
    backend: u32,
    peer: std::ops::Range<usize>,
    kind: Kind,
) -> Result<(Registration, Vec<odp_hmm_page>), Outcome> {
    let name = backend_name(backend);
    let reg = dev.register(m.addr(), m.len() as u64, RW, backend)?;
    let fault = dev.fault(reg.handle, m.addr(), m.len() as u64, 0);
    if kind == Kind::Refused {
        expect_errno(
            fault,
            libc::EREMOTEIO,
            &format!("{name}: fault over unreachable peer pages"),
        )?;
    } else {
        fault.map_err(|e| Outcome::Fail(format!("{name}: fault: {e}")))?;
    }
    let npages = m.len() / page_size();
    let snap = dev.snapshot(reg.handle, m.addr(), npages)?;
    for (i, p) in snap.iter().enumerate() {
        let want = if peer.contains(&i) {
            expected_flags(kind)
        } else {
            ODP_HMM_PAGE_VALID | ODP_HMM_PAGE_DMA_MAPPED
        };
        check_eq!(p.flags, want, "{name}: flags of page {i}");
        if peer.contains(&i) && kind == Kind::Bus {
            let phys = pfn_of(m.addr() + (i * page_size()) as u64)? * page_size() as u64;
            // x86 PCI: bus addresses are CPU physical addresses (bus offset 0).
            check_eq!(p.dma_addr, phys, "{name}: bus address of peer page {i}");
        } else if p.flags & ODP_HMM_PAGE_DMA_MAPPED != 0 && reg.dma_mode == ODP_HMM_DMA_MODE_IOVA {
            check_eq!(
                p.dma_addr,
                reg.iova_base + (i * page_size()) as u64,
                "{name}: IOVA of page {i}"
            );
        }
    }
    let st = dev.stats(reg.handle)?;
    let n = peer.len() as u64;
    let (hb, bus, refused) = match kind {
        Kind::HostBridge => (n, 0, 0),
        Kind::Bus => (0, n, 0),
        Kind::Refused => (0, 0, n),
    };
    check_eq!(
        st.p2p_host_bridge_pages,
        hb,
        "{name}: peer pages counted through the host bridge"
    );
    check_eq!(
        st.p2p_bus_pages,
        bus,
        "{name}: peer pages counted by bus address"
    );
    check_eq!(
        st.p2p_refused_pages,
        refused,
        "{name}: peer pages counted refused"
    );
    Ok((reg, snap))
}

fn classification(kind: Kind) -> TestResult {
    let mem = p2pmem(None)?;
    let dev = Device::open()?;
    let mut seen = Vec::new();
    for backend in [ODP_HMM_BACKEND_RUST, ODP_HMM_BACKEND_KERNEL] {
        let (reg, snap) = fault_and_check(&dev, &mem.map, backend, 0..NPAGES, kind)?;
        // Offsets from the IOVA window (or the bus addresses) must agree between the backends.
        let view: Vec<(u32, u64)> = snap
            .iter()
            .map(|p| {
                (
                    p.flags,
                    p.dma_addr.wrapping_sub(if kind == Kind::HostBridge {
                        reg.iova_base
                    } else {
                        0
                    }),
                )
            })
            .collect();
        seen.push(view);
        dev.unregister(reg.handle)?;
    }
    check_eq!(
        seen[0],
        seen[1],
        "the Rust classification and the kernel's (backend=kernel) differ"
    );
    if kind == Kind::Bus {
        let phys = pfn_of(mem.map.addr())? * page_size() as u64;
        check!(
            mem.bar.0 <= phys && phys <= mem.bar.1,
            "peer page outside its BAR"
        );
        println!(
            "# bus addresses checked against the BAR {:#x}-{:#x}; no device copy: QEMU sends every \
             device DMA through the vIOMMU, which would fault on an untranslated bus address",
            mem.bar.0, mem.bar.1
        );
    }
    Ok(())
}

fn mixed(kind: Kind) -> TestResult {
    // Memory pages then peer pages, in adjacent mappings, registered as one range.
    let ps = page_size();
    let mut m = Mapping::anon(2 * NPAGES * ps)?;
    for i in 0..NPAGES {
        m.fill_page(i, 0x70 + i as u8);
    }
    let peer = p2pmem(Some(m.addr() + (NPAGES * ps) as u64))?;
    std::mem::forget(peer.map);
    let dev = Device::open()?;
    for backend in [ODP_HMM_BACKEND_RUST, ODP_HMM_BACKEND_KERNEL] {
        let (reg, _) = fault_and_check(&dev, &m, backend, NPAGES..2 * NPAGES, kind)?;
        // The memory pages work whatever became of the peer pages.
        copy_and_check(&dev, &m, &reg, 0, 1)
            .map_err(|e| Outcome::Fail(format!("{}: {e:?}", backend_name(backend))))?;
        dev.unregister(reg.handle)?;
    }
    Ok(())
}

fn host_bridge_copy() -> TestResult {
    let ps = page_size();
    let mut mem = p2pmem(None)?;
    let mut out = Mapping::anon(2 * ps)?;
    let dev = Device::open()?;
    // The CPU writes into the CMB; the device reads it through the IOMMU (DMA_ATTR_MMIO).
    mem.map.fill_page(0, 0xb1);
    out.fill_page(1, 0xe7);
    let p2p = dev.register(mem.map.addr(), mem.map.len() as u64, RW, 0)?;
    let anon = dev.register(out.addr(), out.len() as u64, RW, 0)?;
    dev.copy(
        (p2p.handle, mem.map.addr()),
        (anon.handle, out.addr()),
        ps as u64,
    )?;
    check!(
        out.bytes()[..ps] == mem.map.bytes()[..ps],
        "device read of the CMB differs from what the CPU wrote"
    );
    // The device writes into the CMB; the CPU sees it.
    dev.copy(
        (anon.handle, out.addr() + ps as u64),
        (p2p.handle, mem.map.addr() + ps as u64),
        ps as u64,
    )?;
    check!(
        mem.map.bytes()[ps..2 * ps] == out.bytes()[ps..],
        "CPU read of the CMB differs from what the device wrote"
    );
    let snap = dev.snapshot(p2p.handle, mem.map.addr(), 2)?;
    check_eq!(
        snap[1].flags,
        expected_flags(Kind::HostBridge) | ODP_HMM_PAGE_WRITE,
        "flags of the written peer page"
    );
    Ok(())
}

fn invalidate(kind: Kind) -> TestResult {
    let dev = Device::open()?;
    for backend in [ODP_HMM_BACKEND_RUST, ODP_HMM_BACKEND_KERNEL] {
        let name = backend_name(backend);
        let mem = p2pmem(None)?;
        let (reg, _) = fault_and_check(&dev, &mem.map, backend, 0..NPAGES, kind)?;
        let before = dev.stats(reg.handle)?;
        mem.map.unmap_part(0, mem.map.len())?;
        let st = dev.stats(reg.handle)?;
        check_eq!(st.pages_now, 0, "{name}: peer pages mapped after munmap");
        check_eq!(
            st.pages_unmapped - before.pages_unmapped,
            NPAGES as u64,
            "{name}: peer pages unmapped"
        );
        let unlinks = st.unlink_calls - before.unlink_calls;
        match kind {
            // Linked into the IOVA window: unlinked (one call per page for the kernel backend).
            Kind::HostBridge => check!(
                unlinks > 0,
                "{name}: host-bridge peer pages were not unlinked"
            ),
            // Bus addresses have nothing to unlink.
            _ => check_eq!(unlinks, 0, "{name}: unlink calls for bus-address pages"),
        }
        let snap = dev.snapshot(reg.handle, mem.map.addr(), NPAGES)?;
        check!(
            snap.iter().all(|p| p.flags == 0),
            "{name}: snapshot after munmap: {snap:?}"
        );
        mem.map.forget();
        dev.unregister(reg.handle)?;
    }
    Ok(())
}

/// A device copy from or to peer memory the device cannot reach fails with `EREMOTEIO` (not
/// `EBUSY` after retries) and moves nothing; copies between memory pages still work.
fn refused_copy() -> TestResult {
    let ps = page_size();
    let mut m = Mapping::anon(2 * NPAGES * ps)?;
    for i in 0..NPAGES {
        m.fill_page(i, 0x50 + i as u8);
    }
    let mut peer = p2pmem(Some(m.addr() + (NPAGES * ps) as u64))?;
    peer.map.fill_page(0, 0xd4);
    std::mem::forget(peer.map);
    let dev = Device::open()?;
    for backend in [ODP_HMM_BACKEND_RUST, ODP_HMM_BACKEND_KERNEL] {
        let name = backend_name(backend);
        let reg = dev.register(m.addr(), m.len() as u64, RW, backend)?;
        let before = m.bytes().to_vec();
        let peer_page = NPAGES * ps;
        expect_errno(
            copy_in(&dev, &m, &reg, peer_page, ps, ps),
            libc::EREMOTEIO,
            &format!("{name}: device copy from unreachable peer memory"),
        )?;
        expect_errno(
            copy_in(&dev, &m, &reg, 2 * ps, peer_page + ps, ps),
            libc::EREMOTEIO,
            &format!("{name}: device copy to unreachable peer memory"),
        )?;
        check!(
            m.bytes() == &before[..],
            "{name}: a refused copy changed memory"
        );
        copy_and_check(&dev, &m, &reg, 0, 3)
            .map_err(|e| Outcome::Fail(format!("{name}: {e:?}")))?;
        dev.unregister(reg.handle)?;
    }
    Ok(())
}
