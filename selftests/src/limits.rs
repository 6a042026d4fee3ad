// SPDX-License-Identifier: GPL-2.0

//! Registrations at the limits: sizes far beyond memory (the per-file limit `file_limit_mb`
//! refuses them with `ENOSPC`; without the limit they either work or fail with `ENOMEM`, never
//! with a warning or the OOM killer: the VM harness scans the log), and many registrations on
//! one file.

use std::{collections::HashSet, time::Instant};

use odp_hmm_uapi::*;

use crate::{
    check, check_eq,
    ktap::{
        Outcome,
        Test,
        TestResult, //
    },
    util::*,
};

/// Tests for the `odp` group.
pub const TESTS: &[&Test] = &[
    &Test {
        name: "register_256g_to_64t_enospc_then_enomem_or_ok",
        run: huge_registrations,
    },
    &Test {
        name: "register_10000_on_one_file",
        run: many_registrations,
    },
];

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// The sizes, and whether their reservation is readable and writable (else `PROT_NONE`).
const SIZES: &[(&str, u64, bool)] = &[
    ("256 GiB", 256 * GIB, true),
    ("1 TiB", TIB, true),
    ("16 TiB", 16 * TIB, false),
    ("64 TiB", 64 * TIB, false),
];

/// An address-space reservation of `len` bytes: nothing is committed (`MAP_NORESERVE`).
fn reserve(len: u64, rw: bool) -> std::io::Result<Mapping> {
    let prot = if rw {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_NONE
    };
    Mapping::new(
        len as usize,
        prot,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
    )
}

fn huge_registrations() -> TestResult {
    let limit_mb: u64 = module_param("file_limit_mb")?
        .parse()
        .map_err(|e| format!("file_limit_mb: {e}"))?;
    check!(
        limit_mb != 0 && limit_mb << 20 < SIZES[0].1,
        "file_limit_mb is {limit_mb}: no limit below the sizes tested"
    );
    let dev = Device::open()?;
    let mut reservations = Vec::new();
    for &(what, len, rw) in SIZES {
        let m = reserve(len, rw).map_err(|e| format!("reserving {what}: {e}"))?;
        let flags = if rw { RW } else { ODP_HMM_ACCESS_READ };
        expect_errno(
            dev.register(m.addr(), len, flags, 0),
            libc::ENOSPC,
            &format!("{what} with file_limit_mb={limit_mb}"),
        )?;
        reservations.push((what, m, flags));
    }
    check_eq!(
        dev.stats(0)?.registrations,
        0,
        "registrations left by refused calls"
    );

    let _no_limit = ModuleParam::set("file_limit_mb", "0")?;
    for (what, m, flags) in &reservations {
        let len = m.len() as u64;
        let start = Instant::now();
        match dev.register(m.addr(), len, *flags, 0) {
            Ok(reg) => {
                let st = dev.stats(reg.handle)?;
                let npages = len / page_size() as u64;
                check!(
                    st.bookkeeping_bytes <= 16 * npages,
                    "{what}: {} B of bookkeeping",
                    st.bookkeeping_bytes
                );
                if reg.dma_mode == ODP_HMM_DMA_MODE_IOVA {
                    check_eq!(st.iova_bytes, len, "{what}: IOVA reserved");
                }
                if *flags == RW {
                    // It works: a page in the middle faults and maps.
                    dev.fault(
                        reg.handle,
                        m.addr() + len / 2,
                        page_size() as u64,
                        ODP_HMM_FAULT_WRITE,
                    )?;
                    check_eq!(
                        dev.stats(reg.handle)?.pages_now,
                        1,
                        "{what}: pages mapped after one fault"
                    );
                }
                dev.unregister(reg.handle)?;
                println!(
                    "# {what}: registered ({} mode, {} MiB of bookkeeping) and unregistered in \
                     {:.1} s",
                    dma_mode_name(reg.dma_mode),
                    st.bookkeeping_bytes >> 20,
                    start.elapsed().as_secs_f64()
                );
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {
                println!(
                    "# {what}: ENOMEM without a limit ({:.1} s)",
                    start.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                return Err(Outcome::Fail(format!(
                    "{what} without a limit: expected success or ENOMEM, got {e}"
                )))
            }
        }
    }
    let st = dev.stats(0)?;
    check_eq!(
        (st.registrations, st.iova_bytes, st.bookkeeping_bytes),
        (0, 0, 0),
        "registrations, IOVA and bookkeeping left"
    );
    Ok(())
}

fn many_registrations() -> TestResult {
    const N: usize = 10_000;
    let ps = page_size();
    let m = Mapping::anon(N * ps)?;
    let dev = Device::open()?;
    let start = Instant::now();
    let mut handles = Vec::with_capacity(N);
    for i in 0..N {
        let reg = dev
            .register(m.addr() + (i * ps) as u64, ps as u64, RW, 0)
            .map_err(|e| format!("registration {i}: {e}"))?;
        handles.push(reg.handle);
    }
    let registered = start.elapsed();
    let st = dev.stats(0)?;
    check_eq!(st.registrations, N as u64, "registrations alive");
    check_eq!(
        handles.iter().collect::<HashSet<_>>().len(),
        N,
        "distinct handles"
    );
    // The last one works like any other.
    let last = handles[N - 1];
    let f = dev.fault(
        last,
        m.addr() + ((N - 1) * ps) as u64,
        ps as u64,
        ODP_HMM_FAULT_WRITE,
    )?;
    check_eq!(f.pages_valid, 1, "pages the last registration maps");
    for (i, &h) in handles.iter().enumerate() {
        dev.unregister(h)
            .map_err(|e| format!("unregistering {i}: {e}"))?;
    }
    let st = dev.stats(0)?;
    check_eq!(
        (
            st.registrations,
            st.pages_now,
            st.iova_bytes,
            st.bookkeeping_bytes
        ),
        (0, 0, 0, 0),
        "registrations, pages, IOVA and bookkeeping after unregistering all"
    );
    println!(
        "# {N} registrations in {:.1} s, all unregistered in {:.1} s more",
        registered.as_secs_f64(),
        (start.elapsed() - registered).as_secs_f64()
    );
    Ok(())
}
