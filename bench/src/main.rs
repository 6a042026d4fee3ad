// SPDX-License-Identifier: GPL-2.0

//! odp_hmm_bench: what mapping user memory for a device costs, per mapping backend, side by side
//! in one run. Runs as root inside the VM (scripts/bench.sh boots one VM per IOMMU model) and
//! writes one JSON record per measurement.
//!
//! For every IOMMU mode asked for (the DMA device's IOMMU group is switched at run time through
//! sysfs: `DMA` = strict, `DMA-FQ` = lazy, `identity` = passthrough; the type the group actually
//! got is recorded as `domain`), each variant in turn, rotated per repetition so that every
//! variant sees the same machine state on average:
//!
//! - `region`: a region of each memory kind (contiguous, fragmented, THP, hugetlb: `memory.rs`) is
//!   registered (timed: the pinned variant pins and maps everything there), faulted whole for
//!   writing in one call (timed, with the module's own split of the time), then one 4 KiB page,
//!   one 2 MiB block and the rest are unmapped, each timed (wall) with the time the module's
//!   notifier spent unmapping; then unregistered (timed);
//! - `faults`: faults of 1, 8, 64 and 512 pages per call at random offsets of a registered region,
//!   as a NIC's page faults come: each call timed;
//! - `threads`: one thread faulting a region of contiguous 4 KiB pages (eight times the others,
//!   so that the work dwarfs starting the threads) against two threads faulting its halves at
//!   once, in one registration (the update lock must not serialize `hmm_range_fault()`);
//! - `dma_map_benchmark`: the kernel's own benchmark of one `dma_map_single()` of 1 and 512 pages
//!   on the same device (`dmabench.rs`).
//!
//! Before the measurements of each mode, every variant runs every test once at 4 MiB, unrecorded
//! (`--no-warm-up` skips it): under TCG the first run of a kernel path pays for translating its
//! code. Absolute times under TCG mean little; ratios between variants measured in the same run
//! do.

mod dmabench;
mod json;
mod memory;

use std::{
    fs,
    io::Write,
    sync::atomic::{
        AtomicBool,
        AtomicUsize,
        Ordering, //
    },
    time::Instant, //
};

use json::Obj;
use memory::{
    HugetlbPool,
    Region,
    HUGE, //
};
use odp_hmm_uapi::*;

/// Read-write registrations, faulted for writing.
const RW: u32 = ODP_HMM_ACCESS_READ | ODP_HMM_ACCESS_WRITE;

#[derive(Clone)]
struct Config {
    iommu: String,
    modes: Vec<String>,
    memory: Vec<String>,
    fault_memory: Vec<String>,
    variants: Vec<u32>,
    size: usize,
    reps: usize,
    fault_pages: Vec<usize>,
    /// Most calls per fault size, and the pages they should cover.
    max_calls: usize,
    call_pages: usize,
    threads: bool,
    warm_up: bool,
    /// The two-thread test's region, in regions (long enough to dwarf starting the threads).
    thread_scale: usize,
    dma_tool: Option<String>,
    dma_seconds: u32,
    out: String,
    seed: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: odp_hmm_bench [--iommu LABEL] [--modes strict,lazy,passthrough]\n\
         \x20   [--memory contiguous,fragmented,thp,hugetlb]\n\
         \x20   [--fault-memory contiguous,fragmented,thp]\n\
         \x20   [--variants rust,kernel,legacy,none,pinned] [--size 64M] [--reps N]\n\
         \x20   [--fault-pages 1,8,64,512] [--max-calls N] [--call-pages N] [--no-threads]\n\
         \x20   [--thread-scale N] [--no-warm-up]\n\
         \x20   [--dma-tool PATH] [--dma-seconds N] [--seed N] [--out FILE]"
    );
    std::process::exit(2)
}

