// SPDX-License-Identifier: GPL-2.0

//! ODP registrations: faults, invalidations and device accesses through the IOMMU.

use std::{
    fs,
    io::{
        Read,
        Write, //
    },
    os::fd::{
        AsRawFd,
        FromRawFd, //
    },
    sync::{
        atomic::{
            AtomicBool,
            AtomicU64,
            Ordering, //
        },
        Arc,
    },
    thread,
    time::{
        Duration,
        Instant, //
    },
};

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

/// The tests of this group.
pub const TESTS: &[&Test] = &[
    &Test {
        name: "register_unregister",
        run: register_unregister,
    },
    &Test {
        name: "bad_register_inputs",
        run: bad_register_inputs,
    },
    &Test {
        name: "bad_handle_inputs",
        run: bad_handle_inputs,
    },
    &Test {
        name: "bad_fault_inputs",
        run: bad_fault_inputs,
    },
    &Test {
        name: "bad_snapshot_inputs",
        run: bad_snapshot_inputs,
    },
    &Test {
        name: "bad_dma_inputs",
        run: bad_dma_inputs,
    },
    &Test {
        name: "unknown_version",
        run: unknown_version,
    },
    &Test {
        name: "read_fault",
        run: read_fault,
    },
    &Test {
        name: "write_fault",
        run: write_fault,
    },
    &Test {
        name: "write_fault_readonly_registration_refused",
        run: write_fault_readonly,
    },
    &Test {
        name: "write_fault_readonly_mapping_refused",
        run: write_fault_readonly_mapping,
    },
    &Test {
        name: "snapshot_flags",
        run: snapshot_flags,
    },
    &Test {
        name: "device_copy_anon",
        run: device_copy_anon,
    },
    &Test {
        name: "device_copy_memfd_shared",
        run: device_copy_memfd,
    },
    &Test {
        name: "device_copy_thp",
        run: device_copy_thp,
    },
    &Test {
        name: "device_copy_hugetlb",
        run: device_copy_hugetlb,
    },
    &Test {
        name: "invalidate_munmap",
        run: invalidate_munmap,
    },
    &Test {
        name: "invalidate_partial_munmap",
        run: invalidate_partial_munmap,
    },
    &Test {
        name: "invalidate_mprotect_readonly",
        run: invalidate_mprotect,
    },
    &Test {
        name: "invalidate_madv_dontneed",
        run: invalidate_dontneed,
    },
    &Test {
        name: "invalidate_fork_cow",
        run: invalidate_fork_cow,
    },
    &Test {
        name: "raw_iova_faults_after_invalidation",
        run: raw_iova_after_invalidation,
    },
    &Test {
        name: "process_exit_with_registrations",
        run: process_exit_with_registrations,
    },
    &Test {
        name: "process_mrelease_reaps_registration",
        run: process_mrelease_reaps_registration,
    },
    &Test {
        name: "close_with_registrations",
        run: close_with_registrations,
    },
    &Test {
        name: "stress_fault_copy_vs_remap_10s",
        run: stress_copy_vs_remap,
    },
    &Test {
        name: "register_1gib_costs_only_bookkeeping",
        run: register_1gib,
    },
    &Test {
        name: "pinned_registration",
        run: pinned_registration,
    },
    &Test {
        name: "pinned_refused_inputs",
        run: pinned_refused_inputs,
    },
    &Test {
        name: "pinned_memlock_limit",
        run: pinned_memlock_limit,
    },
];

fn ps() -> usize {
    page_size()
}

/// The module still serves a plain register, fault and device copy.
fn module_works(dev: &Device) -> TestResult {
    let mut m = Mapping::anon(2 * ps())?;
    m.fill_page(0, 0x11);
    let reg = dev.register(m.addr(), m.len() as u64, RW, ODP_HMM_BACKEND_DEFAULT)?;
    dev.fault(reg.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE)?;
    copy_in(dev, &m, &reg, 0, ps(), ps())?;
    check!(
        m.bytes()[..ps()] == m.bytes()[ps()..],
        "device copy after bad inputs"
    );
    dev.unregister(reg.handle)?;
    Ok(())
}

fn register_unregister() -> TestResult {
    let m = Mapping::anon(16 * ps())?;
    let dev = Device::open()?;
    let info = dev.info()?;
    let reg = dev.register(m.addr(), m.len() as u64, RW, ODP_HMM_BACKEND_DEFAULT)?;
    check!(reg.handle != 0, "handle 0");
    if info.flags & ODP_HMM_INFO_IOVA != 0 && reg.backend != ODP_HMM_BACKEND_NONE {
        check_eq!(
            reg.dma_mode,
            ODP_HMM_DMA_MODE_IOVA,
            "DMA mode with a translating IOMMU"
        );
        check!(reg.iova_base != 0, "no IOVA base in IOVA mode");
    } else if reg.backend != ODP_HMM_BACKEND_NONE {
        check_eq!(reg.dma_mode, ODP_HMM_DMA_MODE_MAP, "DMA mode without IOVA");
    }
    let st = dev.stats(reg.handle)?;
    check_eq!(st.registrations, 1, "live registrations");
    check_eq!(
        st.pages_now,
        0,
        "pages mapped right after registering (nothing is faulted)"
    );
    if reg.dma_mode == ODP_HMM_DMA_MODE_IOVA {
        check_eq!(st.iova_bytes, m.len() as u64, "IOVA reserved");
    }
    let second = dev.register(m.addr(), m.len() as u64, ODP_HMM_ACCESS_READ, 0)?;
    check!(
        second.handle != reg.handle,
        "two registrations share a handle"
    );
    check_eq!(dev.stats(0)?.registrations, 2, "live registrations");
    dev.unregister(reg.handle)?;
    dev.unregister(second.handle)?;
    check_eq!(
        dev.stats(0)?.registrations,
        0,
        "live registrations after unregistering"
    );
    Ok(())
}

fn bad_register_inputs() -> TestResult {
    let m = Mapping::anon(4 * ps())?;
    let hole = Mapping::anon(4 * ps())?;
    let hole_addr = hole.addr();
    drop(hole);
    // Eight pages whose last four are unmapped.
    let tail = Mapping::anon(8 * ps())?;
    tail.unmap_part(4 * ps(), 4 * ps())?;
    let dev = Device::open()?;
    let a = m.addr();
    let len = m.len() as u64;
    let cases: &[(&str, u64, u64, u32, u32, i32)] = &[
        ("unaligned address", a + 1, len, RW, 0, libc::EINVAL),
        ("zero length", a, 0, RW, 0, libc::EINVAL),
        ("unaligned length", a, len - 1, RW, 0, libc::EINVAL),
        ("wrapping range", !0xfff, 0x2000, RW, 0, libc::EOVERFLOW),
        (
            "range beyond user space",
            0x7fff_ffff_f000,
            0x10_0000_0000,
            RW,
            0,
            libc::EOVERFLOW,
        ),
        (
            "range outside any mapping",
            hole_addr,
            4 * ps() as u64,
            RW,
            0,
            libc::EFAULT,
        ),
        (
            "range running into a hole",
            tail.addr(),
            8 * ps() as u64,
            RW,
            0,
            libc::EFAULT,
        ),
        (
            "no read access",
            a,
            len,
            ODP_HMM_ACCESS_WRITE,
            0,
            libc::EINVAL,
        ),
        ("unknown flag", a, len, RW | 0x100, 0, libc::EINVAL),
        ("unknown backend", a, len, RW, 99, libc::EINVAL),
    ];
    for &(what, addr, length, flags, backend, errno) in cases {
        expect_errno(dev.register(addr, length, flags, backend), errno, what)?;
    }
    check_eq!(
        dev.stats(0)?.registrations,
        0,
        "registrations left by refused calls"
    );
    module_works(&dev)
}

