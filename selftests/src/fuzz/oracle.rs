// SPDX-License-Identifier: GPL-2.0

//! The fuzzer's oracle: the ioctl numbers, what `include/uapi/linux/odp_hmm.h` documents for each,
//! and the argument rules that decide which errnos a call may end with.

use super::*;

/// The `ioctl` number fields of `<asm-generic/ioctl.h>`.
pub(super) const IOC_NRSHIFT: u32 = 0;
pub(super) const IOC_TYPESHIFT: u32 = 8;
pub(super) const IOC_SIZESHIFT: u32 = 16;
pub(super) const IOC_DIRSHIFT: u32 = 30;
pub(super) const IOC_SIZEMASK: u32 = 0x3fff;

/// `_IOC(dir, type, nr, size)`.
pub(super) fn ioc(dir: u32, ty: u32, nr: u32, size: u32) -> u32 {
    (dir << IOC_DIRSHIFT)
        | ((size & IOC_SIZEMASK) << IOC_SIZESHIFT)
        | ((ty & 0xff) << IOC_TYPESHIFT)
        | ((nr & 0xff) << IOC_NRSHIFT)
}

/// `cmd` with its size field replaced.
pub(super) fn with_size(cmd: u32, size: u32) -> u32 {
    (cmd & !(IOC_SIZEMASK << IOC_SIZESHIFT)) | ((size & IOC_SIZEMASK) << IOC_SIZESHIFT)
}

/// The size field of `cmd`.
pub(super) fn size_of_cmd(cmd: u32) -> u32 {
    (cmd >> IOC_SIZESHIFT) & IOC_SIZEMASK
}

/// Ioctl types the VFS answers itself before any driver sees the call (`do_vfs_ioctl()`:
/// `FIGETBSZ`, `FS_IOC_GETFSUUID`, `FIOCLEX`/`FIONBIO`/..., `FIFREEZE`/`FS_IOC_FSGETXATTR`,
/// `FS_IOC_GETFLAGS`/`FS_IOC_FIEMAP`, `FICLONE`/`FIDEDUPERANGE`): not the module's to refuse.
pub(super) const VFS_TYPES: &[u32] = &[0x00, 0x15, 0x54, 0x58, 0x66, 0x94];

/// The name of an errno, for messages.
pub(super) fn errno_name(e: i32) -> String {
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
pub(super) enum Op {
    Info,
    Register,
    Unregister,
    Fault,
    Snapshot,
    Stats,
    Dma,
    Unknown,
    /// Not an ioctl: the file is closed and opened again (`dup2()` of a new open over its
    /// descriptor), while the other thread's calls may be running on it.
    Reopen,
}

/// The ioctls of the header, with the size of each in every ABI version.
pub(super) const KNOWN: &[(Op, u32, &[u32])] = &[
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
    pub(super) fn name(self) -> &'static str {
        match self {
            Op::Info => "ODP_HMM_IOC_INFO",
            Op::Register => "ODP_HMM_IOC_REGISTER",
            Op::Unregister => "ODP_HMM_IOC_UNREGISTER",
            Op::Fault => "ODP_HMM_IOC_FAULT",
            Op::Snapshot => "ODP_HMM_IOC_SNAPSHOT",
            Op::Stats => "ODP_HMM_IOC_STATS",
            Op::Dma => "ODP_HMM_IOC_DMA",
            Op::Unknown => "an unknown ioctl",
            Op::Reopen => "close and reopen",
        }
    }

    /// Whether the module writes the structure back (`_IOWR`).
    pub(super) fn writes_back(self) -> bool {
        matches!(
            self,
            Op::Info | Op::Register | Op::Fault | Op::Stats | Op::Dma
        )
    }

    /// The errnos `include/uapi/linux/odp_hmm.h` documents for the ioctl: its "Errors" list
    /// read call by call. ENOTTY (unknown ioctl or size), EPROTONOSUPPORT (@version) and EFAULT
    /// (a user pointer that cannot be accessed) apply to every call.
    pub(super) fn documented(self) -> &'static [i32] {
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
            Op::Reopen => &[],
        }
    }
}

