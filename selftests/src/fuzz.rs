// SPDX-License-Identifier: GPL-2.0

//! The project's own ioctl fuzzer (group `fuzz`): seeded random ioctls on [`FILES`] open files of
//! `/dev/odp_hmm` from [`FUZZ_THREADS`] threads, while another thread churns the memory the
//! registrations cover (munmap, `MAP_FIXED` mmap, mremap, mprotect, `MADV_DONTNEED`, writes) and
//! sets `device_fault_timeout_ms` to 1 ms for short windows; now and then a file is closed and
//! opened again in its place while the other thread's calls run on it.
//!
//! Every ioctl number of the header is called, and numbers the module does not know (another
//! magic, an unknown number, wrong direction bits, a size field that is 0, too small, too large);
//! with random versions, flags with unknown bits, live, stale and made-up handles, every backend
//! and unknown ones, addresses 0, near `u64::MAX`, in the kernel half, non-canonical, unmapped,
//! `PROT_NONE` and read-only, lengths 0, huge and wrapping; the argument structure itself is
//! sometimes out of reach (NULL, unmapped, crossing into a `PROT_NONE` page, read-only).
//!
//! The oracle is the header: each call must succeed or fail with an errno that
//! `include/uapi/linux/odp_hmm.h` documents for what is wrong with its arguments, or for what the
//! memory and the other threads may have done meanwhile ([`Expect`]); calls whose arguments are
//! valid must succeed where nothing else can interfere (INFO, STATS, UNREGISTER of a live handle,
//! an implicit registration), and their outputs are checked. Afterwards every file is closed and
//! INFO's module-wide gauges must be back where they were: nothing left registered, mapped,
//! reserved or allocated (the VM harness scans the kernel log and kmemleak for the rest).
//!
//! The seed is printed first; `ODP_HMM_FUZZ_SEED=N` reruns it, `ODP_HMM_FUZZ_CALLS=N` sets the
//! number of calls (default 100000), `ODP_HMM_FUZZ_COPIES=N` the device copies allowed to reach
//! the engine (default 300: each takes 0.1-0.3 s under TCG). A call's arguments come from
//! the seed and its index; which handles are live when it runs depends on the threads' timing.

use std::{
    collections::BTreeMap,
    env, fs,
    os::fd::AsRawFd,
    ptr,
    sync::{
        atomic::{
            AtomicBool,
            AtomicI64,
            AtomicU64,
            Ordering, //
        },
        Barrier,
        Mutex,
        MutexGuard,
        OnceLock, //
    },
    thread,
    time::{
        Duration,
        Instant,
        SystemTime,
        UNIX_EPOCH, //
    },
};

use odp_hmm_uapi::*;

mod calls;
mod churn;
mod oracle;
mod targets;

use self::{
    calls::*,
    churn::*,
    oracle::*,
    targets::*, //
};

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

/// The `fuzz` group.
pub const TESTS: &[&Test] = &[
    &Test {
        name: "fuzz_random_ioctls_documented_errnos_nothing_left",
        run: fuzz,
    },
    &Test {
        name: "fuzz_raw_iova_reads_documented_errnos_nothing_left",
        run: fuzz_raw_iova,
    },
];

/// Open files the calls are spread over.
const FILES: usize = 4;
/// Threads that make the calls.
const FUZZ_THREADS: usize = 2;
/// Pages per slot of the memory pool: the unit the churning thread works on.
const SLOT_PAGES: u64 = 4;
/// Slots of the pool (2 MiB of 4 KiB pages).
const POOL_SLOTS: u64 = 128;
/// `file_limit_mb` during the run: registrations and implicit chunks beyond 8 MiB per file fail
/// with `ENOSPC` (four registrations of the whole pool), and a huge implicit no-fault prefetch
/// makes at most 4 chunks.
const FILE_LIMIT_MB: &str = "8";
/// `device_fault_timeout_ms` during the run, but for short windows at 1 ms (see `churn`).
const FAULT_TIMEOUT_MS: &str = "10000";
/// Entries of a thread's snapshot buffer (16 bytes each), followed by a `PROT_NONE` page.
const SNAP_CAP: u64 = 1 << 16;
/// Bytes after an argument structure that the module must not touch.
const CANARY_LEN: usize = 64;
const CANARY: u8 = 0xc3;
/// What a snapshot buffer is filled with before the call: flags 0xa5a5a5a5 are not valid flags.
const SNAP_FILL: u8 = 0xa5;
/// Live registrations per file above which the fuzzer mostly unregisters instead.
const LIVE_SOFT_MAX: usize = 32;
/// Handles at or above this are never given out during a run.
const HANDLE_NEVER: u64 = 1 << 40;
/// A kernel address (the direct map).
const KERNEL_ADDR: u64 = 0xffff_8880_0000_0000;
/// How long one call may take before the watchdog reports it.
const HANG: Duration = Duration::from_secs(60);