fn parse_args() -> Config {
    let mut c = Config {
        iommu: "unknown".into(),
        modes: vec!["strict".into()],
        memory: memory::KINDS.iter().map(|k| k.to_string()).collect(),
        fault_memory: vec!["contiguous".into(), "fragmented".into(), "thp".into()],
        variants: vec![
            ODP_HMM_BACKEND_RUST,
            ODP_HMM_BACKEND_KERNEL,
            ODP_HMM_BACKEND_LEGACY,
            ODP_HMM_BACKEND_NONE,
            ODP_HMM_BACKEND_PINNED,
        ],
        size: 64 << 20,
        reps: 3,
        fault_pages: vec![1, 8, 64, 512],
        max_calls: 256,
        call_pages: 8192,
        threads: true,
        warm_up: true,
        thread_scale: 8,
        dma_tool: None,
        dma_seconds: 1,
        out: "bench.json".into(),
        seed: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| usage());
        // An empty list ("") is no item: `--memory ''` skips the region test.
        let list = |s: String| {
            s.split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let num = |s: String| s.parse::<usize>().unwrap_or_else(|_| usage());
        match a.as_str() {
            "--iommu" => c.iommu = v(),
            "--modes" => c.modes = list(v()),
            "--memory" => c.memory = list(v()),
            "--fault-memory" => c.fault_memory = list(v()),
            "--variants" => {
                c.variants = list(v())
                    .iter()
                    .map(|n| backend_from_name(n).unwrap_or_else(|| usage()))
                    .collect()
            }
            "--size" => c.size = parse_size(&v()).unwrap_or_else(|_| usage()),
            "--reps" => c.reps = num(v()),
            "--fault-pages" => c.fault_pages = list(v()).into_iter().map(num).collect(),
            "--max-calls" => c.max_calls = num(v()),
            "--call-pages" => c.call_pages = num(v()),
            "--no-threads" => c.threads = false,
            "--no-warm-up" => c.warm_up = false,
            "--thread-scale" => c.thread_scale = num(v()).max(1),
            "--dma-tool" => c.dma_tool = Some(v()),
            "--dma-seconds" => c.dma_seconds = num(v()) as u32,
            "--seed" => c.seed = num(v()) as u64,
            "--out" => c.out = v(),
            _ => usage(),
        }
    }
    for kind in c.memory.iter().chain(&c.fault_memory) {
        if !memory::KINDS.contains(&kind.as_str()) {
            usage();
        }
    }
    if c.size == 0 || c.size % HUGE != 0 || c.fault_pages.contains(&0) {
        usage();
    }
    c
}

/// The sysfs directory of the DMA device.
fn dma_device_dir(info: &odp_hmm_info) -> String {
    format!("/sys/bus/pci/devices/{}", info.pci_address())
}

/// The type of the DMA device's IOMMU group now (`DMA`, `DMA-FQ`, `identity`, ...).
fn group_type(info: &odp_hmm_info) -> String {
    let path = format!("{}/iommu_group/type", dma_device_dir(info));
    fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|_| "none".into())
}

/// Switches the DMA device's IOMMU group to `mode`: the driver lets go of the device, the
/// group's default domain is replaced, the driver binds again.
fn set_mode(info: &odp_hmm_info, mode: &str) -> Result<(), String> {
    let group_type_wanted = match mode {
        "strict" => "DMA",
        "lazy" => "DMA-FQ",
        "passthrough" => "identity",
        _ => return Err(format!("unknown IOMMU mode {mode}")),
    };
    let dir = dma_device_dir(info);
    let bdf = info.pci_address();
    let type_path = format!("{dir}/iommu_group/type");
    if group_type(info) == group_type_wanted {
        return Ok(());
    }
    let driver = "/sys/bus/pci/drivers/odp_hmm_edu";
    fs::write(format!("{driver}/unbind"), &bdf).map_err(|e| format!("unbind: {e}"))?;
    let set = fs::write(&type_path, group_type_wanted)
        .map_err(|e| format!("{type_path} <- {group_type_wanted}: {e}"));
    fs::write(format!("{driver}/bind"), &bdf).map_err(|e| format!("bind: {e}"))?;
    set?;
    let now = group_type(info);
    if now != group_type_wanted {
        return Err(format!(
            "IOMMU group type is {now} after asking for {group_type_wanted}"
        ));
    }
    Ok(())
}

/// odp_hmm's `dma_call_timers` parameter: on, the manager times its link and sync calls (the
/// split of the region tests' profile), at a clock read each, which a 1-page fault notices; the
/// kernel backend has no such timers. On for `region`, off for the rest.
fn dma_call_timers(on: bool) -> Result<(), String> {
    let path = "/sys/module/odp_hmm/parameters/dma_call_timers";
    fs::write(path, if on { "1" } else { "0" }).map_err(|e| format!("{path}: {e}"))
}

