// SPDX-License-Identifier: GPL-2.0

//! The ODP features of ABI version 2: implicit registrations, asynchronous prefetch, faults that
//! a userfaultfd handler answers, the per-registration counters (STATS and fdinfo), the INFO
//! capability bits, and device traffic in the shape of rdma-core's `tests/test_odp.py` (rounds
//! of `MADV_DONTNEED` and device copies over anonymous, THP and hugetlb memory, after a sync,
//! async or no-fault prefetch).

use std::{
    collections::HashMap,
    fs,
    io::{
        self,
        Read, //
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
        name: "info_capability_bits",
        run: info_capability_bits,
    },
    &Test {
        name: "implicit_chunks_made_at_first_touch_and_reaped",
        run: implicit_chunks,
    },
    &Test {
        name: "implicit_process_exit_is_clean",
        run: implicit_exit,
    },
    &Test {
        name: "implicit_close_is_clean",
        run: implicit_close,
    },
    &Test {
        name: "async_prefetch_then_copy_needs_no_fault",
        run: async_prefetch_no_fault,
    },
    &Test {
        name: "async_prefetch_queued_at_unregister_close_exit",
        run: async_prefetch_queued,
    },
    &Test {
        name: "async_prefetch_errors_are_counted",
        run: async_prefetch_errors,
    },
    &Test {
        name: "userfaultfd_handler_serves_device_reads",
        run: uffd_serves,
    },
    &Test {
        name: "userfaultfd_no_answer_times_out",
        run: uffd_no_answer,
    },
    &Test {
        name: "stats_and_fdinfo_agree",
        run: stats_fdinfo_agree,
    },
    &Test {
        name: "test_odp_traffic_anon",
        run: traffic_anon,
    },
    &Test {
        name: "test_odp_traffic_thp",
        run: traffic_thp,
    },
    &Test {
        name: "test_odp_traffic_hugetlb",
        run: traffic_hugetlb,
    },
    &Test {
        name: "test_odp_traffic_implicit",
        run: traffic_implicit,
    },
];

/// How long a poll for the result of asynchronous work waits at most.
const POLL_LIMIT: Duration = Duration::from_secs(20);

