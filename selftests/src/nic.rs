// SPDX-License-Identifier: GPL-2.0

//! Group `nic`: the sample NIC driver (`samples/odp_nic`), a C module that uses only odp_hmm's
//! exported in-kernel API, on a second edu device (`scripts/vm-run.sh --topology nic` puts it at
//! 0000:00:10.0). The first test hands the device over (driver_override) and loads the sample;
//! the last unloads it, so that the harness can unload odp_hmm.
//!
//! What the tests prove: work requests move the right bytes on anonymous, shared memfd and THP
//! memory, faulting on demand; after munmap, mprotect and MADV_DONTNEED the slots of the
//! invalidated pages are empty before odp_hmm unlinks the pages (the sample's record of its
//! callbacks), and the device can no longer read the old IOVA; work requests racing a thread that
//! remaps the pages always see whole, current pages, with the one-pass and the two-pass
//! callbacks; exit, release and unbind with live registrations and queued faults are clean; the
//! modules cannot be unloaded under their users.

use std::{
    collections::VecDeque,
    fs, io,
    os::fd::AsRawFd,
    path::{
        Path,
        PathBuf, //
    },
    sync::{
        atomic::{
            AtomicBool,
            AtomicU64,
            AtomicUsize,
            Ordering::SeqCst, //
        },
        Mutex,
    },
    thread,
    time::{
        Duration,
        Instant, //
    },
};

use odp_hmm_uapi::{
    page_size,
    Device,
    ODP_HMM_PAGE_DMA_MAPPED, //
};

use crate::{
    check, check_eq,
    ktap::{
        Outcome,
        Test,
        TestResult, //
    },
    nic_abi::*,
    skip,
    util::{
        describe_refused_read,
        expect_errno,
        expecting_iommu_fault,
        in_child_test,
        mark_page,
        sh,
        smaps_kb,
        thp_enabled,
        Child,
        FaultLog,
        IommuModel,
        Mapping,
        HUGE, //
    },
};

pub const TESTS: &[&Test] = &[
    &Test {
        name: "nic_handover_and_module_reference",
        run: handover_and_module_reference,
    },
    &Test {
        name: "nic_work_requests_anon",
        run: work_requests_anon,
    },
    &Test {
        name: "nic_work_requests_memfd_shared",
        run: work_requests_memfd,
    },
    &Test {
        name: "nic_work_requests_thp",
        run: work_requests_thp,
    },
    &Test {
        name: "nic_faults_resolved_per_request",
        run: faults_resolved_per_request,
    },
    &Test {
        name: "nic_ordering_munmap",
        run: ordering_munmap,
    },
    &Test {
        name: "nic_ordering_mprotect",
        run: ordering_mprotect,
    },
    &Test {
        name: "nic_ordering_dontneed",
        run: ordering_dontneed,
    },
    &Test {
        name: "nic_ordering_munmap_two_pass",
        run: ordering_munmap_two_pass,
    },
    &Test {
        name: "nic_race_remap_one_pass",
        run: race_one_pass,
    },
    &Test {
        name: "nic_race_remap_two_pass",
        run: race_two_pass,
    },
    &Test {
        name: "nic_release_and_exit_with_queued_faults",
        run: release_and_exit_with_queued_faults,
    },
    &Test {
        name: "nic_unbind_racing_release",
        run: unbind_racing_release,
    },
    &Test {
        name: "nic_unbind_with_live_registration",
        run: unbind_with_live_registration,
    },
    &Test {
        name: "nic_unload_refused_while_open",
        run: unload_refused_while_open,
    },
];

/// Read-write access.
const RW: u32 = ODP_NIC_ACCESS_READ | ODP_NIC_ACCESS_WRITE;

/// An open `/dev/odp_nic`.
struct Nic {
    file: fs::File,
}

impl Nic {
    fn open() -> io::Result<Self> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(ODP_NIC_DEVICE_PATH)?;
        Ok(Self { file })
    }

    /// Issues ioctl `cmd`; an `EINTR` is returned, not retried (a test expects it).
    fn ioctl<T>(&self, cmd: u32, arg: &mut T) -> io::Result<()> {
        // SAFETY: Every `cmd` below takes the `T` it is called with (nic_abi.rs, checked against
        // the header by the `nic_layout` test); `arg` is valid and exclusive for the call.
        let ret =
            unsafe { libc::ioctl(self.file.as_raw_fd(), cmd as libc::c_ulong, arg as *mut T) };
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn register(&self, addr: u64, length: usize, access: u32, flags: u32) -> io::Result<u32> {
        let mut r = odp_nic_register {
            addr,
            length: length as u64,
            access,
            flags,
            ..Default::default()
        };
        self.ioctl(ODP_NIC_IOC_REGISTER, &mut r)?;
        Ok(r.handle)
    }

    fn unregister(&self, handle: u32) -> io::Result<()> {
        let mut h = handle;
        self.ioctl(ODP_NIC_IOC_UNREGISTER, &mut h)
    }

    fn work(&self, handle: u32, dir: u32, addr: u64, buf: &mut [u8]) -> io::Result<odp_nic_work> {
        let mut w = odp_nic_work {
            handle,
            dir,
            addr,
            length: buf.len() as u64,
            buf: buf.as_mut_ptr() as u64,
            ..Default::default()
        };
        self.ioctl(ODP_NIC_IOC_WORK, &mut w)?;
        Ok(w)
    }

    /// A work request that reads `len` bytes at `addr`: the bytes and the request's report.
    fn read(&self, handle: u32, addr: u64, len: usize) -> io::Result<(Vec<u8>, odp_nic_work)> {
        let mut buf = vec![0u8; len];
        let w = self.work(handle, ODP_NIC_WORK_READ, addr, &mut buf)?;
        Ok((buf, w))
    }

    /// A work request that writes `data` at `addr`.
    fn write(&self, handle: u32, addr: u64, data: &[u8]) -> io::Result<odp_nic_work> {
        let mut buf = data.to_vec();
        self.work(handle, ODP_NIC_WORK_WRITE, addr, &mut buf)
    }

    fn prefetch(&self, handle: u32, addr: u64, length: usize, write: bool) -> io::Result<()> {
        let mut f = odp_nic_prefetch {
            handle,
            flags: if write { ODP_NIC_PREFETCH_WRITE } else { 0 },
            addr,
            length: length as u64,
        };
        self.ioctl(ODP_NIC_IOC_PREFETCH, &mut f)
    }

    fn table(&self, handle: u32, first: usize, count: usize) -> io::Result<Vec<odp_nic_slot>> {
        let mut slots = vec![odp_nic_slot::default(); count];
        let mut t = odp_nic_table {
            handle,
            count: count as u32,
            first: first as u64,
            slots: slots.as_mut_ptr() as u64,
        };
        self.ioctl(ODP_NIC_IOC_TABLE, &mut t)?;
        Ok(slots)
    }

    /// The events after `after`, and how many of them were lost.
    fn events(&self, handle: u32, after: u64) -> io::Result<(Vec<odp_nic_event>, u64)> {
        let mut events = vec![odp_nic_event::default(); ODP_NIC_EVENTS_MAX as usize];
        let mut e = odp_nic_events {
            handle,
            count: ODP_NIC_EVENTS_MAX,
            after,
            events: events.as_mut_ptr() as u64,
            ..Default::default()
        };
        self.ioctl(ODP_NIC_IOC_EVENTS, &mut e)?;
        events.truncate(e.count as usize);
        Ok((events, e.lost))
    }

    /// The newest event's sequence number.
    fn last_seq(&self, handle: u32) -> io::Result<u64> {
        let mut e = odp_nic_events {
            handle,
            count: 1,
            after: u64::MAX - 1,
            events: [odp_nic_event::default()].as_mut_ptr() as u64,
            ..Default::default()
        };
        self.ioctl(ODP_NIC_IOC_EVENTS, &mut e)?;
        Ok(e.last_seq)
    }

    fn counters(&self, handle: u32) -> io::Result<odp_nic_counters> {
        let mut c = odp_nic_counters {
            handle,
            ..Default::default()
        };
        self.ioctl(ODP_NIC_IOC_COUNTERS, &mut c)?;
        Ok(c)
    }

    fn raw_read(&self, dma_addr: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut r = odp_nic_raw_read {
            dma_addr,
            length: len as u64,
            buf: buf.as_mut_ptr() as u64,
        };
        self.ioctl(ODP_NIC_IOC_RAW_READ, &mut r)?;
        Ok(buf)
    }
}

