// SPDX-License-Identifier: GPL-2.0

//! One call of the fuzzer: its generation from the seed (each ioctl's structure, and where it is
//! placed), what the oracle expects of it, and the checks of what a successful call wrote.

use super::*;

/// The uAPI structures, which are plain old data.
///
/// # Safety
///
/// Implementors are `#[repr(C)]` structures of `u32` and `u64` fields without padding (the
/// header's layout rules, checked by the odp-hmm-uapi crate's layout test): every byte is
/// initialised and every bit pattern is a valid value.
pub(super) unsafe trait Pod: Copy + Default + std::fmt::Debug {}

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
pub(super) fn bytes_of<T: Pod>(v: &T) -> Vec<u8> {
    // SAFETY: `T: Pod` has no padding, so all its bytes are initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// A `T` from the first bytes of `b`; fields beyond `b` are 0.
pub(super) fn from_bytes<T: Pod>(b: &[u8]) -> T {
    let mut v = T::default();
    let n = b.len().min(size_of::<T>());
    // SAFETY: At most `size_of::<T>()` bytes are copied into `v`; any bit pattern is a `T: Pod`.
    unsafe { ptr::copy_nonoverlapping(b.as_ptr(), (&mut v as *mut T).cast::<u8>(), n) };
    v
}

/// Where the argument structure of a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ptr {
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
    pub(super) fn unreadable(self) -> bool {
        !matches!(self, Ptr::Good(_) | Ptr::ReadOnly)
    }
}

/// Where a snapshot's entries go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pages {
    /// The thread's snapshot buffer ([`SNAP_CAP`] entries, then a `PROT_NONE` page).
    Buffer,
    /// An address in the churned pool (whatever it is mapped as now).
    Pool(u64),
    /// The read-only page.
    ReadOnly,
    /// An address nothing may be written to: 0, the kernel, non-canonical, unmapped, `PROT_NONE`.
    Bad(u64),
}

/// One call, generated.
pub(super) struct Call {
    pub(super) cmd: u32,
    /// The structure (its first `size` bytes are placed at the pointer).
    pub(super) req: Req,
    /// Bytes placed at the pointer.
    pub(super) bytes: Vec<u8>,
    pub(super) ptr: Ptr,
    pub(super) expect: Expect,
    /// The registrations the call names, for failure messages.
    pub(super) regs: Vec<(u64, Handle)>,
    /// Whether it may reach the copy engine (it took a device copy of the budget).
    pub(super) copy: bool,
}