fn bad_handle_inputs() -> TestResult {
    let m = Mapping::anon(4 * ps())?;
    let (dev, reg) = register(&m, RW)?;
    expect_errno(
        dev.unregister(0xdead_beef),
        libc::ENOENT,
        "unregister of an unknown handle",
    )?;
    expect_errno(
        dev.stats(0xdead_beef),
        libc::ENOENT,
        "stats of an unknown handle",
    )?;
    expect_errno(
        dev.fault(0xdead_beef, m.addr(), ps() as u64, 0),
        libc::ENOENT,
        "fault of an unknown handle",
    )?;
    let mut arg = odp_hmm_unregister {
        version: ODP_HMM_ABI_VERSION,
        reserved: 1,
        handle: reg.handle,
    };
    // SAFETY: The ioctl takes a `struct odp_hmm_unregister`.
    expect_errno(
        unsafe { dev.raw_ioctl(ODP_HMM_IOC_UNREGISTER, &mut arg) },
        libc::EINVAL,
        "unregister with a reserved field set",
    )?;
    dev.unregister(reg.handle)?;
    expect_errno(
        dev.unregister(reg.handle),
        libc::ENOENT,
        "double unregister",
    )?;
    // Handles are never reused: a new registration does not answer to the old handle.
    let again = dev.register(m.addr(), m.len() as u64, RW, 0)?;
    check!(again.handle != reg.handle, "a handle was reused");
    expect_errno(
        dev.unregister(reg.handle),
        libc::ENOENT,
        "unregister of a dropped handle",
    )?;
    dev.unregister(again.handle)?;
    module_works(&dev)
}

fn bad_fault_inputs() -> TestResult {
    let m = Mapping::anon(8 * ps())?;
    let (dev, reg) = register(&m, RW)?;
    let (a, p) = (m.addr(), ps() as u64);
    let cases: &[(&str, u64, u64, u32, i32)] = &[
        ("unknown flag", a, p, 0x80, libc::EINVAL),
        (
            "write and no-fault together",
            a,
            p,
            ODP_HMM_FAULT_WRITE | ODP_HMM_FAULT_NO_FAULT,
            libc::EINVAL,
        ),
        ("unaligned address", a + 8, p, 0, libc::EINVAL),
        ("zero length", a, 0, 0, libc::EINVAL),
        ("before the registration", a - p, p, 0, libc::ERANGE),
        ("past the registration", a + 7 * p, 2 * p, 0, libc::ERANGE),
        ("wrapping range", a, !0xfff, 0, libc::EOVERFLOW),
    ];
    for &(what, addr, len, flags, errno) in cases {
        expect_errno(dev.fault(reg.handle, addr, len, flags), errno, what)?;
    }
    check_eq!(
        dev.stats(reg.handle)?.pages_now,
        0,
        "pages mapped by refused faults"
    );
    dev.unregister(reg.handle)?;
    module_works(&dev)
}

fn bad_snapshot_inputs() -> TestResult {
    let m = Mapping::anon(8 * ps())?;
    let (dev, reg) = register(&m, RW)?;
    let mut pages = vec![odp_hmm_page::default(); 8];
    let snap = |npages: u64, addr: u64, flags: u32, ptr: u64| {
        let mut arg = odp_hmm_snapshot {
            version: ODP_HMM_ABI_VERSION,
            flags,
            handle: reg.handle,
            addr,
            npages,
            pages: ptr,
        };
        // SAFETY: The ioctl takes a `struct odp_hmm_snapshot`; the module checks `pages`.
        unsafe { dev.raw_ioctl(ODP_HMM_IOC_SNAPSHOT, &mut arg) }
    };
    let buf = pages.as_mut_ptr() as u64;
    let a = m.addr();
    expect_errno(
        snap(u64::from(ODP_HMM_SNAPSHOT_MAX_PAGES) + 1, a, 0, buf),
        libc::E2BIG,
        "oversized buffer",
    )?;
    expect_errno(snap(0, a, 0, buf), libc::EINVAL, "zero pages")?;
    expect_errno(snap(1, a, 1, buf), libc::EINVAL, "flags set")?;
    expect_errno(
        snap(9, a, 0, buf),
        libc::ERANGE,
        "more pages than registered",
    )?;
    expect_errno(snap(1, a + 1, 0, buf), libc::EINVAL, "unaligned address")?;
    expect_errno(snap(1, a, 0, 8), libc::EFAULT, "bad user pointer")?;
    snap(8, a, 0, buf)?;
    dev.unregister(reg.handle)?;
    module_works(&dev)
}

fn bad_dma_inputs() -> TestResult {
    let m = Mapping::anon(4 * ps())?;
    let (dev, reg) = register(&m, RW)?;
    let base = odp_hmm_dma {
        src_handle: reg.handle,
        src_addr: m.addr(),
        dst_handle: reg.handle,
        dst_addr: m.addr() + ps() as u64,
        length: 64,
        ..Default::default()
    };
    let cases: &[(&str, odp_hmm_dma, i32)] = &[
        (
            "zero length",
            odp_hmm_dma { length: 0, ..base },
            libc::EINVAL,
        ),
        (
            "longer than the device buffer",
            odp_hmm_dma {
                length: 4097,
                ..base
            },
            libc::E2BIG,
        ),
        (
            "unknown flag",
            odp_hmm_dma {
                flags: 0x100,
                ..base
            },
            libc::EINVAL,
        ),
        (
            "two source flags",
            odp_hmm_dma {
                flags: ODP_HMM_DMA_SRC_DEVBUF | ODP_HMM_DMA_SRC_RAW_IOVA,
                ..base
            },
            libc::EINVAL,
        ),
        (
            "buffer to buffer",
            odp_hmm_dma {
                flags: ODP_HMM_DMA_SRC_DEVBUF | ODP_HMM_DMA_DST_DEVBUF,
                src_addr: 0,
                dst_addr: 0,
                ..base
            },
            libc::EINVAL,
        ),
        (
            "past the device buffer",
            odp_hmm_dma {
                flags: ODP_HMM_DMA_DST_DEVBUF,
                dst_addr: 4090,
                ..base
            },
            libc::ERANGE,
        ),
        (
            "unknown source handle",
            odp_hmm_dma {
                src_handle: 0xdead,
                ..base
            },
            libc::ENOENT,
        ),
        (
            "outside the registration",
            odp_hmm_dma {
                src_addr: m.addr() + 4 * ps() as u64 - 32,
                ..base
            },
            libc::ERANGE,
        ),
    ];
    for (what, req, errno) in cases {
        expect_errno(dev.dma(req), *errno, what)?;
    }
    dev.unregister(reg.handle)?;
    module_works(&dev)
}

fn unknown_version() -> TestResult {
    let m = Mapping::anon(4 * ps())?;
    let dev = Device::open()?;
    let mut info = odp_hmm_info {
        version: ODP_HMM_ABI_VERSION + 1,
        ..Default::default()
    };
    // SAFETY: The ioctl takes a `struct odp_hmm_info`.
    expect_errno(
        unsafe { dev.raw_ioctl(ODP_HMM_IOC_INFO, &mut info) },
        libc::EPROTONOSUPPORT,
        "info",
    )?;
    let mut reg = odp_hmm_register {
        version: 0,
        flags: RW,
        addr: m.addr(),
        length: m.len() as u64,
        ..Default::default()
    };
    // SAFETY: The ioctl takes a `struct odp_hmm_register`.
    expect_errno(
        unsafe { dev.raw_ioctl(ODP_HMM_IOC_REGISTER, &mut reg) },
        libc::EPROTONOSUPPORT,
        "register",
    )?;
    check_eq!(
        dev.stats(0)?.registrations,
        0,
        "registrations after a refused call"
    );
    module_works(&dev)
}