/// The PCI address of the sample's edu: `ODP_NIC_BDF`, else the edu odp_hmm does not drive.
fn nic_bdf() -> Result<String, Outcome> {
    if let Ok(bdf) = std::env::var("ODP_NIC_BDF") {
        return Ok(bdf);
    }
    let odp = Device::open()?.info()?.pci_address();
    let mut edus: Vec<String> = fs::read_dir("/sys/bus/pci/devices")?
        .flatten()
        .filter(|d| {
            let id = |f: &str| fs::read_to_string(d.path().join(f)).unwrap_or_default();
            id("vendor").trim() == "0x1234" && id("device").trim() == "0x11e8"
        })
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|bdf| *bdf != odp)
        .collect();
    edus.sort();
    edus.into_iter().next().ok_or_else(|| {
        Outcome::Skip("no second edu device: the group needs vm-run.sh --topology nic".into())
    })
}

/// The driver bound to PCI device `bdf`, if any.
fn driver_of(bdf: &str) -> Option<String> {
    fs::read_link(format!("/sys/bus/pci/devices/{bdf}/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// odp_nic.ko: `ODP_NIC_MODULE`, else beside the repository this binary was built in.
fn module_path() -> PathBuf {
    if let Ok(path) = std::env::var("ODP_NIC_MODULE") {
        return path.into();
    }
    let rel = Path::new("samples/odp_nic/odp_nic.ko");
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join(rel)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| rel.to_path_buf())
}

fn module_loaded(name: &str) -> bool {
    Path::new(&format!("/sys/module/{name}")).exists()
}

/// Waits up to 3 s for `cond`.
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Maps page `page` of the memfd `fd` over the page at `addr` (`MAP_SHARED | MAP_FIXED`: the old
/// page goes in the same step).
///
/// # Safety
///
/// `addr` is a page of a mapping the caller owns, and nothing holds a reference into that page.
unsafe fn map_memfd_page(addr: u64, fd: i32, page: usize) -> io::Result<()> {
    let ps = page_size();
    // SAFETY: The caller owns the page at `addr` and holds no reference into it.
    let r = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            ps,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            (page * ps) as libc::off_t,
        )
    };
    if r == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds `bdf` to odp_nic again after a test unbound it, and waits for its device file.
fn rebind(bdf: &str) -> TestResult {
    fs::write("/sys/bus/pci/drivers_probe", bdf)?;
    let driver = driver_of(bdf);
    check_eq!(
        driver.as_deref(),
        Some("odp_nic"),
        "driver after the rebind"
    );
    check!(
        wait_for(|| Nic::open().is_ok()),
        "{ODP_NIC_DEVICE_PATH} did not come back"
    );
    Ok(())
}

/// odp_hmm's count of live registrations (every user of its API included).
fn odp_live_registrations() -> Result<u64, Outcome> {
    Ok(Device::open()?.info()?.live_registrations)
}

/// Page `p` of `m`.
fn page(m: &Mapping, p: usize) -> &[u8] {
    let ps = page_size();
    &m.bytes()[p * ps..(p + 1) * ps]
}

/// A page marked with `tag` and `id` (`util::mark_page`).
fn marked(tag: u8, id: usize) -> Vec<u8> {
    let mut buf = vec![0u8; page_size()];
    mark_page(&mut buf, tag, id);
    buf
}

/// The id of a page that `mark_page(buf, tag, id)` made, byte for byte; `None` for anything else.
fn mark_id(buf: &[u8], tag: u8) -> Option<usize> {
    if buf.len() < 8 || buf[0] != 0xa5 || buf[6] != 0x5a || buf[7] != 0xc3 {
        return None;
    }
    let mut id = 0usize;
    for (i, &b) in buf[2..6].iter().enumerate() {
        id |= usize::from(b.checked_sub(1)? & 0x7f) << (7 * i);
    }
    let mut expect = vec![0u8; buf.len()];
    mark_page(&mut expect, tag, id);
    (expect == buf).then_some(id)
}

// ---- Hand-over and module references --------------------------------------------------------

fn handover_and_module_reference() -> TestResult {
    let bdf = nic_bdf()?;
    let dev = format!("/sys/bus/pci/devices/{bdf}");
    // From now on only odp_nic may bind the device (and nothing binds it by its id).
    fs::write(format!("{dev}/driver_override"), "odp_nic")?;
    if let Some(driver) = driver_of(&bdf) {
        if driver != "odp_nic" {
            println!("# {bdf} was bound to {driver}: unbinding it");
            fs::write(format!("{dev}/driver/unbind"), &bdf)?;
        }
    }
    if !module_loaded("odp_nic") {
        let path = module_path();
        let (rc, out) = sh(&format!("insmod {} debug_raw_dma=1", path.display()));
        check_eq!(rc, 0, "insmod {}: {out}", path.display());
    }
    if driver_of(&bdf).is_none() {
        fs::write("/sys/bus/pci/drivers_probe", &bdf)?;
    }
    let driver = driver_of(&bdf);
    check_eq!(
        driver.as_deref(),
        Some("odp_nic"),
        "driver of {bdf} after the hand-over"
    );
    check!(
        wait_for(|| Path::new(ODP_NIC_DEVICE_PATH).exists()),
        "{ODP_NIC_DEVICE_PATH} did not appear"
    );
    let odp = Device::open()?.info()?.pci_address();
    check!(odp != bdf, "odp_hmm drives {odp}, the sample's device");
    println!("# odp_hmm drives {odp}; the sample NIC drives {bdf}");

    // The sample uses odp_hmm's symbols: the module loader took a reference.
    check!(
        Path::new("/sys/module/odp_hmm/holders/odp_nic").exists(),
        "odp_nic is not among odp_hmm's holders"
    );
    let (rc, out) = sh("rmmod odp_hmm");
    check!(rc != 0, "rmmod odp_hmm succeeded under odp_nic: {out}");
    check!(module_loaded("odp_hmm"), "odp_hmm is gone");
    println!("# rmmod odp_hmm refused: {}", out.trim());
    Ok(())
}

// ---- Work requests ----------------------------------------------------------------------------

/// Device reads of pages `reads` (filled by the CPU first) and writes of pages `writes` (checked
/// by the CPU) of `m`, registered as `handle`, each faulting once; reads again and across a page
/// boundary that fault no more; the counters agree.
fn read_write_pages(
    nic: &Nic,
    m: &mut Mapping,
    handle: u32,
    reads: &[usize],
    writes: &[usize],
    tag: u8,
) -> TestResult {
    let ps = page_size();
    let base = m.addr();
    let addr = |p: usize| base + (p * ps) as u64;
    let before = nic.counters(handle)?;
    let (mut requests, mut faults) = (0u64, 0u64);
    for &p in reads {
        mark_page(&mut m.bytes_mut()[p * ps..(p + 1) * ps], tag, p);
    }
    for &p in reads {
        let (got, w) = nic.read(handle, addr(p), ps)?;
        check!(got == page(m, p), "device read of page {p}: wrong bytes");
        check_eq!(w.faults, 1, "page faults of the first read of page {p}");
        requests += 1;
        faults += 1;
    }
    for &p in writes {
        let data = marked(tag ^ 0x40, p);
        let w = nic.write(handle, addr(p), &data)?;
        check!(
            page(m, p) == data,
            "device write of page {p}: the CPU sees other bytes"
        );
        check_eq!(w.faults, 1, "page faults of the first write of page {p}");
        requests += 1;
        faults += 1;
    }
    // The slots are filled now: no more faults.
    for &p in reads.iter().take(1).chain(writes.iter().take(1)) {
        let (got, w) = nic.read(handle, addr(p), ps)?;
        check!(
            got == page(m, p),
            "second device read of page {p}: wrong bytes"
        );
        check_eq!(w.faults, 0, "page faults of the second read of page {p}");
        requests += 1;
    }
    if let Some(&p) = reads.iter().find(|&&p| reads.contains(&(p + 1))) {
        let at = addr(p) + (ps / 2) as u64;
        let (got, w) = nic.read(handle, at, ps)?;
        let off = p * ps + ps / 2;
        check!(
            got == m.bytes()[off..off + ps],
            "device read across pages {p} and {}: wrong bytes",
            p + 1
        );
        check_eq!(w.faults, 0, "page faults of a read across filled slots");
        requests += 1;
    }
    let after = nic.counters(handle)?;
    check_eq!(
        after.faults_raised - before.faults_raised,
        faults,
        "faults raised"
    );
    check_eq!(
        after.faults_resolved - before.faults_resolved,
        faults,
        "faults resolved"
    );
    check_eq!(after.fault_errors, before.fault_errors, "fault errors");
    check_eq!(
        after.work_requests - before.work_requests,
        requests,
        "work requests"
    );
    check!(
        after.slots_filled - before.slots_filled >= faults,
        "slots filled: {} for {faults} faults",
        after.slots_filled - before.slots_filled
    );
    check_eq!(after.stale_slots, 0, "stale slots");
    check_eq!(after.dma_check_failures, 0, "DMA check failures");
    check!(
        after.odp_faults > before.odp_faults && after.odp_pages_now >= faults,
        "odp_hmm's counters: {} faults, {} pages mapped now",
        after.odp_faults,
        after.odp_pages_now
    );
    println!(
        "# {requests} work requests, {faults} page faults raised and resolved, {} slots filled; odp_hmm: {} faults, {} pages mapped now",
        after.slots_filled, after.odp_faults, after.odp_pages_now
    );
    Ok(())
}

fn work_requests_anon() -> TestResult {
    let ps = page_size();
    let nic = Nic::open()?;
    let mut m = Mapping::anon(8 * ps)?;
    let handle = nic.register(m.addr(), 8 * ps, RW, 0)?;
    read_write_pages(&nic, &mut m, handle, &[0, 1, 2], &[5, 6], 0x21)?;
    nic.unregister(handle)?;
    expect_errno(nic.unregister(handle), libc::ENOENT, "second unregister")
}

fn work_requests_memfd() -> TestResult {
    let ps = page_size();
    let nic = Nic::open()?;
    let mut m = Mapping::memfd_shared(8 * ps)?;
    let handle = nic.register(m.addr(), 8 * ps, RW, 0)?;
    read_write_pages(&nic, &mut m, handle, &[1, 2], &[4, 7], 0x22)?;
    // Bad requests get their errno.
    expect_errno(
        nic.read(handle, m.addr() + (8 * ps) as u64, 1),
        libc::ERANGE,
        "read past the registration",
    )?;
    expect_errno(
        nic.read(handle, m.addr(), ps + 1),
        libc::EINVAL,
        "read longer than the device buffer",
    )?;
    expect_errno(
        nic.read(handle + 100, m.addr(), 8),
        libc::ENOENT,
        "unknown handle",
    )?;
    expect_errno(nic.raw_read(0x1000, 0), libc::EINVAL, "raw read of 0 bytes")?;
    nic.unregister(handle)?;
    Ok(())
}

fn work_requests_thp() -> TestResult {
    if !thp_enabled() {
        skip!("transparent huge pages are off");
    }
    let nic = Nic::open()?;
    let mut m = Mapping::anon_huge(HUGE)?;
    m.bytes_mut()[0] = 1;
    if smaps_kb(m.addr(), "AnonHugePages").unwrap_or(0) < 2048 {
        skip!("no THP for the mapping");
    }
    let handle = nic.register(m.addr(), HUGE, RW, 0)?;
    read_write_pages(&nic, &mut m, handle, &[0, 1], &[300, 511], 0x23)?;
    check!(
        smaps_kb(m.addr(), "AnonHugePages").unwrap_or(0) >= 2048,
        "the THP was split"
    );
    nic.unregister(handle)?;
    Ok(())
}

/// Page faults queued together are resolved each on its own pages, with its own result: while
/// the fault work item resolves a first fault (slowed down by `fault_delay_ms`), two more
/// requests fault, one on a page unmapped after the registration and one on a good page; the
/// good one gets its bytes, the other `EFAULT` (a fault covering both, or a result handed to
/// the wrong request, fails the good one).
fn faults_resolved_per_request() -> TestResult {
    const DELAY_MS: u32 = 1000;
    let ps = page_size();
    let nic = Nic::open()?;
    let mut m = Mapping::anon(4 * ps)?;
    for p in 0..4 {
        mark_page(&mut m.bytes_mut()[p * ps..(p + 1) * ps], 0x28, p);
    }
    let handle = nic.register(m.addr(), 4 * ps, RW, 0)?;
    m.unmap_part(ps, ps)?;
    let base_addr = m.addr();
    let addr = |p: usize| base_addr + (p * ps) as u64;
    let base = nic.counters(handle)?;
    let raised = |n: u64| {
        wait_for(|| {
            nic.counters(handle)
                .is_ok_and(|c| c.faults_raised - base.faults_raised >= n)
        })
    };
    let _delay = NicDelay::set("fault_delay_ms", DELAY_MS)?;
    let (first, good, hole, queued_together) = thread::scope(|s| {
        let first = s.spawn(|| nic.read(handle, addr(3), ps));
        let first_raised = raised(1);
        let good = s.spawn(|| nic.read(handle, addr(2), ps));
        let hole = s.spawn(|| nic.read(handle, addr(1), ps));
        // Both raised while the first fault is still being resolved: they queue together.
        let together = first_raised
            && raised(3)
            && nic.counters(handle).is_ok_and(|c| {
                c.faults_resolved + c.fault_errors == base.faults_resolved + base.fault_errors
            });
        (first.join(), good.join(), hole.join(), together)
    });
    let (first, good, hole) = (
        first.map_err(|_| "a work request thread panicked")?,
        good.map_err(|_| "a work request thread panicked")?,
        hole.map_err(|_| "a work request thread panicked")?,
    );
    check!(
        queued_together,
        "the two later faults were not both raised while the first was resolved"
    );
    let (got, w) = first?;
    check!(got == marked(0x28, 3), "read of page 3: wrong bytes");
    check_eq!(w.faults, 1, "faults of the read of page 3");
    let (got, w) = good?;
    check!(
        got == marked(0x28, 2),
        "read of page 2, faulted together with the unmapped page 1: wrong bytes"
    );
    check_eq!(w.faults, 1, "faults of the read of page 2");
    expect_errno(hole, libc::EFAULT, "read of the unmapped page 1")?;
    let c = nic.counters(handle)?;
    check_eq!(c.faults_raised - base.faults_raised, 3, "faults raised");
    check_eq!(
        c.faults_resolved - base.faults_resolved,
        2,
        "faults resolved"
    );
    check_eq!(c.fault_errors - base.fault_errors, 1, "fault errors");
    println!(
        "# 3 faults, the last two queued together: page 3 and page 2 resolved, the unmapped page 1 EFAULT, each to its own request"
    );
    nic.unregister(handle)?;
    Ok(())
}

// ---- Ordering: slots empty before the pages are unlinked -------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Munmap,
    Mprotect,
    DontNeed,
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        ODP_NIC_EV_INVALIDATE => "invalidate",
        ODP_NIC_EV_START => "invalidate_start",
        ODP_NIC_EV_FINISH => "invalidate_finish",
        ODP_NIC_EV_FILL => "fill",
        ODP_NIC_EV_REFUSED => "refused",
        _ => "?",
    }
}

