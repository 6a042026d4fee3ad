// SPDX-License-Identifier: GPL-2.0

//! The project's own ioctl fuzzer (group `fuzz`): seeded random ioctls on [`FILES`] open files of
//! `/dev/odp_hmm` from [`FUZZ_THREADS`] threads, while another thread churns the memory the
//! registrations cover (munmap, `MAP_FIXED` mmap, mremap, mprotect, `MADV_DONTNEED`, writes).
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
//! the engine (default 150: each takes 0.1-0.3 s of emulated time). A call's arguments come from
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
        Mutex, MutexGuard, OnceLock,
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
/// `file_limit_mb` during the run: registrations and implicit chunks beyond 64 MiB per file fail
/// with `ENOSPC` (often reached), and a huge implicit no-fault prefetch makes at most 32 chunks.
const FILE_LIMIT_MB: &str = "64";
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

/// The `ioctl` number fields of `<asm-generic/ioctl.h>`.
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_SIZEMASK: u32 = 0x3fff;

/// `_IOC(dir, type, nr, size)`.
fn ioc(dir: u32, ty: u32, nr: u32, size: u32) -> u32 {
    (dir << IOC_DIRSHIFT)
        | ((size & IOC_SIZEMASK) << IOC_SIZESHIFT)
        | ((ty & 0xff) << IOC_TYPESHIFT)
        | ((nr & 0xff) << IOC_NRSHIFT)
}

/// `cmd` with its size field replaced.
fn with_size(cmd: u32, size: u32) -> u32 {
    (cmd & !(IOC_SIZEMASK << IOC_SIZESHIFT)) | ((size & IOC_SIZEMASK) << IOC_SIZESHIFT)
}

/// The size field of `cmd`.
fn size_of_cmd(cmd: u32) -> u32 {
    (cmd >> IOC_SIZESHIFT) & IOC_SIZEMASK
}

/// Ioctl types the VFS answers itself before any driver sees the call (`do_vfs_ioctl()`:
/// `FIGETBSZ`, `FS_IOC_GETFSUUID`, `FIOCLEX`/`FIONBIO`/..., `FIFREEZE`/`FS_IOC_FSGETXATTR`,
/// `FS_IOC_GETFLAGS`/`FS_IOC_FIEMAP`, `FICLONE`/`FIDEDUPERANGE`): not the module's to refuse.
const VFS_TYPES: &[u32] = &[0x00, 0x15, 0x54, 0x58, 0x66, 0x94];

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
            copies: env_u64("ODP_HMM_FUZZ_COPIES")?.unwrap_or(150),
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

/// The name of an errno, for messages.
fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOTTY => "ENOTTY",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EREMOTEIO => "EREMOTEIO",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ENOMEM => "ENOMEM",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// One ioctl of the ABI, or a number the module does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Info,
    Register,
    Unregister,
    Fault,
    Snapshot,
    Stats,
    Dma,
    Unknown,
}

/// The ioctls of the header, with the size of each in every ABI version.
const KNOWN: &[(Op, u32, &[u32])] = &[
    (
        Op::Info,
        ODP_HMM_IOC_INFO,
        &[ODP_HMM_INFO_SIZE_V1, size_of::<odp_hmm_info>() as u32],
    ),
    (
        Op::Register,
        ODP_HMM_IOC_REGISTER,
        &[size_of::<odp_hmm_register>() as u32],
    ),
    (
        Op::Unregister,
        ODP_HMM_IOC_UNREGISTER,
        &[size_of::<odp_hmm_unregister>() as u32],
    ),
    (
        Op::Fault,
        ODP_HMM_IOC_FAULT,
        &[size_of::<odp_hmm_fault>() as u32],
    ),
    (
        Op::Snapshot,
        ODP_HMM_IOC_SNAPSHOT,
        &[size_of::<odp_hmm_snapshot>() as u32],
    ),
    (
        Op::Stats,
        ODP_HMM_IOC_STATS,
        &[ODP_HMM_STATS_SIZE_V1, size_of::<odp_hmm_stats>() as u32],
    ),
    (Op::Dma, ODP_HMM_IOC_DMA, &[size_of::<odp_hmm_dma>() as u32]),
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Info => "ODP_HMM_IOC_INFO",
            Op::Register => "ODP_HMM_IOC_REGISTER",
            Op::Unregister => "ODP_HMM_IOC_UNREGISTER",
            Op::Fault => "ODP_HMM_IOC_FAULT",
            Op::Snapshot => "ODP_HMM_IOC_SNAPSHOT",
            Op::Stats => "ODP_HMM_IOC_STATS",
            Op::Dma => "ODP_HMM_IOC_DMA",
            Op::Unknown => "an unknown ioctl",
        }
    }

    /// Whether the module writes the structure back (`_IOWR`).
    fn writes_back(self) -> bool {
        matches!(
            self,
            Op::Info | Op::Register | Op::Fault | Op::Stats | Op::Dma
        )
    }

    /// The errnos `include/uapi/linux/odp_hmm.h` documents for the ioctl: its "Errors" list
    /// read call by call. ENOTTY (unknown ioctl or size), EPROTONOSUPPORT (@version) and EFAULT
    /// (a user pointer that cannot be accessed) apply to every call.
    fn documented(self) -> &'static [i32] {
        use libc::*;
        match self {
            // "ENODEV the DMA device is gone".
            Op::Info => &[ENOTTY, EPROTONOSUPPORT, EFAULT, ENODEV],
            Op::Register => &[
                ENOTTY,
                EPROTONOSUPPORT,
                EFAULT,
                EINVAL,
                EOVERFLOW,
                EPERM,
                ENOSPC,
                ENOMEM,
                EOPNOTSUPP,
                ENODEV,
            ],
            Op::Unregister => &[ENOTTY, EPROTONOSUPPORT, EFAULT, EINVAL, ENOENT, EPERM],
            Op::Fault => &[
                ENOTTY,
                EPROTONOSUPPORT,
                EFAULT,
                EINVAL,
                EOVERFLOW,
                ERANGE,
                ENOENT,
                EPERM,
                ENOSPC,
                ENOMEM,
                ESRCH,
                EREMOTEIO,
                ENODEV,
                EBUSY,
                EINTR,
            ],
            Op::Snapshot => &[
                ENOTTY,
                EPROTONOSUPPORT,
                EFAULT,
                EINVAL,
                EOVERFLOW,
                ERANGE,
                ENOENT,
                E2BIG,
                EPERM,
                ENOMEM,
                ENODEV,
            ],
            Op::Stats => &[ENOTTY, EPROTONOSUPPORT, EFAULT, EINVAL, ENOENT],
            Op::Dma => &[
                ENOTTY,
                EPROTONOSUPPORT,
                EFAULT,
                EINVAL,
                EOVERFLOW,
                ERANGE,
                ENOENT,
                E2BIG,
                EPERM,
                ENOSPC,
                ENOMEM,
                ESRCH,
                EOPNOTSUPP,
                EREMOTEIO,
                ENODEV,
                EBUSY,
                EINTR,
                ETIMEDOUT,
                EIO,
            ],
            Op::Unknown => &[ENOTTY],
        }
    }
}

/// Whether `cmd` is a call the module must know: one of the header's numbers with the size of
/// its structure in some ABI version.
fn is_known(cmd: u32) -> bool {
    KNOWN.iter().any(|&(_, known, sizes)| {
        with_size(known, 0) == with_size(cmd, 0) && sizes.contains(&size_of_cmd(cmd))
    })
}

/// The uAPI structures, which are plain old data.
///
/// # Safety
///
/// Implementors are `#[repr(C)]` structures of `u32` and `u64` fields without padding (the
/// header's layout rules, checked by the odp-hmm-uapi crate's layout test): every byte is
/// initialised and every bit pattern is a valid value.
unsafe trait Pod: Copy + Default + std::fmt::Debug {}

// SAFETY: See the trait: the header's structures have no padding.
unsafe impl Pod for odp_hmm_info {}
// SAFETY: As above.
unsafe impl Pod for odp_hmm_register {}
// SAFETY: As above.
unsafe impl Pod for odp_hmm_unregister {}
// SAFETY: As above.
unsafe impl Pod for odp_hmm_fault {}
// SAFETY: As above.
unsafe impl Pod for odp_hmm_snapshot {}
// SAFETY: As above.
unsafe impl Pod for odp_hmm_stats {}
// SAFETY: As above.
unsafe impl Pod for odp_hmm_dma {}
// SAFETY: As above (`__u64` then two `__u32`).
unsafe impl Pod for odp_hmm_page {}