fn read_fault() -> TestResult {
    let mut m = Mapping::anon(16 * ps())?;
    for i in 0..16 {
        m.fill_page(i, i as u8);
    }
    let (dev, reg) = register(&m, RW)?;
    let f = dev.fault(reg.handle, m.addr() + 4 * ps() as u64, 8 * ps() as u64, 0)?;
    check_eq!(f.pages_mapped, 8, "pages newly mapped");
    check_eq!(f.pages_valid, 8, "pages valid");
    let snap = dev.snapshot(reg.handle, m.addr(), 16)?;
    check_eq!(
        mapped(&snap),
        (4..12).collect::<Vec<_>>(),
        "mapped pages ({})",
        flags_str(&snap)
    );
    for (i, p) in snap
        .iter()
        .enumerate()
        .filter(|(_, p)| p.flags & ODP_HMM_PAGE_DMA_MAPPED != 0)
    {
        check!(
            p.flags & ODP_HMM_PAGE_WRITE == 0,
            "page {i}: a read fault mapped it writable"
        );
    }
    // Again: nothing new to map.
    let f = dev.fault(reg.handle, m.addr() + 4 * ps() as u64, 8 * ps() as u64, 0)?;
    check_eq!(f.pages_mapped, 0, "pages newly mapped by a repeated fault");
    let st = dev.stats(reg.handle)?;
    check_eq!(st.pages_mapped, 8, "pages mapped in total");
    check_eq!(st.pages_now, 8, "pages mapped now");
    check!(st.faults >= 2, "fault count {}", st.faults);
    Ok(())
}

fn write_fault() -> TestResult {
    let mut m = Mapping::anon(16 * ps())?;
    m.fill_page(0, 1);
    let (dev, reg) = register(&m, RW)?;
    dev.fault(reg.handle, m.addr(), 16 * ps() as u64, 0)?;
    // Upgrade: the same pages, now for writing.
    let f = dev.fault(reg.handle, m.addr(), 16 * ps() as u64, ODP_HMM_FAULT_WRITE)?;
    check_eq!(f.pages_valid, 16, "pages valid");
    let snap = dev.snapshot(reg.handle, m.addr(), 16)?;
    check_eq!(
        flags_str(&snap),
        "W".repeat(16),
        "every page mapped writable"
    );
    // The device writes: the CPU sees it (page 0 to page 15).
    copy_in(&dev, &m, &reg, 0, 15 * ps(), ps())?;
    check!(
        m.bytes()[..ps()] == m.bytes()[15 * ps()..],
        "device write not visible to the CPU"
    );
    Ok(())
}

fn write_fault_readonly() -> TestResult {
    let mut m = Mapping::anon(4 * ps())?;
    m.fill_page(0, 3);
    let (dev, reg) = register(&m, ODP_HMM_ACCESS_READ)?;
    expect_errno(
        dev.fault(reg.handle, m.addr(), ps() as u64, ODP_HMM_FAULT_WRITE),
        libc::EPERM,
        "write fault on a read-only registration",
    )?;
    expect_errno(
        copy_in(&dev, &m, &reg, 0, ps(), 64),
        libc::EPERM,
        "device write to a read-only registration",
    )?;
    dev.fault(reg.handle, m.addr(), 4 * ps() as u64, 0)?;
    let snap = dev.snapshot(reg.handle, m.addr(), 4)?;
    check_eq!(
        flags_str(&snap),
        "RRRR",
        "read-only registration mapped read-only"
    );
    // Reading through the device still works: into a writable registration.
    let mut out = Mapping::anon(ps())?;
    out.bytes_mut().fill(0);
    let out_reg = dev.register(out.addr(), out.len() as u64, RW, 0)?;
    dev.copy(
        (reg.handle, m.addr()),
        (out_reg.handle, out.addr()),
        ps() as u64,
    )?;
    check!(
        out.bytes() == &m.bytes()[..ps()],
        "device read of a read-only registration"
    );
    Ok(())
}

fn write_fault_readonly_mapping() -> TestResult {
    let m = Mapping::new(
        4 * ps(),
        libc::PROT_READ,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )?;
    let (dev, reg) = register(&m, RW)?;
    expect_errno(
        dev.fault(reg.handle, m.addr(), ps() as u64, ODP_HMM_FAULT_WRITE),
        libc::EPERM,
        "write fault on a PROT_READ mapping",
    )?;
    // A read maps the zero page, read-only.
    let f = dev.fault(reg.handle, m.addr(), 4 * ps() as u64, 0)?;
    check_eq!(f.pages_valid, 4, "read fault of a PROT_READ mapping");
    check_eq!(
        flags_str(&dev.snapshot(reg.handle, m.addr(), 4)?),
        "RRRR",
        "mapped read-only"
    );
    Ok(())
}

fn snapshot_flags() -> TestResult {
    let mut m = Mapping::anon(8 * ps())?;
    for i in 0..8 {
        m.fill_page(i, 9);
    }
    let (dev, reg) = register(&m, RW)?;
    let snap = dev.snapshot(reg.handle, m.addr(), 8)?;
    check!(
        snap.iter().all(|p| p.flags == 0 && p.dma_addr == 0),
        "unfaulted pages: {snap:?}"
    );
    dev.fault(reg.handle, m.addr(), 2 * ps() as u64, 0)?;
    dev.fault(
        reg.handle,
        m.addr() + 4 * ps() as u64,
        2 * ps() as u64,
        ODP_HMM_FAULT_WRITE,
    )?;
    let snap = dev.snapshot(reg.handle, m.addr(), 8)?;
    let read = ODP_HMM_PAGE_VALID | ODP_HMM_PAGE_DMA_MAPPED;
    let write = read | ODP_HMM_PAGE_WRITE;
    let expected = [read, read, 0, 0, write, write, 0, 0];
    for (i, (p, want)) in snap.iter().zip(expected).enumerate() {
        check_eq!(p.flags, want, "flags of page {i}");
        check!(
            p.flags & ODP_HMM_PAGE_P2P == 0 && p.flags & ODP_HMM_PAGE_P2P_BUS == 0,
            "page {i} claims P2P"
        );
        if want != 0 {
            check!(p.dma_addr != 0, "page {i}: mapped without a DMA address");
            if reg.dma_mode == ODP_HMM_DMA_MODE_IOVA {
                check_eq!(
                    p.dma_addr,
                    reg.iova_base + (i * ps()) as u64,
                    "IOVA of page {i}"
                );
            }
        } else {
            check_eq!(p.dma_addr, 0, "DMA address of unmapped page {i}");
        }
    }
    // A snapshot of a sub-range starts at its first page.
    let sub = dev.snapshot(reg.handle, m.addr() + 4 * ps() as u64, 2)?;
    check_eq!(sub[0].flags, write, "sub-range snapshot");
    // NO_FAULT maps only what is present: pages 6 and 7 are (they were filled), nothing faults.
    let f = dev.fault(
        reg.handle,
        m.addr(),
        8 * ps() as u64,
        ODP_HMM_FAULT_NO_FAULT,
    )?;
    check_eq!(f.pages_valid, 8, "present pages after a no-fault prefetch");
    Ok(())
}