/// Whether the device's IOMMU domain translates (a raw read of an unlinked IOVA must fault).
fn translated(bdf: &str) -> bool {
    let group = fs::read_to_string(format!("/sys/bus/pci/devices/{bdf}/iommu_group/type"))
        .unwrap_or_default();
    matches!(group.trim(), "DMA" | "DMA-FQ")
}

/// Registers 8 pages, faults them all in, changes pages 3 and 4 as `change` says, and checks the
/// sample's record: each slot that went empty was emptied by a callback that found it holding the
/// address odp_hmm still had linked for the page (not unlinked yet); with two passes, the second
/// ran on the same range and found the pages its first emptied still linked; afterwards the
/// slots of exactly the pages of
/// the callbacks' ranges are empty, odp_hmm reports those pages unlinked, every other slot is as
/// it was; with `probe`, the device's raw read of the old IOVA of page 3 faults.
fn ordering(change: Change, two_pass: bool, probe: bool) -> TestResult {
    let ps = page_size();
    let n = 8;
    let gone = 3..5;
    let tag = 0x30 + change as u8;
    let bdf = nic_bdf()?;
    let nic = Nic::open()?;
    let mut m = Mapping::anon(n * ps)?;
    for p in 0..n {
        mark_page(&mut m.bytes_mut()[p * ps..(p + 1) * ps], tag, p);
    }
    let flags = if two_pass { ODP_NIC_REG_TWO_PASS } else { 0 };
    let handle = nic.register(m.addr(), n * ps, RW, flags)?;
    nic.prefetch(handle, m.addr(), n * ps, true)?;
    let before = nic.table(handle, 0, n)?;
    for (p, s) in before.iter().enumerate() {
        check!(
            s.state == ODP_NIC_SLOT_VALID | ODP_NIC_SLOT_WRITE
                && s.dma_addr != 0
                && s.dma_addr == s.odp_dma_addr
                && s.odp_flags & ODP_HMM_PAGE_DMA_MAPPED != 0,
            "slot {p} after the fault: {s:?}"
        );
    }
    let seq0 = nic.last_seq(handle)?;

    let (off, len) = (gone.start * ps, gone.len() * ps);
    match change {
        Change::Munmap => m.unmap_part(off, len)?,
        Change::Mprotect => m.protect(off, len, libc::PROT_READ)?,
        Change::DontNeed => m.advise(off, len, libc::MADV_DONTNEED)?,
    }

    let (events, lost) = nic.events(handle, seq0)?;
    check_eq!(lost, 0, "events lost");
    let after = nic.table(handle, 0, n)?;
    let page_of = |addr: u64| ((addr - m.addr()) / ps as u64) as usize;
    for ev in &events {
        println!(
            "# {change:?}: event {} {} pages {}..{}: {} slots filled, {} holding odp_hmm's linked address, {} pages linked, {} zapped",
            ev.seq,
            kind_name(ev.kind),
            page_of(ev.start),
            page_of(ev.end),
            ev.slots_filled,
            ev.slots_linked,
            ev.pages_linked,
            ev.slots_zapped
        );
    }
    let zap_kind = if two_pass {
        ODP_NIC_EV_START
    } else {
        ODP_NIC_EV_INVALIDATE
    };
    let mut zapped = vec![false; n];
    let mut slots_zapped = 0;
    for ev in events.iter().filter(|e| e.kind == zap_kind) {
        check_eq!(
            ev.slots_linked,
            ev.slots_filled,
            "event {}: slots holding odp_hmm's linked address among the filled ones (a slot emptied after its page was unlinked would not)",
            ev.seq
        );
        check_eq!(
            ev.slots_zapped,
            ev.slots_filled,
            "event {}: slots zapped",
            ev.seq
        );
        // The callback looks up the pages of its filled slots: each must still be linked.
        check_eq!(
            ev.pages_linked,
            ev.slots_filled,
            "event {}: pages still linked among those of the filled slots",
            ev.seq
        );
        slots_zapped += ev.slots_zapped;
        for z in &mut zapped[page_of(ev.start)..page_of(ev.end)] {
            *z = true;
        }
    }
    check!(
        events.iter().all(|e| e.kind != ODP_NIC_EV_FILL),
        "a fault filled slots during the change"
    );
    if two_pass {
        check!(
            events.iter().all(|e| e.kind != ODP_NIC_EV_INVALIDATE),
            "a one-pass callback ran for a two-pass registration"
        );
        for st in events.iter().filter(|e| e.kind == ODP_NIC_EV_START) {
            let fin = events
                .iter()
                .find(|e| e.kind == ODP_NIC_EV_FINISH && e.seq > st.seq && e.start == st.start);
            let Some(fin) = fin else {
                return Err(format!("no second pass after event {}", st.seq).into());
            };
            check_eq!(
                fin.end,
                st.end,
                "range of the second pass of event {}",
                st.seq
            );
            // Nothing here could refill a slot between the passes (one thread, no fault
            // queued): that the update lock taken between passes finds nothing to refill is
            // the race tests' evidence (refilled_between_passes with fills_between_passes > 0).
            check_eq!(
                fin.pages_linked,
                st.pages_linked,
                "pages still linked at the second pass of event {}",
                st.seq
            );
        }
    }
    for p in gone.clone() {
        check!(zapped[p], "no callback zapped page {p}");
    }
    let mut emptied = 0;
    for p in 0..n {
        let (b, a) = (before[p], after[p]);
        if zapped[p] {
            check_eq!(a.state, 0, "slot {p} after the change");
            check!(
                a.odp_flags & ODP_HMM_PAGE_DMA_MAPPED == 0,
                "odp_hmm still has page {p} linked after the change"
            );
            emptied += 1;
        } else {
            check_eq!(a, b, "slot {p}, outside the callbacks' ranges, changed");
        }
        // odp_hmm zaps whole link units: at most 64 pages, aligned in virtual page numbers.
        let block = |q: usize| (m.addr() as usize / ps + q) / 64;
        check!(
            !zapped[p] || gone.clone().any(|g| block(g) == block(p)),
            "page {p} zapped, outside the 64-page blocks of the changed pages"
        );
    }
    check_eq!(
        slots_zapped,
        emptied,
        "slots the callbacks zapped vs slots now empty"
    );
    println!(
        "# {change:?} of pages {gone:?}: {emptied} slots emptied by the callbacks, each while odp_hmm still had its page linked at that address; odp_hmm unlinked them after"
    );

    if probe {
        if translated(&bdf) {
            let model = IommuModel::of(&bdf);
            let old = before[gone.start].dma_addr;
            let (got, log) = expecting_iommu_fault(&model, old, || nic.raw_read(old, ps));
            let got = got?;
            check!(
                got != marked(tag, gone.start),
                "the device read page {} at its old IOVA {old:#x}",
                gone.start
            );
            check!(
                log != FaultLog::Missing,
                "{model} reported no fault at {old:#x}"
            );
            println!(
                "# raw read at the old IOVA {old:#x}: {} ({log:?} by {model})",
                describe_refused_read(&got, &[ODP_NIC_RAW_SENTINEL as u8; 4096][..ps])
            );
        } else {
            println!("# the device's domain does not translate: no raw-read proof");
        }
    }

    // What the device gets now.
    let addr = m.addr() + off as u64;
    match change {
        Change::Munmap => expect_errno(nic.read(handle, addr, ps), libc::EFAULT, "read of a hole")?,
        Change::Mprotect => {
            let (got, w) = nic.read(handle, addr, ps)?;
            check!(
                got == marked(tag, gone.start),
                "read after mprotect: wrong bytes"
            );
            check_eq!(w.faults, 1, "faults of the read after mprotect");
            expect_errno(
                nic.write(handle, addr, &marked(tag, 99)),
                libc::EPERM,
                "write to a read-only page",
            )?;
        }
        Change::DontNeed => {
            let (got, w) = nic.read(handle, addr, ps)?;
            check!(
                got.iter().all(|&b| b == 0),
                "read after MADV_DONTNEED: not zeros"
            );
            check_eq!(w.faults, 1, "faults of the read after MADV_DONTNEED");
        }
    }
    let c = nic.counters(handle)?;
    check_eq!(c.stale_slots, 0, "stale slots");
    check_eq!(c.dma_check_failures, 0, "DMA check failures");
    nic.unregister(handle)?;
    Ok(())
}