/// The argument of a call.
#[derive(Debug)]
pub(super) enum Req {
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
pub(super) fn gen_version(rng: &mut Rng) -> u32 {
    match rng.below(100) {
        0..=89 => ODP_HMM_ABI_VERSION,
        90..=93 => 1,
        94 => 0,
        95 => ODP_HMM_ABI_VERSION + 1,
        96 => u32::MAX,
        _ => rng.u32(),
    }
}

/// Where the structure goes: mostly a readable and writable place.
pub(super) fn gen_ptr(rng: &mut Rng, size: u64) -> Ptr {
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

/// A handle for a call: mostly a live one of the file.
pub(super) fn gen_handle(rng: &mut Rng, table: &FileTable, recent: &[u64]) -> u64 {
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

/// Generates an INFO call.
pub(super) fn gen_info(rng: &mut Rng) -> Call {
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
pub(super) fn gen_register(rng: &mut Rng, ctx: &Ctx) -> Call {
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
        60..=89 => 1 + rng.below(5) as u32,
        _ => {
            let any = rng.u32();
            rng.pick(&[ODP_HMM_BACKEND_PINNED + 1, u32::MAX, any])
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

pub(super) fn expect_register(req: &odp_hmm_register, ptr: Ptr, ctx: &Ctx) -> Expect {
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
    if req.backend > ODP_HMM_BACKEND_PINNED {
        e.early(libc::EINVAL, "@backend is not an ODP_HMM_BACKEND_*");
    }
    let implicit = req.flags & ODP_HMM_REGISTER_IMPLICIT != 0;
    let pinned = req.backend == ODP_HMM_BACKEND_PINNED;
    if implicit && pinned {
        e.early(
            libc::EINVAL,
            "ODP_HMM_REGISTER_IMPLICIT with ODP_HMM_BACKEND_PINNED",
        );
    }
    if pinned {
        e.may(libc::ENOMEM, "pinned pages over RLIMIT_MEMLOCK");
    }
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
pub(super) fn gen_unregister(rng: &mut Rng, table: &FileTable, recent: &[u64]) -> Call {
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
pub(super) fn gen_fault(rng: &mut Rng, ctx: &Ctx, table: &FileTable, recent: &[u64]) -> Call {
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
pub(super) fn gen_snapshot(rng: &mut Rng, ctx: &Ctx, table: &FileTable, recent: &[u64]) -> Call {
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
pub(super) fn gen_stats(rng: &mut Rng, table: &FileTable, recent: &[u64]) -> Call {
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
pub(super) fn gen_dma(rng: &mut Rng, sh: &Shared, table: &FileTable, recent: &[u64]) -> Call {
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

pub(super) fn expect_dma(
    req: &odp_hmm_dma,
    ptr: Ptr,
    sh: &Shared,
    regs: &[(u64, Handle)],
) -> Expect {
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
pub(super) fn gen_unknown(rng: &mut Rng) -> Call {
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
pub(super) fn place(call: &Call, area: &Area, ctx: &Ctx, rng: &mut Rng) -> u64 {
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
pub(super) fn read_back(at: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    // SAFETY: `at..at + len` lies in this thread's argument pages or snapshot buffer, readable
    // and used through raw pointers only.
    unsafe { ptr::copy_nonoverlapping(at as *const u8, out.as_mut_ptr(), len) };
    out
}

/// `ioctl(fd, cmd, arg)`.
pub(super) fn raw_ioctl(fd: i32, cmd: u32, arg: u64) -> Result<(), i32> {
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
pub(super) fn check_output(
    call: &Call,
    out: &[u8],
    sh: &Shared,
    table: &FileTable,
) -> Result<(), String> {
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
                // A state word and at most a DMA address per page, and a page pointer if pinned.
                let per_page = if reg.pinned { 24 } else { 16 };
                if out.pages_now > npages
                    || (!reg.implicit && out.bookkeeping_bytes > per_page * npages)
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
pub(super) fn check_snapshot(area: &Area, npages: u64) -> Result<(), String> {
    // CAST: At most `SNAP_CAP` entries.
    let n = npages.min(SNAP_CAP) as usize;
    let known = ODP_HMM_PAGE_VALID
        | ODP_HMM_PAGE_WRITE
        | ODP_HMM_PAGE_DMA_MAPPED
        | ODP_HMM_PAGE_P2P
        | ODP_HMM_PAGE_P2P_BUS;
    // Entry by entry: no large allocation while the pool has holes a mapping could take.
    let at = |i: usize| -> odp_hmm_page {
        // SAFETY: Entry `i < SNAP_CAP` of the thread's snapshot buffer, read through a raw
        // pointer only; any bit pattern is an `odp_hmm_page`.
        unsafe { ptr::read_unaligned((area.snap as *const odp_hmm_page).add(i)) }
    };
    for i in 0..n {
        let p = at(i);
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
    let fill = odp_hmm_page {
        dma_addr: u64::from_ne_bytes([SNAP_FILL; 8]),
        flags: u32::from_ne_bytes([SNAP_FILL; 4]),
        order: u32::from_ne_bytes([SNAP_FILL; 4]),
    };
    if n < SNAP_CAP as usize && at(n) != fill {
        return Err(format!("a snapshot of {npages} pages wrote entry {n} too"));
    }
    Ok(())
}