fn device_copy_anon() -> TestResult {
    let mut m = Mapping::anon(8 * ps())?;
    for i in 0..8 {
        m.fill_page(i, 0x20 + i as u8);
    }
    let (dev, reg) = register(&m, RW)?;
    // Nothing is mapped: the device faults both pages in (ODP).
    let faults = copy_in(&dev, &m, &reg, 0, 4 * ps(), ps())?;
    check!(faults >= 2, "device page faults: {faults}");
    check!(
        m.bytes()[..ps()] == m.bytes()[4 * ps()..5 * ps()],
        "bytes after device copy"
    );
    // Mapped now: no fault.
    check_eq!(
        copy_in(&dev, &m, &reg, 0, 4 * ps(), ps())?,
        0,
        "faults of a second copy"
    );
    // An unaligned copy across a page boundary.
    let (src, dst, len) = (ps() + 100, 5 * ps() + 300, 4000);
    copy_in(&dev, &m, &reg, src, dst, len)?;
    check!(
        m.bytes()[src..src + len] == m.bytes()[dst..dst + len],
        "unaligned copy across pages"
    );
    Ok(())
}

fn device_copy_memfd() -> TestResult {
    let mut m = Mapping::memfd_shared(8 * ps())?;
    for i in 0..8 {
        m.fill_page(i, 0x40 + i as u8);
    }
    let (dev, reg) = register(&m, RW)?;
    copy_and_check(&dev, &m, &reg, 1, 6)?;
    copy_and_check(&dev, &m, &reg, 2, 7)?;
    // A second mapping of the same pages sees what the device wrote.
    Ok(())
}

fn device_copy_thp() -> TestResult {
    if !thp_enabled() {
        skip!("transparent huge pages are not available");
    }
    let mut m = Mapping::anon_huge(2 * HUGE)?;
    for i in 0..(2 * HUGE / ps()) {
        m.fill_page(i, i as u8);
    }
    let (dev, reg) = register(&m, RW)?;
    dev.fault(reg.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE)?;
    let snap = dev.snapshot(reg.handle, m.addr(), 2 * HUGE / ps())?;
    let huge = snap.iter().filter(|p| p.order == 9).count();
    if huge == 0 {
        skip!("the kernel gave no THP for a 2 MiB-aligned MADV_HUGEPAGE range");
    }
    check_eq!(huge % 512, 0, "pages of order 9 come in whole 2 MiB units");
    check!(
        mapped(&snap).len() == snap.len(),
        "every page mapped ({})",
        flags_str(&snap)
    );
    let st = dev.stats(reg.handle)?;
    if reg.backend == ODP_HMM_BACKEND_RUST && reg.dma_mode == ODP_HMM_DMA_MODE_IOVA {
        // One link per 2 MiB folio (plus any order-0 runs), one sync per fault batch.
        check!(
            st.link_calls <= 2 + (snap.len() - huge) as u64,
            "link calls for THP: {}",
            st.link_calls
        );
    }
    copy_and_check(&dev, &m, &reg, 3, 700)?;
    copy_and_check(&dev, &m, &reg, 600, 10)?;
    Ok(())
}

fn device_copy_hugetlb() -> TestResult {
    // Two 2 MiB hugetlbfs pages, reserved for the test.
    let pool = "/proc/sys/vm/nr_hugepages";
    let before = fs::read_to_string(pool).unwrap_or_default();
    if fs::write(pool, "2").is_err() {
        skip!("cannot reserve hugetlbfs pages ({pool})");
    }
    let result = (|| -> TestResult {
        let mut m = match Mapping::new(
            2 * HUGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
            -1,
        ) {
            Ok(m) => m,
            Err(e) => skip!("no hugetlbfs pages: {e}"),
        };
        for i in 0..(2 * HUGE / ps()) {
            m.fill_page(i, (i * 3) as u8);
        }
        let (dev, reg) = register(&m, RW)?;
        dev.fault(reg.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE)?;
        let snap = dev.snapshot(reg.handle, m.addr(), 2 * HUGE / ps())?;
        let expected = if reg.backend == ODP_HMM_BACKEND_LEGACY {
            0
        } else {
            9
        };
        check!(
            snap.iter()
                .all(|p| p.order == expected && p.flags & ODP_HMM_PAGE_DMA_MAPPED != 0),
            "hugetlb pages: every page mapped with order {expected}"
        );
        copy_and_check(&dev, &m, &reg, 1, 513)?;
        copy_and_check(&dev, &m, &reg, 1000, 7)?;
        // Unmapping one huge page unmaps exactly its 512 pages.
        let before = dev.stats(reg.handle)?;
        m.unmap_part(HUGE, HUGE)?;
        let st = dev.stats(reg.handle)?;
        check_eq!(
            st.pages_unmapped - before.pages_unmapped,
            512,
            "pages unmapped with a huge page"
        );
        check_eq!(st.pages_now, 512, "pages still mapped");
        Ok(())
    })();
    let _ = fs::write(pool, before.trim());
    result
}

/// Registers 16 filled pages and maps them all writable.
fn setup16() -> Result<(Mapping, Device, Registration), Outcome> {
    let mut m = Mapping::anon(16 * ps())?;
    for i in 0..16 {
        m.fill_page(i, 0x60 + i as u8);
    }
    let (dev, reg) = register(&m, RW)?;
    dev.fault(reg.handle, m.addr(), 16 * ps() as u64, ODP_HMM_FAULT_WRITE)?;
    Ok((m, dev, reg))
}

fn invalidate_munmap() -> TestResult {
    let (m, dev, reg) = setup16()?;
    let before = dev.stats(reg.handle)?;
    m.unmap_part(0, 16 * ps())?;
    let st = dev.stats(reg.handle)?;
    check_eq!(st.pages_now, 0, "pages mapped after munmap");
    check_eq!(
        st.pages_unmapped - before.pages_unmapped,
        16,
        "pages unmapped by munmap"
    );
    check!(
        st.invalidations > before.invalidations,
        "no invalidation counted"
    );
    check_eq!(
        mapped(&dev.snapshot(reg.handle, m.addr(), 16)?),
        Vec::<usize>::new(),
        "snapshot"
    );
    expect_errno(
        dev.fault(reg.handle, m.addr(), ps() as u64, 0),
        libc::EFAULT,
        "fault of an unmapped range",
    )?;
    m.forget();
    Ok(())
}

fn invalidate_partial_munmap() -> TestResult {
    let (mut m, dev, reg) = setup16()?;
    let before = dev.stats(reg.handle)?;
    let snap_before = dev.snapshot(reg.handle, m.addr(), 16)?;
    m.unmap_part(6 * ps(), 4 * ps())?;
    let snap = dev.snapshot(reg.handle, m.addr(), 16)?;
    let gone = check_invalidated(m.addr(), &snap_before, &snap, 6..10)?;
    let st = dev.stats(reg.handle)?;
    check_eq!(
        st.pages_unmapped - before.pages_unmapped,
        gone,
        "pages unmapped"
    );
    // New memory in the hole, new bytes: the device refaults and sees them.
    m.remap_part(6 * ps(), 4 * ps())?;
    m.fill_page(7, 0xa7);
    let faults = copy_in(&dev, &m, &reg, 7 * ps(), 12 * ps(), ps())?;
    check!(faults >= 1, "the device did not refault page 7");
    check!(
        m.bytes()[7 * ps()..8 * ps()] == m.bytes()[12 * ps()..13 * ps()],
        "bytes of the new page 7"
    );
    let now = dev.snapshot(reg.handle, m.addr(), 16)?;
    check!(
        mapped(&now).contains(&7),
        "page 7 after the refault ({})",
        flags_str(&now)
    );
    check_eq!(
        dev.stats(reg.handle)?.pages_now,
        mapped(&now).len() as u64,
        "pages mapped after the refault, as the snapshot shows them"
    );
    Ok(())
}