/// The run's parameters.
struct Config {
    seed: u64,
    calls: u64,
    copies: u64,
}

/// `name` from the environment: decimal or `0x` hex.
fn env_u64(name: &str) -> Result<Option<u64>, String> {
    let Ok(text) = env::var(name) else {
        return Ok(None);
    };
    let text = text.trim();
    let value = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    value
        .map(Some)
        .map_err(|_| format!("{name}={text} is not a number"))
}

/// The run's parameters, from the environment; the seed is printed when they are first read.
fn config() -> Result<&'static Config, Outcome> {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    let cfg = CONFIG.get_or_init(|| {
        let seed = match env_u64("ODP_HMM_FUZZ_SEED")? {
            Some(seed) => seed,
            None => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                // CAST: The low 64 bits of the nanoseconds are what varies.
                Rng::new(now.as_nanos() as u64, u64::from(std::process::id())).next()
            }
        };
        println!("# fuzz seed={seed} (rerun: ODP_HMM_FUZZ_SEED={seed})");
        Ok(Config {
            seed,
            calls: env_u64("ODP_HMM_FUZZ_CALLS")?.unwrap_or(100_000),
            copies: env_u64("ODP_HMM_FUZZ_COPIES")?.unwrap_or(300),
        })
    });
    cfg.as_ref().map_err(|e| Outcome::Fail(e.clone()))
}

