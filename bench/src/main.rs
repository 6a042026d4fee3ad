// SPDX-License-Identifier: GPL-2.0

//! odp_hmm_bench: fault-and-map and invalidate-and-unmap costs of the mapping backends, side by
//! side in one run. Runs as root inside the VM (scripts/bench.sh), writes JSON records.
//!
//! For every IOMMU mode (the DMA device's IOMMU group is switched at run time through sysfs:
//! `DMA` = strict, `DMA-FQ` = lazy, `identity` = passthrough), page kind (4 KiB or THP), region
//! size and repetition, each variant in turn (rotated per repetition, so every variant sees the
//! same machine state on average):
//!
//! 1. maps and populates a region (the cost measured is mapping for the device, not allocating
//!    memory), registers it with the variant's backend;
//! 2. faults the whole region for writing: wall time, and the module's own split of it;
//! 3. unmaps one 4 KiB page in every 64 (scattered holes): wall time;
//! 4. unmaps the rest: wall time;
//! 5. records the call counts and bookkeeping from `ODP_HMM_IOC_STATS`.
//!
//! Absolute times under TCG mean little; ratios between variants measured in the same run do.

use std::{fs, io::Write, time::Instant};

use odp_hmm_uapi::*;

const HUGE: usize = 2 << 20;

/// Every how many pages the scattered-hole pass unmaps one.
const HOLE_STRIDE: usize = 64;

struct Config {
    sizes: Vec<usize>,
    reps: usize,
    modes: Vec<String>,
    kinds: Vec<String>,
    variants: Vec<u32>,
    out: String,
}

fn usage() -> ! {
    eprintln!(
        "usage: odp_hmm_bench [--sizes 2M,8M,...] [--reps N] [--modes strict,lazy,passthrough]\n\
         \x20                    [--kinds 4k,thp] [--variants rust,kernel,legacy,none] [--out FILE]"
    );
    std::process::exit(2)
}

fn parse_args() -> Config {
    let mut c = Config {
        sizes: [2, 8, 32, 64, 128, 512].iter().map(|m| m << 20).collect(),
        reps: 5,
        modes: vec!["strict".into(), "lazy".into(), "passthrough".into()],
        kinds: vec!["4k".into(), "thp".into()],
        variants: vec![
            ODP_HMM_BACKEND_RUST,
            ODP_HMM_BACKEND_KERNEL,
            ODP_HMM_BACKEND_LEGACY,
            ODP_HMM_BACKEND_NONE,
        ],
        out: "bench.json".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| usage());
        let list = |s: String| s.split(',').map(str::to_string).collect::<Vec<_>>();
        match a.as_str() {
            "--sizes" => {
                c.sizes = list(v())
                    .iter()
                    .map(|s| parse_size(s).unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--reps" => c.reps = v().parse().unwrap_or_else(|_| usage()),
            "--modes" => c.modes = list(v()),
            "--kinds" => c.kinds = list(v()),
            "--variants" => {
                c.variants = list(v())
                    .iter()
                    .map(|n| backend_from_name(n).unwrap_or_else(|| usage()))
                    .collect()
            }
            "--out" => c.out = v(),
            _ => usage(),
        }
    }
    c
}

/// The sysfs directory of the DMA device.
fn dma_device_dir(info: &odp_hmm_info) -> String {
    format!("/sys/bus/pci/devices/{}", info.pci_address())
}

/// Switches the DMA device's IOMMU group to `mode`: the driver lets go of the device, the
/// group's default domain is replaced, the driver binds again.
fn set_mode(info: &odp_hmm_info, mode: &str) -> Result<(), String> {
    let group_type = match mode {
        "strict" => "DMA",
        "lazy" => "DMA-FQ",
        "passthrough" => "identity",
        _ => return Err(format!("unknown IOMMU mode {mode}")),
    };
    let dir = dma_device_dir(info);
    let bdf = dir.rsplit('/').next().unwrap_or_default().to_string();
    let type_path = format!("{dir}/iommu_group/type");
    let current = fs::read_to_string(&type_path).map_err(|e| format!("{type_path}: {e}"))?;
    if current.trim() == group_type {
        return Ok(());
    }
    let driver = "/sys/bus/pci/drivers/odp_hmm_edu";
    fs::write(format!("{driver}/unbind"), &bdf).map_err(|e| format!("unbind: {e}"))?;
    let set =
        fs::write(&type_path, group_type).map_err(|e| format!("{type_path} <- {group_type}: {e}"));
    fs::write(format!("{driver}/bind"), &bdf).map_err(|e| format!("bind: {e}"))?;
    set?;
    let now = fs::read_to_string(&type_path).unwrap_or_default();
    if now.trim() != group_type {
        return Err(format!(
            "IOMMU group type is {} after asking for {group_type}",
            now.trim()
        ));
    }
    Ok(())
}

/// A populated region of `len` bytes, 4 KiB pages or THP.
struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    fn new(len: usize, thp: bool) -> Result<Self, String> {
        // SAFETY: A fresh mapping chosen by the kernel, with room to align it to 2 MiB.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + HUGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        let start = (raw as usize + HUGE - 1) & !(HUGE - 1);
        let head = start - raw as usize;
        // SAFETY: Trims our own mapping to `start..start + len`, then advises and populates it.
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            libc::munmap((start + len) as *mut libc::c_void, HUGE - head);
            let advice = if thp {
                libc::MADV_HUGEPAGE
            } else {
                libc::MADV_NOHUGEPAGE
            };
            libc::madvise(start as *mut libc::c_void, len, advice);
            let ps = page_size();
            for off in (0..len).step_by(ps) {
                *((start + off) as *mut u8) = off as u8;
            }
        }
        Ok(Self {
            ptr: start as *mut u8,
            len,
        })
    }

    fn addr(&self) -> u64 {
        self.ptr as u64
    }

    fn unmap(&self, off: usize, len: usize) {
        // SAFETY: Part of our own mapping.
        unsafe { libc::munmap(self.ptr.add(off).cast(), len) };
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.unmap(0, self.len);
    }
}