/// Polls `cond` every 10 ms for up to [`POLL_LIMIT`]; whether it came true.
fn wait_until(mut cond: impl FnMut() -> io::Result<bool>) -> io::Result<bool> {
    let start = Instant::now();
    loop {
        if cond()? {
            return Ok(true);
        }
        if start.elapsed() > POLL_LIMIT {
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until STATS of `handle` satisfies `cond`; fails with `what` and the last stats if it
/// does not within [`POLL_LIMIT`].
fn wait_stats(
    dev: &Device,
    handle: u64,
    what: &str,
    cond: impl Fn(&odp_hmm_stats) -> bool,
) -> Result<odp_hmm_stats, Outcome> {
    let mut last = odp_hmm_stats::default();
    let ok = wait_until(|| {
        last = dev.stats(handle)?;
        Ok(cond(&last))
    })?;
    check!(
        ok,
        "{what}: not reached in {POLL_LIMIT:?}: prefetched_pages {} prefetch_errors {} \
         fault_calls {} faults {}",
        last.prefetched_pages,
        last.prefetch_errors,
        last.fault_calls,
        last.faults
    );
    Ok(last)
}

/// Waits until the module-wide INFO gauges are all 0, read from a fresh file (nothing is left
/// of earlier registrations once their files closed and their work items ended).
fn gauges_back_to_zero(what: &str) -> TestResult {
    let dev = Device::open()?;
    let mut last = odp_hmm_info::default();
    let ok = wait_until(|| {
        last = dev.info()?;
        Ok(last.live_registrations == 0
            && last.live_pages_mapped == 0
            && last.live_iova_bytes == 0
            && last.live_bookkeeping_bytes == 0)
    })?;
    check!(
        ok,
        "{what}: gauges not back to 0: registrations {} pages {} IOVA {} bookkeeping {}",
        last.live_registrations,
        last.live_pages_mapped,
        last.live_iova_bytes,
        last.live_bookkeeping_bytes
    );
    Ok(())
}

/// A kernel config option of the running kernel (`/proc/config.gz` is not in every test kernel:
/// the kernel's own interfaces tell instead).
fn kernel_has_userfaultfd() -> bool {
    // SAFETY: `userfaultfd(O_CLOEXEC)` takes no pointers; the descriptor is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: `fd` is ours.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

fn info_capability_bits() -> TestResult {
    let dev = Device::open()?;
    let info = dev.info()?;
    let f = info.flags;
    let bit = |b: u32| f & b != 0;
    check!(bit(ODP_HMM_INFO_IMPLICIT), "ODP_HMM_INFO_IMPLICIT: {f:#x}");
    check!(
        bit(ODP_HMM_INFO_ASYNC_PREFETCH),
        "ODP_HMM_INFO_ASYNC_PREFETCH: {f:#x}"
    );
    check_eq!(
        bit(ODP_HMM_INFO_USERFAULTFD),
        kernel_has_userfaultfd(),
        "ODP_HMM_INFO_USERFAULTFD is set exactly where the kernel has userfaultfd"
    );
    // PCI P2PDMA, as the kernel's symbols show it (built in: a line ends with the name).
    let Ok(kallsyms) = fs::read_to_string("/proc/kallsyms") else {
        skip!("/proc/kallsyms cannot be read");
    };
    let p2pdma = kallsyms.contains(" pci_p2pdma_distance_many\n");
    check_eq!(
        bit(ODP_HMM_INFO_P2P_HOST_BRIDGE),
        p2pdma,
        "ODP_HMM_INFO_P2P_HOST_BRIDGE is set exactly where the kernel has PCI P2PDMA"
    );
    check_eq!(
        bit(ODP_HMM_INFO_P2P_BUS),
        p2pdma,
        "ODP_HMM_INFO_P2P_BUS is set exactly where the kernel has PCI P2PDMA"
    );
    check_eq!(
        bit(ODP_HMM_INFO_IOVA),
        translates(&info),
        "ODP_HMM_INFO_IOVA is set exactly when the domain translates (domain {})",
        info.domain_type
    );
    check_eq!(
        bit(ODP_HMM_INFO_DEBUG_RAW_DMA),
        module_param("debug_raw_dma").unwrap_or_default() == "Y",
        "ODP_HMM_INFO_DEBUG_RAW_DMA is set exactly with debug_raw_dma=1"
    );
    check_eq!(
        bit(ODP_HMM_INFO_COPY_ENGINE),
        info.is_edu(),
        "ODP_HMM_INFO_COPY_ENGINE is set exactly for the edu device"
    );
    let known = ODP_HMM_INFO_COPY_ENGINE
        | ODP_HMM_INFO_IOVA
        | ODP_HMM_INFO_DEBUG_RAW_DMA
        | ODP_HMM_INFO_IMPLICIT
        | ODP_HMM_INFO_ASYNC_PREFETCH
        | ODP_HMM_INFO_USERFAULTFD
        | ODP_HMM_INFO_P2P_HOST_BRIDGE
        | ODP_HMM_INFO_P2P_BUS;
    check_eq!(f & !known, 0, "unknown INFO bits");
    // Link page sizes: with an IOVA window, 4 KiB pages, the aligned blocks up to 64 pages and
    // the 2 MiB folio at least; without one, none.
    if bit(ODP_HMM_INFO_IOVA) {
        let s = info.link_page_sizes;
        for shift in [12, 13, 18, 21, 30] {
            check!(
                s & (1 << shift) != 0,
                "link_page_sizes {s:#x} lacks 2^{shift}"
            );
        }
        check_eq!(s & 0xfff, 0, "link_page_sizes below the page size");
    } else {
        check_eq!(info.link_page_sizes, 0, "link_page_sizes without IOVA");
    }
    Ok(())
}

/// Anonymous read-write memory at exactly `addr` (`MAP_FIXED_NOREPLACE`); skips the test if
/// the address is taken.
fn map_at(addr: u64, len: usize) -> Result<Mapping, Outcome> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        skip!("cannot map at {addr:#x}: {}", io::Error::last_os_error());
    }
    if p as u64 != addr {
        let m = Mapping::adopt(p as u64, len);
        drop(m);
        skip!("the kernel placed the mapping for {addr:#x} elsewhere");
    }
    Ok(Mapping::adopt(addr, len))
}

/// Registers the whole address space implicitly, read-write.
fn register_implicit(dev: &Device) -> io::Result<Registration> {
    dev.register(
        0,
        0,
        RW | ODP_HMM_REGISTER_IMPLICIT,
        ODP_HMM_BACKEND_DEFAULT,
    )
}

/// Three regions far apart (16, 32 and 48 TiB) and one of two chunks (24 TiB).
const FAR: [u64; 3] = [0x1000_0000_0000, 0x2000_0000_0000, 0x3000_0000_0000];
const TWO_CHUNKS: u64 = 0x1800_0000_0000;

fn implicit_chunks() -> TestResult {
    gauges_back_to_zero("before the test")?;
    let dev = Device::open()?;
    let reg = register_implicit(&dev)?;
    check_eq!(reg.iova_base, 0, "iova_base of an implicit registration");
    let st = dev.stats(reg.handle)?;
    check_eq!(st.chunks, 0, "chunks before any touch");
    check_eq!(st.bookkeeping_bytes, 0, "bookkeeping before any touch");
    check_eq!(dev.info()?.live_registrations, 0, "live registrations");

    let mut regions = Vec::new();
    for (i, &addr) in FAR.iter().enumerate() {
        let mut m = map_at(addr, 16 * page_size())?;
        for p in 0..16 {
            mark_page(
                &mut m.bytes_mut()[p * page_size()..(p + 1) * page_size()],
                0x30 + i as u8,
                p,
            );
        }
        regions.push(m);
    }
    for m in &regions {
        dev.fault(
            reg.handle,
            m.addr(),
            page_size() as u64,
            ODP_HMM_FAULT_WRITE,
        )?;
    }
    let st = dev.stats(reg.handle)?;
    check_eq!(st.chunks, 3, "chunks after touching three distant regions");
    check_eq!(st.pages_now, 3, "pages mapped");
    // Per-page state for three 2 MiB chunks, at most 16 bytes a page; nothing for the rest of
    // the address space.
    let chunk_pages = (HUGE / page_size()) as u64;
    check!(
        st.bookkeeping_bytes > 0 && st.bookkeeping_bytes <= 3 * chunk_pages * 16,
        "bookkeeping of three chunks: {} bytes",
        st.bookkeeping_bytes
    );
    let info = dev.info()?;
    check_eq!(
        info.live_bookkeeping_bytes,
        st.bookkeeping_bytes,
        "INFO bookkeeping gauge (the only registration)"
    );
    check_eq!(
        info.live_registrations,
        3,
        "INFO: one live mapping per chunk"
    );
    check_eq!(info.live_pages_mapped, 3, "INFO pages mapped");

    // munmap of the middle region empties its chunk: the next call frees it.
    regions[1].unmap_part(0, 16 * page_size())?;
    let st = dev.stats(reg.handle)?;
    check_eq!(
        st.chunks,
        2,
        "chunks after munmap of one (reaped at this call)"
    );
    check_eq!(st.pages_now, 2, "pages mapped after munmap");
    check!(
        st.bookkeeping_bytes <= 2 * chunk_pages * 16,
        "bookkeeping after the reap: {}",
        st.bookkeeping_bytes
    );
    check_eq!(dev.info()?.live_registrations, 2, "INFO after the reap");
    // The unmapped addresses fail as the header says.
    expect_errno(
        dev.fault(reg.handle, FAR[1], page_size() as u64, 0),
        libc::EFAULT,
        "fault of an unmapped address",
    )?;
    expect_errno(
        dev.copy(
            (reg.handle, FAR[0]),
            (reg.handle, FAR[1]),
            page_size() as u64,
        ),
        libc::EFAULT,
        "device copy to an unmapped address",
    )?;

    // The chunk those failed calls made maps nothing: the next call frees it.
    check_eq!(
        dev.stats(reg.handle)?.chunks,
        2,
        "chunks after failed calls on an unmapped address"
    );

    // A device copy between two far-apart addresses (32 TiB apart), page 5 of the first to page
    // 9 of the last: both fault on demand.
    let (src, dst) = (
        FAR[0] + 5 * page_size() as u64,
        FAR[2] + 9 * page_size() as u64,
    );
    let faults = dev.copy((reg.handle, src), (reg.handle, dst), page_size() as u64)?;
    check!(faults >= 2, "device faults of the far copy: {faults}");
    check!(
        regions[2].bytes()[9 * page_size()..10 * page_size()]
            == regions[0].bytes()[5 * page_size()..6 * page_size()],
        "bytes of the far copy"
    );

    // A copy across a chunk boundary takes two chunks.
    let mut two = map_at(TWO_CHUNKS, 2 * HUGE)?;
    pattern(two.bytes_mut(), 0x77);
    let before = dev.stats(reg.handle)?.chunks;
    let at = TWO_CHUNKS + HUGE as u64 - 2048;
    dev.copy((reg.handle, at), (reg.handle, FAR[0]), page_size() as u64)?;
    check!(
        regions[0].bytes()[..page_size()] == two.bytes()[HUGE - 2048..HUGE + 2048],
        "bytes of the copy across a chunk boundary"
    );
    check_eq!(
        dev.stats(reg.handle)?.chunks,
        before + 2,
        "chunks after a copy across a boundary"
    );

    dev.unregister(reg.handle)?;
    let st = dev.stats(0)?;
    check_eq!(st.chunks, 0, "chunks after unregister");
    check_eq!(st.registrations, 0, "registrations after unregister");
    drop(dev);
    drop(regions);
    gauges_back_to_zero("after unregister")
}

/// A child that makes chunks in an implicit registration and exits with it (and its file) alive.
fn implicit_exit() -> TestResult {
    gauges_back_to_zero("before the test")?;
    in_child_test(|| {
        let dev = Device::open()?;
        let reg = register_implicit(&dev)?;
        let mut m = Mapping::anon(4 * HUGE)?;
        pattern(m.bytes_mut(), 3);
        for off in (0..m.len()).step_by(HUGE) {
            dev.fault(
                reg.handle,
                m.addr() + off as u64,
                page_size() as u64,
                ODP_HMM_FAULT_WRITE,
            )?;
        }
        dev.copy(
            (reg.handle, m.addr()),
            (reg.handle, m.addr() + HUGE as u64),
            64,
        )?;
        check!(dev.stats(reg.handle)?.chunks >= 4, "chunks in the child");
        std::mem::forget(dev);
        std::mem::forget(m);
        Ok(())
    })?;
    gauges_back_to_zero("after the child's exit")
}

fn implicit_close() -> TestResult {
    gauges_back_to_zero("before the test")?;
    let mut m = Mapping::anon(3 * HUGE)?;
    pattern(m.bytes_mut(), 9);
    {
        let dev = Device::open()?;
        let reg = register_implicit(&dev)?;
        dev.fault(reg.handle, m.addr(), m.len() as u64, 0)?;
        check!(dev.stats(reg.handle)?.chunks >= 3, "chunks");
        check!(dev.info()?.live_pages_mapped > 0, "pages mapped");
    }
    gauges_back_to_zero("after close")?;
    // The memory lives on, unregistered.
    m.unmap_part(0, HUGE)?;
    Ok(())
}

fn async_prefetch_no_fault() -> TestResult {
    let n = 32;
    let mut m = Mapping::anon(n * page_size())?;
    for i in 0..n {
        mark_page(
            &mut m.bytes_mut()[i * page_size()..(i + 1) * page_size()],
            0x51,
            i,
        );
    }
    let (dev, reg) = register(&m, RW)?;
    let f = dev.fault(
        reg.handle,
        m.addr(),
        m.len() as u64,
        ODP_HMM_FAULT_WRITE | ODP_HMM_FAULT_ASYNC,
    )?;
    check_eq!(
        (f.pages_mapped, f.pages_valid),
        (0, 0),
        "outputs of an asynchronous fault"
    );
    let st = wait_stats(&dev, reg.handle, "prefetched_pages", |s| {
        s.prefetched_pages >= n as u64
    })?;
    check_eq!(st.prefetched_pages, n as u64, "prefetched pages");
    check_eq!(st.prefetch_errors, 0, "prefetch errors");
    check_eq!(st.pages_now, n as u64, "pages mapped");
    check_eq!(st.fault_calls, 1, "fault calls (the prefetch)");
    for i in 0..n / 2 {
        let faults = copy_in(
            &dev,
            &m,
            &reg,
            i * page_size(),
            (n / 2 + i) * page_size(),
            page_size(),
        )?;
        check_eq!(faults, 0, "device faults of copy {i} after the prefetch");
    }
    let b = m.bytes();
    check!(
        b[..n / 2 * page_size()] == b[n / 2 * page_size()..],
        "bytes after the copies"
    );
    let after = dev.stats(reg.handle)?;
    check_eq!(
        (after.faults, after.fault_calls, after.pages_faulted),
        (st.faults, st.fault_calls, st.pages_faulted),
        "fault counters across copies that needed no fault"
    );
    Ok(())
}

/// Prefetches of 32 MiB queued right before unregister, close and exit: each ends (the work item
/// finds the registration revoked or the process gone) and nothing is left.
fn async_prefetch_queued() -> TestResult {
    const BIG: usize = 32 << 20;
    gauges_back_to_zero("before the test")?;
    let m = Mapping::anon(BIG)?;
    let (dev, reg) = register(&m, RW)?;
    let async_write = ODP_HMM_FAULT_WRITE | ODP_HMM_FAULT_ASYNC;
    dev.fault(reg.handle, m.addr(), BIG as u64, async_write)?;
    dev.unregister(reg.handle)?;
    expect_errno(
        dev.fault(
            reg.handle,
            m.addr(),
            page_size() as u64,
            ODP_HMM_FAULT_ASYNC,
        ),
        libc::ENOENT,
        "asynchronous fault after unregister",
    )?;
    // Close with one queued.
    let reg = dev.register(m.addr(), BIG as u64, RW, ODP_HMM_BACKEND_DEFAULT)?;
    dev.fault(reg.handle, m.addr(), BIG as u64, async_write)?;
    drop(dev);
    gauges_back_to_zero("after unregister and close with prefetches queued")?;
    // Exit with one queued.
    in_child_test(|| {
        let m = Mapping::anon(BIG)?;
        let (dev, reg) = register(&m, RW)?;
        dev.fault(reg.handle, m.addr(), BIG as u64, async_write)?;
        std::mem::forget(dev);
        std::mem::forget(m);
        Ok(())
    })?;
    gauges_back_to_zero("after exit with a prefetch queued")?;
    drop(m);
    // The module still serves a plain copy.
    let mut m = Mapping::anon(2 * page_size())?;
    m.fill_page(0, 0x12);
    let (dev, reg) = register(&m, RW)?;
    copy_and_check(&dev, &m, &reg, 0, 1)
}

fn async_prefetch_errors() -> TestResult {
    let mut m = Mapping::anon(8 * page_size())?;
    m.fill_page(0, 1);
    let (dev, reg) = register(&m, RW)?;
    m.protect(0, 4 * page_size(), libc::PROT_NONE)?;
    // The synchronous fault tells why.
    expect_errno(
        dev.fault(reg.handle, m.addr(), 4 * page_size() as u64, 0),
        libc::EFAULT,
        "fault of a PROT_NONE range",
    )?;
    // Two asynchronous ones: both counted, none lost.
    for _ in 0..2 {
        dev.fault(
            reg.handle,
            m.addr(),
            4 * page_size() as u64,
            ODP_HMM_FAULT_ASYNC,
        )?;
    }
    let st = wait_stats(&dev, reg.handle, "prefetch_errors", |s| {
        s.prefetch_errors >= 2
    })?;
    check_eq!(st.prefetch_errors, 2, "prefetch errors");
    check_eq!(st.prefetched_pages, 0, "prefetched pages");
    check_eq!(st.pages_now, 0, "pages mapped");
    // A good prefetch of the other half still works and is counted apart.
    dev.fault(
        reg.handle,
        m.addr() + 4 * page_size() as u64,
        4 * page_size() as u64,
        ODP_HMM_FAULT_ASYNC,
    )?;
    let st = wait_stats(&dev, reg.handle, "prefetched_pages", |s| {
        s.prefetched_pages >= 4
    })?;
    check_eq!(
        (st.prefetched_pages, st.prefetch_errors),
        (4, 2),
        "prefetched pages and errors"
    );
    // A write prefetch of a read-only registration is refused at once.
    let ro = dev.register(m.addr(), m.len() as u64, ODP_HMM_ACCESS_READ, 0)?;
    expect_errno(
        dev.fault(
            ro.handle,
            m.addr(),
            page_size() as u64,
            ODP_HMM_FAULT_WRITE | ODP_HMM_FAULT_ASYNC,
        ),
        libc::EPERM,
        "asynchronous write fault of a read-only registration",
    )?;
    Ok(())
}

// ---- userfaultfd -------------------------------------------------------------------------

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

/// `struct uffdio_copy`.
#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

const UFFD_API: u64 = 0xaa;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

/// `_IOWR(0xaa, nr, size)`.
const fn uffd_iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0xaa << 8) | nr
}
const UFFDIO_API: u64 = uffd_iowr(0x3f, size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = uffd_iowr(0x00, size_of::<UffdioRegister>());
const UFFDIO_COPY: u64 = uffd_iowr(0x03, size_of::<UffdioCopy>());

/// A userfaultfd with `len` bytes at `addr` registered for missing-page faults.
fn uffd_for(addr: u64, len: usize) -> Result<fs::File, Outcome> {
    // Non-blocking: a blocking userfaultfd polls as POLLERR, and its read() waits for a fault,
    // so the handler could not stop.
    // SAFETY: `userfaultfd(O_CLOEXEC | O_NONBLOCK)` takes no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        skip!("userfaultfd: {}", io::Error::last_os_error());
    }
    // SAFETY: A new descriptor, ours from here on.
    let uffd = unsafe { fs::File::from_raw_fd(fd as i32) };
    let mut api = UffdioApi {
        api: UFFD_API,
        ..Default::default()
    };
    // SAFETY: UFFDIO_API takes a `struct uffdio_api`.
    if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API as _, &mut api) } != 0 {
        return Err(format!("UFFDIO_API: {}", io::Error::last_os_error()).into());
    }
    let mut reg = UffdioRegister {
        start: addr,
        len: len as u64,
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ..Default::default()
    };
    // SAFETY: UFFDIO_REGISTER takes a `struct uffdio_register`.
    if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER as _, &mut reg) } != 0 {
        return Err(format!("UFFDIO_REGISTER: {}", io::Error::last_os_error()).into());
    }
    Ok(uffd)
}