/// Whether `cmd` is a call the module must know: one of the header's numbers with the size of
/// its structure in some ABI version.
pub(super) fn is_known(cmd: u32) -> bool {
    KNOWN.iter().any(|&(_, known, sizes)| {
        with_size(known, 0) == with_size(cmd, 0) && sizes.contains(&size_of_cmd(cmd))
    })
}

/// What a call may end with.
///
/// Errnos come with the reason the header gives for them. An argument error the module checks
/// before it acts makes the call fail with it (or with another argument error); an error found
/// as the call acts (a write-back to a read-only page) makes it fail too, with it or anything
/// the state of the memory may cause; a call without either may succeed or fail with what the
/// state of the memory and the other threads may cause.
#[derive(Default, Debug)]
pub(super) struct Expect {
    /// Argument errors, checked before the call acts.
    pub(super) early: Vec<(i32, &'static str)>,
    /// Errors found as the call acts.
    pub(super) late: Vec<(i32, &'static str)>,
    /// What the memory's state and the other threads may cause.
    pub(super) may: Vec<(i32, &'static str)>,
    /// Of those, what may come before any argument check: the handle was unregistered by
    /// another thread, or memory is short.
    pub(super) race: Vec<(i32, &'static str)>,
}

impl Expect {
    pub(super) fn early(&mut self, errno: i32, why: &'static str) {
        self.early.push((errno, why));
    }

    pub(super) fn late(&mut self, errno: i32, why: &'static str) {
        self.late.push((errno, why));
    }

    pub(super) fn may(&mut self, errno: i32, why: &'static str) {
        self.may.push((errno, why));
    }

    pub(super) fn race(&mut self, errno: i32, why: &'static str) {
        self.race.push((errno, why));
    }

    pub(super) fn must_fail(&self) -> bool {
        !self.early.is_empty() || !self.late.is_empty()
    }

    /// The errnos the call may fail with.
    pub(super) fn allowed(&self) -> Vec<(i32, &'static str)> {
        let mut all: Vec<_> = if self.early.is_empty() {
            self.late.iter().chain(&self.may).copied().collect()
        } else {
            self.early.clone()
        };
        all.extend(self.race.iter().copied());
        all
    }

    /// What a call that raced the close of its file may end with: anything the header documents
    /// for its ioctl (its handles may name nothing, or registrations of the new file).
    pub(super) fn documented(op: Op) -> Self {
        Self {
            may: op
                .documented()
                .iter()
                .map(|&e| {
                    (
                        e,
                        "documented for the ioctl (the file was reopened meanwhile)",
                    )
                })
                .collect(),
            ..Self::default()
        }
    }

    /// `Err` with what is wrong if `got` is not what the header allows.
    pub(super) fn verdict(&self, got: Result<(), i32>) -> Result<(), String> {
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

pub(super) fn check_version(e: &mut Expect, version: u32) {
    if version == 0 || version > ODP_HMM_ABI_VERSION {
        e.early(
            libc::EPROTONOSUPPORT,
            "@version is 0 or newer than ODP_HMM_ABI_VERSION",
        );
    }
}

/// What the structure's pointer adds to `e`.
pub(super) fn check_ptr(e: &mut Expect, ptr: Ptr, op: Op) {
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

/// What a range `addr..addr+len` for a registration adds to `e` (REGISTER's checks: page
/// aligned, not empty, inside the user address space).
pub(super) fn check_user_range(e: &mut Expect, ctx: &Ctx, addr: u64, len: u64) {
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
pub(super) fn check_sub_range(e: &mut Expect, ctx: &Ctx, reg: Option<&Reg>, addr: u64, len: u64) {
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
pub(super) fn check_handle(e: &mut Expect, h: Handle) -> Option<Reg> {
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
            // Looked up before the range is checked.
            e.race(libc::ENOENT, "unknown handle");
            None
        }
    }
}
