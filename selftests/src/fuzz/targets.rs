// SPDX-License-Identifier: GPL-2.0

//! What the fuzzer's calls name: the registrations it knows of, per file, and the memory (the
//! churned pool, pages no call can use) with the addresses and lengths it picks from.

use super::*;

/// A registration the fuzzer made.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reg {
    pub(super) handle: u64,
    pub(super) addr: u64,
    pub(super) len: u64,
    pub(super) writable: bool,
    pub(super) implicit: bool,
    pub(super) dma_mode: u32,
    /// `ODP_HMM_BACKEND_PINNED`: a page pointer per page besides the state word.
    pub(super) pinned: bool,
}

impl Reg {
    pub(super) fn end(&self) -> u64 {
        self.addr + self.len
    }
}

/// What the fuzzer knows of one open file's handles. Registrations and unregistrations are made
/// with the table's lock held, so a handle the table does not know is not live while the lock
/// is held, and only handles above `max_handle` can become live later.
#[derive(Clone, Default)]
pub(super) struct FileTable {
    pub(super) live: Vec<Reg>,
    /// Handles unregistered lately.
    pub(super) stale: Vec<u64>,
    /// The largest handle a registration returned.
    pub(super) max_handle: u64,
}

/// What a handle names in a file, as far as the fuzzer can tell.
#[derive(Clone, Copy, Debug)]
pub(super) enum Handle {
    /// A registration (another thread may be unregistering it, unless the table is locked).
    Live(Reg),
    /// Nothing, and never anything from now on.
    Dead,
    /// A registration another thread may be making right now.
    Unknown,
}

impl FileTable {
    pub(super) fn classify(&self, handle: u64, locked: bool) -> Handle {
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
pub(super) struct Ctx {
    pub(super) ps: u64,
    /// The end of the user address space (`TASK_SIZE`).
    pub(super) task_size: u64,
    /// What INFO said at the start.
    pub(super) info: odp_hmm_info,
    /// The churned pool: `POOL_SLOTS` slots from `pool`, a `PROT_NONE` slot before and after.
    pub(super) pool: u64,
    /// Slots the churning thread could not map back (another mapping took the hole): no device
    /// copy may write there.
    pub(super) lost: Vec<AtomicBool>,
    /// An unmapped page between two `PROT_NONE` pages.
    pub(super) hole: u64,
    /// A `PROT_NONE` page.
    pub(super) prot_none: u64,
    /// A read-only page.
    pub(super) read_only: u64,
    /// Whether the churning thread has `device_fault_timeout_ms` at 1 ms now, and how often it
    /// changed it: a device copy that overlapped such a window may time out.
    pub(super) fault_timeout_low: AtomicBool,
    pub(super) fault_timeout_changes: AtomicU64,
}

impl Ctx {
    pub(super) fn slot_len(&self) -> u64 {
        SLOT_PAGES * self.ps
    }

    pub(super) fn pool_len(&self) -> u64 {
        POOL_SLOTS * self.slot_len()
    }

    pub(super) fn pool_pages(&self) -> u64 {
        POOL_SLOTS * SLOT_PAGES
    }

    pub(super) fn any_lost(&self) -> bool {
        self.lost.iter().any(|l| l.load(Ordering::Relaxed))
    }

    pub(super) fn in_pool(&self, addr: u64) -> bool {
        addr >= self.pool && addr - self.pool < self.pool_len()
    }

    /// Whether a device write of `len` bytes at `addr` stays in slots the churning thread owns
    /// (or reaches its `PROT_NONE` guard, which makes it fail).
    pub(super) fn writable_target(&self, addr: u64, len: u64) -> bool {
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
    pub(super) fn addr(&self, rng: &mut Rng) -> u64 {
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
    pub(super) fn len(&self, rng: &mut Rng, addr: u64) -> u64 {
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
    pub(super) fn pool_range(&self, rng: &mut Rng) -> (u64, u64) {
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
    pub(super) fn range_in(&self, rng: &mut Rng, reg: Option<&Reg>) -> (u64, u64) {
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
    pub(super) fn copy_addr(&self, rng: &mut Rng, reg: Option<&Reg>, dst: bool) -> u64 {
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