/// splitmix64: small, fast, and every (seed, stream) pair gives its own sequence.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    /// The generator of stream `stream` (a call index) of `seed`.
    fn new(seed: u64, stream: u64) -> Self {
        let mut rng = Self(seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        // CAST: The product's high half is below `n`.
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p` percent.
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        // CAST: Slices here are short.
        xs[self.below(xs.len() as u64) as usize]
    }

    fn u32(&mut self) -> u32 {
        // CAST: The low half.
        self.next() as u32
    }
}

/// The memory of one fuzzing thread: its argument page (then a `PROT_NONE` page), a shared page
/// mapped writable and read-only, and its snapshot buffer.
struct Area {
    page: u64,
    ro_w: u64,
    ro_r: u64,
    snap: u64,
}

/// Per-ioctl counters, for the profile the run prints.
#[derive(Default, Clone)]
struct OpProfile {
    calls: u64,
    ok: u64,
    errnos: BTreeMap<i32, u64>,
    total: Duration,
    max: Duration,
    max_call: u64,
}

#[derive(Default)]
struct Profile {
    ops: BTreeMap<Op, OpProfile>,
    copies: u64,
}

impl Profile {
    fn add(&mut self, other: &Profile) {
        for (op, p) in &other.ops {
            let q = self.ops.entry(*op).or_default();
            q.calls += p.calls;
            q.ok += p.ok;
            for (e, n) in &p.errnos {
                *q.errnos.entry(*e).or_default() += n;
            }
            q.total += p.total;
            if p.max > q.max {
                q.max = p.max;
                q.max_call = p.max_call;
            }
        }
        self.copies += other.copies;
    }
}

/// What the threads share.
struct Shared<'a> {
    cfg: &'a Config,
    ctx: Ctx,
    files: &'a [Device],
    tables: Vec<Mutex<FileTable>>,
    /// Handles lately given out by any file (a leaf lock).
    recent: Mutex<Vec<u64>>,
    next: AtomicU64,
    copies_left: AtomicI64,
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    /// The call each fuzzing thread is in, and since when (for the watchdog).
    current: Vec<Mutex<Option<(u64, Op, Instant)>>>,
    /// Passed once the fuzzing threads and the churning thread run.
    started: Barrier,
    /// How often each file was reopened (changed with its table locked).
    generations: Vec<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared<'_> {
    /// Records a failure (printed at once); stops the run after 10.
    fn fail(&self, msg: String) {
        println!("# FAIL {}", msg.replace('\n', "\n#   "));
        let mut failures = lock(&self.failures);
        failures.push(msg);
        if failures.len() >= 10 {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Takes one device copy of the budget.
    fn take_copy(&self) -> bool {
        self.copies_left.fetch_sub(1, Ordering::Relaxed) > 0
    }
}

/// One call: generated from the seed and `index`, made, and judged.
fn one_call(sh: &Shared, area: &Area, t: usize, index: u64, prof: &mut Profile) {
    let ctx = &sh.ctx;
    let mut rng = Rng::new(sh.cfg.seed, index);
    // CAST: Below `FILES`.
    let file = rng.below(FILES as u64) as usize;
    let recent = lock(&sh.recent).clone();
    let mut held = Some(lock(&sh.tables[file]));
    let table = held.as_ref().map(|t| (**t).clone()).unwrap_or_default();
    // Read with the table locked: a reopen changes both under the lock.
    let generation = sh.generations[file].load(Ordering::Relaxed);
    if rng.below(1000) < 3 {
        let start = Instant::now();
        let reopened = held.as_mut().map(|table| reopen(sh, file, table));
        drop(held);
        let took = start.elapsed();
        let p = prof.ops.entry(Op::Reopen).or_default();
        p.calls += 1;
        p.total += took;
        if took > p.max {
            p.max = took;
            p.max_call = index;
        }
        if let Some(Err(msg)) = reopened {
            sh.fail(format!("seed {} call {index}: {msg}", sh.cfg.seed));
        } else {
            p.ok += 1;
        }
        return;
    }
    let mut op = match rng.below(1000) {
        0..=79 => Op::Unknown,
        80..=119 => Op::Info,
        120..=259 => Op::Register,
        260..=319 => Op::Unregister,
        320..=649 => Op::Fault,
        650..=799 => Op::Snapshot,
        800..=899 => Op::Stats,
        _ => Op::Dma,
    };
    if op == Op::Register && table.live.len() >= LIVE_SOFT_MAX && rng.percent(75) {
        op = Op::Unregister;
    }
    // Registrations, unregistrations and STATS run with the table locked: the oracle knows
    // exactly which handles are live. The other calls race them.
    if !matches!(op, Op::Register | Op::Unregister | Op::Stats) {
        held = None;
    }
    let call = match op {
        Op::Info => gen_info(&mut rng),
        Op::Register => gen_register(&mut rng, ctx),
        Op::Unregister => gen_unregister(&mut rng, &table, &recent),
        Op::Fault => gen_fault(&mut rng, ctx, &table, &recent),
        Op::Snapshot => gen_snapshot(&mut rng, ctx, &table, &recent),
        Op::Stats => gen_stats(&mut rng, &table, &recent),
        Op::Dma => gen_dma(&mut rng, sh, &table, &recent),
        // (A reopen returned above.)
        Op::Unknown | Op::Reopen => gen_unknown(&mut rng),
    };
    let mut call = call;
    // A snapshot's entries go to the thread's buffer (prefilled, to see what was written).
    if let Req::Snapshot(req, pages) = &mut call.req {
        req.pages = match *pages {
            Pages::Buffer => {
                let n = (req.npages.min(SNAP_CAP - 1) + 1) as usize;
                // SAFETY: The thread's snapshot buffer holds `SNAP_CAP` entries and is used
                // through raw pointers only.
                unsafe {
                    ptr::write_bytes(
                        area.snap as *mut u8,
                        SNAP_FILL,
                        n * size_of::<odp_hmm_page>(),
                    )
                };
                area.snap
            }
            Pages::Pool(addr) => addr,
            Pages::ReadOnly => ctx.read_only,
            Pages::Bad(addr) => addr,
        };
        call.bytes = bytes_of(req);
    }
    let addr = place(&call, area, ctx, &mut rng);
    let timeout_window = |low: &AtomicBool, changes: &AtomicU64| {
        (low.load(Ordering::SeqCst), changes.load(Ordering::SeqCst))
    };
    let before = timeout_window(&ctx.fault_timeout_low, &ctx.fault_timeout_changes);
    *lock(&sh.current[t]) = Some((index, op, Instant::now()));
    let fd = sh.files[file].file().as_raw_fd();
    let start = Instant::now();
    let got = raw_ioctl(fd, call.cmd, addr);
    let took = start.elapsed();
    *lock(&sh.current[t]) = None;
    if call.copy {
        prof.copies += 1;
    }

    // A call that raced a reopen of its file may have reached either file.
    let raced = sh.generations[file].load(Ordering::Relaxed) != generation;
    if raced {
        call.expect = Expect::documented(op);
    }
    let after = timeout_window(&ctx.fault_timeout_low, &ctx.fault_timeout_changes);
    if op == Op::Dma && (before.0 || after.0 || before.1 != after.1) {
        call.expect.may(
            libc::ETIMEDOUT,
            "a device copy waited longer than device_fault_timeout_ms (1 ms for a while)",
        );
    }
    let mut problems = Vec::new();
    if let Err(msg) = call.expect.verdict(got) {
        problems.push(msg);
    }
    let len = call.bytes.len();
    let out = match call.ptr {
        Ptr::Good(off) => {
            let after = read_back(area.page + off, len + CANARY_LEN);
            if after[len..].iter().any(|&b| b != CANARY) {
                problems.push(format!(
                    "the module wrote beyond the {len} bytes of the structure (the size in the \
                     ioctl number)"
                ));
            }
            if got == Err(libc::ENOTTY) && after[..len] != call.bytes[..] {
                problems.push("a call refused with ENOTTY wrote its argument".into());
            }
            Some(after[..len].to_vec())
        }
        _ => None,
    };
    if got.is_ok() && !raced {
        if let Some(out) = &out {
            if let Err(msg) = check_output(&call, out, sh, &table) {
                problems.push(msg);
            }
        }
        if let Req::Snapshot(req, Pages::Buffer) = &call.req {
            if let Err(msg) = check_snapshot(area, req.npages) {
                problems.push(msg);
            }
        }
    }
    // What the file's table learns.
    if let (Ok(()), Some(table)) = (got, held.as_mut()) {
        match (&call.req, &out) {
            (Req::Register(req), Some(out)) => {
                let out: odp_hmm_register = from_bytes(out);
                let implicit = req.flags & ODP_HMM_REGISTER_IMPLICIT != 0;
                let (addr, len) = if implicit && req.addr == 0 && req.length == 0 {
                    (ctx.ps, ctx.task_size - ctx.ps)
                } else {
                    (req.addr, req.length)
                };
                table.live.push(Reg {
                    handle: out.handle,
                    addr,
                    len,
                    writable: req.flags & ODP_HMM_ACCESS_WRITE != 0,
                    implicit,
                    dma_mode: out.dma_mode,
                    pinned: out.backend == ODP_HMM_BACKEND_PINNED,
                });
                table.max_handle = table.max_handle.max(out.handle);
                let mut recent = lock(&sh.recent);
                if recent.len() >= 32 {
                    recent.remove(0);
                }
                recent.push(out.handle);
            }
            (Req::Register(_), None) => problems.push(
                "a REGISTER through an unusable pointer succeeded: its handle is unknown".into(),
            ),
            (Req::Unregister(req), _) => {
                table.live.retain(|r| r.handle != req.handle);
                if table.stale.len() >= 64 {
                    table.stale.remove(0);
                }
                table.stale.push(req.handle);
            }
            _ => {}
        }
    }
    drop(held);

    let p = prof.ops.entry(op).or_default();
    p.calls += 1;
    match got {
        Ok(()) => p.ok += 1,
        Err(e) => *p.errnos.entry(e).or_default() += 1,
    }
    p.total += took;
    if took > p.max {
        p.max = took;
        p.max_call = index;
    }

    if !problems.is_empty() {
        let documented = match got {
            Err(e) if !op.documented().contains(&e) => format!(
                "\n{} is not documented for {} at all",
                errno_name(e),
                op.name()
            ),
            _ => String::new(),
        };
        let regs: Vec<String> = call
            .regs
            .iter()
            .map(|(h, state)| format!("handle {h}: {state:?}"))
            .collect();
        sh.fail(format!(
            "seed {} call {index} (thread {t}, file {file}): {} cmd {:#010x} (dir {} type {:#x} \
             nr {} size {}), argument {:?} at {addr:#x}: {:?}\n{}\nreturned {}; {}{documented}\n\
             rerun: ODP_HMM_FUZZ_SEED={} ODP_HMM_FUZZ_CALLS={}",
            sh.cfg.seed,
            op.name(),
            call.cmd,
            call.cmd >> IOC_DIRSHIFT,
            (call.cmd >> IOC_TYPESHIFT) & 0xff,
            call.cmd & 0xff,
            size_of_cmd(call.cmd),
            call.ptr,
            call.req,
            if regs.is_empty() {
                "no handle".to_string()
            } else {
                regs.join("; ")
            },
            match got {
                Ok(()) => "success".to_string(),
                Err(e) => errno_name(e),
            },
            problems.join("; "),
            sh.cfg.seed,
            index + 1,
        ));
    }
}

/// Closes file `file` and opens it again in its place: `dup2()` of a new open over its
/// descriptor. The old file goes once the calls running on it return (the other thread's may);
/// its registrations with it. `table` is the file's, locked.
fn reopen(sh: &Shared, file: usize, table: &mut FileTable) -> Result<(), String> {
    let new = Device::open().map_err(|e| format!("reopening file {file}: {e}"))?;
    let fd = sh.files[file].file().as_raw_fd();
    // SAFETY: Both descriptors are ours; `dup2` closes the file at `fd` and makes `fd` name the
    // new one, which `sh.files[file]` goes on owning.
    if unsafe { libc::dup2(new.file().as_raw_fd(), fd) } < 0 {
        return Err(format!(
            "dup2 over file {file}: {}",
            std::io::Error::last_os_error()
        ));
    }
    drop(new);
    *table = FileTable::default();
    sh.generations[file].fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// A fuzzing thread: takes call indices until the run is over.
fn fuzz_thread(sh: &Shared, area: &Area, t: usize) -> Profile {
    let mut prof = Profile::default();
    sh.started.wait();
    while !sh.stop.load(Ordering::Relaxed) {
        let index = sh.next.fetch_add(1, Ordering::Relaxed);
        if index >= sh.cfg.calls {
            break;
        }
        one_call(sh, area, t, index, &mut prof);
    }
    prof
}

/// INFO's module-wide gauges: registrations, pages mapped, IOVA bytes, bookkeeping bytes.
fn gauges(dev: &Device) -> std::io::Result<[u64; 4]> {
    let i = dev.info()?;
    Ok([
        i.live_registrations,
        i.live_pages_mapped,
        i.live_iova_bytes,
        i.live_bookkeeping_bytes,
    ])
}

/// Waits (10 s at most: queued prefetches finish in the background) until INFO's gauges on a
/// fresh file are back at `baseline`, and a fresh file has no registration.
fn nothing_left(baseline: [u64; 4]) -> TestResult {
    let dev = Device::open()?;
    let start = Instant::now();
    loop {
        let now = gauges(&dev)?;
        if now == baseline {
            println!(
                "# after closing every file INFO says: {} registrations, {} pages mapped, {} \
                 IOVA bytes, {} bookkeeping bytes (as before the run)",
                now[0], now[1], now[2], now[3]
            );
            break;
        }
        check!(
            start.elapsed() < Duration::from_secs(10),
            "10 s after closing every file INFO says {now:?} (registrations, pages mapped, IOVA \
             bytes, bookkeeping bytes); before the run: {baseline:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    check_eq!(
        dev.stats(0)?.registrations,
        0,
        "registrations of a fresh file"
    );
    Ok(())
}

/// Whether the CPU has 5-level paging (a 56-bit user address space).
fn la57() -> bool {
    fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "la57"))
    })
}

/// A new memfd of `len` bytes.
fn memfd(len: u64) -> std::io::Result<fs::File> {
    use std::os::fd::FromRawFd;
    let name = c"odp_hmm_fuzz";
    // SAFETY: `name` is a valid C string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is new and ours alone.
    let file = unsafe { fs::File::from_raw_fd(fd) };
    file.set_len(len)?;
    Ok(file)
}

/// Maps `len` bytes of `fd` (shared) at a place the kernel chooses.
fn map_shared(fd: &fs::File, len: usize, prot: i32) -> std::io::Result<Mapping> {
    Mapping::new(len, prot, libc::MAP_SHARED, fd.as_raw_fd())
}

fn fuzz() -> TestResult {
    let cfg = config()?;
    let ps = page_size() as u64;
    let probe = Device::open()?;
    let info = probe.info()?;
    let baseline = gauges(&probe)?;
    drop(probe);
    println!(
        "# {} calls on {FILES} files from {FUZZ_THREADS} threads, at most {} device copies; \
         file_limit_mb={FILE_LIMIT_MB}; {}",
        cfg.calls,
        cfg.copies,
        if info.flags & ODP_HMM_INFO_DEBUG_RAW_DMA != 0 {
            "debug_raw_dma=1"
        } else {
            "debug_raw_dma=0"
        }
    );
    let _limit = ModuleParam::set("file_limit_mb", FILE_LIMIT_MB)?;
    // The churning thread changes it; put back as it was afterwards.
    let _fault_timeout = ModuleParam::set("device_fault_timeout_ms", FAULT_TIMEOUT_MS)?;

    // Each fuzzing thread's pages: the argument page and a PROT_NONE page after it, a shared
    // page seen writable and read-only, the snapshot buffer and a PROT_NONE page after it.
    let mut keep = Vec::new();
    let mut areas = Vec::new();
    for _ in 0..FUZZ_THREADS {
        let page = Mapping::anon(2 * ps as usize)?;
        page.protect(ps as usize, ps as usize, libc::PROT_NONE)?;
        let fd = memfd(ps)?;
        let ro_w = map_shared(&fd, ps as usize, libc::PROT_READ | libc::PROT_WRITE)?;
        let ro_r = map_shared(&fd, ps as usize, libc::PROT_READ)?;
        let snap_len = (SNAP_CAP * size_of::<odp_hmm_page>() as u64 + ps) as usize;
        let snap = Mapping::new(
            snap_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
        )?;
        snap.protect(snap_len - ps as usize, ps as usize, libc::PROT_NONE)?;
        areas.push(Area {
            page: page.addr(),
            ro_w: ro_w.addr(),
            ro_r: ro_r.addr(),
            snap: snap.addr(),
        });
        keep.push((page, ro_w, ro_r, snap));
    }

    // The pool, mapped last: a mapping made after it could take one of its holes.
    let slot_len = SLOT_PAGES * ps;
    let pool_len = POOL_SLOTS * slot_len;
    let reserve = Mapping::new(
        (pool_len + 2 * slot_len) as usize,
        libc::PROT_NONE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
    )?;
    let pool_memfd = memfd(pool_len)?;
    let ro = Mapping::new(
        ps as usize,
        libc::PROT_READ,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )?;
    let guarded = Mapping::new(
        3 * ps as usize,
        libc::PROT_NONE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )?;
    guarded.unmap_part(ps as usize, ps as usize)?;
    let ctx = Ctx {
        ps,
        task_size: if la57() { 1 << 56 } else { 1 << 47 } - ps,
        info,
        pool: reserve.addr() + slot_len,
        lost: (0..POOL_SLOTS).map(|_| AtomicBool::new(false)).collect(),
        hole: guarded.addr() + ps,
        prot_none: guarded.addr(),
        read_only: ro.addr(),
        fault_timeout_low: AtomicBool::new(false),
        fault_timeout_changes: AtomicU64::new(0),
    };
    // Slot kinds to start with: read-write anonymous, read-only, PROT_NONE, shared, a hole.
    let mut churn_state = Churn {
        ctx: &ctx,
        memfd: pool_memfd.as_raw_fd(),
        slots: vec![Slot::Hole; POOL_SLOTS as usize],
        notes: Vec::new(),
    };
    for s in 0..POOL_SLOTS {
        // The reservation is ours: MAP_FIXED over it.
        let shared = s % 8 == 6;
        if !churn_state.map(s, shared, true) {
            return Err(std::io::Error::last_os_error().into());
        }
        let addr = churn_state.slot_addr(s);
        let prot = match s % 8 {
            4 => libc::PROT_READ,
            5 => libc::PROT_NONE,
            _ => libc::PROT_READ | libc::PROT_WRITE,
        };
        let (off, len) = ((addr - reserve.addr()) as usize, slot_len as usize);
        if prot == libc::PROT_READ | libc::PROT_WRITE {
            for page in 0..SLOT_PAGES {
                // SAFETY: A writable page of a slot just mapped.
                unsafe { ((addr + page * ps) as *mut u8).write_volatile(s as u8) };
            }
        } else {
            reserve.protect(off, len, prot)?;
        }
        churn_state.slots[s as usize] = Slot::Mapped { shared, prot };
    }
    // Every eighth slot starts as a hole, made once every thread runs (see `churn`).
    let holes: Vec<u64> = (0..POOL_SLOTS).filter(|s| s % 8 == 7).collect();
    let slots = churn_state.slots.clone();
    drop(churn_state);

    let files = (0..FILES)
        .map(|_| Device::open())
        .collect::<std::io::Result<Vec<_>>>()?;
    let sh = Shared {
        cfg,
        ctx,
        files: &files,
        tables: (0..FILES).map(|_| Mutex::default()).collect(),
        recent: Mutex::default(),
        next: AtomicU64::new(0),
        copies_left: AtomicI64::new(i64::try_from(cfg.copies).unwrap_or(i64::MAX)),
        stop: AtomicBool::new(false),
        failures: Mutex::default(),
        current: (0..FUZZ_THREADS).map(|_| Mutex::default()).collect(),
        started: Barrier::new(FUZZ_THREADS + 1),
        generations: (0..FILES).map(|_| AtomicU64::new(0)).collect(),
    };
    let churn_stop = AtomicBool::new(false);
    let start = Instant::now();
    let (profile, churned, panicked) = thread::scope(|s| {
        let churner = s.spawn(|| {
            churn(
                &sh.ctx,
                pool_memfd.as_raw_fd(),
                slots,
                &holes,
                cfg.seed,
                &sh.started,
                &churn_stop,
            )
        });
        let workers: Vec<_> = areas
            .iter()
            .enumerate()
            .map(|(t, area)| {
                let sh = &sh;
                s.spawn(move || fuzz_thread(sh, area, t))
            })
            .collect();
        let mut last = Instant::now();
        let mut hung = [false; FUZZ_THREADS];
        while !workers.iter().all(|w| w.is_finished()) {
            thread::sleep(Duration::from_millis(200));
            for (t, cur) in sh.current.iter().enumerate() {
                if let Some((index, op, since)) = *lock(cur) {
                    if since.elapsed() > HANG && !hung[t] {
                        hung[t] = true;
                        sh.fail(format!(
                            "seed {} call {index} (thread {t}): {} has not returned after {} s\n\
                             rerun: ODP_HMM_FUZZ_SEED={} ODP_HMM_FUZZ_CALLS={}",
                            cfg.seed,
                            op.name(),
                            HANG.as_secs(),
                            cfg.seed,
                            index + 1
                        ));
                    }
                }
            }
            if last.elapsed() > Duration::from_secs(30) {
                last = Instant::now();
                println!(
                    "# {} calls after {:.0} s",
                    sh.next.load(Ordering::Relaxed).min(cfg.calls),
                    start.elapsed().as_secs_f64()
                );
            }
        }
        churn_stop.store(true, Ordering::Relaxed);
        let mut profile = Profile::default();
        let mut panicked = false;
        for w in workers {
            match w.join() {
                Ok(p) => profile.add(&p),
                Err(_) => panicked = true,
            }
        }
        let churned = churner.join().unwrap_or_else(|_| {
            panicked = true;
            (0, Vec::new())
        });
        (profile, churned, panicked)
    });
    let secs = start.elapsed().as_secs_f64();
    check!(!panicked, "a fuzzing or churning thread panicked");

    let (churned, notes) = churned;
    let calls: u64 = profile.ops.values().map(|p| p.calls).sum();
    println!(
        "# {calls} calls in {secs:.1} s ({:.0} per second), {} device copies, {churned} changes \
         to the pool's mappings",
        calls as f64 / secs,
        profile.copies
    );
    for (op, p) in &profile.ops {
        let errnos: Vec<String> = p
            .errnos
            .iter()
            .map(|(e, n)| format!("{} {n}", errno_name(*e)))
            .collect();
        println!(
            "# {:<22} {:>6} calls, {:>6} ok; {}; {:.2} s in all, longest {:.1} ms (call {})",
            op.name(),
            p.calls,
            p.ok,
            if errnos.is_empty() {
                "no errors".to_string()
            } else {
                errnos.join(", ")
            },
            p.total.as_secs_f64(),
            p.max.as_secs_f64() * 1e3,
            p.max_call
        );
    }
    for note in &notes {
        println!("# churn: {note}");
    }

    let mut failures = std::mem::take(&mut *lock(&sh.failures));
    // Every file's registrations are what the fuzzer recorded, and each answers STATS.
    for (f, dev) in files.iter().enumerate() {
        let table = lock(&sh.tables[f]);
        match dev.stats(0) {
            Ok(st) if st.registrations == table.live.len() as u64 => {}
            Ok(st) => failures.push(format!(
                "file {f} has {} registrations; the successful REGISTER and UNREGISTER calls \
                 leave {}",
                st.registrations,
                table.live.len()
            )),
            Err(e) => failures.push(format!("STATS of file {f}: {e}")),
        }
        for reg in &table.live {
            if let Err(e) = dev.stats(reg.handle) {
                failures.push(format!("STATS of live {reg:?} of file {f}: {e}"));
            }
        }
    }
    check!(
        calls == cfg.calls || !failures.is_empty(),
        "{calls} calls made of {}",
        cfg.calls
    );
    drop(sh);
    drop(files);
    drop(keep);
    drop(reserve);
    if let Err(Outcome::Fail(msg)) = nothing_left(baseline) {
        failures.push(msg);
    }
    if !failures.is_empty() {
        return Err(Outcome::Fail(format!(
            "{} failures (seed {}, rerun: ODP_HMM_FUZZ_SEED={}):\n{}",
            failures.len(),
            cfg.seed,
            cfg.seed,
            failures.join("\n")
        )));
    }
    Ok(())
}

/// Raw-IOVA device reads (`ODP_HMM_DMA_SRC_RAW_IOVA`, `debug_raw_dma=1`) of seeded random DMA
/// addresses, lengths, flags and destinations, inside a window where the kernel log may report
/// the IOMMU faults they cause: the first reads an IOVA of a registration that was never mapped,
/// which must fault. A well-formed read must succeed, a malformed one fail with its errno.
fn fuzz_raw_iova() -> TestResult {
    const READS: u64 = 16;
    let cfg = config()?;
    let dev = Device::open()?;
    let info = dev.info()?;
    if info.flags & ODP_HMM_INFO_DEBUG_RAW_DMA == 0 {
        skip!("the module was loaded without debug_raw_dma=1");
    }
    if info.flags & ODP_HMM_INFO_COPY_ENGINE == 0 {
        skip!("the DMA device has no copy engine");
    }
    if !translates(&info) {
        skip!("the DMA device's domain does not translate: a raw read would reach any memory");
    }
    let baseline = gauges(&dev)?;
    let ps = page_size() as u64;
    let model = IommuModel::of(&info.pci_address());
    let mut src = Mapping::anon(8 * ps as usize)?;
    for i in 0..8 {
        src.fill_page(i, i as u8);
    }
    let src_reg = dev.register(src.addr(), 8 * ps, RW, ODP_HMM_BACKEND_RUST)?;
    if src_reg.dma_mode != ODP_HMM_DMA_MODE_IOVA {
        skip!("a registration is not in IOVA mode");
    }
    // Page 0 is mapped; pages 4..8 never are.
    dev.fault(src_reg.handle, src.addr(), ps, 0)?;
    let out = Mapping::anon(ps as usize)?;
    let out_reg = dev.register(out.addr(), ps, RW, 0)?;
    dev.fault(out_reg.handle, out.addr(), ps, ODP_HMM_FAULT_WRITE)?;
    let never_mapped = src_reg.iova_base + 4 * ps;
    let mut rng = Rng::new(cfg.seed, u64::MAX - 1);
    let mut reqs = Vec::new();
    for i in 0..READS {
        let (sd, dd, raw) = (
            ODP_HMM_DMA_SRC_DEVBUF,
            ODP_HMM_DMA_DST_DEVBUF,
            ODP_HMM_DMA_SRC_RAW_IOVA,
        );
        let mut req = odp_hmm_dma {
            version: ODP_HMM_ABI_VERSION,
            flags: raw | if rng.percent(60) { dd } else { 0 },
            src_addr: match rng.below(8) {
                0..=3 => src_reg.iova_base + rng.below(8 * ps),
                4 => 0,
                5 => info.dma_mask.wrapping_sub(rng.below(ps)),
                6 => u64::MAX - rng.below(ps),
                _ => rng.next(),
            },
            length: if rng.percent(85) {
                1 + rng.below(u64::from(ODP_HMM_DMA_MAX_LEN))
            } else {
                rng.pick(&[0, u64::from(ODP_HMM_DMA_MAX_LEN) + 1, u64::MAX])
            },
            ..Default::default()
        };
        if i == 0 {
            // The read that must fault.
            req.flags = raw | dd;
            req.src_addr = never_mapped;
            req.length = 64;
        }
        if req.flags & dd != 0 {
            req.dst_addr = rng.below(u64::from(ODP_HMM_DMA_MAX_LEN) - req.length.min(4096) + 1);
            if rng.percent(10) && i > 0 {
                req.dst_addr = u64::from(ODP_HMM_DMA_MAX_LEN) + rng.below(100);
            }
        } else {
            req.dst_handle = out_reg.handle;
            req.dst_addr = out.addr() + rng.below(ps - req.length.clamp(1, ps) + 1);
        }
        if i > 0 && rng.percent(10) {
            req.flags |= rng.pick(&[sd, 1 << 9]);
        }
        reqs.push(req);
    }
    let (results, log) = expecting_iommu_fault(&model, never_mapped, || {
        reqs.iter()
            .map(|req| {
                let mut arg = *req;
                // SAFETY: `ODP_HMM_IOC_DMA` takes a `struct odp_hmm_dma`.
                unsafe { dev.raw_ioctl(ODP_HMM_IOC_DMA, &mut arg) }
                    .map_err(|e| e.raw_os_error().unwrap_or(-1))
            })
            .collect::<Vec<_>>()
    });
    let mut failures = Vec::new();
    for (i, (req, got)) in reqs.iter().zip(&results).enumerate() {
        let mut e = Expect::default();
        let (sd, dd, raw) = (
            ODP_HMM_DMA_SRC_DEVBUF,
            ODP_HMM_DMA_DST_DEVBUF,
            ODP_HMM_DMA_SRC_RAW_IOVA,
        );
        let max = u64::from(ODP_HMM_DMA_MAX_LEN);
        if req.flags & !(sd | dd | raw) != 0 || req.flags & sd != 0 || req.length == 0 {
            e.early(
                libc::EINVAL,
                "unknown flag bits, two SRC flags, or @length 0",
            );
        }
        if req.length > max {
            e.early(libc::E2BIG, "device copy longer than ODP_HMM_DMA_MAX_LEN");
        }
        if req.flags & dd != 0
            && req
                .dst_addr
                .checked_add(req.length.min(max))
                .is_none_or(|end| end > max)
        {
            e.early(
                libc::ERANGE,
                "device-buffer ranges must stay inside its ODP_HMM_DMA_MAX_LEN bytes",
            );
        }
        if let Err(msg) = e.verdict(*got) {
            failures.push(format!("seed {} raw read {i}: {req:?}: {msg}", cfg.seed));
        }
    }
    let ok = results.iter().filter(|r| r.is_ok()).count();
    println!(
        "# {READS} raw-IOVA reads ({ok} well-formed, done), the IOMMU fault at {never_mapped:#x} \
         {}",
        match log {
            FaultLog::Reported => "reported",
            FaultLog::Missing => "NOT reported",
            FaultLog::Unreportable => "not reportable by this IOMMU model",
        }
    );
    if results[0].is_err() {
        failures.push(format!(
            "the raw read of the never-mapped IOVA {never_mapped:#x} failed: {:?}",
            results[0]
        ));
    }
    if log == FaultLog::Missing {
        failures.push(format!(
            "{model} did not report the device's read of {never_mapped:#x}, an IOVA of a page \
             never mapped"
        ));
    }
    dev.unregister(src_reg.handle)?;
    dev.unregister(out_reg.handle)?;
    drop(dev);
    if let Err(Outcome::Fail(msg)) = nothing_left(baseline) {
        failures.push(msg);
    }
    if !failures.is_empty() {
        return Err(Outcome::Fail(failures.join("\n")));
    }
    Ok(())
}