fn invalidate_mprotect() -> TestResult {
    let (m, dev, reg) = setup16()?;
    let before = dev.stats(reg.handle)?;
    let snap_before = dev.snapshot(reg.handle, m.addr(), 16)?;
    m.protect(4 * ps(), 4 * ps(), libc::PROT_READ)?;
    let snap = dev.snapshot(reg.handle, m.addr(), 16)?;
    let gone = check_invalidated(m.addr(), &snap_before, &snap, 4..8)?;
    check_eq!(
        dev.stats(reg.handle)?.pages_unmapped - before.pages_unmapped,
        gone,
        "pages unmapped"
    );
    // Reading refaults read-only; writing is refused.
    copy_in(&dev, &m, &reg, 5 * ps(), 12 * ps(), ps())?;
    check!(
        m.bytes()[5 * ps()..6 * ps()] == m.bytes()[12 * ps()..13 * ps()],
        "device read of page 5"
    );
    check_eq!(
        flags_str(&dev.snapshot(reg.handle, m.addr() + 5 * ps() as u64, 1)?),
        "R",
        "page 5"
    );
    expect_errno(
        copy_in(&dev, &m, &reg, 0, 5 * ps(), 64),
        libc::EPERM,
        "device write to a read-only page",
    )?;
    Ok(())
}

fn invalidate_dontneed() -> TestResult {
    let (m, dev, reg) = setup16()?;
    let snap_before = dev.snapshot(reg.handle, m.addr(), 16)?;
    m.advise(3 * ps(), 2 * ps(), libc::MADV_DONTNEED)?;
    let snap = dev.snapshot(reg.handle, m.addr(), 16)?;
    check_invalidated(m.addr(), &snap_before, &snap, 3..5)?;
    // The pages are zero now, and the device sees zeros.
    copy_in(&dev, &m, &reg, 3 * ps(), 10 * ps(), ps())?;
    check!(
        m.bytes()[10 * ps()..11 * ps()].iter().all(|&b| b == 0),
        "device read of a discarded page"
    );
    Ok(())
}

fn invalidate_fork_cow() -> TestResult {
    let (mut m, dev, reg) = setup16()?;
    let original = m.bytes().to_vec();
    let before = dev.stats(reg.handle)?;
    let (mut rx, tx) = pipe()?;
    // SAFETY: Single-threaded; the child only touches its copy of `m` and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        // The child writes page 3 (copy-on-write in the child), then keeps sharing the other
        // pages until the parent is done.
        m.fill_page(3, 0xcc);
        drop(tx);
        // Returns at end of file, when the parent closes its write end.
        let _ = rx.read(&mut [0u8]);
        // SAFETY: Leaves the child at once.
        unsafe { libc::_exit(0) };
    }
    drop(rx);
    let release_child = || {
        // Closing our write end lets the child's read return.
        drop(tx);
        wait_child(pid)
    };
    let result = (|| -> TestResult {
        // Fork write-protected the parent's pages: every writable mapping went.
        let snap = dev.snapshot(reg.handle, m.addr(), 16)?;
        check_eq!(
            mapped(&snap),
            Vec::<usize>::new(),
            "mapped after fork ({})",
            flags_str(&snap)
        );
        check_eq!(
            dev.stats(reg.handle)?.pages_unmapped - before.pages_unmapped,
            16,
            "pages unmapped by fork"
        );
        // Map them again, read-only (they are shared with the child now).
        dev.fault(reg.handle, m.addr(), 16 * ps() as u64, 0)?;
        check_eq!(
            flags_str(&dev.snapshot(reg.handle, m.addr(), 16)?),
            "R".repeat(16),
            "after refault"
        );
        // The parent writes page 2, which the child still shares: copy-on-write in the parent
        // replaces that page (and the module unlinks its whole link unit).
        let before = dev.stats(reg.handle)?;
        let snap_before = dev.snapshot(reg.handle, m.addr(), 16)?;
        m.fill_page(2, 0xdd);
        let snap = dev.snapshot(reg.handle, m.addr(), 16)?;
        let gone = check_invalidated(m.addr(), &snap_before, &snap, 2..3)?;
        check_eq!(
            dev.stats(reg.handle)?.pages_unmapped - before.pages_unmapped,
            gone,
            "pages unmapped"
        );
        Ok(())
    })();
    check_eq!(release_child()?, 0, "child exit");
    result?;
    // The child's write is not the parent's: the device reads the parent's page 3, and the
    // parent's new page 2.
    copy_in(&dev, &m, &reg, 3 * ps(), 9 * ps(), ps())?;
    check!(
        m.bytes()[9 * ps()..10 * ps()] == original[3 * ps()..4 * ps()],
        "device read the child's page 3"
    );
    copy_and_check(&dev, &m, &reg, 2, 14)?;
    Ok(())
}

pub(crate) fn raw_iova_after_invalidation() -> TestResult {
    let dev = Device::open()?;
    let info = dev.info()?;
    let mut src = Mapping::anon(ps())?;
    mark_page(src.bytes_mut(), 0x5a, 0);
    let reg = dev.register(src.addr(), src.len() as u64, RW, 0)?;
    if info.flags & ODP_HMM_INFO_DEBUG_RAW_DMA == 0 {
        let raw = odp_hmm_dma {
            flags: ODP_HMM_DMA_SRC_RAW_IOVA | ODP_HMM_DMA_DST_DEVBUF,
            src_addr: reg.iova_base,
            length: ps() as u64,
            ..Default::default()
        };
        expect_errno(
            dev.dma(&raw),
            libc::EPERM,
            "raw IOVA read without debug_raw_dma",
        )?;
        skip!("the module was loaded without debug_raw_dma=1");
    }
    if !translates(&info) {
        skip!(
            "the DMA device's domain is {}: a DMA address is a physical address, nothing to prove",
            domain_name(info.domain_type)
        );
    }
    let model = IommuModel::of(&info.pci_address());
    println!(
        "# {model}, {} domain, {} backend, {} mode",
        domain_name(info.domain_type),
        backend_name(reg.backend),
        dma_mode_name(reg.dma_mode)
    );
    let probe = RawProbe::new(&dev)?;
    dev.fault(reg.handle, src.addr(), ps() as u64, 0)?;
    // The page's DMA address while it is mapped: its IOVA in the registration's window, or the
    // address dma_map_phys() gave it (freed by the unmap, and not handed out again before the
    // read below: everything else the test maps is mapped already).
    let dma_addr = dev.snapshot(reg.handle, src.addr(), 1)?[0].dma_addr;
    if reg.dma_mode == ODP_HMM_DMA_MODE_IOVA {
        check_eq!(dma_addr, reg.iova_base, "IOVA of page 0");
    }
    check!(dma_addr != 0, "page 0 mapped without a DMA address");
    // While mapped, a raw read of the address returns the page (and leaves the translation in
    // the IOMMU's IOTLB, where a missing flush would keep it).
    probe.raw(dma_addr, 0, ps())?;
    check!(
        probe.buffer()? == src.bytes(),
        "raw read of a mapped DMA address"
    );
    let old = src.bytes().to_vec();
    src.unmap_part(0, ps())?;
    check_eq!(
        dev.snapshot(reg.handle, src.addr(), 1)?[0].flags,
        0,
        "page 0 after munmap"
    );
    probe.fill_sentinel()?;
    // The stale address must fault in the IOMMU, not return the old bytes.
    let (read, log) = expecting_iommu_fault(&model, dma_addr, || probe.raw(dma_addr, 0, ps()));
    read?;
    check!(
        log != FaultLog::Missing,
        "{model}: no IOMMU fault was logged for the unmapped DMA address {dma_addr:#x}"
    );
    let got = probe.buffer()?;
    check!(
        got != old,
        "the device read the old page through an unmapped DMA address"
    );
    println!(
        "# the read of {dma_addr:#x} after the unmap: {}, {}",
        match log {
            FaultLog::Reported => "IOMMU fault reported",
            _ => "no fault report",
        },
        describe_refused_read(&got, probe.sentinel())
    );
    Ok(())
}

