// SPDX-License-Identifier: GPL-2.0

//! The memory a benchmark registers, in the states the benchmark compares:
//!
//! - `contiguous`: anonymous 4 KiB pages in physically contiguous runs of 512 or more: populated
//!   as transparent huge pages, then split into 4 KiB pages and folios by the kernel's
//!   `split_huge_pages` debugfs file, and `MADV_NOHUGEPAGE` so that nothing merges them again
//!   (how the page allocator hands out a plain 4 KiB population depends on what was freed
//!   before: as scattered as the fragmented kind after a few tests);
//! - `fragmented`: the same, populated while the allocator's free memory is scattered pages: a
//!   pool twice the region's size is populated, every other page of it freed
//!   (`MADV_DONTNEED`), and only then the region populated, so that it gets the freed pages;
//!   the pool's other half stays allocated until the region goes;
//! - `thp`: anonymous memory with `MADV_HUGEPAGE`, 2 MiB-aligned;
//! - `hugetlb`: `MAP_HUGETLB` 2 MiB pages (the caller reserves them: [`HugetlbPool`]).
//!
//! [`Region::mean_run`] measures how physically contiguous the region is, from
//! `/proc/self/pagemap` (frame numbers need `CAP_SYS_ADMIN`: the benchmark runs as root).

use std::{
    fs,
    io::{
        Read,
        Seek,
        SeekFrom, //
    },
};

use odp_hmm_uapi::page_size;

/// 2 MiB.
pub const HUGE: usize = 2 << 20;

/// The memory kinds, in report order.
pub const KINDS: [&str; 4] = ["contiguous", "fragmented", "thp", "hugetlb"];

/// The kernel's debugfs file that splits the huge pages of a range of a process.
const SPLIT_HUGE_PAGES: &str = "/sys/kernel/debug/split_huge_pages";

/// A populated, 2 MiB-aligned region of anonymous memory, unmapped when dropped (what is left
/// of it).
pub struct Region {
    ptr: *mut u8,
    len: usize,
    /// The fragmented pool's surviving half, kept until the region goes.
    _pool: Option<Pool>,
}

/// Anonymous memory mapped for the fragmentation, unmapped on drop.
struct Pool {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: Our own mapping.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// `mmap` of `len` bytes of private anonymous memory with extra `flags`.
fn map_anon(len: usize, flags: i32) -> Result<*mut libc::c_void, String> {
    // SAFETY: A fresh mapping chosen by the kernel overlaps nothing of ours.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(format!(
            "mmap of {} MiB: {}",
            len >> 20,
            std::io::Error::last_os_error()
        ));
    }
    Ok(raw)
}