/// Nanoseconds since `start`.
fn ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// A small deterministic generator (splitmix64): the same random offsets for every variant.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// The fields every record of one measurement shares.
fn base(ctx: &Obj, test: &str, memory: &str, fault_pages: usize, variant: u32, rep: usize) -> Obj {
    ctx.clone()
        .s("test", test)
        .s("memory", memory)
        .n("fault_pages", fault_pages as u64)
        .s("variant", backend_name(variant))
        .n("rep", rep as u64)
}

/// The counters of a registration that the report uses.
fn stats_fields(o: Obj, st: &odp_hmm_stats) -> Obj {
    o.n("pages_mapped", st.pages_mapped)
        .n("link_calls", st.link_calls)
        .n("sync_calls", st.sync_calls)
        .n("unlink_calls", st.unlink_calls)
        .n("bookkeeping_bytes", st.bookkeeping_bytes)
        .n("iova_bytes", st.iova_bytes)
        .n("fault_ns", st.fault_ns)
        .n("map_ns", st.map_ns)
        .n("link_ns", st.link_ns)
        .n("sync_ns", st.sync_ns)
        .n("faults", st.faults)
        .n("fault_retries", st.fault_retries)
}

/// Unmaps `len` bytes at `off` of a registered region: the wall time, the time the module's
/// notifier spent unmapping, and the pages it unmapped.
fn timed_unmap(
    dev: &Device,
    handle: u64,
    region: &Region,
    off: usize,
    len: usize,
) -> Result<(u64, u64, u64), String> {
    let before = dev.stats(handle).map_err(|e| format!("stats: {e}"))?;
    let t = Instant::now();
    region.unmap(off, len)?;
    let wall = ns(t);
    let after = dev.stats(handle).map_err(|e| format!("stats: {e}"))?;
    Ok((
        wall,
        after.unmap_ns - before.unmap_ns,
        after.pages_unmapped - before.pages_unmapped,
    ))
}

/// One `region` measurement (see the crate documentation).
fn measure_region(
    dev: &Device,
    ctx: &Obj,
    size: usize,
    kind: &str,
    variant: u32,
    rep: usize,
) -> Result<Obj, String> {
    let ps = page_size();
    let region = Region::new(kind, size)?;
    let mean_run = region.mean_run();
    let thp_kb = region.thp_kb();
    let t = Instant::now();
    let reg = dev
        .register(region.addr(), size as u64, RW, variant)
        .map_err(|e| format!("register {}: {e}", backend_name(variant)))?;
    let register_ns = ns(t);
    let t = Instant::now();
    let faulted = dev
        .fault(reg.handle, region.addr(), size as u64, ODP_HMM_FAULT_WRITE)
        .map_err(|e| format!("fault: {e}"))?;
    let fault_wall_ns = ns(t);
    if faulted.pages_valid != (size / ps) as u64 {
        return Err(format!(
            "{} {kind}: {} of {} pages mapped after the fault",
            backend_name(variant),
            faulted.pages_valid,
            size / ps
        ));
    }
    let st = dev.stats(reg.handle).map_err(|e| format!("stats: {e}"))?;
    // One 4 KiB page inside a 2 MiB block (not at its start), one whole 2 MiB block elsewhere,
    // then the rest. A hugetlb mapping can only be unmapped in whole huge pages.
    let page_off = size / 2 + 37 * ps;
    let one = if kind == "hugetlb" {
        None
    } else {
        Some(timed_unmap(dev, reg.handle, &region, page_off, ps)?)
    };
    let huge_off = (size / 4) / HUGE * HUGE;
    let huge = timed_unmap(dev, reg.handle, &region, huge_off, HUGE)?;
    let rest = timed_unmap(dev, reg.handle, &region, 0, size)?;
    let end = dev.stats(reg.handle).map_err(|e| format!("stats: {e}"))?;
    let t = Instant::now();
    dev.unregister(reg.handle)
        .map_err(|e| format!("unregister: {e}"))?;
    let unregister_ns = ns(t);
    let mut o = base(ctx, "region", kind, size / ps, variant, rep)
        .s("dma_mode", dma_mode_name(reg.dma_mode))
        .n("size", size as u64)
        .n("pages", (size / ps) as u64)
        .opt("mean_run", mean_run)
        .n("thp_kb", thp_kb)
        .n("register_ns", register_ns)
        .n("fault_wall_ns", fault_wall_ns)
        .n("unregister_ns", unregister_ns);
    o = stats_fields(o, &st);
    if let Some((wall, notifier, pages)) = one {
        o = o
            .n("inv_page_wall_ns", wall)
            .n("inv_page_notifier_ns", notifier)
            .n("inv_page_pages", pages);
    }
    Ok(o.n("inv_huge_wall_ns", huge.0)
        .n("inv_huge_notifier_ns", huge.1)
        .n("inv_huge_pages", huge.2)
        .n("inv_rest_wall_ns", rest.0)
        .n("inv_rest_notifier_ns", rest.1)
        .n("inv_rest_pages", rest.2)
        .n("unmap_ns", end.unmap_ns))
}