fn process_exit_with_registrations() -> TestResult {
    let code = in_child(|| {
        let run = || -> std::io::Result<()> {
            let mut m = Mapping::anon(8 * ps())?;
            m.fill_page(0, 1);
            let (dev, reg) = register(&m, RW)?;
            dev.fault(reg.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE)?;
            copy_in(&dev, &m, &reg, 0, ps(), ps())?;
            let _second = dev.register(m.addr(), m.len() as u64, ODP_HMM_ACCESS_READ, 0)?;
            // Exit with the device open and both registrations alive.
            std::mem::forget(dev);
            std::mem::forget(m);
            Ok(())
        };
        match run() {
            Ok(()) => 0,
            Err(_) => 1,
        }
    })?;
    check_eq!(code, 0, "child");
    // The module still works (and the kernel log, checked after the run, must be clean).
    module_works(&Device::open()?)
}

/// Pages the child of [`process_mrelease_reaps_registration`] maps.
const REAPED_PAGES: usize = 64;

/// Tries at catching the child between its kill and its own exit.
const MRELEASE_TRIES: usize = 40;

/// A process killed with a live registration and reaped at once by `process_mrelease()`, which
/// runs the OOM reaper's code: the invalidation callback is told it must not sleep. It must
/// unmap every page (or refuse, and the reaper tries again), and the log must stay clean.
fn process_mrelease_reaps_registration() -> TestResult {
    for tries in 1..=MRELEASE_TRIES {
        let Some(stats) = kill_and_reap()? else {
            continue;
        };
        println!(
            "# reaped on try {tries}: {} non-blocking invalidation(s), {} that unmapped something",
            stats.invalidations_nonblocking, stats.invalidations
        );
        check_eq!(stats.pages_now, 0, "pages mapped after the reap");
        check_eq!(
            stats.pages_unmapped,
            REAPED_PAGES as u64,
            "pages unmapped by the reap and the exit"
        );
        return module_works(&Device::open()?);
    }
    Err(format!(
        "in {MRELEASE_TRIES} tries the child's exit always came before process_mrelease() reaped it"
    )
    .into())
}

/// In a child: maps [`REAPED_PAGES`], registers and faults them, writes its device descriptor and
/// the handle to `report`, and waits to be killed.
fn registered_child(mut report: std::fs::File) -> i32 {
    let mut run = || -> std::io::Result<(Device, Mapping)> {
        let mut m = Mapping::anon(REAPED_PAGES * ps())?;
        m.fill_page(0, 5);
        let (dev, reg) = register(&m, RW)?;
        dev.fault(reg.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE)?;
        let fd = dev.file().as_raw_fd() as u64;
        report.write_all(&[fd.to_le_bytes(), reg.handle.to_le_bytes()].concat())?;
        Ok((dev, m))
    };
    match run() {
        // Keep both alive until the kill.
        Ok(_alive) => loop {
            thread::sleep(Duration::from_secs(1));
        },
        Err(_) => 1,
    }
}

/// Kills a child with a live registration and reaps its memory with `process_mrelease()`.
/// Returns the registration's counters afterwards when the reaper's non-blocking invalidation
/// ran, `None` when the child's own exit came first.
fn kill_and_reap() -> Result<Option<odp_hmm_stats>, Outcome> {
    let (mut rx, tx) = pipe()?;
    // SAFETY: Single-threaded; the child only runs `registered_child` and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        drop(rx);
        let code = registered_child(tx);
        // SAFETY: Leaves the child at once.
        unsafe { libc::_exit(code) };
    }
    let mut child = Child(Some(pid));
    drop(tx);
    let mut report = [0u8; 16];
    rx.read_exact(&mut report)
        .map_err(|e| format!("the child did not register: {e}"))?;
    let [fd, handle] = [0, 8].map(|at| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&report[at..at + 8]);
        u64::from_le_bytes(word)
    });

    // SAFETY: `pidfd_open(pid, 0)` takes no pointers.
    let pidfd = syscall_result(unsafe {
        libc::syscall(
            libc::SYS_pidfd_open,
            libc::c_long::from(pid),
            0 as libc::c_long,
        )
    })?;
    // SAFETY: `pidfd` is a descriptor we own from here on.
    let pidfd = unsafe { fs::File::from_raw_fd(pidfd) };
    // The child's device file, to read the registration's counters after the child is gone.
    // SAFETY: `pidfd_getfd(pidfd, fd, 0)` takes no pointers.
    let devfd = syscall_result(unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            libc::c_long::from(pidfd.as_raw_fd()),
            fd as libc::c_long,
            0 as libc::c_long,
        )
    })?;
    // SAFETY: `devfd` is a descriptor we own from here on, a duplicate of the child's device file.
    let dev = Device::from_file(unsafe { fs::File::from_raw_fd(devfd) });
    check_eq!(
        dev.stats(handle)?.pages_now,
        REAPED_PAGES as u64,
        "pages the child mapped"
    );

    // SAFETY: `kill` takes no pointers; `pid` is our child, not yet waited for.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: `process_mrelease(pidfd, 0)` takes no pointers.
    let released = syscall_result(unsafe {
        libc::syscall(
            libc::SYS_process_mrelease,
            libc::c_long::from(pidfd.as_raw_fd()),
            0 as libc::c_long,
        )
    });
    check_eq!(child.wait()?, 128 + libc::SIGKILL, "the child's end");
    match released {
        Ok(_) => {}
        // The child's mm was gone already, or the reap met a busy lock and stopped early.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EAGAIN)) => return Ok(None),
        Err(e) => return Err(format!("process_mrelease: {e}").into()),
    }
    let stats = dev.stats(handle)?;
    // The registration is the dead process's: another process may read its counters, not
    // unregister it. It goes when the last copy of the file is closed (here, when `dev` drops).
    expect_errno(
        dev.unregister(handle),
        libc::EPERM,
        "unregister from another process",
    )?;
    Ok((stats.invalidations_nonblocking > 0).then_some(stats))
}

fn close_with_registrations() -> TestResult {
    let mut m = Mapping::anon(8 * ps())?;
    m.fill_page(0, 7);
    let (dev, reg) = register(&m, RW)?;
    dev.fault(reg.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE)?;
    copy_in(&dev, &m, &reg, 0, ps(), ps())?;
    drop(dev);
    // The memory outlives the registration; changing it now concerns nobody.
    m.fill_page(2, 9);
    m.unmap_part(0, 4 * ps())?;
    module_works(&Device::open()?)
}

/// The header of a page the stress test writes: generation and page index, then a pattern.
fn stress_page(buf: &mut [u8], generation: u64, page: usize) {
    pattern(buf, (generation as u8) ^ (page as u8).wrapping_mul(31));
    buf[..8].copy_from_slice(&generation.to_le_bytes());
    buf[8..16].copy_from_slice(&(page as u64).to_le_bytes());
}

fn stress_page_ok(buf: &[u8], page: usize) -> Result<u64, String> {
    let generation = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    let mut want = vec![0u8; buf.len()];
    stress_page(&mut want, generation, page);
    if buf == &want[..] {
        Ok(generation)
    } else {
        let at = buf.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
        Err(format!(
            "page {page}: torn or stale bytes at offset {at} (generation {generation})"
        ))
    }
}

