// SPDX-License-Identifier: GPL-2.0

//! Devices that go away or hang, long work that is killed, calls racing an unregister, and the
//! device buffer shared between open files.

use std::{
    env, fs,
    io::{
        Read,
        Write, //
    },
    os::fd::AsRawFd,
    sync::{
        atomic::{
            AtomicBool,
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

/// Tests for the `odp` group.
pub const ODP: &[&Test] = &[
    &Test {
        name: "fault_racing_unregister_enoent_not_enodev",
        run: fault_racing_unregister,
    },
    &Test {
        name: "device_buffer_wiped_between_files",
        run: device_buffer_wiped,
    },
];

/// The `robustness` group: the copy engine timing out, and a long fault killed.
pub const TESTS: &[&Test] = &[
    &Test {
        name: "copy_timeout_disables_engine_until_rebind",
        run: copy_timeout,
    },
    &Test {
        name: "fatal_signal_stops_long_fault",
        run: fatal_signal_stops_fault,
    },
];

/// The `dma-device-remove` group: the module loaded with `dma_device=` naming a PCI device that
/// the test removes from the bus (scripts/test.sh: the NVMe controller of the p2p-rc topology).
pub const DMA_DEVICE_REMOVE: &[&Test] = &[&Test {
    name: "removing_dma_device_revokes_registrations",
    run: removing_dma_device,
}];

/// The edu driver's sysfs directory.
const EDU_DRIVER: &str = "/sys/bus/pci/drivers/odp_hmm_edu";

fn ps() -> usize {
    page_size()
}

/// A fault over a large range in one thread while another thread of the same process
/// unregisters the handle: the fault succeeds or fails with `ENOENT` (the handle went), never
/// `ENODEV` (the device is still there).
fn fault_racing_unregister() -> TestResult {
    const ROUNDS: usize = 20;
    // 8192 pages: 16 fault batches, so an unregister lands inside a call, not between two.
    const LEN: usize = 32 << 20;
    let m = Mapping::anon(LEN)?;
    m.advise(0, LEN, libc::MADV_NOHUGEPAGE)?;
    let dev = Arc::new(Device::open()?);
    let mut inside = 0;
    for round in 0..ROUNDS {
        let reg = dev.register(m.addr(), LEN as u64, RW, 0)?;
        let started = Arc::new(AtomicBool::new(false));
        let faulter = {
            let (dev, started) = (dev.clone(), started.clone());
            let addr = m.addr();
            thread::spawn(move || -> (std::io::Error, Instant, u32) {
                let mut calls = 0;
                loop {
                    let begun = Instant::now();
                    started.store(true, Ordering::Release);
                    match dev.fault(reg.handle, addr, LEN as u64, ODP_HMM_FAULT_WRITE) {
                        Ok(_) => calls += 1,
                        Err(e) => return (e, begun, calls),
                    }
                }
            })
        };
        while !started.load(Ordering::Acquire) {
            thread::yield_now();
        }
        // Somewhere inside the first calls.
        thread::sleep(Duration::from_millis(5 + 7 * round as u64));
        let unregistering = Instant::now();
        dev.unregister(reg.handle)?;
        let (err, begun, calls) = faulter.join().map_err(|_| "the faulting thread panicked")?;
        check!(
            err.raw_os_error() == Some(libc::ENOENT),
            "round {round}: a fault racing the unregister failed with {err} (after {calls} \
             complete calls), not ENOENT"
        );
        if begun < unregistering {
            inside += 1;
        }
    }
    println!("# {inside} of {ROUNDS} unregisters landed while a fault call was running");
    check!(
        inside > 0,
        "no unregister came while a fault was running: the race was not tested"
    );
    check_eq!(dev.stats(0)?.registrations, 0, "registrations left");
    Ok(())
}

/// Whether some 16-byte aligned chunk of `got` equals the same chunk of `secret`.
fn leaks(got: &[u8], secret: &[u8]) -> Option<usize> {
    got.chunks(16)
        .zip(secret.chunks(16))
        .position(|(a, b)| a == b)
        .map(|c| c * 16)
}

/// File A moves secret bytes through the device buffer; file B (another open) reads the buffer:
/// it must not see them.
fn device_buffer_wiped() -> TestResult {
    let a = Device::open()?;
    if a.info()?.flags & ODP_HMM_INFO_COPY_ENGINE == 0 {
        skip!("the DMA device has no copy engine");
    }
    let b = Device::open()?;
    let mut secret = Mapping::anon(ps())?;
    mark_page(secret.bytes_mut(), 0x77, 0);
    let mut out_a = Mapping::anon(ps())?;
    out_a.bytes_mut().fill(0x44);
    let secret_reg = a.register(secret.addr(), ps() as u64, ODP_HMM_ACCESS_READ, 0)?;
    let out_a_reg = a.register(out_a.addr(), ps() as u64, RW, 0)?;
    let to_buffer = |dev: &Device, handle, addr| {
        dev.dma(&odp_hmm_dma {
            flags: ODP_HMM_DMA_DST_DEVBUF,
            src_handle: handle,
            src_addr: addr,
            dst_addr: 0,
            length: ps() as u64,
            ..Default::default()
        })
    };
    let from_buffer = |dev: &Device, handle, addr| {
        dev.dma(&odp_hmm_dma {
            flags: ODP_HMM_DMA_SRC_DEVBUF,
            src_addr: 0,
            dst_handle: handle,
            dst_addr: addr,
            length: ps() as u64,
            ..Default::default()
        })
    };
    to_buffer(&a, secret_reg.handle, secret.addr())?;
    // The buffer does hold A's bytes (A reads them back).
    from_buffer(&a, out_a_reg.handle, out_a.addr())?;
    check!(
        out_a.bytes() == secret.bytes(),
        "file A did not read its own bytes back from the device buffer"
    );
    let mut out_b = Mapping::anon(ps())?;
    out_b.bytes_mut().fill(0x33);
    let out_b_reg = b.register(out_b.addr(), ps() as u64, RW, 0)?;
    from_buffer(&b, out_b_reg.handle, out_b.addr())?;
    if let Some(at) = leaks(out_b.bytes(), secret.bytes()) {
        return Err(Outcome::Fail(format!(
            "file B read file A's bytes from the device buffer (at offset {at})"
        )));
    }
    println!(
        "# file B read {} from the device buffer",
        if out_b.bytes().iter().all(|&x| x == 0) {
            "zeros"
        } else {
            "bytes that are not file A's"
        }
    );
    Ok(())
}

/// `copy_timeout_ms=1`: a copy times out (`ETIMEDOUT`), the engine is disabled (`EIO`) until the
/// edu device is rebound; the destination holds what a completed copy would have written or its
/// old bytes; after the rebind copies work again.
fn copy_timeout() -> TestResult {
    let dev = Device::open()?;
    let info = dev.info()?;
    if !info.is_edu() {
        skip!("the DMA device is not an edu this module drives");
    }
    let bdf = info.pci_address();
    let mut m = Mapping::anon(3 * ps())?;
    for i in 0..3 {
        mark_page(&mut m.bytes_mut()[i * ps()..(i + 1) * ps()], 0x90, i);
    }
    let reg = dev.register(m.addr(), m.len() as u64, RW, 0)?;
    // A complete copy first: this file owns the buffer, so the timed-out transfer is the copy's
    // own, not the wipe of a new owner's buffer.
    copy_in(&dev, &m, &reg, 2 * ps(), 2 * ps() + 8, 8)?;
    let (off, len) = (100, 1000);
    let old = m.bytes()[ps()..2 * ps()].to_vec();
    let mut done = old.clone();
    done[off..off + len].copy_from_slice(&m.bytes()[off..off + len]);
    {
        let _timeout = ModuleParam::set("copy_timeout_ms", "1")?;
        expect_errno(
            copy_in(&dev, &m, &reg, off, ps() + off, len),
            libc::ETIMEDOUT,
            "a copy that takes longer than copy_timeout_ms=1",
        )?;
        expect_errno(
            copy_in(&dev, &m, &reg, off, ps() + off, len),
            libc::EIO,
            "a copy after the timeout",
        )?;
    }
    expect_errno(
        copy_in(&dev, &m, &reg, off, ps() + off, len),
        libc::EIO,
        "a copy after the timeout, copy_timeout_ms restored",
    )?;
    dev.info()?;
    let dst = m.bytes()[ps()..2 * ps()].to_vec();
    check!(
        dst == old || dst == done,
        "after the timeout the destination page holds neither its old bytes nor the copy's \
         (first difference from the old bytes at offset {:?})",
        dst.iter().zip(&old).position(|(a, b)| a != b)
    );
    println!(
        "# after the timeout the destination holds {}",
        if dst == old {
            "its old bytes"
        } else {
            "the completed copy"
        }
    );
    // The device's own transfer (100 ms of virtual time) ends with bus mastering off before the
    // driver lets it master again.
    thread::sleep(Duration::from_millis(500));
    fs::write(format!("{EDU_DRIVER}/unbind"), &bdf)?;
    fs::write(format!("{EDU_DRIVER}/bind"), &bdf)?;
    expect_errno(
        dev.fault(reg.handle, m.addr(), ps() as u64, 0),
        libc::ENODEV,
        "a fault on a registration of the unbound device",
    )?;
    dev.unregister(reg.handle)?;
    let reg = dev.register(m.addr(), m.len() as u64, RW, 0)?;
    copy_in(&dev, &m, &reg, off, ps() + off, len)?;
    check!(
        m.bytes()[ps()..2 * ps()] == done[..],
        "the copy after the rebind wrote other bytes than the copy's, or beyond its length"
    );
    Ok(())
}

/// Pages the killed child's fault covers: 1 GiB, in 512 fault batches; far more than it can
/// fault (zero-fill, map) in the time before the kill under emulation.
const LONG_FAULT: usize = 1 << 30;

/// A child registers 1 GiB and faults it all in one FAULT call; the parent kills it soon after
/// the call began. The fault loop checks for a fatal signal between batches: the registration's
/// counters (read through a copy of the child's file, `pidfd_getfd()`) show it stopped early.
fn fatal_signal_stops_fault() -> TestResult {
    let npages = (LONG_FAULT / ps()) as u64;
    for delay_ms in [300u64, 1000, 3000] {
        let (mut report_rx, report_tx) = pipe()?;
        let (go_rx, go_tx) = pipe()?;
        let mut child = Child::spawn(move || long_fault_child(report_tx, go_rx))?;
        let mut report = [0u8; 16];
        report_rx
            .read_exact(&mut report)
            .map_err(|e| format!("the child did not register: {e}"))?;
        let word = |i: usize| u64::from_le_bytes(report[i * 8..i * 8 + 8].try_into().expect("8"));
        let (fd, handle) = (word(0), word(1));
        let pidfd = pidfd_open(child.pid())?;
        let dev = Device::from_file(pidfd_getfd(&pidfd, fd as i32)?);
        (&go_tx).write_all(&[1])?;
        thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: `kill` takes no pointers; the pid is our child, not yet waited for.
        if unsafe { libc::kill(child.pid(), libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let code = child.wait()?;
        check!(
            code == 128 + libc::SIGKILL,
            "the child ended with {code} before the kill: the whole 1 GiB fault took less than \
             {delay_ms} ms (0: it finished, 3: it failed)"
        );
        let st = dev.stats(handle)?;
        if st.pages_faulted == 0 {
            println!("# killed after {delay_ms} ms, before the first batch: again, later");
            continue;
        }
        check!(
            st.pages_faulted < npages,
            "the killed fault went on to fault all {npages} pages"
        );
        println!(
            "# killed {delay_ms} ms into the fault: it stopped after {} of {npages} pages ({} \
             batches)",
            st.pages_faulted, st.faults
        );
        return Ok(());
    }
    Err("every kill came before the fault's first batch".into())
}

/// The child of [`fatal_signal_stops_fault`]: registers [`LONG_FAULT`] bytes, reports its file
/// descriptor and the handle, waits for the go, and faults everything in one call.
fn long_fault_child(mut report: fs::File, mut go: fs::File) -> i32 {
    let mut run = || -> std::io::Result<i32> {
        let m = Mapping::new(
            LONG_FAULT,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
        )?;
        // 4 KiB pages: as many batches, and as much work per batch, as it gets.
        m.advise(0, LONG_FAULT, libc::MADV_NOHUGEPAGE)?;
        let (dev, reg) = register(&m, RW)?;
        let fd = dev.file().as_raw_fd() as u64;
        report.write_all(&[fd.to_le_bytes(), reg.handle.to_le_bytes()].concat())?;
        go.read_exact(&mut [0u8])?;
        Ok(
            match dev.fault(reg.handle, m.addr(), LONG_FAULT as u64, ODP_HMM_FAULT_WRITE) {
                Ok(_) => 0,
                Err(_) => 3,
            },
        )
    };
    run().unwrap_or(1)
}

fn removing_dma_device() -> TestResult {
    let dev = Device::open()?;
    let wanted = env::var("ODP_HMM_MODULE_ARGS").unwrap_or_default();
    let Some(addr) = wanted
        .split_whitespace()
        .find_map(|a| a.strip_prefix("dma_device="))
    else {
        skip!("the module was loaded without dma_device=");
    };
    check_eq!(dev.info()?.pci_address(), addr, "the DMA device in use");
    let mut m = Mapping::anon(8 * ps())?;
    m.fill_page(0, 1);
    let reg = dev.register(m.addr(), m.len() as u64, RW, 0)?;
    dev.fault(reg.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE)?;
    check_eq!(dev.stats(reg.handle)?.pages_now, 8, "pages mapped");
    fs::write(format!("/sys/bus/pci/devices/{addr}/remove"), "1")?;
    let result = (|| -> TestResult {
        check!(
            fs::metadata(format!("/sys/bus/pci/devices/{addr}")).is_err(),
            "{addr} is still on the bus"
        );
        expect_errno(
            dev.fault(reg.handle, m.addr(), ps() as u64, 0),
            libc::ENODEV,
            "fault after the device's removal",
        )?;
        expect_errno(
            dev.snapshot(reg.handle, m.addr(), 1),
            libc::ENODEV,
            "snapshot after the device's removal",
        )?;
        check_eq!(
            dev.stats(reg.handle)?.pages_now,
            0,
            "pages mapped after the removal"
        );
        expect_errno(
            dev.register(m.addr(), m.len() as u64, RW, 0),
            libc::ENODEV,
            "a new registration without a DMA device",
        )?;
        dev.unregister(reg.handle)?;
        Ok(())
    })();
    // Put the device back for whatever runs next (the module does not take it again).
    let rescan = fs::write("/sys/bus/pci/rescan", "1");
    result?;
    rescan?;
    check!(
        fs::metadata(format!("/sys/bus/pci/devices/{addr}")).is_ok(),
        "{addr} did not come back with a rescan"
    );
    println!(
        "# after the rescan INFO says {}",
        match dev.info() {
            Ok(i) => format!("{} is the DMA device", i.pci_address()),
            Err(e) => e.to_string(),
        }
    );
    Ok(())
}