/// The `faults` measurement: `calls` faults of `fp` pages each at the page offsets `starts`.
#[allow(clippy::too_many_arguments)]
fn measure_faults(
    dev: &Device,
    ctx: &Obj,
    size: usize,
    kind: &str,
    fp: usize,
    starts: &[usize],
    variant: u32,
    rep: usize,
) -> Result<Obj, String> {
    let ps = page_size();
    let region = Region::new(kind, size)?;
    let reg = dev
        .register(region.addr(), size as u64, RW, variant)
        .map_err(|e| format!("register {}: {e}", backend_name(variant)))?;
    let mut lat = Vec::with_capacity(starts.len());
    for &first in starts {
        let t = Instant::now();
        let done = dev
            .fault(
                reg.handle,
                region.addr() + (first * ps) as u64,
                (fp * ps) as u64,
                ODP_HMM_FAULT_WRITE,
            )
            .map_err(|e| format!("fault of {fp} pages at page {first}: {e}"))?;
        lat.push(ns(t));
        if done.pages_valid != fp as u64 {
            return Err(format!(
                "fault of {fp} pages at page {first}: {} mapped",
                done.pages_valid
            ));
        }
    }
    let st = dev.stats(reg.handle).map_err(|e| format!("stats: {e}"))?;
    dev.unregister(reg.handle)
        .map_err(|e| format!("unregister: {e}"))?;
    let total: u64 = lat.iter().sum();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    let o = base(ctx, "faults", kind, fp, variant, rep)
        .s("dma_mode", dma_mode_name(reg.dma_mode))
        .n("size", size as u64)
        .n("calls", lat.len() as u64)
        .f("latency_median_us", pct(0.5) as f64 / 1e3)
        .f("latency_p99_us", pct(0.99) as f64 / 1e3)
        .f("latency_max_us", lat[lat.len() - 1] as f64 / 1e3)
        .f("ns_per_page", total as f64 / (lat.len() * fp) as f64)
        .n("fault_wall_ns", total);
    Ok(stats_fields(o, &st))
}

/// The `threads` measurement: a region of `size` bytes faulted by one thread in one call, or by
/// two threads at once, one call each on its half. The threads spin until both run, then start
/// together; the time is from the start to the last one's end.
#[allow(clippy::too_many_arguments)]
fn measure_threads(
    dev: &Device,
    ctx: &Obj,
    size: usize,
    kind: &str,
    threads: usize,
    variant: u32,
    rep: usize,
) -> Result<Obj, String> {
    let ps = page_size();
    let region = Region::new(kind, size)?;
    let reg = dev
        .register(region.addr(), size as u64, RW, variant)
        .map_err(|e| format!("register {}: {e}", backend_name(variant)))?;
    let part = size / threads;
    let ready = AtomicUsize::new(0);
    let go = AtomicBool::new(false);
    let (wall, per_thread) = std::thread::scope(|s| -> Result<(u64, Vec<u64>), String> {
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                let (ready, go) = (&ready, &go);
                let addr = region.addr() + (k * part) as u64;
                s.spawn(move || {
                    ready.fetch_add(1, Ordering::AcqRel);
                    while !go.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    let done = dev.fault(reg.handle, addr, part as u64, ODP_HMM_FAULT_WRITE);
                    (Instant::now(), done)
                })
            })
            .collect();
        while ready.load(Ordering::Acquire) < threads {
            std::hint::spin_loop();
        }
        let t = Instant::now();
        go.store(true, Ordering::Release);
        let mut per_thread = Vec::new();
        for w in workers {
            let (end, done) = w.join().map_err(|_| "fault thread panicked".to_string())?;
            let done = done.map_err(|e| format!("fault: {e}"))?;
            if done.pages_valid != (part / ps) as u64 {
                return Err(format!(
                    "{} of {} pages mapped",
                    done.pages_valid,
                    part / ps
                ));
            }
            per_thread.push(end.duration_since(t).as_nanos() as u64);
        }
        let wall = per_thread.iter().copied().max().unwrap_or(0);
        Ok((wall, per_thread))
    })?;
    let st = dev.stats(reg.handle).map_err(|e| format!("stats: {e}"))?;
    dev.unregister(reg.handle)
        .map_err(|e| format!("unregister: {e}"))?;
    let o = base(ctx, "threads", kind, part / ps, variant, rep)
        .n("threads", threads as u64)
        .n("size", size as u64)
        .n("fault_wall_ns", wall)
        .n(
            "thread_min_ns",
            per_thread.iter().copied().min().unwrap_or(0),
        );
    Ok(stats_fields(o, &st))
}