/// The bytes the handler puts in page `page` of the userfaultfd range.
fn uffd_page(page: usize) -> Vec<u8> {
    let mut buf = vec![0u8; page_size()];
    mark_page(&mut buf, 0x6c, page);
    buf
}

/// Serves missing-page faults of the range at `base` with [`uffd_page`] until `stop`; counts
/// them in `served`.
fn uffd_handler(uffd: fs::File, base: u64, stop: Arc<AtomicBool>, served: Arc<AtomicU64>) {
    let mut msg = [0u8; 32];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: uffd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: One valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 || pfd.revents & libc::POLLIN == 0 {
            continue;
        }
        if (&uffd).read(&mut msg).ok() != Some(msg.len()) || msg[0] != UFFD_EVENT_PAGEFAULT {
            continue;
        }
        let mut address = [0u8; 8];
        address.copy_from_slice(&msg[16..24]);
        let at = u64::from_ne_bytes(address) & !(page_size() as u64 - 1);
        let src = uffd_page(((at - base) / page_size() as u64) as usize);
        let mut copy = UffdioCopy {
            dst: at,
            src: src.as_ptr() as u64,
            len: page_size() as u64,
            ..Default::default()
        };
        // SAFETY: UFFDIO_COPY takes a `struct uffdio_copy`; `src` holds a page.
        if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_COPY as _, &mut copy) } == 0 {
            served.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The device reads pages of a userfaultfd range: the module's fault waits for the handler
/// thread, which supplies each page with UFFDIO_COPY; the bytes the device moved are the
/// handler's.
fn uffd_serves() -> TestResult {
    in_child_test(|| {
        let n = 8;
        let src = Mapping::anon(n * page_size())?;
        let dst = Mapping::anon(n * page_size())?;
        let uffd = uffd_for(src.addr(), src.len())?;
        let dev = Device::open()?;
        let sreg = dev.register(src.addr(), src.len() as u64, ODP_HMM_ACCESS_READ, 0)?;
        let dreg = dev.register(dst.addr(), dst.len() as u64, RW, 0)?;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let handler = {
            let (stop, served, base) = (stop.clone(), served.clone(), src.addr());
            thread::spawn(move || uffd_handler(uffd, base, stop, served))
        };
        let result = (|| -> TestResult {
            // Pages 0..4 by device copies (a device page fault each), 4..8 by one FAULT.
            for i in 0..n / 2 {
                let at = (i * page_size()) as u64;
                let faults = dev.copy(
                    (sreg.handle, src.addr() + at),
                    (dreg.handle, dst.addr() + at),
                    page_size() as u64,
                )?;
                check!(faults >= 1, "device faults of copy {i}: {faults}");
            }
            let half = (n / 2 * page_size()) as u64;
            let f = dev.fault(sreg.handle, src.addr() + half, half, 0)?;
            check_eq!(
                f.pages_valid,
                (n / 2) as u64,
                "pages faulted through the handler"
            );
            for i in n / 2..n {
                let at = (i * page_size()) as u64;
                dev.copy(
                    (sreg.handle, src.addr() + at),
                    (dreg.handle, dst.addr() + at),
                    page_size() as u64,
                )?;
            }
            for i in 0..n {
                check!(
                    dst.bytes()[i * page_size()..(i + 1) * page_size()] == uffd_page(i)[..],
                    "page {i}: the device did not read the handler's bytes"
                );
            }
            check_eq!(served.load(Ordering::Relaxed), n as u64, "pages served");
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let _ = handler.join();
        result
    })
}

/// A handler that never answers: the device copy ends with ETIMEDOUT after
/// `device_fault_timeout_ms`; once the userfaultfd is closed the stalled fault ends, the copy
/// works (the page is then a zero page) and nothing is left behind.
fn uffd_no_answer() -> TestResult {
    let timeout = match ModuleParam::set("device_fault_timeout_ms", "300") {
        Ok(p) => p,
        Err(e) => skip!("device_fault_timeout_ms is not writable: {e}"),
    };
    let result = in_child_test(|| {
        let src = Mapping::anon(4 * page_size())?;
        let mut dst = Mapping::anon(4 * page_size())?;
        dst.bytes_mut().fill(0x5e);
        let uffd = uffd_for(src.addr(), src.len())?;
        let dev = Device::open()?;
        let sreg = dev.register(src.addr(), src.len() as u64, ODP_HMM_ACCESS_READ, 0)?;
        let dreg = dev.register(dst.addr(), dst.len() as u64, RW, 0)?;
        let start = Instant::now();
        expect_errno(
            dev.copy((sreg.handle, src.addr()), (dreg.handle, dst.addr()), 64),
            libc::ETIMEDOUT,
            "device copy from a page nobody supplies",
        )?;
        let took = start.elapsed();
        check!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(8),
            "the copy gave up after {took:?} (device_fault_timeout_ms=300)"
        );
        check!(
            dst.bytes().iter().all(|&b| b == 0x5e),
            "the copy moved nothing"
        );
        // Closing the userfaultfd wakes the stalled fault; the range faults normally after.
        drop(uffd);
        dev.copy((sreg.handle, src.addr()), (dreg.handle, dst.addr()), 64)?;
        check!(
            dst.bytes()[..64].iter().all(|&b| b == 0),
            "copy after the close: bytes {:?} (a zero page expected)",
            &dst.bytes()[..8]
        );
        Ok(())
    });
    drop(timeout);
    result?;
    gauges_back_to_zero("after the stalled fault")
}

// ---- counters ----------------------------------------------------------------------------

/// The `odp_hmm-registration:` lines of `/proc/self/fdinfo/FD`, by handle.
fn fdinfo(dev: &Device) -> Result<HashMap<u64, HashMap<String, u64>>, Outcome> {
    let text = fs::read_to_string(format!("/proc/self/fdinfo/{}", dev.file().as_raw_fd()))?;
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("odp_hmm-registration:") else {
            continue;
        };
        let mut fields = HashMap::new();
        for kv in rest.split_whitespace() {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(format!("fdinfo field {kv:?}").into());
            };
            let n = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            };
            if let Some(n) = n {
                fields.insert(k.to_string(), n);
            }
        }
        let handle = fields
            .get("handle")
            .copied()
            .ok_or_else(|| Outcome::Fail(format!("fdinfo line without handle: {line}")))?;
        out.insert(handle, fields);
    }
    Ok(out)
}