fn stress_copy_vs_remap() -> TestResult {
    const PAGES: usize = 8;
    let len = PAGES * ps();
    let mut churn = Mapping::anon(len)?;
    for i in 0..PAGES {
        stress_page(&mut churn.bytes_mut()[i * ps()..(i + 1) * ps()], 1, i);
    }
    let out = Mapping::anon(ps())?;
    let dev = Arc::new(Device::open()?);
    let reg = dev.register(churn.addr(), len as u64, RW, 0)?;
    let out_reg = dev.register(out.addr(), ps() as u64, RW, 0)?;
    let stop = Arc::new(AtomicBool::new(false));
    let remaps = Arc::new(AtomicU64::new(0));
    let base = churn.addr() as usize;
    std::mem::forget(churn);

    // The remapper: builds a complete new page elsewhere and moves it into place (mremap), so the
    // device can only ever see a whole generation.
    let remapper = {
        let (stop, remaps) = (stop.clone(), remaps.clone());
        let ps = ps();
        thread::spawn(move || -> Result<(), String> {
            let mut generation = 2u64;
            while !stop.load(Ordering::Relaxed) {
                let page = (generation as usize * 5) % PAGES;
                let mut fresh = Mapping::anon(ps).map_err(|e| e.to_string())?;
                stress_page(fresh.bytes_mut(), generation, page);
                // SAFETY: Moves our fresh page over page `page` of the churned mapping (ours).
                let p = unsafe {
                    libc::mremap(
                        fresh.addr() as *mut libc::c_void,
                        ps,
                        ps,
                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                        (base + page * ps) as *mut libc::c_void,
                    )
                };
                if p == libc::MAP_FAILED {
                    return Err(format!("mremap: {}", std::io::Error::last_os_error()));
                }
                fresh.forget();
                generation += 1;
                remaps.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })
    };

    let start = Instant::now();
    let (mut copies, mut result) = (0u64, Ok(()));
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(10) {
        let page = i % PAGES;
        i += 1;
        match dev.copy(
            (reg.handle, (base + page * ps()) as u64),
            (out_reg.handle, out.addr()),
            ps() as u64,
        ) {
            Ok(_) => {}
            Err(e) => {
                result = Err(Outcome::Fail(format!("device copy of page {page}: {e}")));
                break;
            }
        }
        if let Err(e) = stress_page_ok(out.bytes(), page) {
            result = Err(Outcome::Fail(e));
            break;
        }
        copies += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let remapped = remapper.join().map_err(|_| "remapper panicked")?;
    // SAFETY: The churned mapping is ours; nothing uses it any more.
    unsafe { libc::munmap(base as *mut libc::c_void, len) };
    result?;
    remapped.map_err(Outcome::Fail)?;
    let remaps = remaps.load(Ordering::Relaxed);
    println!("# {copies} device copies verified against {remaps} remaps");
    check!(copies >= 10, "only {copies} copies in 10 s");
    check!(remaps >= 10, "only {remaps} remaps in 10 s");
    let st = dev.stats(reg.handle)?;
    check!(st.invalidations > 0, "no invalidation during the stress");
    Ok(())
}

fn register_1gib() -> TestResult {
    const GIB: usize = 1 << 30;
    let m = Mapping::new(
        GIB,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
    )?;
    let npages = (GIB / ps()) as u64;
    let rss_before = rss_kb().ok_or("no VmRSS")?;
    let avail_before = meminfo_kb("MemAvailable").ok_or("no MemAvailable")?;
    let (dev, reg) = register(&m, RW)?;
    let st = dev.stats(reg.handle)?;
    let rss_after = rss_kb().ok_or("no VmRSS")?;
    let avail_after = meminfo_kb("MemAvailable").ok_or("no MemAvailable")?;
    let per_page = match (reg.backend, reg.dma_mode) {
        (
            ODP_HMM_BACKEND_RUST | ODP_HMM_BACKEND_NONE,
            ODP_HMM_DMA_MODE_IOVA | ODP_HMM_DMA_MODE_NONE,
        ) => 8,
        (ODP_HMM_BACKEND_KERNEL, ODP_HMM_DMA_MODE_IOVA) => 8,
        _ => 16,
    };
    check!(
        st.bookkeeping_bytes <= per_page * npages,
        "bookkeeping {} B for {npages} pages",
        st.bookkeeping_bytes
    );
    check_eq!(st.pages_now, 0, "pages mapped");
    if reg.dma_mode == ODP_HMM_DMA_MODE_IOVA {
        check_eq!(st.iova_bytes, GIB as u64, "IOVA reserved");
    }
    check!(
        rss_after <= rss_before + 64,
        "RSS grew from {rss_before} to {rss_after} kB"
    );
    let grown = avail_before.saturating_sub(avail_after);
    let budget = st.bookkeeping_bytes / 1024 + 8 * 1024;
    println!(
        "# MemAvailable fell by {grown} kB; bookkeeping {} kB",
        st.bookkeeping_bytes / 1024
    );
    check!(
        grown <= budget,
        "MemAvailable fell by {grown} kB, more than bookkeeping + 8 MiB ({budget} kB)"
    );
    // Touching one page maps one page.
    dev.fault(
        reg.handle,
        m.addr() + (GIB / 2) as u64,
        ps() as u64,
        ODP_HMM_FAULT_WRITE,
    )?;
    check_eq!(
        dev.stats(reg.handle)?.pages_now,
        1,
        "pages mapped after one fault"
    );
    Ok(())
}

/// `VmPin` of this process (`mm->pinned_vm`), in KiB.
fn vm_pin_kb() -> Option<u64> {
    fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmPin:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// `ODP_HMM_BACKEND_PINNED`: everything pinned and mapped at registration, kept whatever the
/// mapping does afterwards, given back at unregister.
fn pinned_registration() -> TestResult {
    let n = 8;
    let mut m = Mapping::anon(n * ps())?;
    for i in 0..n {
        m.fill_page(i, 0x30 + i as u8);
    }
    let dev = Device::open()?;
    let info = dev.info()?;
    let pin_before = vm_pin_kb().ok_or("no VmPin")?;
    let reg = dev.register(m.addr(), m.len() as u64, RW, ODP_HMM_BACKEND_PINNED)?;
    check_eq!(reg.backend, ODP_HMM_BACKEND_PINNED, "backend");
    check_eq!(
        vm_pin_kb().ok_or("no VmPin")? - pin_before,
        (n * ps() / 1024) as u64,
        "VmPin after pinning (KiB)"
    );
    // Everything is mapped before any fault.
    let snap = dev.snapshot(reg.handle, m.addr(), n)?;
    check!(
        snap.iter()
            .all(|p| p.flags & ODP_HMM_PAGE_DMA_MAPPED != 0 && p.flags & ODP_HMM_PAGE_WRITE != 0),
        "pages after registering: {}",
        flags_str(&snap)
    );
    if reg.dma_mode == ODP_HMM_DMA_MODE_IOVA {
        check!(translates(&info), "IOVA mode without a translating domain");
        for (i, p) in snap.iter().enumerate() {
            check_eq!(
                p.dma_addr,
                reg.iova_base + (i * ps()) as u64,
                "DMA address of page {i}"
            );
        }
    }
    let st = dev.stats(reg.handle)?;
    check_eq!(st.pages_now, n as u64, "pages mapped");
    check_eq!(st.faults, 0, "hmm_range_fault() calls");
    // Per page: a state word and a page pointer, and without an IOVA window the DMA address if
    // the device needs it to unmap (not with dma-direct).
    let per_page: &[u64] = if reg.dma_mode == ODP_HMM_DMA_MODE_IOVA {
        &[16]
    } else {
        &[16, 24]
    };
    check!(
        per_page
            .iter()
            .any(|b| st.bookkeeping_bytes == b * n as u64),
        "bookkeeping: {} bytes for {n} pages, {per_page:?} per page expected",
        st.bookkeeping_bytes
    );
    let done = dev.fault(reg.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE)?;
    check_eq!(
        (done.pages_mapped, done.pages_valid),
        (0, n as u64),
        "a fault maps nothing new"
    );
    check_eq!(
        copy_in(&dev, &m, &reg, ps(), 5 * ps(), ps())?,
        0,
        "device page faults"
    );
    check!(
        m.bytes()[ps()..2 * ps()] == m.bytes()[5 * ps()..6 * ps()],
        "bytes after a device copy"
    );
    // MADV_DONTNEED gives the process a new (zero) page 3; the device keeps the pinned one,
    // with the old bytes: the two no longer share it, as with a pinned RDMA region.
    let old3 = m.bytes()[3 * ps()..4 * ps()].to_vec();
    // SAFETY: Page 3 of our own mapping.
    let advised = unsafe {
        libc::madvise(
            (m.addr() + 3 * ps() as u64) as *mut libc::c_void,
            ps(),
            libc::MADV_DONTNEED,
        )
    };
    check_eq!(advised, 0, "madvise");
    check!(
        m.bytes()[3 * ps()..4 * ps()].iter().all(|&b| b == 0),
        "page 3 after MADV_DONTNEED"
    );
    let after = dev.snapshot(reg.handle, m.addr(), n)?;
    check!(
        after == snap,
        "pinned pages after MADV_DONTNEED: {}",
        flags_str(&after)
    );
    check_eq!(dev.stats(reg.handle)?.pages_unmapped, 0, "pages unmapped");
    copy_in(&dev, &m, &reg, 3 * ps(), 6 * ps(), ps())?;
    check!(
        m.bytes()[6 * ps()..7 * ps()] == old3[..],
        "the device read the pinned page 3, not the process's new one"
    );
    // munmap does not unmap it for the device either; unregister does, and unpins.
    m.unmap_part(7 * ps(), ps())?;
    check_eq!(
        dev.stats(reg.handle)?.pages_now,
        n as u64,
        "pages mapped after munmap"
    );
    dev.unregister(reg.handle)?;
    check_eq!(
        vm_pin_kb().ok_or("no VmPin")?,
        pin_before,
        "VmPin after unregister"
    );
    module_works(&dev)
}

/// What a pinned registration refuses: implicit, memory it cannot pin.
fn pinned_refused_inputs() -> TestResult {
    let dev = Device::open()?;
    let live = dev.info()?.live_registrations;
    let pin_before = vm_pin_kb().ok_or("no VmPin")?;
    let mut arg = odp_hmm_register {
        version: ODP_HMM_ABI_VERSION,
        flags: RW | ODP_HMM_REGISTER_IMPLICIT,
        backend: ODP_HMM_BACKEND_PINNED,
        ..Default::default()
    };
    // SAFETY: `ODP_HMM_IOC_REGISTER` takes a `struct odp_hmm_register`.
    let implicit = unsafe { dev.raw_ioctl(ODP_HMM_IOC_REGISTER, &mut arg) };
    expect_errno(implicit, libc::EINVAL, "implicit pinned registration")?;
    // A writable pin of read-only memory fails part-way: what was pinned is given back.
    let mut m = Mapping::anon(8 * ps())?;
    m.fill_page(0, 1);
    // SAFETY: Our own mapping; only the upper half becomes read-only.
    let ret = unsafe {
        libc::mprotect(
            (m.addr() + 4 * ps() as u64) as *mut libc::c_void,
            4 * ps(),
            libc::PROT_READ,
        )
    };
    check_eq!(ret, 0, "mprotect");
    expect_errno(
        dev.register(m.addr(), m.len() as u64, RW, ODP_HMM_BACKEND_PINNED),
        libc::EFAULT,
        "writable pinned registration of read-only memory",
    )?;
    check_eq!(dev.info()?.live_registrations, live, "live registrations");
    check_eq!(
        vm_pin_kb().ok_or("no VmPin")?,
        pin_before,
        "VmPin after the failure"
    );
    // A read-only one of the same memory is fine.
    let reg = dev.register(
        m.addr(),
        m.len() as u64,
        ODP_HMM_ACCESS_READ,
        ODP_HMM_BACKEND_PINNED,
    )?;
    let snap = dev.snapshot(reg.handle, m.addr(), 8)?;
    check!(
        snap.iter()
            .all(|p| p.flags & ODP_HMM_PAGE_DMA_MAPPED != 0 && p.flags & ODP_HMM_PAGE_WRITE == 0),
        "read-only pinned pages: {}",
        flags_str(&snap)
    );
    expect_errno(
        dev.fault(reg.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE),
        libc::EPERM,
        "write fault of a read-only pinned registration",
    )?;
    dev.unregister(reg.handle)?;
    check_eq!(
        vm_pin_kb().ok_or("no VmPin")?,
        pin_before,
        "VmPin after unregister"
    );
    module_works(&dev)
}

/// `struct __user_cap_header_struct` and `struct __user_cap_data_struct` (capability(7)).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops `CAP_IPC_LOCK` from this (forked) process.
fn drop_cap_ipc_lock() -> std::io::Result<()> {
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `capget` fills two data structs for version 3.
    syscall_result(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    const CAP_IPC_LOCK: u32 = 14;
    let bit = 1u32 << CAP_IPC_LOCK;
    data[0].effective &= !bit;
    data[0].permitted &= !bit;
    data[0].inheritable &= !bit;
    // SAFETY: As above; the structs are initialised.
    syscall_result(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })?;
    Ok(())
}

/// Without `CAP_IPC_LOCK`, pinned registrations are bounded by `RLIMIT_MEMLOCK`.
fn pinned_memlock_limit() -> TestResult {
    in_child_test(|| {
        let limit = libc::rlimit {
            rlim_cur: (4 * ps()) as libc::rlim_t,
            rlim_max: (4 * ps()) as libc::rlim_t,
        };
        // SAFETY: A plain syscall in the forked child.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
            skip!("setrlimit: {}", std::io::Error::last_os_error());
        }
        if let Err(e) = drop_cap_ipc_lock() {
            skip!("cannot drop CAP_IPC_LOCK: {e}");
        }
        let m = Mapping::anon(8 * ps())?;
        let dev = Device::open()?;
        let pin = |first: usize, n: usize| {
            dev.register(
                m.addr() + (first * ps()) as u64,
                (n * ps()) as u64,
                RW,
                ODP_HMM_BACKEND_PINNED,
            )
        };
        expect_errno(pin(0, 8), libc::ENOMEM, "8 pages over a 4-page limit")?;
        let a = pin(0, 3)?;
        expect_errno(pin(3, 2), libc::ENOMEM, "3 + 2 pages over a 4-page limit")?;
        let b = pin(3, 1)?;
        check_eq!(
            vm_pin_kb().ok_or("no VmPin")?,
            (4 * ps() / 1024) as u64,
            "VmPin"
        );
        dev.unregister(a.handle)?;
        let c = pin(4, 3)?;
        dev.unregister(b.handle)?;
        dev.unregister(c.handle)?;
        check_eq!(vm_pin_kb().ok_or("no VmPin")?, 0, "VmPin after unregister");
        // ODP registrations pin nothing and are not bounded by it.
        let odp = dev.register(m.addr(), m.len() as u64, RW, ODP_HMM_BACKEND_DEFAULT)?;
        dev.fault(odp.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE)?;
        dev.unregister(odp.handle)?;
        Ok(())
    })
}