/// The bytes of `v`.
fn bytes_of<T: Pod>(v: &T) -> Vec<u8> {
    // SAFETY: `T: Pod` has no padding, so all its bytes are initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// A `T` from the first bytes of `b`; fields beyond `b` are 0.
fn from_bytes<T: Pod>(b: &[u8]) -> T {
    let mut v = T::default();
    let n = b.len().min(size_of::<T>());
    // SAFETY: At most `size_of::<T>()` bytes are copied into `v`; any bit pattern is a `T: Pod`.
    unsafe { ptr::copy_nonoverlapping(b.as_ptr(), (&mut v as *mut T).cast::<u8>(), n) };
    v
}

/// What a call may end with.
///
/// Errnos come with the reason the header gives for them. An argument error the module checks
/// before it acts makes the call fail with it (or with another argument error); an error found
/// as the call acts (a write-back to a read-only page) makes it fail too, with it or anything
/// the state of the memory may cause; a call without either may succeed or fail with what the
/// state of the memory and the other threads may cause.
#[derive(Default, Debug)]
struct Expect {
    /// Argument errors, checked before the call acts.
    early: Vec<(i32, &'static str)>,
    /// Errors found as the call acts.
    late: Vec<(i32, &'static str)>,
    /// What the memory's state and the other threads may cause.
    may: Vec<(i32, &'static str)>,
    /// Of those, what may come before any argument check: the handle was unregistered by
    /// another thread, or memory is short.
    race: Vec<(i32, &'static str)>,
}

impl Expect {
    fn early(&mut self, errno: i32, why: &'static str) {
        self.early.push((errno, why));
    }

    fn late(&mut self, errno: i32, why: &'static str) {
        self.late.push((errno, why));
    }

    fn may(&mut self, errno: i32, why: &'static str) {
        self.may.push((errno, why));
    }

    fn race(&mut self, errno: i32, why: &'static str) {
        self.race.push((errno, why));
    }

    fn must_fail(&self) -> bool {
        !self.early.is_empty() || !self.late.is_empty()
    }

    /// The errnos the call may fail with.
    fn allowed(&self) -> Vec<(i32, &'static str)> {
        let mut all: Vec<_> = if self.early.is_empty() {
            self.late.iter().chain(&self.may).copied().collect()
        } else {
            self.early.clone()
        };
        all.extend(self.race.iter().copied());
        all
    }

    /// `Err` with what is wrong if `got` is not what the header allows.
    fn verdict(&self, got: Result<(), i32>) -> Result<(), String> {
        let allowed = self.allowed();
        let list = || {
            allowed
                .iter()
                .map(|(e, why)| format!("{} ({why})", errno_name(*e)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match got {
            Ok(()) if !self.must_fail() => Ok(()),
            Ok(()) => Err(format!(
                "it succeeded, but must fail with one of: {}",
                list()
            )),
            Err(e) if allowed.iter().any(|&(a, _)| a == e) => Ok(()),
            Err(e) => Err(format!(
                "it failed with {}; expected {}{}",
                errno_name(e),
                if self.must_fail() {
                    "one of: "
                } else {
                    "success or one of: "
                },
                if allowed.is_empty() {
                    "(nothing)".to_string()
                } else {
                    list()
                }
            )),
        }
    }
}

/// Where the argument structure of a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ptr {
    /// In the thread's argument page at this offset, followed by a canary.
    Good(u64),
    /// The last `n` bytes of the argument page: the rest of the structure would be in the
    /// `PROT_NONE` page after it.
    Straddle(u64),
    /// The read-only view of the thread's shared argument page.
    ReadOnly,
    Null,
    Kernel,
    NonCanonical,
    NearMax,
    Unmapped,
    ProtNone,
}

impl Ptr {
    /// A pointer the module cannot read the structure through.
    fn unreadable(self) -> bool {
        !matches!(self, Ptr::Good(_) | Ptr::ReadOnly)
    }
}

/// Where a snapshot's entries go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pages {
    /// The thread's snapshot buffer ([`SNAP_CAP`] entries, then a `PROT_NONE` page).
    Buffer,
    /// An address in the churned pool (whatever it is mapped as now).
    Pool(u64),
    /// The read-only page.
    ReadOnly,
    /// An address nothing may be written to: 0, the kernel, non-canonical, unmapped, `PROT_NONE`.
    Bad(u64),
}

/// A registration the fuzzer made.
#[derive(Clone, Copy, Debug)]
struct Reg {
    handle: u64,
    addr: u64,
    len: u64,
    writable: bool,
    implicit: bool,
    dma_mode: u32,
}

impl Reg {
    fn end(&self) -> u64 {
        self.addr + self.len
    }
}

/// What the fuzzer knows of one open file's handles. Registrations and unregistrations are made
/// with the table's lock held, so a handle the table does not know is not live while the lock
/// is held, and only handles above `max_handle` can become live later.
#[derive(Clone, Default)]
struct FileTable {
    live: Vec<Reg>,
    /// Handles unregistered lately.
    stale: Vec<u64>,
    /// The largest handle a registration returned.
    max_handle: u64,
}

/// What a handle names in a file, as far as the fuzzer can tell.
#[derive(Clone, Copy, Debug)]
enum Handle {
    /// A registration (another thread may be unregistering it, unless the table is locked).
    Live(Reg),
    /// Nothing, and never anything from now on.
    Dead,
    /// A registration another thread may be making right now.
    Unknown,
}

impl FileTable {
    fn classify(&self, handle: u64, locked: bool) -> Handle {
        if let Some(reg) = self.live.iter().find(|r| r.handle == handle) {
            Handle::Live(*reg)
        } else if handle == 0 || handle <= self.max_handle || handle >= HANDLE_NEVER || locked {
            Handle::Dead
        } else {
            Handle::Unknown
        }
    }
}

/// Memory every thread may name in a call.
struct Ctx {
    ps: u64,
    /// The end of the user address space (`TASK_SIZE`).
    task_size: u64,
    /// What INFO said at the start.
    info: odp_hmm_info,
    /// The churned pool: `POOL_SLOTS` slots from `pool`, a `PROT_NONE` slot before and after.
    pool: u64,
    /// Slots the churning thread could not map back (another mapping took the hole): no device
    /// copy may write there.
    lost: Vec<AtomicBool>,
    /// An unmapped page between two `PROT_NONE` pages.
    hole: u64,
    /// A `PROT_NONE` page.
    prot_none: u64,
    /// A read-only page.
    read_only: u64,
}

impl Ctx {
    fn slot_len(&self) -> u64 {
        SLOT_PAGES * self.ps
    }

    fn pool_len(&self) -> u64 {
        POOL_SLOTS * self.slot_len()
    }

    fn pool_pages(&self) -> u64 {
        POOL_SLOTS * SLOT_PAGES
    }

    fn any_lost(&self) -> bool {
        self.lost.iter().any(|l| l.load(Ordering::Relaxed))
    }

    fn in_pool(&self, addr: u64) -> bool {
        addr >= self.pool && addr - self.pool < self.pool_len()
    }

    /// Whether a device write of `len` bytes at `addr` stays in slots the churning thread owns
    /// (or reaches its `PROT_NONE` guard, which makes it fail).
    fn writable_target(&self, addr: u64, len: u64) -> bool {
        if !self.in_pool(addr) {
            return false;
        }
        let first = (addr - self.pool) / self.slot_len();
        let last = ((addr - self.pool).saturating_add(len.max(1) - 1) / self.slot_len())
            .min(POOL_SLOTS - 1);
        // CAST: Slot numbers are below `POOL_SLOTS`.
        (first..=last).all(|s| !self.lost[s as usize].load(Ordering::Relaxed))
    }

    /// An address: mostly in the pool, else one a caller may pass by mistake or malice.
    fn addr(&self, rng: &mut Rng) -> u64 {
        let ps = self.ps;
        match rng.below(100) {
            0..=69 => self.pool + rng.below(self.pool_pages()) * ps,
            70..=74 => self.pool + rng.below(self.pool_len()),
            75..=77 => 0,
            78 => ps,
            79..=81 => KERNEL_ADDR + rng.below(1 << 20) * ps,
            82..=84 => rng.pick(&[1 << 47, 1 << 63, (1 << 47) + ps, 0x0000_ffff_ffff_f000]),
            85..=87 => rng.pick(&[u64::MAX, u64::MAX - ps + 1, u64::MAX - 4 * ps + 1]),
            88..=89 => self.task_size - ps * (1 + rng.below(4)),
            90..=91 => self.hole,
            92..=93 => self.prot_none,
            94..=95 => self.read_only,
            // Random, but never a user address (it could be the fuzzer's own memory).
            _ => rng.next() | (1 << 63),
        }
    }

    /// A length for a range at `addr`: mostly a few pages, else 0, unaligned, huge or wrapping.
    fn len(&self, rng: &mut Rng, addr: u64) -> u64 {
        let ps = self.ps;
        match rng.below(100) {
            0..=59 => ps * (1 + rng.below(8)),
            60..=74 => ps * (1 + rng.below(self.pool_pages())),
            75..=79 => 0,
            80..=83 => rng.pick(&[1, ps - 1, ps + 1, 3 * ps / 2]),
            84..=87 => rng.pick(&[1 << 30, 1 << 40, 1 << 47, 1 << 56]),
            88..=91 => rng.pick(&[
                0u64.wrapping_sub(addr),
                0u64.wrapping_sub(addr).wrapping_add(ps),
                u64::MAX - ps + 1,
            ]),
            92..=95 => u64::MAX,
            _ => rng.next(),
        }
    }

    /// A page-aligned range in the pool, sometimes reaching into the guard after it.
    fn pool_range(&self, rng: &mut Rng) -> (u64, u64) {
        let pages = self.pool_pages();
        let first = rng.below(pages);
        let n = match rng.below(10) {
            0..=5 => 1 + rng.below(8.min(pages - first)),
            6..=8 => 1 + rng.below(pages - first),
            _ => pages - first + 1 + rng.below(SLOT_PAGES),
        };
        (self.pool + first * self.ps, n * self.ps)
    }

    /// A range for a call on `reg`: mostly inside it, else anything.
    fn range_in(&self, rng: &mut Rng, reg: Option<&Reg>) -> (u64, u64) {
        let ps = self.ps;
        match reg {
            Some(reg) if rng.percent(80) => {
                let (pool_start, pool_end) = (self.pool, self.pool + self.pool_len());
                if reg.len > 2 * self.pool_len() && reg.addr <= pool_start && reg.end() >= pool_end
                {
                    // An implicit registration of the whole address space: the pool, mostly.
                    if rng.percent(85) {
                        return self.pool_range(rng);
                    }
                    let addr = self.addr(rng) & !(ps - 1);
                    return (addr, self.len(rng, addr));
                }
                let pages = reg.len / ps;
                let first = rng.below(pages);
                let n = if rng.percent(80) {
                    1 + rng.below(16.min(pages - first))
                } else {
                    pages - first
                };
                (reg.addr + first * ps, n * ps)
            }
            _ => {
                let addr = if rng.percent(50) {
                    self.addr(rng)
                } else {
                    self.addr(rng) & !(ps - 1)
                };
                (addr, self.len(rng, addr))
            }
        }
    }

    /// A device-copy address in `reg` (or anywhere): for the destination, only where the pool
    /// is, or where nothing can be written.
    fn copy_addr(&self, rng: &mut Rng, reg: Option<&Reg>, dst: bool) -> u64 {
        let ps = self.ps;
        if let Some(reg) = reg {
            if rng.percent(85) {
                let (lo, hi) = if dst {
                    (
                        reg.addr.max(self.pool),
                        reg.end().min(self.pool + self.pool_len()),
                    )
                } else if reg.len > 2 * self.pool_len() {
                    (self.pool, self.pool + self.pool_len())
                } else {
                    (reg.addr, reg.end())
                };
                if lo < hi {
                    // Near a page end, sometimes, so that the copy crosses pages.
                    let page = lo / ps + rng.below((hi - lo).div_ceil(ps));
                    let off = if rng.percent(30) {
                        ps - 1 - rng.below(64)
                    } else {
                        rng.below(ps)
                    };
                    return (page * ps + off).clamp(lo, hi - 1);
                }
            }
        }
        if dst || rng.percent(50) {
            match rng.below(10) {
                0..=5 => self.pool + rng.below(self.pool_len()),
                6 => 0,
                7 => KERNEL_ADDR + rng.below(1 << 30),
                8 => u64::MAX - rng.below(ps),
                _ => rng.pick(&[self.hole, self.prot_none, self.read_only, 1 << 47]),
            }
        } else {
            self.addr(rng)
        }
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

/// One call, generated.
struct Call {
    cmd: u32,
    /// The structure (its first `size` bytes are placed at the pointer).
    req: Req,
    /// Bytes placed at the pointer.
    bytes: Vec<u8>,
    ptr: Ptr,
    expect: Expect,
    /// The registrations the call names, for failure messages.
    regs: Vec<(u64, Handle)>,
    /// Whether it may reach the copy engine (it took a device copy of the budget).
    copy: bool,
}

/// The argument of a call.
#[derive(Debug)]
enum Req {
    Info(odp_hmm_info),
    Register(odp_hmm_register),
    Unregister(odp_hmm_unregister),
    Fault(odp_hmm_fault),
    Snapshot(odp_hmm_snapshot, Pages),
    Stats(odp_hmm_stats),
    Dma(odp_hmm_dma),
    Unknown,
}

/// A random `version`: mostly the current one.
fn gen_version(rng: &mut Rng) -> u32 {
    match rng.below(100) {
        0..=89 => ODP_HMM_ABI_VERSION,
        90..=93 => 1,
        94 => 0,
        95 => ODP_HMM_ABI_VERSION + 1,
        96 => u32::MAX,
        _ => rng.u32(),
    }
}

fn check_version(e: &mut Expect, version: u32) {
    if version == 0 || version > ODP_HMM_ABI_VERSION {
        e.early(
            libc::EPROTONOSUPPORT,
            "@version is 0 or newer than ODP_HMM_ABI_VERSION",
        );
    }
}

/// Where the structure goes: mostly a readable and writable place.
fn gen_ptr(rng: &mut Rng, size: u64) -> Ptr {
    match rng.below(1000) {
        0..=939 => {
            // 8-aligned mostly; any alignment is the module's to cope with.
            let off = 8 * rng.below(8);
            Ptr::Good(if rng.percent(6) {
                off + 1 + rng.below(7)
            } else {
                off
            })
        }
        940..=949 => Ptr::Straddle(1 + rng.below(size - 1)),
        950..=969 => Ptr::ReadOnly,
        970..=974 => Ptr::Null,
        975..=979 => Ptr::Kernel,
        980..=984 => Ptr::NonCanonical,
        985..=989 => Ptr::NearMax,
        990..=994 => Ptr::Unmapped,
        _ => Ptr::ProtNone,
    }
}

/// What the structure's pointer adds to `e`.
fn check_ptr(e: &mut Expect, ptr: Ptr, op: Op) {
    if ptr.unreadable() {
        e.early(
            libc::EFAULT,
            "the argument structure cannot be read (a user pointer cannot be accessed)",
        );
    } else if ptr == Ptr::ReadOnly && op.writes_back() {
        e.late(
            libc::EFAULT,
            "the argument structure is read-only and the ioctl writes it back",
        );
    }
}

/// A handle for a call: mostly a live one of the file.
fn gen_handle(rng: &mut Rng, table: &FileTable, recent: &[u64]) -> u64 {
    let fallback = |rng: &mut Rng| 1 + rng.below(64);
    match rng.below(100) {
        0..=79 if !table.live.is_empty() => rng.pick(&table.live).handle,
        80..=86 if !table.stale.is_empty() => rng.pick(&table.stale),
        87..=89 if !recent.is_empty() => rng.pick(recent),
        90..=91 => 0,
        92..=93 => HANDLE_NEVER + rng.below(HANDLE_NEVER),
        94 => u64::MAX,
        _ => fallback(rng),
    }
}

/// What a range `addr..addr+len` for a registration adds to `e` (REGISTER's checks: page
/// aligned, not empty, inside the user address space).
fn check_user_range(e: &mut Expect, ctx: &Ctx, addr: u64, len: u64) {
    let ps = ctx.ps;
    if len == 0 || addr % ps != 0 || len % ps != 0 {
        e.early(libc::EINVAL, "unaligned address, zero or unaligned length");
    }
    if addr.checked_add(len).is_none_or(|end| end > ctx.task_size) {
        e.early(
            libc::EOVERFLOW,
            "address + length wraps or leaves the user address space",
        );
    }
}

/// What a sub-range `addr..addr+len` of `reg` adds to `e` (FAULT's and SNAPSHOT's checks);
/// `reg` is `None` when the registration is not known.
fn check_sub_range(e: &mut Expect, ctx: &Ctx, reg: Option<&Reg>, addr: u64, len: u64) {
    let ps = ctx.ps;
    if len == 0 || addr % ps != 0 || len % ps != 0 {
        e.early(libc::EINVAL, "unaligned address, zero or unaligned length");
    }
    match addr.checked_add(len) {
        None => e.early(libc::EOVERFLOW, "address + length wraps"),
        Some(end) => {
            let outside = reg.map(|r| addr < r.addr || end > r.end());
            if end > ctx.task_size {
                e.early(libc::EOVERFLOW, "the range leaves the user address space");
                e.early(
                    libc::ERANGE,
                    "a sub-range is not inside the registration it names",
                );
            } else if outside == Some(true) {
                e.early(
                    libc::ERANGE,
                    "a sub-range is not inside the registration it names",
                );
            } else if outside.is_none() {
                e.may(
                    libc::ERANGE,
                    "a sub-range is not inside the registration it names",
                );
            }
        }
    }
}

/// What the handle of a call adds to `e`; returns the registration if it is live.
fn check_handle(e: &mut Expect, h: Handle) -> Option<Reg> {
    match h {
        Handle::Live(reg) => {
            e.race(
                libc::ENOENT,
                "a call that raced the unregister of its handle",
            );
            Some(reg)
        }
        Handle::Dead => {
            e.early(libc::ENOENT, "unknown handle");
            None
        }
        Handle::Unknown => {
            e.may(libc::ENOENT, "unknown handle");
            None
        }
    }
}

/// Generates an INFO call.
fn gen_info(rng: &mut Rng) -> Call {
    let size = if rng.percent(15) {
        ODP_HMM_INFO_SIZE_V1
    } else {
        size_of::<odp_hmm_info>() as u32
    };
    // Everything but @version is output: garbage in it must not matter.
    let mut req: odp_hmm_info = from_bytes(&(0..96).map(|_| rng.u32() as u8).collect::<Vec<_>>());
    req.version = gen_version(rng);
    let ptr = gen_ptr(rng, u64::from(size));
    let mut expect = Expect::default();
    check_version(&mut expect, req.version);
    check_ptr(&mut expect, ptr, Op::Info);
    let mut bytes = bytes_of(&req);
    bytes.truncate(size as usize);
    Call {
        cmd: with_size(ODP_HMM_IOC_INFO, size),
        req: Req::Info(req),
        bytes,
        ptr,
        expect,
        regs: Vec::new(),
        copy: false,
    }
}

/// Generates a REGISTER call.
fn gen_register(rng: &mut Rng, ctx: &Ctx) -> Call {
    let (r, w, imp) = (
        ODP_HMM_ACCESS_READ,
        ODP_HMM_ACCESS_WRITE,
        ODP_HMM_REGISTER_IMPLICIT,
    );
    let flags = match rng.below(100) {
        0..=44 => r | w,
        45..=64 => r,
        65..=72 => r | w | imp,
        73..=79 => r | imp,
        80..=83 => w,
        84..=86 => 0,
        87..=94 => rng.pick(&[r, r | w, r | imp]) | (1 << (3 + rng.below(29))),
        _ => rng.u32(),
    };
    let implicit = flags & imp != 0;
    let (addr, length) = if implicit && rng.percent(40) {
        (0, 0)
    } else if rng.percent(75) {
        ctx.pool_range(rng)
    } else {
        let addr = ctx.addr(rng);
        (addr, ctx.len(rng, addr))
    };
    let backend = match rng.below(100) {
        0..=59 => ODP_HMM_BACKEND_DEFAULT,
        60..=89 => 1 + rng.below(4) as u32,
        _ => {
            let any = rng.u32();
            rng.pick(&[5, u32::MAX, any])
        }
    };
    let req = odp_hmm_register {
        version: gen_version(rng),
        flags,
        addr,
        length,
        backend,
        // Outputs: garbage in them must not matter.
        dma_mode: rng.u32(),
        handle: rng.next(),
        iova_base: rng.next(),
    };
    let ptr = gen_ptr(rng, size_of::<odp_hmm_register>() as u64);
    Call {
        cmd: ODP_HMM_IOC_REGISTER,
        expect: expect_register(&req, ptr, ctx),
        bytes: bytes_of(&req),
        req: Req::Register(req),
        ptr,
        regs: Vec::new(),
        copy: false,
    }
}

fn expect_register(req: &odp_hmm_register, ptr: Ptr, ctx: &Ctx) -> Expect {
    let mut e = Expect::default();
    check_ptr(&mut e, ptr, Op::Register);
    check_version(&mut e, req.version);
    let known = ODP_HMM_ACCESS_READ | ODP_HMM_ACCESS_WRITE | ODP_HMM_REGISTER_IMPLICIT;
    if req.flags & !known != 0 {
        e.early(libc::EINVAL, "unknown flag bits");
    }
    if req.flags & ODP_HMM_ACCESS_READ == 0 {
        e.early(libc::EINVAL, "@flags: READ is required");
    }
    if req.backend > ODP_HMM_BACKEND_NONE {
        e.early(libc::EINVAL, "@backend is not an ODP_HMM_BACKEND_*");
    }
    let implicit = req.flags & ODP_HMM_REGISTER_IMPLICIT != 0;
    if !(implicit && req.addr == 0 && req.length == 0) {
        check_user_range(&mut e, ctx, req.addr, req.length);
    }
    e.race(libc::ENOMEM, "kernel memory for the per-page state");
    if !implicit {
        e.may(libc::EFAULT, "the range is not (fully) backed by a mapping");
        e.may(
            libc::ENOSPC,
            "the registration would take the file's registered memory beyond file_limit_mb",
        );
        if req.flags & ODP_HMM_ACCESS_WRITE != 0 {
            e.may(libc::EPERM, "write access to a read-only mapping");
        }
    }
    e
}

/// Generates an UNREGISTER call (with the file's table locked).
fn gen_unregister(rng: &mut Rng, table: &FileTable, recent: &[u64]) -> Call {
    let req = odp_hmm_unregister {
        version: gen_version(rng),
        reserved: if rng.percent(95) { 0 } else { rng.u32() | 1 },
        handle: gen_handle(rng, table, recent),
    };
    let ptr = gen_ptr(rng, size_of::<odp_hmm_unregister>() as u64);
    let mut e = Expect::default();
    check_ptr(&mut e, ptr, Op::Unregister);
    check_version(&mut e, req.version);
    if req.reserved != 0 {
        e.early(libc::EINVAL, "reserved field not zero");
    }
    let h = table.classify(req.handle, true);
    if let Handle::Dead = h {
        e.early(libc::ENOENT, "unknown handle (also on a second unregister)");
    }
    Call {
        cmd: ODP_HMM_IOC_UNREGISTER,
        bytes: bytes_of(&req),
        req: Req::Unregister(req),
        ptr,
        expect: e,
        regs: vec![(req.handle, h)],
        copy: false,
    }
}

/// Generates a FAULT call.
fn gen_fault(rng: &mut Rng, ctx: &Ctx, table: &FileTable, recent: &[u64]) -> Call {
    let handle = gen_handle(rng, table, recent);
    let h = table.classify(handle, false);
    let reg = match h {
        Handle::Live(reg) => Some(reg),
        _ => None,
    };
    let (wr, nf, asy) = (
        ODP_HMM_FAULT_WRITE,
        ODP_HMM_FAULT_NO_FAULT,
        ODP_HMM_FAULT_ASYNC,
    );
    let flags = match rng.below(100) {
        0..=34 => 0,
        35..=64 => wr,
        65..=79 => nf,
        80..=89 => asy | rng.pick(&[0, wr, nf]),
        90..=93 => wr | nf | rng.pick(&[0, asy]),
        94..=97 => rng.pick(&[0, wr, nf, asy]) | (1 << (3 + rng.below(29))),
        _ => rng.u32(),
    };
    let (addr, length) = ctx.range_in(rng, reg.as_ref());
    let req = odp_hmm_fault {
        version: gen_version(rng),
        flags,
        handle,
        addr,
        length,
        pages_mapped: rng.next(),
        pages_valid: rng.next(),
    };
    let ptr = gen_ptr(rng, size_of::<odp_hmm_fault>() as u64);
    let mut e = Expect::default();
    check_ptr(&mut e, ptr, Op::Fault);
    check_version(&mut e, req.version);
    let mode = flags & !asy;
    if mode != 0 && mode != wr && mode != nf {
        e.early(libc::EINVAL, "unknown flag bits, or NO_FAULT with WRITE");
    }
    let reg = check_handle(&mut e, h);
    check_sub_range(&mut e, ctx, reg.as_ref(), addr, length);
    let write = flags & wr != 0;
    let async_ = flags & asy != 0;
    match reg {
        Some(reg) if write && !reg.writable => {
            e.early(libc::EPERM, "write access to a read-only registration");
        }
        None if write => e.may(libc::EPERM, "write access to a read-only registration"),
        _ => {}
    }
    e.race(libc::ENOMEM, "kernel memory for the per-page state");
    if !async_ {
        e.may(libc::EFAULT, "the range is not (fully) backed by a mapping");
        e.may(
            libc::EBUSY,
            "the range kept changing under the fault for a whole second",
        );
        if write {
            e.may(libc::EPERM, "write access to a read-only mapping");
        }
        if reg.is_none_or(|r| r.implicit) {
            e.may(
                libc::ENOSPC,
                "the 2 MiB chunk of an implicit registration beyond file_limit_mb",
            );
        }
    }
    Call {
        cmd: ODP_HMM_IOC_FAULT,
        bytes: bytes_of(&req),
        req: Req::Fault(req),
        ptr,
        expect: e,
        regs: vec![(handle, h)],
        copy: false,
    }
}

/// Generates a SNAPSHOT call.
fn gen_snapshot(rng: &mut Rng, ctx: &Ctx, table: &FileTable, recent: &[u64]) -> Call {
    let ps = ctx.ps;
    let handle = gen_handle(rng, table, recent);
    let h = table.classify(handle, false);
    let reg = match h {
        Handle::Live(reg) => Some(reg),
        _ => None,
    };
    let (addr, len) = ctx.range_in(rng, reg.as_ref());
    let npages = match rng.below(100) {
        0..=89 => len / ps,
        90..=91 => 0,
        92..=93 => u64::from(ODP_HMM_SNAPSHOT_MAX_PAGES) + rng.below(2),
        94..=95 => rng.pick(&[1 << 52, u64::MAX / ps + 1, u64::MAX]),
        _ => rng.next() >> rng.below(64),
    };
    let pages = match rng.below(100) {
        0..=84 => Pages::Buffer,
        // Not where a slot was lost: the module would write into another mapping.
        85..=89 if !ctx.any_lost() => Pages::Pool(ctx.pool + 16 * rng.below(ctx.pool_len() / 16)),
        85..=89 => Pages::Buffer,
        90..=91 => Pages::ReadOnly,
        _ => Pages::Bad(rng.pick(&[
            0,
            KERNEL_ADDR,
            1 << 47,
            u64::MAX - 15,
            ctx.hole,
            ctx.prot_none,
        ])),
    };
    let req = odp_hmm_snapshot {
        version: gen_version(rng),
        flags: if rng.percent(95) { 0 } else { rng.u32() | 1 },
        handle,
        addr,
        npages,
        // Filled in when the call is placed (the buffer is the thread's).
        pages: 0,
    };
    let ptr = gen_ptr(rng, size_of::<odp_hmm_snapshot>() as u64);
    let mut e = Expect::default();
    check_ptr(&mut e, ptr, Op::Snapshot);
    check_version(&mut e, req.version);
    if req.flags != 0 {
        e.early(libc::EINVAL, "@flags: 0");
    }
    if npages == 0 {
        e.early(libc::EINVAL, "@npages: 1..ODP_HMM_SNAPSHOT_MAX_PAGES");
    }
    if npages > u64::from(ODP_HMM_SNAPSHOT_MAX_PAGES) {
        e.early(
            libc::E2BIG,
            "snapshot of more than ODP_HMM_SNAPSHOT_MAX_PAGES pages",
        );
    }
    let reg = check_handle(&mut e, h);
    if npages > 0 && npages <= u64::from(ODP_HMM_SNAPSHOT_MAX_PAGES) {
        check_sub_range(&mut e, ctx, reg.as_ref(), addr, npages * ps);
    }
    e.race(libc::ENOMEM, "kernel memory");
    let writable = match pages {
        Pages::Buffer => npages <= SNAP_CAP,
        Pages::Pool(_) => {
            e.may(
                libc::EFAULT,
                "@pages in churned memory (unmapped, PROT_NONE, read-only, the guard)",
            );
            true
        }
        Pages::ReadOnly | Pages::Bad(_) => false,
    };
    if !writable {
        e.late(libc::EFAULT, "@pages cannot be written (a user pointer)");
    }
    Call {
        cmd: ODP_HMM_IOC_SNAPSHOT,
        bytes: bytes_of(&req),
        req: Req::Snapshot(req, pages),
        ptr,
        expect: e,
        regs: vec![(handle, h)],
        copy: false,
    }
}

/// Generates a STATS call (with the file's table locked).
fn gen_stats(rng: &mut Rng, table: &FileTable, recent: &[u64]) -> Call {
    let size = if rng.percent(10) {
        ODP_HMM_STATS_SIZE_V1
    } else {
        size_of::<odp_hmm_stats>() as u32
    };
    let handle = if rng.percent(30) {
        0
    } else {
        gen_handle(rng, table, recent)
    };
    let mut req: odp_hmm_stats = from_bytes(&(0..256).map(|_| rng.u32() as u8).collect::<Vec<_>>());
    req.version = gen_version(rng);
    req.reserved = if rng.percent(95) { 0 } else { rng.u32() | 1 };
    req.handle = handle;
    let ptr = gen_ptr(rng, u64::from(size));
    let mut e = Expect::default();
    check_ptr(&mut e, ptr, Op::Stats);
    check_version(&mut e, req.version);
    if req.reserved != 0 {
        e.early(libc::EINVAL, "reserved field not zero");
    }
    let h = table.classify(handle, true);
    if handle != 0 && matches!(h, Handle::Dead) {
        e.early(libc::ENOENT, "unknown handle");
    }
    let mut bytes = bytes_of(&req);
    bytes.truncate(size as usize);
    Call {
        cmd: with_size(ODP_HMM_IOC_STATS, size),
        req: Req::Stats(req),
        bytes,
        ptr,
        expect: e,
        regs: vec![(handle, h)],
        copy: false,
    }
}

/// Generates a device copy (DMA). Raw-IOVA reads always carry another argument error here: a
/// read of an unchecked address would make an IOMMU fault outside a window that expects one
/// ([`fuzz_raw_iova`] makes those).
fn gen_dma(rng: &mut Rng, sh: &Shared, table: &FileTable, recent: &[u64]) -> Call {
    let ctx = &sh.ctx;
    let (sd, dd, raw) = (
        ODP_HMM_DMA_SRC_DEVBUF,
        ODP_HMM_DMA_DST_DEVBUF,
        ODP_HMM_DMA_SRC_RAW_IOVA,
    );
    let mut flags = match rng.below(100) {
        0..=49 => 0,
        50..=64 => sd,
        65..=84 => dd,
        85..=87 => sd | dd,
        88..=91 => raw | rng.pick(&[0, dd]),
        92..=95 => rng.pick(&[0, sd, dd]) | (1 << (3 + rng.below(29))),
        _ => rng.u32(),
    };
    let mut length = match rng.below(100) {
        0..=49 => 1 + rng.below(64),
        50..=79 => 1 + rng.below(u64::from(ODP_HMM_DMA_MAX_LEN)),
        80..=87 => ctx.ps,
        88..=91 => 0,
        92..=95 => u64::from(ODP_HMM_DMA_MAX_LEN) + 1,
        _ => {
            let any = rng.next();
            rng.pick(&[u64::MAX, 1 << 32, any])
        }
    };
    if flags & raw != 0
        && flags & !(sd | dd | raw) == 0
        && flags & sd == 0
        && (1..=u64::from(ODP_HMM_DMA_MAX_LEN)).contains(&length)
    {
        // See above: a raw read here must fail before it reaches the device.
        match rng.below(4) {
            0 => flags |= sd,
            1 => flags |= 1 << 31,
            2 => length = 0,
            _ => length = u64::from(ODP_HMM_DMA_MAX_LEN) + 1 + rng.below(1 << 20),
        }
    }
    let buf_off = |rng: &mut Rng, len: u64| {
        if rng.percent(85) {
            rng.below(u64::from(ODP_HMM_DMA_MAX_LEN).saturating_sub(len) + 1)
        } else {
            let any = rng.next();
            rng.pick(&[u64::from(ODP_HMM_DMA_MAX_LEN), u64::MAX, any, 4000])
        }
    };
    let (mut src_handle, mut dst_handle) = (0, 0);
    let mut regs = Vec::new();
    let src_addr = if flags & sd != 0 {
        buf_off(rng, length)
    } else if flags & raw != 0 {
        rng.next()
    } else {
        src_handle = gen_handle(rng, table, recent);
        let h = table.classify(src_handle, false);
        let reg = match h {
            Handle::Live(reg) => Some(reg),
            _ => None,
        };
        regs.push((src_handle, h));
        ctx.copy_addr(rng, reg.as_ref(), false)
    };
    let dst_addr = if flags & dd != 0 {
        buf_off(rng, length)
    } else {
        // Mostly a writable registration: a copy into a read-only one fails at once.
        let writable: Vec<Reg> = table.live.iter().filter(|r| r.writable).copied().collect();
        dst_handle = if !writable.is_empty() && rng.percent(70) {
            rng.pick(&writable).handle
        } else {
            gen_handle(rng, table, recent)
        };
        let h = table.classify(dst_handle, false);
        let reg = match h {
            Handle::Live(reg) => Some(reg),
            _ => None,
        };
        regs.push((dst_handle, h));
        let addr = ctx.copy_addr(rng, reg.as_ref(), true);
        if ctx.writable_target(addr, length.min(u64::from(ODP_HMM_DMA_MAX_LEN))) {
            addr
        } else {
            // Never let the device write where the fuzzer does not own the memory.
            rng.pick(&[0, KERNEL_ADDR, 1 << 47, u64::MAX - 7])
        }
    };
    let mut req = odp_hmm_dma {
        version: gen_version(rng),
        flags,
        src_handle,
        src_addr,
        dst_handle,
        dst_addr,
        length,
        faults: rng.next(),
    };
    let ptr = gen_ptr(rng, size_of::<odp_hmm_dma>() as u64);
    let mut e = expect_dma(&req, ptr, sh, &regs);
    let mut copy = false;
    if e.early.is_empty() {
        if sh.take_copy() {
            copy = true;
        } else {
            // The budget of device copies is spent: this one must fail before the engine.
            match rng.below(3) {
                0 => req.length = 0,
                1 => req.flags |= 1 << 30,
                _ => req.version = 0,
            }
            e = expect_dma(&req, ptr, sh, &regs);
        }
    }
    Call {
        cmd: ODP_HMM_IOC_DMA,
        bytes: bytes_of(&req),
        req: Req::Dma(req),
        ptr,
        expect: e,
        regs,
        copy,
    }
}

fn expect_dma(req: &odp_hmm_dma, ptr: Ptr, sh: &Shared, regs: &[(u64, Handle)]) -> Expect {
    let ctx = &sh.ctx;
    let (sd, dd, raw) = (
        ODP_HMM_DMA_SRC_DEVBUF,
        ODP_HMM_DMA_DST_DEVBUF,
        ODP_HMM_DMA_SRC_RAW_IOVA,
    );
    let max = u64::from(ODP_HMM_DMA_MAX_LEN);
    let mut e = Expect::default();
    check_ptr(&mut e, ptr, Op::Dma);
    check_version(&mut e, req.version);
    if req.flags & !(sd | dd | raw) != 0 {
        e.early(libc::EINVAL, "unknown flag bits");
    }
    if req.flags & sd != 0 && req.flags & raw != 0 {
        e.early(libc::EINVAL, "@flags: at most one of the SRC flags");
    }
    if req.flags & sd != 0 && req.flags & dd != 0 {
        e.early(
            libc::EINVAL,
            "@flags: a copy from the device buffer to itself",
        );
    }
    if req.length == 0 {
        e.early(libc::EINVAL, "@length: 1..ODP_HMM_DMA_MAX_LEN");
    }
    if req.length > max {
        e.early(libc::E2BIG, "device copy longer than ODP_HMM_DMA_MAX_LEN");
    }
    let len = req.length.min(max);
    let buffer_range = |off: u64| off.checked_add(len).is_none_or(|end| end > max);
    if req.flags & sd != 0 && buffer_range(req.src_addr) {
        e.early(
            libc::ERANGE,
            "device-buffer ranges must stay inside its ODP_HMM_DMA_MAX_LEN bytes",
        );
    }
    if req.flags & dd != 0 && buffer_range(req.dst_addr) {
        e.early(
            libc::ERANGE,
            "device-buffer ranges must stay inside its ODP_HMM_DMA_MAX_LEN bytes",
        );
    }
    if req.flags & raw != 0 && ctx.info.flags & ODP_HMM_INFO_DEBUG_RAW_DMA == 0 {
        e.early(
            libc::EPERM,
            "a debug ioctl that the module was not loaded to allow",
        );
    }
    let mut implicit_or_unknown = false;
    for (i, &(_, h)) in regs.iter().enumerate() {
        let dst = req.flags & dd == 0 && i == regs.len() - 1;
        let addr = if dst { req.dst_addr } else { req.src_addr };
        match check_handle(&mut e, h) {
            Some(reg) => {
                implicit_or_unknown |= reg.implicit;
                // The pages the copy touches must lie inside the registration.
                match addr.checked_add(len) {
                    None => e.late(libc::EOVERFLOW, "address + length wraps"),
                    Some(end) if addr < reg.addr || end > reg.end() => {
                        e.late(
                            libc::ERANGE,
                            "a sub-range is not inside the registration it names",
                        );
                        if end > ctx.task_size {
                            e.late(libc::EOVERFLOW, "the range leaves the user address space");
                        }
                    }
                    Some(_) => {}
                }
                if dst && !reg.writable {
                    e.late(libc::EPERM, "write access to a read-only registration");
                }
            }
            None => {
                implicit_or_unknown = true;
                e.may(libc::EOVERFLOW, "address + length wraps");
                e.may(
                    libc::ERANGE,
                    "a sub-range is not inside the registration it names",
                );
                e.may(libc::EPERM, "write access to a read-only registration");
            }
        }
    }
    e.race(libc::ENOMEM, "kernel memory for the per-page state");
    e.may(libc::EFAULT, "the range is not (fully) backed by a mapping");
    e.may(libc::EPERM, "write access to a read-only mapping");
    e.may(
        libc::EBUSY,
        "the range kept changing under a device copy for 16 attempts",
    );
    if implicit_or_unknown {
        e.may(
            libc::ENOSPC,
            "the 2 MiB chunk of an implicit registration beyond file_limit_mb",
        );
    }
    if ctx.info.flags & ODP_HMM_INFO_COPY_ENGINE == 0 {
        e.may(libc::EOPNOTSUPP, "the DMA device has no copy engine");
    }
    e
}

/// Generates a call of a number the module does not know.
fn gen_unknown(rng: &mut Rng) -> Call {
    let magic = ODP_HMM_IOC_MAGIC;
    let cmd = loop {
        let (op, known, sizes) = rng.pick(KNOWN);
        let _ = op;
        let dir = known >> IOC_DIRSHIFT;
        let nr = known & 0xff;
        let cmd = match rng.below(5) {
            // An unknown number.
            0 => ioc(
                rng.below(4) as u32,
                magic,
                7 + rng.below(249) as u32,
                rng.below(1 << 14) as u32,
            ),
            // A known number, other direction bits.
            1 => ioc(
                (dir + 1 + rng.below(3) as u32) % 4,
                magic,
                nr,
                size_of_cmd(known),
            ),
            // A known number and direction, a size the module does not know: 0, too small,
            // larger than any version's, the largest the field holds.
            2 => {
                let max = *sizes.iter().max().unwrap_or(&0);
                let size = match rng.below(5) {
                    0 => 0,
                    1 => 1 + rng.below(u64::from(sizes[0]) - 1) as u32,
                    2 => max + rng.pick(&[1, 4, 8, 64]),
                    3 => IOC_SIZEMASK,
                    _ => rng.below(u64::from(IOC_SIZEMASK) + 1) as u32,
                };
                with_size(known, size)
            }
            // Another driver's magic.
            3 => ioc(
                rng.below(4) as u32,
                rng.below(256) as u32,
                rng.below(256) as u32,
                rng.below(1 << 14) as u32,
            ),
            _ => rng.u32(),
        };
        let ty = (cmd >> IOC_TYPESHIFT) & 0xff;
        if !is_known(cmd) && !VFS_TYPES.contains(&ty) {
            break cmd;
        }
    };
    // A valid INFO structure, so that a module that ignored the number would succeed.
    let req = odp_hmm_info {
        version: ODP_HMM_ABI_VERSION,
        ..Default::default()
    };
    let mut bytes = bytes_of(&req);
    bytes.resize((size_of_cmd(cmd) as usize).clamp(8, 256), 0x5a);
    let ptr = gen_ptr(rng, bytes.len() as u64);
    let mut e = Expect::default();
    e.early(
        libc::ENOTTY,
        "unknown ioctl, or an argument size the module does not know",
    );
    Call {
        cmd,
        req: Req::Unknown,
        bytes,
        ptr,
        expect: e,
        regs: Vec::new(),
        copy: false,
    }
}

/// Places the call's bytes where its pointer says; returns the address to pass.
fn place(call: &Call, area: &Area, ctx: &Ctx, rng: &mut Rng) -> u64 {
    let ps = ctx.ps;
    let len = call.bytes.len();
    let write = |at: u64, bytes: &[u8]| {
        // SAFETY: `at..at + bytes.len()` lies in this thread's argument pages, which are
        // writable, and no reference to them exists (they are used through raw pointers only).
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len()) };
    };
    match call.ptr {
        Ptr::Good(off) => {
            write(area.page + off, &call.bytes);
            write(area.page + off + len as u64, &[CANARY; CANARY_LEN]);
            area.page + off
        }
        Ptr::Straddle(n) => {
            // CAST: `n` is below the structure's size.
            write(area.page + ps - n, &call.bytes[..n as usize]);
            area.page + ps - n
        }
        Ptr::ReadOnly => {
            write(area.ro_w, &call.bytes);
            area.ro_r
        }
        Ptr::Null => 0,
        Ptr::Kernel => KERNEL_ADDR + rng.below(1 << 20) * 8,
        Ptr::NonCanonical => rng.pick(&[1 << 47, 1 << 63, 0x0000_8000_0000_1000]),
        Ptr::NearMax => u64::MAX - rng.below(len as u64 - 1),
        Ptr::Unmapped => ctx.hole + 8 * rng.below(ps / 16),
        Ptr::ProtNone => ctx.prot_none + 8 * rng.below(ps / 16),
    }
}

/// Reads `len` bytes at `at` of this thread's pages.
fn read_back(at: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    // SAFETY: `at..at + len` lies in this thread's argument pages or snapshot buffer, readable
    // and used through raw pointers only.
    unsafe { ptr::copy_nonoverlapping(at as *const u8, out.as_mut_ptr(), len) };
    out
}

/// `ioctl(fd, cmd, arg)`.
fn raw_ioctl(fd: i32, cmd: u32, arg: u64) -> Result<(), i32> {
    // SAFETY: `arg` is this thread's argument page, which the module may read and write (for
    // the size in `cmd`, at most the page and the canary after the structure), or an address
    // that no memory of this process is at (the module must fail with EFAULT), or the
    // read-only page. Pointers inside the structure (a snapshot's @pages) name the thread's
    // snapshot buffer (large enough, or followed by a PROT_NONE page), the pool (nothing but
    // the churning thread's data) or memory that cannot be written.
    let ret = unsafe { libc::ioctl(fd, libc::c_ulong::from(cmd), arg as *mut libc::c_void) };
    if ret == 0 {
        return Ok(());
    }
    Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
}

/// Checks what a successful call wrote; `out` is the structure as the module left it.
fn check_output(call: &Call, out: &[u8], sh: &Shared, table: &FileTable) -> Result<(), String> {
    let ctx = &sh.ctx;
    let ps = ctx.ps;
    match &call.req {
        Req::Info(req) => {
            let info: odp_hmm_info = from_bytes(out);
            let want = ctx.info;
            let ok = info.version == req.version
                && info.page_size as u64 == ps
                && info.flags == want.flags
                && (info.pci_segment, info.pci_bus, info.pci_devfn)
                    == (want.pci_segment, want.pci_bus, want.pci_devfn)
                && (info.pci_vendor, info.pci_device) == (want.pci_vendor, want.pci_device)
                && info.domain_type == want.domain_type
                && info.backend == want.backend
                && info.dma_mask == want.dma_mask;
            if !ok {
                return Err(format!(
                    "INFO wrote {info:?}; at the start it said {want:?} (version: the caller's)"
                ));
            }
        }
        Req::Register(req) => {
            let out: odp_hmm_register = from_bytes(out);
            let implicit = req.flags & ODP_HMM_REGISTER_IMPLICIT != 0;
            let want_backend = if req.backend == ODP_HMM_BACKEND_DEFAULT {
                ctx.info.backend
            } else {
                req.backend
            };
            let mode_ok = match out.dma_mode {
                ODP_HMM_DMA_MODE_NONE => out.backend == ODP_HMM_BACKEND_NONE,
                ODP_HMM_DMA_MODE_IOVA | ODP_HMM_DMA_MODE_MAP => out.backend != ODP_HMM_BACKEND_NONE,
                _ => false,
            };
            let iova_ok = match out.dma_mode {
                ODP_HMM_DMA_MODE_IOVA if !implicit => out.iova_base != 0,
                _ => out.iova_base == 0,
            };
            if out.handle == 0
                || out.handle <= table.max_handle
                || out.backend != want_backend
                || !mode_ok
                || !iova_ok
                || (out.version, out.flags, out.addr, out.length)
                    != (req.version, req.flags, req.addr, req.length)
            {
                return Err(format!(
                    "REGISTER wrote {out:?} (handles are never 0 and never reused by a file: the \
                     largest so far is {}; backend {want_backend} expected; DMA_MODE_NONE \
                     exactly for BACKEND_NONE; @iova_base only in IOVA mode, and 0 for implicit \
                     registrations; the inputs unchanged)",
                    table.max_handle
                ));
            }
        }
        Req::Fault(req) => {
            let out: odp_hmm_fault = from_bytes(out);
            let npages = req.length / ps;
            if req.flags & ODP_HMM_FAULT_ASYNC != 0 {
                if (out.pages_mapped, out.pages_valid) != (0, 0) {
                    return Err(format!(
                        "an ASYNC fault wrote pages_mapped {} and pages_valid {}: both must be 0",
                        out.pages_mapped, out.pages_valid
                    ));
                }
            } else if out.pages_mapped > npages
                || out.pages_valid > npages
                || (req.flags & ODP_HMM_FAULT_NO_FAULT == 0 && out.pages_valid != npages)
            {
                return Err(format!(
                    "FAULT of {npages} pages wrote pages_mapped {} and pages_valid {} (a fault \
                     that succeeds without NO_FAULT leaves every page mapped)",
                    out.pages_mapped, out.pages_valid
                ));
            }
        }
        Req::Stats(req) => {
            let out: odp_hmm_stats = from_bytes(out);
            let want = if req.handle == 0 {
                table.live.len() as u64
            } else {
                1
            };
            if out.registrations != want || out.version != req.version || out.handle != req.handle {
                return Err(format!(
                    "STATS wrote registrations {} (expected {want}), version {}, handle {}",
                    out.registrations, out.version, out.handle
                ));
            }
            if let Some(reg) = table.live.iter().find(|r| r.handle == req.handle) {
                let npages = reg.len / ps;
                let v1 = size_of_cmd(call.cmd) == ODP_HMM_STATS_SIZE_V1;
                if out.pages_now > npages
                    || (!reg.implicit && out.bookkeeping_bytes > 16 * npages)
                    || (!reg.implicit
                        && reg.dma_mode == ODP_HMM_DMA_MODE_IOVA
                        && out.iova_bytes != reg.len)
                    || (!v1 && !reg.implicit && out.chunks != 0)
                {
                    return Err(format!(
                        "STATS of {reg:?} wrote pages_now {}, bookkeeping_bytes {}, iova_bytes \
                         {}, chunks {}",
                        out.pages_now, out.bookkeeping_bytes, out.iova_bytes, out.chunks
                    ));
                }
            }
        }
        Req::Dma(req) => {
            let out: odp_hmm_dma = from_bytes(out);
            // Each of the 16 attempts faults at most the 2 pages of each end.
            if out.faults > 64 {
                return Err(format!("DMA wrote faults {}", out.faults));
            }
            let _ = req;
        }
        Req::Unregister(_) | Req::Snapshot(..) | Req::Unknown => {}
    }
    Ok(())
}

/// Checks the entries of a successful snapshot in the thread's buffer: each names only known
/// flags, a DMA address exactly where it says it is mapped, and the entry after the last is
/// untouched.
fn check_snapshot(area: &Area, npages: u64) -> Result<(), String> {
    let entry = size_of::<odp_hmm_page>();
    // CAST: At most `SNAP_CAP` entries.
    let n = npages.min(SNAP_CAP) as usize;
    let known = ODP_HMM_PAGE_VALID
        | ODP_HMM_PAGE_WRITE
        | ODP_HMM_PAGE_DMA_MAPPED
        | ODP_HMM_PAGE_P2P
        | ODP_HMM_PAGE_P2P_BUS;
    let bytes = read_back(area.snap, (n + 1).min(SNAP_CAP as usize) * entry);
    for i in 0..n {
        let p: odp_hmm_page = from_bytes(&bytes[i * entry..]);
        let mapped = p.flags & ODP_HMM_PAGE_DMA_MAPPED != 0;
        if p.flags & !known != 0
            || (mapped && p.flags & ODP_HMM_PAGE_VALID == 0)
            || (!mapped && p.dma_addr != 0)
            || p.order > 30
        {
            return Err(format!(
                "snapshot entry {i} of {npages} is {p:?} (unwritten entries read \
                 0xa5a5a5a5a5a5a5a5)"
            ));
        }
    }
    if n < SNAP_CAP as usize && bytes[n * entry..].iter().any(|&b| b != SNAP_FILL) {
        return Err(format!("a snapshot of {npages} pages wrote entry {n} too"));
    }
    Ok(())
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
    let mut op = match rng.below(1000) {
        0..=79 => Op::Unknown,
        80..=119 => Op::Info,
        120..=229 => Op::Register,
        230..=319 => Op::Unregister,
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
        Op::Unknown => gen_unknown(&mut rng),
    };
    let mut call = call;
    // A snapshot's entries go to the thread's buffer (prefilled, to see what was written).
    if let Req::Snapshot(req, pages) = &mut call.req {
        req.pages = match *pages {
            Pages::Buffer => {
                let n = (req.npages.min(SNAP_CAP - 1) + 1) as usize;
                let fill = vec![SNAP_FILL; n * size_of::<odp_hmm_page>()];
                // SAFETY: The thread's snapshot buffer holds `SNAP_CAP` entries and is used
                // through raw pointers only.
                unsafe {
                    ptr::copy_nonoverlapping(fill.as_ptr(), area.snap as *mut u8, fill.len())
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
    *lock(&sh.current[t]) = Some((index, op, Instant::now()));
    let fd = sh.files[file].file().as_raw_fd();
    let start = Instant::now();
    let got = raw_ioctl(fd, call.cmd, addr);
    let took = start.elapsed();
    *lock(&sh.current[t]) = None;
    if call.copy {
        prof.copies += 1;
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
    if got.is_ok() {
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

/// A fuzzing thread: takes call indices until the run is over.
fn fuzz_thread(sh: &Shared, area: &Area, t: usize) -> Profile {
    let mut prof = Profile::default();
    while !sh.stop.load(Ordering::Relaxed) {
        let index = sh.next.fetch_add(1, Ordering::Relaxed);
        if index >= sh.cfg.calls {
            break;
        }
        one_call(sh, area, t, index, &mut prof);
    }
    prof
}

/// What a slot of the pool is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Hole,
    Mapped {
        shared: bool,
        prot: i32,
    },
    /// Another mapping took the hole: never touched again.
    Lost,
}

/// The churning thread's view of the pool (only it changes the pool's mappings).
struct Churn<'a> {
    ctx: &'a Ctx,
    /// A memfd as large as the pool: slot `i` maps its offset `i * slot_len` when shared.
    memfd: i32,
    slots: Vec<Slot>,
}

impl Churn<'_> {
    fn slot_addr(&self, s: u64) -> u64 {
        self.ctx.pool + s * self.ctx.slot_len()
    }

    /// Maps slot `s` (`MAP_FIXED` over our own mapping, `MAP_FIXED_NOREPLACE` into a hole).
    fn map(&mut self, s: u64, shared: bool, replace: bool) -> bool {
        let slot_len = self.ctx.slot_len();
        let addr = self.slot_addr(s);
        let fixed = if replace {
            libc::MAP_FIXED
        } else {
            libc::MAP_FIXED_NOREPLACE
        };
        let (flags, fd, off) = if shared {
            (libc::MAP_SHARED | fixed, self.memfd, s * slot_len)
        } else {
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | fixed, -1, 0)
        };
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: The slot lies in the pool, whose mappings only this thread changes and which
        // holds nothing but its own bytes; MAP_FIXED replaces only a slot that is ours.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                slot_len as usize,
                prot,
                flags,
                fd,
                off as libc::off_t,
            )
        };
        // CAST: `s` is below `POOL_SLOTS`.
        if p == libc::MAP_FAILED || p as u64 != addr {
            if !replace {
                self.slots[s as usize] = Slot::Lost;
                self.ctx.lost[s as usize].store(true, Ordering::Relaxed);
            }
            return false;
        }
        self.slots[s as usize] = Slot::Mapped { shared, prot };
        true
    }

    /// One random change to a run of slots.
    fn step(&mut self, rng: &mut Rng) {
        let ps = self.ctx.ps as usize;
        let slot_len = self.ctx.slot_len();
        let first = rng.below(POOL_SLOTS);
        let n = 1 + rng.below(4.min(POOL_SLOTS - first));
        let run = first..first + n;
        // CAST: Slot numbers are below `POOL_SLOTS`.
        let states: Vec<Slot> = run.clone().map(|s| self.slots[s as usize]).collect();
        if states.contains(&Slot::Lost) {
            return;
        }
        if states.contains(&Slot::Hole) {
            for s in run {
                if self.slots[s as usize] == Slot::Hole {
                    let shared = rng.percent(30);
                    self.map(s, shared, false);
                }
            }
            return;
        }
        let addr = self.slot_addr(first);
        let len = (n * slot_len) as usize;
        // SAFETY (each call below): The range is a run of pool slots that this thread mapped;
        // nothing but the pool's own bytes is there.
        match rng.below(20) {
            0..=2 => {
                if unsafe { libc::munmap(addr as *mut libc::c_void, len) } == 0 {
                    for s in run {
                        self.slots[s as usize] = Slot::Hole;
                    }
                }
            }
            3..=4 => {
                let shared = rng.percent(30);
                for s in run {
                    self.map(s, shared, true);
                }
            }
            5..=9 => {
                let prot = rng.pick(&[
                    libc::PROT_READ,
                    libc::PROT_NONE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::PROT_READ | libc::PROT_WRITE,
                ]);
                if unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) } == 0 {
                    for s in run {
                        if let Slot::Mapped { shared, .. } = self.slots[s as usize] {
                            self.slots[s as usize] = Slot::Mapped { shared, prot };
                        }
                    }
                }
            }
            10..=12 => unsafe {
                libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED);
            },
            13..=17 => {
                // Touch the writable pages: present pages for no-fault prefetches, COW breaks.
                for s in run {
                    if let Slot::Mapped { prot, .. } = self.slots[s as usize] {
                        if prot & libc::PROT_WRITE != 0 {
                            let base = self.slot_addr(s) as usize;
                            for page in 0..SLOT_PAGES as usize {
                                let at =
                                    (base + page * ps + rng.below(ps as u64) as usize) as *mut u8;
                                // SAFETY: A writable page of a slot of ours.
                                unsafe { at.write_volatile(rng.u32() as u8) };
                            }
                        }
                    }
                }
            }
            _ => {
                // Move the run over another run of mapped slots (which it replaces).
                let to = rng.below(POOL_SLOTS - n + 1);
                let overlaps = to < first + n && first < to + n;
                let target_mapped =
                    (to..to + n).all(|s| matches!(self.slots[s as usize], Slot::Mapped { .. }));
                if overlaps || !target_mapped {
                    return;
                }
                let p = unsafe {
                    libc::mremap(
                        addr as *mut libc::c_void,
                        len,
                        len,
                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                        self.slot_addr(to) as *mut libc::c_void,
                    )
                };
                if p != libc::MAP_FAILED {
                    for i in 0..n {
                        self.slots[(to + i) as usize] = self.slots[(first + i) as usize];
                        self.slots[(first + i) as usize] = Slot::Hole;
                    }
                }
            }
        }
    }
}

/// The churning thread: changes the pool until `stop`; returns how many changes it made.
fn churn(ctx: &Ctx, memfd: i32, slots: Vec<Slot>, seed: u64, stop: &AtomicBool) -> u64 {
    let mut churn = Churn { ctx, memfd, slots };
    let mut rng = Rng::new(seed, u64::MAX);
    let mut steps = 0;
    while !stop.load(Ordering::Relaxed) {
        churn.step(&mut rng);
        steps += 1;
        thread::sleep(Duration::from_micros(200));
    }
    steps
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

    // The pool: POOL_SLOTS slots between two PROT_NONE guard slots.
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
    };
    // Slot kinds to start with: read-write anonymous, read-only, PROT_NONE, shared, a hole.
    let mut churn_state = Churn {
        ctx: &ctx,
        memfd: pool_memfd.as_raw_fd(),
        slots: vec![Slot::Hole; POOL_SLOTS as usize],
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
        churn_state.slots[s as usize] = if s % 8 == 7 {
            reserve.unmap_part(off, len)?;
            Slot::Hole
        } else {
            Slot::Mapped { shared, prot }
        };
    }
    let slots = churn_state.slots.clone();
    drop(churn_state);

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
    };
    let churn_stop = AtomicBool::new(false);
    let start = Instant::now();
    let (profile, churned, panicked) = thread::scope(|s| {
        let churner = s.spawn(|| {
            churn(
                &sh.ctx,
                pool_memfd.as_raw_fd(),
                slots,
                cfg.seed,
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
            0
        });
        (profile, churned, panicked)
    });
    let secs = start.elapsed().as_secs_f64();
    check!(!panicked, "a fuzzing or churning thread panicked");

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
    let lost = sh
        .ctx
        .lost
        .iter()
        .filter(|l| l.load(Ordering::Relaxed))
        .count();
    if lost > 0 {
        println!("# {lost} pool slots were taken by other mappings (left alone since)");
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