fn stats_fdinfo_agree() -> TestResult {
    let n = 16;
    let mut m = Mapping::anon(n * page_size())?;
    m.advise(0, m.len(), libc::MADV_NOHUGEPAGE)?;
    for i in 0..n {
        m.fill_page(i, i as u8);
    }
    let (dev, reg) = register(&m, RW)?;
    let other = dev.register(m.addr(), page_size() as u64, ODP_HMM_ACCESS_READ, 0)?;
    // A known sequence: a sync fault of 8 pages, an async prefetch of the other 8, a device
    // copy within the mapped pages, a MADV_DONTNEED of 2 pages.
    dev.fault(
        reg.handle,
        m.addr(),
        8 * page_size() as u64,
        ODP_HMM_FAULT_WRITE,
    )?;
    let half = 8 * page_size() as u64;
    dev.fault(
        reg.handle,
        m.addr() + half,
        half,
        ODP_HMM_FAULT_WRITE | ODP_HMM_FAULT_ASYNC,
    )?;
    wait_stats(&dev, reg.handle, "prefetched_pages", |s| {
        s.prefetched_pages >= 8
    })?;
    check_eq!(
        copy_in(&dev, &m, &reg, 0, 9 * page_size(), page_size())?,
        0,
        "device faults"
    );
    m.advise(2 * page_size(), 2 * page_size(), libc::MADV_DONTNEED)?;
    let st = dev.stats(reg.handle)?;
    check_eq!(st.faults, 2, "faults (one batch each)");
    check_eq!(st.fault_calls, 2, "fault calls");
    check_eq!(st.prefetched_pages, 8, "prefetched pages");
    check_eq!(st.prefetch_errors, 0, "prefetch errors");
    check_eq!(st.pages_faulted, 16, "pages faulted");
    check_eq!(st.invalidations, 1, "invalidations");
    // The 2 pages went, with the rest of their link units.
    check!(st.pages_now <= 14, "pages mapped: {}", st.pages_now);
    check_eq!(
        st.pages_mapped - st.pages_unmapped,
        st.pages_now,
        "pages mapped minus unmapped"
    );
    check!(
        st.fault_latency_max_ns > 0 && st.fault_latency_max_ns <= st.fault_latency_ns,
        "fault latency: max {} total {}",
        st.fault_latency_max_ns,
        st.fault_latency_ns
    );
    let info = fdinfo(&dev)?;
    check_eq!(info.len(), 2, "fdinfo lines (two registrations)");
    for (handle, st) in [(reg.handle, st), (other.handle, dev.stats(other.handle)?)] {
        let line = info
            .get(&handle)
            .ok_or_else(|| Outcome::Fail(format!("no fdinfo line for handle {handle}")))?;
        let field = |k: &str| line.get(k).copied();
        for (key, want) in [
            ("faults", st.faults),
            ("pages_faulted", st.pages_faulted),
            ("pages_now", st.pages_now),
            ("invalidations", st.invalidations),
            ("prefetched", st.prefetched_pages),
            ("prefetch_errors", st.prefetch_errors),
            ("fault_calls", st.fault_calls),
            ("fault_latency_ns", st.fault_latency_ns),
            ("fault_latency_max_ns", st.fault_latency_max_ns),
            ("iova_bytes", st.iova_bytes),
            ("bookkeeping_bytes", st.bookkeeping_bytes),
            ("chunks", st.chunks),
        ] {
            check_eq!(
                field(key),
                Some(want),
                "handle {handle}: fdinfo {key} vs STATS"
            );
        }
    }
    check_eq!(
        info.get(&reg.handle).and_then(|l| l.get("start")).copied(),
        Some(m.addr()),
        "fdinfo start"
    );
    check_eq!(
        info.get(&reg.handle).and_then(|l| l.get("length")).copied(),
        Some(m.len() as u64),
        "fdinfo length"
    );
    // Gone from fdinfo once unregistered.
    dev.unregister(other.handle)?;
    check!(
        !fdinfo(&dev)?.contains_key(&other.handle),
        "fdinfo still lists an unregistered handle"
    );
    Ok(())
}