/// Bytes of THP backing this process, from /proc/self/smaps_rollup.
fn anon_huge_kb() -> u64 {
    fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("AnonHugePages:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One measurement.
struct Record {
    mode: String,
    kind: String,
    size: usize,
    rep: usize,
    variant: u32,
    dma_mode: u32,
    thp_kb: u64,
    fault_wall_ns: u64,
    holes: usize,
    holes_wall_ns: u64,
    unmap_wall_ns: u64,
    stats_fault: odp_hmm_stats,
    stats_end: odp_hmm_stats,
}

fn ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

fn measure(
    dev: &Device,
    mode: &str,
    kind: &str,
    size: usize,
    rep: usize,
    variant: u32,
) -> Result<Record, String> {
    let ps = page_size();
    let region = Region::new(size, kind == "thp")?;
    let thp_kb = anon_huge_kb();
    let reg = dev
        .register(
            region.addr(),
            size as u64,
            ODP_HMM_ACCESS_READ | ODP_HMM_ACCESS_WRITE,
            variant,
        )
        .map_err(|e| format!("register: {e}"))?;
    let t = Instant::now();
    dev.fault(reg.handle, region.addr(), size as u64, ODP_HMM_FAULT_WRITE)
        .map_err(|e| format!("fault: {e}"))?;
    let fault_wall_ns = ns(t);
    let stats_fault = dev.stats(reg.handle).map_err(|e| format!("stats: {e}"))?;
    // Scattered 4 KiB holes.
    let t = Instant::now();
    let mut holes = 0;
    for off in (0..size).step_by(HOLE_STRIDE * ps) {
        region.unmap(off + ps * (HOLE_STRIDE / 2), ps);
        holes += 1;
    }
    let holes_wall_ns = ns(t);
    // The whole region.
    let t = Instant::now();
    region.unmap(0, size);
    let unmap_wall_ns = ns(t);
    let stats_end = dev.stats(reg.handle).map_err(|e| format!("stats: {e}"))?;
    dev.unregister(reg.handle)
        .map_err(|e| format!("unregister: {e}"))?;
    Ok(Record {
        mode: mode.into(),
        kind: kind.into(),
        size,
        rep,
        variant,
        dma_mode: reg.dma_mode,
        thp_kb,
        fault_wall_ns,
        holes,
        holes_wall_ns,
        unmap_wall_ns,
        stats_fault,
        stats_end,
    })
}

fn json(r: &Record, ps: usize) -> String {
    let s = &r.stats_fault;
    let e = &r.stats_end;
    format!(
        "{{\"mode\":\"{}\",\"kind\":\"{}\",\"size\":{},\"pages\":{},\"rep\":{},\"variant\":\"{}\",\
         \"dma_mode\":\"{}\",\"thp_kb\":{},\"fault_wall_ns\":{},\"holes\":{},\"holes_wall_ns\":{},\
         \"unmap_wall_ns\":{},\"pages_mapped\":{},\"link_calls\":{},\"sync_calls\":{},\
         \"unlink_calls\":{},\"bookkeeping_bytes\":{},\"iova_bytes\":{},\"fault_ns\":{},\
         \"map_ns\":{},\"sync_ns\":{},\"link_ns\":{},\"unmap_ns\":{},\"pages_unmapped\":{},\
         \"faults\":{},\"fault_retries\":{}}}",
        r.mode,
        r.kind,
        r.size,
        r.size / ps,
        r.rep,
        backend_name(r.variant),
        dma_mode_name(r.dma_mode),
        r.thp_kb,
        r.fault_wall_ns,
        r.holes,
        r.holes_wall_ns,
        r.unmap_wall_ns,
        s.pages_mapped,
        s.link_calls,
        s.sync_calls,
        e.unlink_calls,
        s.bookkeeping_bytes,
        s.iova_bytes,
        s.fault_ns,
        s.map_ns,
        s.sync_ns,
        s.link_ns,
        e.unmap_ns,
        e.pages_unmapped,
        s.faults,
        s.fault_retries,
    )
}

fn run(c: &Config) -> Result<(), String> {
    let ps = page_size();
    let info = Device::open()
        .and_then(|d| d.info())
        .map_err(|e| format!("info: {e}"))?;
    let mut out = fs::File::create(&c.out).map_err(|e| format!("{}: {e}", c.out))?;
    writeln!(out, "[").map_err(|e| e.to_string())?;
    let mut first = true;
    let total = c.modes.len() * c.kinds.len() * c.sizes.len() * c.reps * c.variants.len();
    let mut done = 0;
    for mode in &c.modes {
        set_mode(&info, mode)?;
        // The device was rebound: open it again.
        let dev = Device::open().map_err(|e| format!("open: {e}"))?;
        let now = dev.info().map_err(|e| format!("info: {e}"))?;
        eprintln!(
            "# mode {mode}: IOMMU domain {}",
            domain_name(now.domain_type)
        );
        for kind in &c.kinds {
            for rep in 0..c.reps {
                for &size in &c.sizes {
                    // Rotate the order of the variants from one repetition to the next.
                    let n = c.variants.len();
                    for i in 0..n {
                        let variant = c.variants[(i + rep) % n];
                        let r = measure(&dev, mode, kind, size, rep, variant)?;
                        done += 1;
                        eprintln!(
                            "# [{done}/{total}] {mode} {kind} {:>4} MiB rep {rep} {:<6} fault {:>9.3} ms ({:.0} ns/page)",
                            size >> 20,
                            backend_name(variant),
                            r.fault_wall_ns as f64 / 1e6,
                            r.fault_wall_ns as f64 / (size / ps) as f64
                        );
                        let sep = if first { "" } else { "," };
                        first = false;
                        writeln!(out, "{sep}{}", json(&r, ps)).map_err(|e| e.to_string())?;
                    }
                }
            }
        }
    }
    writeln!(out, "]").map_err(|e| e.to_string())?;
    // Leave the device as the harness found it.
    set_mode(&info, "strict")?;
    Ok(())
}

fn main() {
    let c = parse_args();
    if let Err(e) = run(&c) {
        eprintln!("odp_hmm_bench: {e}");
        std::process::exit(1);
    }
}