fn ordering_munmap() -> TestResult {
    ordering(Change::Munmap, false, true)
}

fn ordering_mprotect() -> TestResult {
    ordering(Change::Mprotect, false, true)
}

fn ordering_dontneed() -> TestResult {
    ordering(Change::DontNeed, false, true)
}

fn ordering_munmap_two_pass() -> TestResult {
    ordering(Change::Munmap, true, true)
}

// ---- The race -----------------------------------------------------------------------------

/// How long each race runs.
const RACE: Duration = Duration::from_secs(10);
/// Pages of the registered window; each of the two workers owns half.
const WINDOW: usize = 4;
/// Pages of the memfd the window's pages come from.
const POOL: usize = 48;
/// Tags of the pages the remapper fills and of those the workers write.
const TAG_POOL: u8 = 0x51;
const TAG_WRITE: u8 = 0x52;

/// What a window page may hold: content `id`, from the page mapped there as generation `lo` up
/// to generation `hi`.
#[derive(Clone, Copy, Debug)]
struct Content {
    lo: u64,
    hi: u64,
    id: usize,
}

/// The state the race's threads share.
struct Race<'a> {
    nic: &'a Nic,
    /// Two registrations of the window: the mm runs both first passes, then both second
    /// passes, so one waits for its DMA in flight while the other is between its passes.
    handles: [u32; 2],
    window: u64,
    /// Generation of the pool page mapped at each window page (bumped after each remap).
    gens: [AtomicU64; WINDOW],
    /// What each window page may have held.
    history: Mutex<Vec<Vec<Content>>>,
    next_id: AtomicUsize,
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    reads: AtomicU64,
    writes: AtomicU64,
    faults: AtomicU64,
    retries: AtomicU64,
    remaps: AtomicU64,
    prefetches: AtomicU64,
    prefetch_busy: AtomicU64,
}

