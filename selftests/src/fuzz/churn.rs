// SPDX-License-Identifier: GPL-2.0

//! The fuzzer's churning thread: it keeps changing the mappings of the pool that the calls
//! register, fault and copy (munmap, `MAP_FIXED` mmap, mremap, mprotect, `MADV_DONTNEED`, writes).

use super::*;

/// What a slot of the pool is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    Hole,
    Mapped {
        shared: bool,
        prot: i32,
    },
    /// Another mapping took the hole: never touched again.
    Lost,
}

/// The churning thread's view of the pool (only it changes the pool's mappings).
pub(super) struct Churn<'a> {
    pub(super) ctx: &'a Ctx,
    /// A memfd as large as the pool: slot `i` maps its offset `i * slot_len` when shared.
    pub(super) memfd: i32,
    pub(super) slots: Vec<Slot>,
    /// What went wrong: why slots were lost (the errno and the mappings found there), a module
    /// parameter that could not be written.
    pub(super) notes: Vec<String>,
}

impl Churn<'_> {
    pub(super) fn slot_addr(&self, s: u64) -> u64 {
        self.ctx.pool + s * self.ctx.slot_len()
    }

    /// Maps slot `s` (`MAP_FIXED` over our own mapping, `MAP_FIXED_NOREPLACE` into a hole).
    pub(super) fn map(&mut self, s: u64, shared: bool, replace: bool) -> bool {
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
                let err = std::io::Error::last_os_error();
                let end = addr + slot_len;
                // What is there now (/proc/self/maps: "start-end perms ...").
                let there: Vec<String> = fs::read_to_string("/proc/self/maps")
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| {
                        let range = l.split_whitespace().next().unwrap_or("");
                        let (a, b) = range.split_once('-').unwrap_or(("0", "0"));
                        let a = u64::from_str_radix(a, 16).unwrap_or(0);
                        let b = u64::from_str_radix(b, 16).unwrap_or(0);
                        a < end && addr < b
                    })
                    .map(String::from)
                    .collect();
                self.notes.push(format!(
                    "pool slot {s} at {addr:#x} lost (left alone since): mmap({}) gave {p:?}: \
                     {err}; there now: {}",
                    if shared { "shared" } else { "anonymous" },
                    there.join(" | ")
                ));
            }
            return false;
        }
        self.slots[s as usize] = Slot::Mapped { shared, prot };
        true
    }

    /// One random change to a run of slots.
    pub(super) fn step(&mut self, rng: &mut Rng) {
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
                // Move one slot over another mapped slot (which it replaces). One slot lies in
                // one VMA (every change is slot-sized), so the move is all or nothing: a move of
                // several VMAs can stop half way.
                let to = rng.below(POOL_SLOTS);
                let Slot::Mapped { shared, .. } = self.slots[to as usize] else {
                    return;
                };
                if to == first {
                    return;
                }
                let p = unsafe {
                    libc::mremap(
                        addr as *mut libc::c_void,
                        slot_len as usize,
                        slot_len as usize,
                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                        self.slot_addr(to) as *mut libc::c_void,
                    )
                };
                if p == libc::MAP_FAILED {
                    // It may have unmapped the target before it failed: map it again.
                    self.map(to, shared, true);
                } else {
                    self.slots[to as usize] = self.slots[first as usize];
                    self.slots[first as usize] = Slot::Hole;
                }
            }
        }
    }
}

/// The churning thread: changes the pool until `stop`; returns how many changes it made, and
/// what went wrong, if anything did. It first unmaps the slots `holes`, once every thread has
/// passed `started`: a thread maps its signal stack (a guard page and 8 KiB) as it starts, and
/// the kernel would put it in a hole made before.
pub(super) fn churn(
    ctx: &Ctx,
    memfd: i32,
    slots: Vec<Slot>,
    holes: &[u64],
    seed: u64,
    started: &Barrier,
    stop: &AtomicBool,
) -> (u64, Vec<String>) {
    let mut churn = Churn {
        ctx,
        memfd,
        slots,
        notes: Vec::new(),
    };
    started.wait();
    for &s in holes {
        let addr = churn.slot_addr(s) as *mut libc::c_void;
        // SAFETY: The slot lies in the pool and is ours (mapped when the pool was made).
        if unsafe { libc::munmap(addr, ctx.slot_len() as usize) } == 0 {
            // CAST: Slot numbers are below `POOL_SLOTS`.
            churn.slots[s as usize] = Slot::Hole;
        }
    }
    let mut rng = Rng::new(seed, u64::MAX);
    let mut steps = 0u64;
    let timeout = "/sys/module/odp_hmm/parameters/device_fault_timeout_ms";
    while !stop.load(Ordering::Relaxed) {
        churn.step(&mut rng);
        steps += 1;
        // 100 steps of every 1000 with device_fault_timeout_ms at 1 ms: device copies give up
        // on faults still running (which go on in the background).
        let low = steps % 1000 >= 900;
        if low != ctx.fault_timeout_low.load(Ordering::SeqCst) {
            // The window opens before the change and closes after it.
            if low {
                ctx.fault_timeout_low.store(true, Ordering::SeqCst);
            }
            ctx.fault_timeout_changes.fetch_add(1, Ordering::SeqCst);
            let value = if low { "1" } else { FAULT_TIMEOUT_MS };
            if let Err(e) = fs::write(timeout, value) {
                churn
                    .notes
                    .push(format!("(writing {value} to {timeout}: {e})"));
            }
            ctx.fault_timeout_changes.fetch_add(1, Ordering::SeqCst);
            if !low {
                ctx.fault_timeout_low.store(false, Ordering::SeqCst);
            }
        }
        thread::sleep(Duration::from_micros(200));
    }
    (steps, churn.notes)
}