/// `madvise(addr, len, advice)`, an error if it fails.
fn advise(addr: usize, len: usize, advice: i32) -> Result<(), String> {
    // SAFETY: Advice on our own mapping; none of the values used here frees memory that Rust
    // code still refers to (MADV_DONTNEED only zeroes pages the benchmark never reads back).
    if unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) } != 0 {
        return Err(format!(
            "madvise({advice}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Writes one byte in every page of `addr..addr + len`: populates it. Not a zero: the kernel
/// maps zero-filled pages of a huge page it splits to the shared zero page, which would undo the
/// contiguous kind.
fn touch(addr: usize, len: usize) {
    let ps = page_size();
    for off in (0..len).step_by(ps) {
        // SAFETY: Inside our own writable mapping.
        unsafe { std::ptr::write_volatile((addr + off) as *mut u8, (off / ps) as u8 | 1) };
    }
}

impl Region {
    /// A populated region of `len` bytes (a multiple of 2 MiB) of memory `kind`.
    pub fn new(kind: &str, len: usize) -> Result<Self, String> {
        if !KINDS.contains(&kind) {
            return Err(format!("unknown memory kind {kind}"));
        }
        if len == 0 || len % HUGE != 0 {
            return Err(format!("region size {len} is not a multiple of 2 MiB"));
        }
        if kind == "hugetlb" {
            let ptr = map_anon(len, libc::MAP_HUGETLB)
                .map_err(|e| format!("{e} (hugetlb pages reserved?)"))?;
            touch(ptr as usize, len);
            return Ok(Self {
                ptr: ptr.cast(),
                len,
                _pool: None,
            });
        }
        // Room to align to 2 MiB, trimmed afterwards.
        let raw = map_anon(len + HUGE, 0)? as usize;
        let start = raw.next_multiple_of(HUGE);
        // SAFETY: Trims our own mapping to `start..start + len`.
        unsafe {
            if start > raw {
                libc::munmap(raw as *mut libc::c_void, start - raw);
            }
            libc::munmap((start + len) as *mut libc::c_void, raw + HUGE - start);
        }
        let mut region = Self {
            ptr: start as *mut u8,
            len,
            _pool: None,
        };
        let advice = if matches!(kind, "thp" | "contiguous") {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        advise(start, len, advice)?;
        if kind == "fragmented" {
            region._pool = Some(fragment(2 * len)?);
        }
        touch(start, len);
        if kind == "contiguous" {
            let split = format!("{},{start:#x},{:#x}", std::process::id(), start + len);
            fs::write(SPLIT_HUGE_PAGES, &split)
                .map_err(|e| format!("{SPLIT_HUGE_PAGES} <- {split}: {e}"))?;
            advise(start, len, libc::MADV_NOHUGEPAGE)?;
        }
        Ok(region)
    }

    /// The user address of the region.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Unmaps `len` bytes at offset `off` of the region.
    pub fn unmap(&self, off: usize, len: usize) -> Result<(), String> {
        // SAFETY: Part of our own mapping; nothing refers to it afterwards.
        if unsafe { libc::munmap(self.ptr.add(off).cast(), len) } != 0 {
            return Err(format!(
                "munmap +{off:#x} {len:#x}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// The mean length, in pages, of the runs of physically contiguous pages the region is made
    /// of (ascending frame numbers page after page), from `/proc/self/pagemap`; `None` if the
    /// frame numbers cannot be read (not root).
    pub fn mean_run(&self) -> Option<f64> {
        let ps = page_size();
        let npages = self.len / ps;
        let mut file = fs::File::open("/proc/self/pagemap").ok()?;
        file.seek(SeekFrom::Start((self.addr() / ps as u64) * 8))
            .ok()?;
        let mut raw = vec![0u8; npages * 8];
        file.read_exact(&mut raw).ok()?;
        let pfns: Vec<u64> = raw
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .map(|e| {
                // Bit 63: present; bits 0-54: the frame number (0 without CAP_SYS_ADMIN).
                if e >> 63 == 1 {
                    e & ((1 << 55) - 1)
                } else {
                    0
                }
            })
            .collect();
        if pfns.contains(&0) {
            return None;
        }
        let runs = 1 + pfns.windows(2).filter(|w| w[1] != w[0] + 1).count();
        Some(npages as f64 / runs as f64)
    }

    /// Kilobytes of the region backed by transparent huge pages, from `/proc/self/smaps_rollup`
    /// (the whole process's, which holds nothing else of the kind).
    pub fn thp_kb(&self) -> u64 {
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
}

impl Drop for Region {
    fn drop(&mut self) {
        // What an invalidation test left of the region; munmap of unmapped parts is harmless.
        // SAFETY: Our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Populates `len` bytes of 4 KiB pages and frees every other one: the allocator's free memory
/// is then scattered single pages, which the next allocations get. Returns the surviving half.
fn fragment(len: usize) -> Result<Pool, String> {
    let ptr = map_anon(len, 0)?;
    let pool = Pool { ptr, len };
    advise(ptr as usize, len, libc::MADV_NOHUGEPAGE)?;
    touch(ptr as usize, len);
    let ps = page_size();
    for off in (0..len).step_by(2 * ps) {
        advise(ptr as usize + off, ps, libc::MADV_DONTNEED)?;
    }
    Ok(pool)
}

/// Hugetlb pages reserved for the benchmark (`/proc/sys/vm/nr_hugepages`), given back on drop.
pub struct HugetlbPool {
    before: Option<String>,
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

impl HugetlbPool {
    /// Reserves `count` 2 MiB pages (more than before only); an error if the kernel did not
    /// reserve them all.
    pub fn reserve(count: usize) -> Result<Self, String> {
        let before =
            fs::read_to_string(NR_HUGEPAGES).map_err(|e| format!("{NR_HUGEPAGES}: {e}"))?;
        let had: usize = before.trim().parse().unwrap_or(0);
        let pool = Self {
            before: Some(before),
        };
        if had >= count {
            return Ok(pool);
        }
        fs::write(NR_HUGEPAGES, count.to_string())
            .map_err(|e| format!("{NR_HUGEPAGES} <- {count}: {e}"))?;
        let now: usize = fs::read_to_string(NR_HUGEPAGES)
            .map_err(|e| format!("{NR_HUGEPAGES}: {e}"))?
            .trim()
            .parse()
            .unwrap_or(0);
        if now < count {
            return Err(format!(
                "only {now} of {count} hugetlb pages could be reserved"
            ));
        }
        Ok(pool)
    }
}

impl Drop for HugetlbPool {
    fn drop(&mut self) {
        if let Some(before) = self.before.take() {
            let _ = fs::write(NR_HUGEPAGES, before.trim());
        }
    }
}