impl Race<'_> {
    fn fail(&self, msg: String) {
        self.failures.lock().unwrap().push(msg);
        self.stop.store(true, SeqCst);
    }

    fn addr(&self, p: usize) -> u64 {
        self.window + (p * page_size()) as u64
    }

    /// Whether window page `p` may have held content `id` during generations `lo..=hi`.
    fn may_hold(&self, p: usize, id: usize, lo: u64, hi: u64) -> bool {
        self.history.lock().unwrap()[p]
            .iter()
            .any(|c| c.id == id && c.lo <= hi && c.hi >= lo)
    }

    /// A worker: reads and writes of its pages through the device (registration `reg`) until
    /// the time is up; every byte read is checked.
    fn worker(&self, reg: usize, pages: [usize; 2], deadline: Instant) {
        let handle = self.handles[reg];
        let ps = page_size();
        let mut i = 0usize;
        while Instant::now() < deadline && !self.stop.load(SeqCst) {
            let p = pages[(i / 2) % 2];
            let g0 = self.gens[p].load(SeqCst);
            let report = if i % 2 == 1 {
                let id = self.next_id.fetch_add(1, SeqCst);
                let slot = {
                    let mut h = self.history.lock().unwrap();
                    h[p].push(Content {
                        lo: g0,
                        hi: u64::MAX,
                        id,
                    });
                    h[p].len() - 1
                };
                let r = self.nic.write(handle, self.addr(p), &marked(TAG_WRITE, id));
                let g1 = self.gens[p].load(SeqCst);
                self.history.lock().unwrap()[p][slot].hi = g1 + 1;
                self.writes.fetch_add(1, SeqCst);
                r
            } else {
                let r = self.nic.read(handle, self.addr(p), ps);
                let g1 = self.gens[p].load(SeqCst);
                self.reads.fetch_add(1, SeqCst);
                r.map(|(buf, w)| {
                    let id = mark_id(&buf, TAG_POOL).or_else(|| mark_id(&buf, TAG_WRITE));
                    match id {
                        None => self.fail(format!(
                            "read of window page {p}: not a whole page of any content (first bytes {:x?})",
                            &buf[..16]
                        )),
                        Some(id) if !self.may_hold(p, id, g0, g1 + 1) => self.fail(format!(
                            "read of window page {p} during generations {g0}..={}: content {id}, which the page did not hold then",
                            g1 + 1
                        )),
                        Some(_) => {}
                    }
                    w
                })
            };
            match report {
                Ok(w) => {
                    self.faults.fetch_add(u64::from(w.faults), SeqCst);
                    self.retries.fetch_add(u64::from(w.retries), SeqCst);
                }
                Err(e) => self.fail(format!("work request on window page {p}: {e}")),
            }
            i += 1;
        }
    }

    /// Prefetches of single pages through registration `reg`, as fast as they go: each takes
    /// the update lock at a time of its own (after it prepared its table update), so some take
    /// it while an invalidation is between its passes, where odp_hmm must not report the pages
    /// being zapped as reachable.
    fn prefetcher(&self, reg: usize, deadline: Instant) {
        let mut i = 0usize;
        while Instant::now() < deadline && !self.stop.load(SeqCst) {
            let p = (i * 7 + i / 3 + reg) % WINDOW;
            match self
                .nic
                .prefetch(self.handles[reg], self.addr(p), page_size(), i % 3 == 0)
            {
                Ok(()) => self.prefetches.fetch_add(1, SeqCst),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    self.prefetch_busy.fetch_add(1, SeqCst)
                }
                Err(e) => {
                    self.fail(format!("prefetch of window page {p}: {e}"));
                    return;
                }
            };
            i += 1;
        }
    }

    /// The remapper: maps fresh memfd pages over the window's pages (MAP_FIXED replaces one page
    /// atomically), every 0-100 ms: each page about every 200 ms, about as long as a
    /// work request takes. A page it took out must be a whole page of what the window
    /// page held, and must not change afterwards (checked when it is reused): no device write
    /// reached it once its invalidation returned.
    fn remapper(&self, fd: i32, pool: &mut [u8], deadline: Instant) {
        let ps = page_size();
        let mut at: Vec<usize> = (0..WINDOW).collect();
        let mut free: VecDeque<usize> = (WINDOW..POOL).collect();
        let mut retired: Vec<Option<Vec<u8>>> = vec![None; POOL];
        let mut rng = 0x9e37_79b9u32;
        while Instant::now() < deadline && !self.stop.load(SeqCst) {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let p = rng as usize % WINDOW;
            let Some(q) = free.pop_front() else {
                self.fail("the pool ran dry".into());
                return;
            };
            let qpage = &mut pool[q * ps..(q + 1) * ps];
            if let Some(snap) = &retired[q] {
                if qpage != &snap[..] {
                    self.fail(format!(
                        "pool page {q} changed after it was taken out of the window: a device write came after its invalidation"
                    ));
                    return;
                }
            }
            let id = self.next_id.fetch_add(1, SeqCst);
            mark_page(qpage, TAG_POOL, id);
            let g = self.gens[p].load(SeqCst) + 1;
            self.history.lock().unwrap()[p].push(Content { lo: g, hi: g, id });
            // SAFETY: Page `p` of the window, which the test owns; nothing in this process holds
            // a reference into the window.
            if let Err(e) = unsafe { map_memfd_page(self.addr(p), fd, q) } {
                self.fail(format!("mmap: {e}"));
                return;
            }
            self.gens[p].store(g, SeqCst);
            self.remaps.fetch_add(1, SeqCst);
            let old = std::mem::replace(&mut at[p], q);
            // Its invalidation is over: what it holds now is final.
            let snap = pool[old * ps..(old + 1) * ps].to_vec();
            let id = mark_id(&snap, TAG_POOL).or_else(|| mark_id(&snap, TAG_WRITE));
            match id {
                Some(id) if self.may_hold(p, id, g - 1, g - 1) => {}
                _ => {
                    self.fail(format!(
                        "pool page {old}, taken out of window page {p}, holds {id:?}: not content of that page"
                    ));
                    return;
                }
            }
            retired[old] = Some(snap);
            free.push_back(old);
            thread::sleep(Duration::from_millis(u64::from(rng % 101)));
        }
    }
}