// ---- test_odp.py-style traffic -----------------------------------------------------------

/// How `traffic` maps the pages before each round of copies.
#[derive(Clone, Copy, Debug)]
enum Prefetch {
    /// `ODP_HMM_IOC_FAULT` (like `ibv_advise_mr()` with `IBV_ADVISE_MR_FLAG_FLUSH`).
    Sync,
    /// With `ODP_HMM_FAULT_ASYNC`, then waiting for the counters.
    Async,
    /// `ODP_HMM_FAULT_NO_FAULT` (`IBV_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT`): only what is present.
    NoFault,
}

/// Rounds of traffic, as `test_odp.py` runs its iterations.
const ROUNDS: usize = 5;

/// `ROUNDS` rounds over `m` (two halves: source and destination) registered as `reg` (whose
/// addresses are those of `m`): `MADV_DONTNEED` of the whole region, a new pattern in the source
/// half, the prefetch, device copies of every source page to the destination half, and every
/// byte checked.
fn traffic(
    dev: &Device,
    m: &mut Mapping,
    reg: &Registration,
    prefetch: Prefetch,
    round_base: usize,
) -> TestResult {
    let half = m.len() / 2;
    let pages = half / page_size();
    for round in 0..ROUNDS {
        m.advise(0, m.len(), libc::MADV_DONTNEED)?;
        let seed = (round_base * ROUNDS + round) as u8;
        for p in 0..pages {
            mark_page(
                &mut m.bytes_mut()[p * page_size()..(p + 1) * page_size()],
                seed,
                p,
            );
        }
        let before = dev.stats(reg.handle)?;
        match prefetch {
            Prefetch::Sync => {
                dev.fault(reg.handle, m.addr(), half as u64, 0)?;
                dev.fault(
                    reg.handle,
                    m.addr() + half as u64,
                    half as u64,
                    ODP_HMM_FAULT_WRITE,
                )?;
            }
            Prefetch::Async => {
                dev.fault(reg.handle, m.addr(), half as u64, ODP_HMM_FAULT_ASYNC)?;
                dev.fault(
                    reg.handle,
                    m.addr() + half as u64,
                    half as u64,
                    ODP_HMM_FAULT_WRITE | ODP_HMM_FAULT_ASYNC,
                )?;
                let want = before.fault_calls + 2;
                wait_stats(dev, reg.handle, "both prefetches done", |s| {
                    s.fault_calls >= want
                })?;
            }
            Prefetch::NoFault => {
                let f = dev.fault(reg.handle, m.addr(), half as u64, ODP_HMM_FAULT_NO_FAULT)?;
                check!(
                    f.pages_valid <= pages as u64,
                    "round {round}: no-fault prefetch mapped {} of {pages}",
                    f.pages_valid
                );
            }
        }
        // A device copy takes about 0.2 s under TCG: 4 pages a round, spread over the half;
        // every byte of the other pages is checked too (zero after the MADV_DONTNEED).
        let copied = [0, pages / 3, 2 * pages / 3, pages - 1];
        let mut device_faults = 0;
        for &p in &copied {
            let at = (p * page_size()) as u64;
            device_faults += dev.copy(
                (reg.handle, m.addr() + at),
                (reg.handle, m.addr() + half as u64 + at),
                page_size() as u64,
            )?;
        }
        let st = dev.stats(reg.handle)?;
        check_eq!(st.prefetch_errors, 0, "round {round}: prefetch errors");
        if matches!(prefetch, Prefetch::Sync | Prefetch::Async) {
            // Everything was mapped before the copies, unless an invalidation (a THP split,
            // reclaim) came in between: the copies found (nearly) nothing to fault.
            check!(
                device_faults == 0,
                "round {round}: {device_faults} device faults after a {prefetch:?} prefetch"
            );
        }
        let b = m.bytes();
        for p in 0..pages {
            let src = &b[p * page_size()..(p + 1) * page_size()];
            let dst = &b[half + p * page_size()..half + (p + 1) * page_size()];
            let ok = if copied.contains(&p) {
                src == dst
            } else {
                dst.iter().all(|&x| x == 0)
            };
            check!(
                ok,
                "round {round} ({prefetch:?}): destination page {p} is wrong"
            );
        }
    }
    Ok(())
}