/// Runs every variant through every test once at a small size, recording nothing: under TCG
/// the first run of any kernel path pays for translating its code, which would land on
/// whichever variant came first.
fn warm_up(dev: &Device, ctx: &Obj, c: &Config, rng: &mut Rng) -> Result<(), String> {
    let size = (4 << 20).min(c.size);
    let small = Config {
        size,
        max_calls: 8,
        call_pages: 64,
        ..c.clone()
    };
    for &variant in &c.variants {
        dma_call_timers(true)?;
        for kind in &c.memory {
            measure_region(dev, ctx, size, kind, variant, 0)?;
        }
        dma_call_timers(false)?;
        if variant == ODP_HMM_BACKEND_PINNED {
            continue;
        }
        for kind in &c.fault_memory {
            for &fp in &c.fault_pages {
                let starts = fault_starts(&small, fp, rng);
                measure_faults(dev, ctx, size, kind, fp, &starts, variant, 0)?;
            }
        }
    }
    Ok(())
}

/// Writes records as one JSON array, one record per line.
struct Out {
    file: fs::File,
    first: bool,
}

impl Out {
    fn create(path: &str) -> Result<Self, String> {
        let mut file = fs::File::create(path).map_err(|e| format!("{path}: {e}"))?;
        writeln!(file, "[").map_err(|e| e.to_string())?;
        Ok(Self { file, first: true })
    }

    fn push(&mut self, o: &Obj) -> Result<(), String> {
        let sep = if self.first { "" } else { "," };
        self.first = false;
        writeln!(self.file, "{sep}{}", o.render()).map_err(|e| e.to_string())
    }

    fn finish(mut self) -> Result<(), String> {
        writeln!(self.file, "]").map_err(|e| e.to_string())
    }
}

/// The page offsets of the faults of `fp` pages: non-overlapping ranges at a random phase, in
/// random order, as many as `c` asks for (and fit).
fn fault_starts(c: &Config, fp: usize, rng: &mut Rng) -> Vec<usize> {
    let npages = c.size / page_size();
    let phase = rng.below(fp);
    let mut slots: Vec<usize> = (0..)
        .map(|j| phase + j * fp)
        .take_while(|&s| s + fp <= npages)
        .collect();
    rng.shuffle(&mut slots);
    let want = (c.call_pages / fp).clamp(16.min(c.max_calls), c.max_calls);
    slots.truncate(want.min(slots.len()));
    slots
}