/// Two workers read and write the 4 pages of a window through the device, each through its own
/// registration of the whole window, two threads prefetch single pages, one per registration, and
/// another maps fresh memfd pages over the window's pages, for 10 s; every byte read is checked,
/// and every page taken out is checked not to change.
fn race(two_pass: bool) -> TestResult {
    let ps = page_size();
    let nic = Nic::open()?;
    let name = std::ffi::CString::new("odp_nic_race").expect("no NUL");
    // SAFETY: `name` is a valid C string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    let _close = scopeguard(move || {
        // SAFETY: `fd` is ours, closed once, after every mapping of it is made.
        unsafe { libc::close(fd) };
    });
    // SAFETY: `fd` is ours.
    if unsafe { libc::ftruncate(fd, (POOL * ps) as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    let mut pool = Mapping::new(
        POOL * ps,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        fd,
    )?;
    let window = Mapping::anon(WINDOW * ps)?;
    let mut history = vec![Vec::new(); WINDOW];
    for (p, h) in history.iter_mut().enumerate() {
        mark_page(&mut pool.bytes_mut()[p * ps..(p + 1) * ps], TAG_POOL, p);
        h.push(Content {
            lo: 0,
            hi: 0,
            id: p,
        });
        // SAFETY: Page `p` of our own window, which nothing references yet.
        unsafe { map_memfd_page(window.addr() + (p * ps) as u64, fd, p) }?;
    }
    let flags = if two_pass { ODP_NIC_REG_TWO_PASS } else { 0 };
    // Prefetches take the update lock 3 ms after they mapped their page: if an invalidation
    // began meanwhile, often between its passes (the mm runs both registrations' first passes,
    // then both second passes, which wait for their DMAs in flight).
    let _prepare = NicDelay::set("prefetch_delay_us", 3000)?;
    let handles = [
        nic.register(window.addr(), WINDOW * ps, RW, flags)?,
        nic.register(window.addr(), WINDOW * ps, RW, flags)?,
    ];
    let race = Race {
        nic: &nic,
        handles,
        window: window.addr(),
        gens: Default::default(),
        history: Mutex::new(history),
        next_id: AtomicUsize::new(WINDOW),
        stop: AtomicBool::new(false),
        failures: Mutex::new(Vec::new()),
        reads: AtomicU64::new(0),
        writes: AtomicU64::new(0),
        faults: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        remaps: AtomicU64::new(0),
        prefetches: AtomicU64::new(0),
        prefetch_busy: AtomicU64::new(0),
    };
    let pool_bytes = pool.bytes_mut();
    let deadline = Instant::now() + RACE;
    thread::scope(|s| {
        let race = &race;
        s.spawn(move || race.worker(0, [0, 1], deadline));
        s.spawn(move || race.worker(1, [2, 3], deadline));
        s.spawn(move || race.prefetcher(0, deadline));
        s.spawn(move || race.prefetcher(1, deadline));
        s.spawn(move || race.remapper(fd, pool_bytes, deadline));
    });
    let failures = race.failures.lock().unwrap().clone();
    let c = sum_counters(&nic.counters(handles[0])?, &nic.counters(handles[1])?);
    let mode = if two_pass { "two-pass" } else { "one-pass" };
    println!(
        "# {mode} race, {} s: {} reads and {} writes of whole pages, every byte checked; {} remaps; {} prefetches ({} EBUSY)",
        RACE.as_secs(),
        race.reads.load(SeqCst),
        race.writes.load(SeqCst),
        race.remaps.load(SeqCst),
        race.prefetches.load(SeqCst),
        race.prefetch_busy.load(SeqCst)
    );
    println!(
        "# work requests: {} page faults, {} retries; sample: {} faults raised, {} resolved, {} errors, {} slots filled, {} zapped",
        race.faults.load(SeqCst),
        race.retries.load(SeqCst),
        c.faults_raised,
        c.faults_resolved,
        c.fault_errors,
        c.slots_filled,
        c.slots_zapped
    );
    println!(
        "# callbacks: {} one-pass, {} first passes, {} second passes; fills between the passes: {}; stale slots {}, refilled between passes {}, DMA check failures {}, map_and_lock pages unreachable {}; odp_hmm: {} invalidations, {} pages unmapped",
        c.invalidations,
        c.invalidate_starts,
        c.invalidate_finishes,
        c.fills_between_passes,
        c.stale_slots,
        c.refilled_between_passes,
        c.dma_check_failures,
        c.map_unreachable,
        c.odp_invalidations,
        c.odp_pages_unmapped
    );
    if let Some(first) = failures.first() {
        return Err(format!("{} failures, the first: {first}", failures.len()).into());
    }
    check_eq!(c.stale_slots, 0, "stale slots");
    check_eq!(
        c.refilled_between_passes,
        0,
        "slots refilled between the passes"
    );
    check_eq!(c.dma_check_failures, 0, "DMA check failures");
    check_eq!(
        c.map_unreachable,
        0,
        "pages map_and_lock() mapped but dma_addr() refused"
    );
    check_eq!(c.fault_errors, 0, "fault errors");
    check!(
        race.reads.load(SeqCst) >= 5 && race.writes.load(SeqCst) >= 5,
        "too few work requests to mean anything"
    );
    check!(race.remaps.load(SeqCst) >= 50, "too few remaps");
    if two_pass {
        check!(c.invalidate_starts > 0, "no first pass ran");
        check!(
            c.fills_between_passes > 0,
            "no fill took the update lock between two passes: the race did not reach the window"
        );
        check_eq!(
            c.invalidate_starts,
            c.invalidate_finishes,
            "first and second passes"
        );
    } else {
        check!(c.invalidations > 0, "no invalidation ran");
        check_eq!(
            c.invalidate_starts,
            0,
            "first passes of a one-pass registration"
        );
    }
    nic.unregister(handles[0])?;
    nic.unregister(handles[1])?;
    Ok(())
}

/// The sum of two registrations' counters (what the race checks).
fn sum_counters(a: &odp_nic_counters, b: &odp_nic_counters) -> odp_nic_counters {
    odp_nic_counters {
        faults_raised: a.faults_raised + b.faults_raised,
        faults_resolved: a.faults_resolved + b.faults_resolved,
        fault_errors: a.fault_errors + b.fault_errors,
        slots_filled: a.slots_filled + b.slots_filled,
        slots_zapped: a.slots_zapped + b.slots_zapped,
        invalidations: a.invalidations + b.invalidations,
        invalidate_starts: a.invalidate_starts + b.invalidate_starts,
        invalidate_finishes: a.invalidate_finishes + b.invalidate_finishes,
        fills_between_passes: a.fills_between_passes + b.fills_between_passes,
        stale_slots: a.stale_slots + b.stale_slots,
        refilled_between_passes: a.refilled_between_passes + b.refilled_between_passes,
        dma_check_failures: a.dma_check_failures + b.dma_check_failures,
        map_unreachable: a.map_unreachable + b.map_unreachable,
        odp_invalidations: a.odp_invalidations + b.odp_invalidations,
        odp_pages_unmapped: a.odp_pages_unmapped + b.odp_pages_unmapped,
        ..Default::default()
    }
}

/// Runs `f` on drop.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

fn race_one_pass() -> TestResult {
    race(false)
}

fn race_two_pass() -> TestResult {
    race(true)
}

// ---- Lifetimes ----------------------------------------------------------------------------------

/// A delay parameter of odp_nic (`fault_delay_ms`, `prefetch_delay_us`), set for a test and
/// put back to 0 on drop.
struct NicDelay(&'static str);

impl NicDelay {
    fn set(name: &'static str, value: u32) -> io::Result<Self> {
        fs::write(Self::path(name), value.to_string())?;
        Ok(Self(name))
    }

    fn path(name: &str) -> String {
        format!("/sys/module/odp_nic/parameters/{name}")
    }
}

impl Drop for NicDelay {
    fn drop(&mut self) {
        let _ = fs::write(Self::path(self.0), "0");
    }
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// A process closes its file with a registration whose page fault is still queued (its waiter
/// interrupted by a signal), then lives on; another is killed while its work request waits for
/// its fault. Each queued fault runs after the file is gone (resolved against the live process,
/// failed for the dead one) and drops the last reference: the registrations go, in odp_nic and
/// in odp_hmm.
fn release_and_exit_with_queued_faults() -> TestResult {
    const DELAY_MS: u32 = 1500;
    let ps = page_size();
    let nic = Nic::open()?;
    let base = nic.counters(0)?;
    let odp_base = odp_live_registrations()?;
    let _delay = NicDelay::set("fault_delay_ms", DELAY_MS)?;

    in_child_test(|| {
        let nic = Nic::open()?;
        let m = Mapping::anon(4 * ps)?;
        let addr = m.addr();
        let handle = nic.register(addr, 4 * ps, RW, 0)?;
        // SAFETY: An all-zero `sigaction` with a handler that does nothing, without SA_RESTART.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore_signal as *const () as usize;
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
        let waiter = AtomicU64::new(0);
        let result = thread::scope(|s| {
            let t = s.spawn(|| {
                // SAFETY: `pthread_self` has no preconditions.
                waiter.store(unsafe { libc::pthread_self() } as u64, SeqCst);
                nic.read(handle, addr, ps)
            });
            let raised = wait_for(|| {
                nic.counters(handle).is_ok_and(|c| c.faults_raised == 1) && waiter.load(SeqCst) != 0
            });
            // SAFETY: The thread is alive until joined below.
            unsafe { libc::pthread_kill(waiter.load(SeqCst) as libc::pthread_t, libc::SIGUSR1) };
            (raised, t.join())
        });
        check!(result.0, "the work request raised no fault");
        let joined = result.1.map_err(|_| "the waiter panicked")?;
        expect_errno(joined, libc::EINTR, "work request interrupted by a signal")?;
        // Release, with the registration alive and its fault queued.
        drop(nic);
        thread::sleep(Duration::from_millis(u64::from(DELAY_MS) + 1000));
        Ok(())
    })?;
    check!(
        wait_for(|| nic
            .counters(0)
            .is_ok_and(|c| c.live_registrations == base.live_registrations)),
        "registrations of the released file left"
    );
    let c = nic.counters(0)?;
    check_eq!(
        c.faults_raised - base.faults_raised,
        1,
        "faults raised by the first child"
    );
    check_eq!(
        c.faults_resolved - base.faults_resolved,
        1,
        "its queued fault, resolved after the release"
    );

    // The second child is killed while its work request waits for the fault.
    let child = Child::spawn(|| {
        let run = || -> io::Result<()> {
            let nic = Nic::open()?;
            let m = Mapping::anon(4 * ps)?;
            let handle = nic.register(m.addr(), 4 * ps, RW, 0)?;
            nic.read(handle, m.addr(), ps).map(drop)
        };
        match run() {
            Ok(()) => 0,
            Err(_) => 1,
        }
    })?;
    check!(
        wait_for(|| nic
            .counters(0)
            .is_ok_and(|c| c.faults_raised == base.faults_raised + 2)),
        "the second child raised no fault"
    );
    drop(child);
    let settled = || {
        nic.counters(0).is_ok_and(|c| {
            c.live_registrations == base.live_registrations
                && c.fault_errors == base.fault_errors + 1
        })
    };
    let start = Instant::now();
    while !settled() && start.elapsed() < Duration::from_millis(u64::from(DELAY_MS) + 5000) {
        thread::sleep(Duration::from_millis(50));
    }
    let c = nic.counters(0)?;
    check_eq!(
        c.live_registrations,
        base.live_registrations,
        "registrations after the killed child"
    );
    check_eq!(
        c.fault_errors - base.fault_errors,
        1,
        "its queued fault, failed after the exit"
    );
    check!(
        wait_for(|| odp_live_registrations().is_ok_and(|n| n == odp_base)),
        "odp_hmm keeps registrations of the children"
    );
    println!(
        "# a queued fault resolved after its file was released, another failed after its process was killed; odp_nic and odp_hmm hold no registration of either"
    );
    Ok(())
}

/// A file with many registrations is closed while the device is unbound: whichever comes first,
/// once the unbind returned odp_hmm holds none of the file's registrations (odp_hmm wants them
/// released before the device goes; a release still tearing them down would leave some). The
/// device binds again.
fn unbind_racing_release() -> TestResult {
    const REGS: usize = 48;
    const PAGES: usize = 16;
    let ps = page_size();
    let bdf = nic_bdf()?;
    let odp_base = odp_live_registrations()?;
    let nic = Nic::open()?;
    let m = Mapping::anon(REGS * PAGES * ps)?;
    for r in 0..REGS {
        let addr = m.addr() + (r * PAGES * ps) as u64;
        let handle = nic.register(addr, PAGES * ps, RW, 0)?;
        // Mapped pages: each release has links to undo.
        nic.prefetch(handle, addr, PAGES * ps, true)?;
    }
    check_eq!(
        odp_live_registrations()?,
        odp_base + REGS as u64,
        "odp_hmm's registrations before the unbind"
    );
    let barrier = std::sync::Barrier::new(2);
    let (unbound, left, took) = thread::scope(|s| {
        let closer = s.spawn(|| {
            barrier.wait();
            drop(nic);
        });
        barrier.wait();
        let start = Instant::now();
        let unbound = fs::write("/sys/bus/pci/drivers/odp_nic/unbind", &bdf);
        let took = start.elapsed();
        let left = odp_live_registrations();
        let _ = closer.join();
        (unbound, left, took)
    });
    unbound?;
    check_eq!(
        left?,
        odp_base,
        "odp_hmm's registrations as the unbind returned (after {took:?})"
    );
    println!(
        "# close of a file with {REGS} registrations raced the unbind ({took:?}): none was left once it returned"
    );
    rebind(&bdf)
}

/// Unbinding the device with a live registration releases it (odp_hmm wants that before the
/// device goes); the open file then gets ENODEV; the device binds again.
fn unbind_with_live_registration() -> TestResult {
    let ps = page_size();
    let bdf = nic_bdf()?;
    let nic = Nic::open()?;
    let mut m = Mapping::anon(2 * ps)?;
    mark_page(&mut m.bytes_mut()[..ps], 0x61, 0);
    let handle = nic.register(m.addr(), 2 * ps, RW, 0)?;
    let (got, _) = nic.read(handle, m.addr(), ps)?;
    check!(got == page(&m, 0), "read before the unbind");
    let odp_before = odp_live_registrations()?;

    fs::write("/sys/bus/pci/drivers/odp_nic/unbind", &bdf)?;
    check!(driver_of(&bdf).is_none(), "{bdf} still bound");
    expect_errno(
        nic.read(handle, m.addr(), ps),
        libc::ENODEV,
        "read after the unbind",
    )?;
    expect_errno(nic.counters(0), libc::ENODEV, "counters after the unbind")?;
    check_eq!(
        odp_live_registrations()?,
        odp_before - 1,
        "odp_hmm's registrations after the unbind"
    );
    drop(nic);

    rebind(&bdf)?;
    let nic = Nic::open()?;
    let handle = nic.register(m.addr(), 2 * ps, RW, 0)?;
    let (got, w) = nic.read(handle, m.addr(), ps)?;
    check!(got == page(&m, 0), "read after the rebind");
    check_eq!(w.faults, 1, "faults of the first read after the rebind");
    Ok(())
}

/// `rmmod odp_nic` is refused while a file is open (its fops' owner), and works once it is
/// closed; odp_hmm's reference count is 0 afterwards.
fn unload_refused_while_open() -> TestResult {
    let ps = page_size();
    let bdf = nic_bdf()?;
    if !module_loaded("odp_nic") {
        skip!("odp_nic is not loaded");
    }
    {
        let nic = Nic::open()?;
        let m = Mapping::anon(ps)?;
        let handle = nic.register(m.addr(), ps, RW, 0)?;
        nic.prefetch(handle, m.addr(), ps, false)?;
        let (rc, out) = sh("rmmod odp_nic");
        check!(rc != 0, "rmmod odp_nic with an open file succeeded");
        check!(module_loaded("odp_nic"), "odp_nic is gone");
        println!(
            "# rmmod odp_nic with a live registration refused: {}",
            out.trim()
        );
    }
    let (rc, out) = sh("rmmod odp_nic");
    check_eq!(rc, 0, "rmmod odp_nic once closed: {out}");
    check!(!module_loaded("odp_nic"), "odp_nic still loaded");
    check!(driver_of(&bdf).is_none(), "{bdf} still bound");
    let refcnt = fs::read_to_string("/sys/module/odp_hmm/refcnt")?;
    check_eq!(refcnt.trim(), "0", "odp_hmm's reference count");
    Ok(())
}