/// `traffic` with each prefetch mode over a fresh registration of `m`.
fn traffic_all_modes(m: &mut Mapping) -> TestResult {
    let dev = Device::open()?;
    for (i, prefetch) in [Prefetch::Sync, Prefetch::Async, Prefetch::NoFault]
        .into_iter()
        .enumerate()
    {
        let reg = dev.register(m.addr(), m.len() as u64, RW, ODP_HMM_BACKEND_DEFAULT)?;
        traffic(&dev, m, &reg, prefetch, i)?;
        let st = dev.stats(reg.handle)?;
        check!(
            st.invalidations >= ROUNDS as u64 - 1,
            "{prefetch:?}: invalidations {} over {ROUNDS} rounds of MADV_DONTNEED",
            st.invalidations
        );
        dev.unregister(reg.handle)?;
    }
    Ok(())
}

fn traffic_anon() -> TestResult {
    let mut m = Mapping::anon(2 << 20)?;
    m.advise(0, m.len(), libc::MADV_NOHUGEPAGE)?;
    traffic_all_modes(&mut m)
}

fn traffic_thp() -> TestResult {
    if !thp_enabled() {
        skip!("transparent huge pages are not available");
    }
    let mut m = Mapping::anon_huge(2 * HUGE)?;
    pattern(m.bytes_mut(), 1);
    if smaps_kb(m.addr(), "AnonHugePages").unwrap_or(0) == 0 {
        skip!("the kernel gave no THP for a 2 MiB-aligned MADV_HUGEPAGE range");
    }
    traffic_all_modes(&mut m)
}

fn traffic_hugetlb() -> TestResult {
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
        traffic_all_modes(&mut m)
    })();
    let _ = fs::write(pool, before.trim());
    result
}

/// The traffic over an implicit registration (`test_odp.py`'s implicit MR tests).
fn traffic_implicit() -> TestResult {
    let mut m = Mapping::anon(2 << 20)?;
    let dev = Device::open()?;
    let reg = register_implicit(&dev)?;
    traffic(&dev, &mut m, &reg, Prefetch::Sync, 0)?;
    traffic(&dev, &mut m, &reg, Prefetch::Async, 1)?;
    let st = dev.stats(reg.handle)?;
    check!(
        st.chunks >= 1 && st.chunks <= 2,
        "chunks of a 2 MiB region: {}",
        st.chunks
    );
    Ok(())
}