fn run(c: &Config) -> Result<(), String> {
    let started = Instant::now();
    let info = Device::open()
        .and_then(|d| d.info())
        .map_err(|e| format!("info: {e}"))?;
    let mut out = Out::create(&c.out)?;
    let _hugetlb = if c.memory.iter().any(|k| k == "hugetlb") {
        // The region, and a spare page.
        Some(HugetlbPool::reserve(c.size / HUGE + 1)?)
    } else {
        None
    };
    let mut rng = Rng(c.seed);
    for mode in &c.modes {
        let mode_started = Instant::now();
        set_mode(&info, mode)?;
        let domain = group_type(&info);
        eprintln!("# {} {mode}: IOMMU group type {domain}", c.iommu);
        let ctx = Obj::default()
            .s("iommu", &c.iommu)
            .s("mode", mode)
            .s("domain", &domain);

        if let Some(tool) = &c.dma_tool {
            let costs = dmabench::run(tool, &info.pci_address(), c.dma_seconds, &[1, 512])?;
            for (g, cost) in costs {
                eprintln!(
                    "# dma_map_benchmark {g} pages: map {:.1} us, unmap {:.1} us",
                    cost.map_us, cost.unmap_us
                );
                out.push(
                    &ctx.clone()
                        .s("test", "dma_map_benchmark")
                        .s("memory", "kernel")
                        .n("fault_pages", g)
                        .s("variant", "dma_map_single")
                        .n("rep", 0u64)
                        .n("seconds", c.dma_seconds)
                        .f("map_us", cost.map_us)
                        .f("map_sd_us", cost.map_sd_us)
                        .f("unmap_us", cost.unmap_us)
                        .f("unmap_sd_us", cost.unmap_sd_us),
                )?;
            }
        }

        // The device was rebound: open it again.
        let dev = Device::open().map_err(|e| format!("open: {e}"))?;
        if c.warm_up {
            let t = Instant::now();
            warm_up(&dev, &ctx, c, &mut rng)?;
            eprintln!("# {mode} warm-up: {:.1} s", t.elapsed().as_secs_f64());
        }
        let n = c.variants.len();
        dma_call_timers(true)?;
        for rep in 0..c.reps {
            for kind in &c.memory {
                for i in 0..n {
                    let variant = c.variants[(i + rep) % n];
                    let t = Instant::now();
                    let r = measure_region(&dev, &ctx, c.size, kind, variant, rep)?;
                    eprintln!(
                        "# {mode} region {kind:<10} rep {rep} {:<6} {:.1} s",
                        backend_name(variant),
                        t.elapsed().as_secs_f64()
                    );
                    out.push(&r)?;
                }
            }
        }
        dma_call_timers(false)?;
        // Pinned registrations fault nothing: they are in `region` only.
        let faulting: Vec<u32> = c
            .variants
            .iter()
            .copied()
            .filter(|&v| v != ODP_HMM_BACKEND_PINNED)
            .collect();
        let n = faulting.len();
        for rep in 0..c.reps {
            for kind in &c.fault_memory {
                for &fp in &c.fault_pages {
                    let starts = fault_starts(c, fp, &mut rng);
                    let t = Instant::now();
                    for i in 0..n {
                        let variant = faulting[(i + rep) % n];
                        let r =
                            measure_faults(&dev, &ctx, c.size, kind, fp, &starts, variant, rep)?;
                        out.push(&r)?;
                    }
                    eprintln!(
                        "# {mode} faults {kind:<10} rep {rep} {fp:>3} pages x {}: {:.1} s",
                        starts.len(),
                        t.elapsed().as_secs_f64()
                    );
                }
            }
        }
        if c.threads {
            let t = Instant::now();
            for rep in 0..c.reps {
                // 4 KiB pages: THPs fault too fast to time two threads against one.
                for kind in ["contiguous"] {
                    for variant in [
                        ODP_HMM_BACKEND_RUST,
                        ODP_HMM_BACKEND_KERNEL,
                        ODP_HMM_BACKEND_NONE,
                    ] {
                        // Alternate which goes first.
                        let order = if rep % 2 == 0 { [1, 2] } else { [2, 1] };
                        for threads in order {
                            let r = measure_threads(
                                &dev,
                                &ctx,
                                c.size * c.thread_scale,
                                kind,
                                threads,
                                variant,
                                rep,
                            )?;
                            out.push(&r)?;
                        }
                    }
                }
            }
            eprintln!("# {mode} threads: {:.1} s", t.elapsed().as_secs_f64());
        }
        drop(dev);
        eprintln!(
            "# {} {mode}: {:.0} s",
            c.iommu,
            mode_started.elapsed().as_secs_f64()
        );
    }
    out.finish()?;
    // Leave the device as the harness found it.
    set_mode(&info, "strict")?;
    eprintln!(
        "# {}: all modes in {:.0} s",
        c.iommu,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() {
    let c = parse_args();
    if let Err(e) = run(&c) {
        eprintln!("odp_hmm_bench: {e}");
        std::process::exit(1);
    }
}
