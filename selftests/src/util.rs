// SPDX-License-Identifier: GPL-2.0

//! Helpers shared by the selftests: memory mappings, errno checks, kernel-log markers, child
//! processes.

use std::{
    ffi::CString,
    fs,
    io::{
        self,
        Write, //
    },
    os::fd::FromRawFd,
    process::Command,
    ptr,
};

use odp_hmm_uapi::*;

use crate::ktap::{
    Outcome,
    TestResult, //
};

/// 2 MiB: a PMD-sized THP.
pub const HUGE: usize = 2 << 20;

/// A memory mapping owned by the test, unmapped on drop (unless already unmapped).
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `mmap` with the given protection and flags (`fd` -1 for anonymous).
    pub fn new(len: usize, prot: i32, flags: i32, fd: i32) -> io::Result<Self> {
        // SAFETY: A fresh mapping chosen by the kernel overlaps nothing of ours.
        let ptr = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Takes ownership of `len` bytes mapped at `addr` by other means.
    pub fn adopt(addr: u64, len: usize) -> Self {
        Self {
            ptr: addr as *mut u8,
            len,
        }
    }

    /// Private anonymous read-write memory.
    pub fn anon(len: usize) -> io::Result<Self> {
        Self::new(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
        )
    }

    /// Anonymous memory aligned to 2 MiB and advised for THP (`MADV_HUGEPAGE`).
    pub fn anon_huge(len: usize) -> io::Result<Self> {
        let raw = Self::anon(len + HUGE)?;
        let start = (raw.addr() + HUGE as u64 - 1) & !(HUGE as u64 - 1);
        let head = (start - raw.addr()) as usize;
        let tail = HUGE - head;
        // SAFETY: Both ranges lie inside `raw`, which is ours; what remains is `len` bytes.
        unsafe {
            if head > 0 {
                libc::munmap(raw.ptr.cast(), head);
            }
            libc::munmap(raw.ptr.add(head + len).cast(), tail);
        }
        std::mem::forget(raw);
        let m = Self {
            ptr: start as *mut u8,
            len,
        };
        // SAFETY: The range is our mapping.
        if unsafe { libc::madvise(m.ptr.cast(), len, libc::MADV_HUGEPAGE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(m)
    }

    /// Shared mapping of a new memfd of `len` bytes.
    pub fn memfd_shared(len: usize) -> io::Result<Self> {
        let name = CString::new("odp_hmm_selftest").expect("no NUL");
        // SAFETY: `name` is a valid C string.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is ours.
        let ret = unsafe { libc::ftruncate(fd, len as i64) };
        let m = if ret == 0 {
            Self::new(
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
            )
        } else {
            Err(io::Error::last_os_error())
        };
        // SAFETY: `fd` is ours; the mapping keeps the file alive.
        unsafe { libc::close(fd) };
        m
    }

    /// The first address.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: The mapping is readable and `len` bytes long while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: As above, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Fills page `i` with a pattern derived from `seed`.
    pub fn fill_page(&mut self, i: usize, seed: u8) {
        let ps = page_size();
        pattern(&mut self.bytes_mut()[i * ps..(i + 1) * ps], seed);
    }

    /// `munmap` of `len` bytes at byte offset `off`.
    pub fn unmap_part(&self, off: usize, len: usize) -> io::Result<()> {
        // SAFETY: The range lies inside our mapping; the test stops using it.
        if unsafe { libc::munmap(self.ptr.add(off).cast(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Maps fresh anonymous memory over `len` bytes at `off` (`MAP_FIXED`).
    pub fn remap_part(&self, off: usize, len: usize) -> io::Result<()> {
        // SAFETY: The range lies inside our (partly unmapped) mapping; MAP_FIXED replaces only it.
        let p = unsafe {
            libc::mmap(
                self.ptr.add(off).cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `mprotect` of `len` bytes at `off`.
    pub fn protect(&self, off: usize, len: usize, prot: i32) -> io::Result<()> {
        // SAFETY: The range lies inside our mapping.
        if unsafe { libc::mprotect(self.ptr.add(off).cast(), len, prot) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `madvise` of `len` bytes at `off`.
    pub fn advise(&self, off: usize, len: usize, advice: i32) -> io::Result<()> {
        // SAFETY: The range lies inside our mapping.
        if unsafe { libc::madvise(self.ptr.add(off).cast(), len, advice) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Gives the mapping up without unmapping it (it was unmapped some other way).
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: The mapping is ours; parts already unmapped are ignored by munmap.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Fills `buf` with a pattern derived from `seed` and the offset, so that every page differs.
pub fn pattern(buf: &mut [u8], seed: u8) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = seed
            .wrapping_add((i as u8).wrapping_mul(7))
            .wrapping_add((i >> 8) as u8);
    }
}

/// Expects `result` to fail with `errno`.
pub fn expect_errno<T: std::fmt::Debug>(
    result: io::Result<T>,
    errno: i32,
    what: &str,
) -> TestResult {
    match result {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        Err(e) => Err(Outcome::Fail(format!(
            "{what}: expected errno {} ({}), got {e}",
            errno,
            io::Error::from_raw_os_error(errno)
        ))),
        Ok(v) => Err(Outcome::Fail(format!(
            "{what}: expected errno {} ({}), but it succeeded: {v:?}",
            errno,
            io::Error::from_raw_os_error(errno)
        ))),
    }
}

/// Writes a marker line to the kernel log (the VM harness reads them).
pub fn kmsg(msg: &str) {
    if let Ok(mut f) = fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        // One write per record: /dev/kmsg makes a log line of each write.
        let _ = f.write_all(format!("odp_hmm-test: {msg}\n").as_bytes());
    }
}

/// Runs `f` between the markers that allow IOMMU faults in the kernel log, and waits (up to 5 s)
/// until the IOMMU has reported a fault at `dma_addr` in the log. Returns `f`'s result and whether
/// the fault was seen. The VM harness fails the run on IOMMU faults outside such windows, and on
/// a window without one (see scripts/scan-kernel-log.sh).
pub fn expecting_iommu_fault<T>(dma_addr: u64, f: impl FnOnce() -> T) -> (T, bool) {
    kmsg("expect iommu fault begin");
    let r = f();
    let needle = format!("fault addr {dma_addr:#x}");
    let start = std::time::Instant::now();
    let mut seen = false;
    while !seen && start.elapsed() < std::time::Duration::from_secs(5) {
        let (_, log) = sh("dmesg");
        let window = log
            .rsplit("odp_hmm-test: expect iommu fault begin")
            .next()
            .unwrap_or("");
        seen = window
            .lines()
            .any(|l| l.contains("DMAR:") && l.contains(&needle));
        if !seen {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    kmsg("expect iommu fault end");
    (r, seen)
}

/// Runs a shell command; returns its exit status code and combined output.
pub fn sh(cmd: &str) -> (i32, String) {
    match Command::new("sh").arg("-c").arg(cmd).output() {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text += &String::from_utf8_lossy(&out.stderr);
            (out.status.code().unwrap_or(-1), text)
        }
        Err(e) => (-1, e.to_string()),
    }
}

/// A new pipe: its read end and its write end, each closed on drop.
pub fn pipe() -> io::Result<(fs::File, fs::File)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid out-array of two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: Both descriptors are new and ours alone.
    Ok(unsafe { (fs::File::from_raw_fd(fds[0]), fs::File::from_raw_fd(fds[1])) })
}

/// Runs `child` in a forked process and returns its exit code (`child` returns it).
pub fn in_child(child: impl FnOnce() -> i32) -> io::Result<i32> {
    // SAFETY: The selftests are single-threaded when they fork; the child only runs `child` and
    // exits without unwinding into the parent's state.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = child();
        // SAFETY: Leaves the child at once, skipping the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    wait_child(pid)
}

/// Waits for `pid` and returns its exit code (128 + signal if it was killed).
pub fn wait_child(pid: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Ok(128 + libc::WTERMSIG(status))
    }
}

/// Opens the device, registers `m` with `flags`, returns both.
pub fn register(m: &Mapping, flags: u32) -> io::Result<(Device, Registration)> {
    let dev = Device::open()?;
    let reg = dev.register(m.addr(), m.len() as u64, flags, ODP_HMM_BACKEND_DEFAULT)?;
    Ok((dev, reg))
}

/// Read-write access.
pub const RW: u32 = ODP_HMM_ACCESS_READ | ODP_HMM_ACCESS_WRITE;

/// The flags of every page of `pages` as a compact string (for failure messages).
pub fn flags_str(pages: &[odp_hmm_page]) -> String {
    pages
        .iter()
        .map(|p| {
            if p.flags & ODP_HMM_PAGE_DMA_MAPPED == 0 {
                '.'
            } else if p.flags & ODP_HMM_PAGE_WRITE != 0 {
                'W'
            } else {
                'R'
            }
        })
        .collect()
}

/// Indices of the mapped pages of a snapshot.
pub fn mapped(pages: &[odp_hmm_page]) -> Vec<usize> {
    pages
        .iter()
        .enumerate()
        .filter(|(_, p)| p.flags & ODP_HMM_PAGE_DMA_MAPPED != 0)
        .map(|(i, _)| i)
        .collect()
}

/// The pages of the link unit of page `i` of a snapshot whose page 0 is at user address `addr`:
/// `2^order` pages aligned in virtual page numbers (the module's unit rule, `src/link_plan.rs`);
/// just `i` if it is not mapped.
pub fn unit_of(addr: u64, pages: &[odp_hmm_page], i: usize) -> std::ops::Range<usize> {
    let p = pages[i];
    if p.flags & ODP_HMM_PAGE_DMA_MAPPED == 0 || p.order >= 31 {
        return i..i + 1;
    }
    let n = 1usize << p.order;
    let vpn = (addr / page_size() as u64) as usize + i;
    let start = i.saturating_sub(vpn % n);
    start..(start + n).min(pages.len())
}

/// Checks what an invalidation of pages `gone` did, from snapshots of the registration (page 0 at
/// `addr`) taken `before` and `after` it: every page of `gone` is unmapped; a page outside the
/// link units of those pages is as it was (the module may unmap whole units, never less, never
/// more). Returns how many pages went, for the `pages_unmapped` counter.
pub fn check_invalidated(
    addr: u64,
    before: &[odp_hmm_page],
    after: &[odp_hmm_page],
    gone: std::ops::Range<usize>,
) -> Result<u64, String> {
    let is_mapped = |p: &odp_hmm_page| p.flags & ODP_HMM_PAGE_DMA_MAPPED != 0;
    let mut may_go = vec![false; before.len()];
    for i in gone.clone() {
        for j in unit_of(addr, before, i) {
            may_go[j] = true;
        }
    }
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        if gone.contains(&i) && is_mapped(a) {
            return Err(format!(
                "page {i} is still mapped after its invalidation (before: {}, after: {})",
                flags_str(before),
                flags_str(after)
            ));
        }
        if !may_go[i] && is_mapped(b) != is_mapped(a) {
            return Err(format!(
                "page {i}, outside the invalidated units, changed (before: {}, after: {})",
                flags_str(before),
                flags_str(after)
            ));
        }
    }
    Ok(before
        .iter()
        .zip(after)
        .filter(|(b, a)| is_mapped(b) && !is_mapped(a))
        .count() as u64)
}

/// A line of /proc/meminfo, in kB.
pub fn meminfo_kb(key: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// This process's resident set, in kB.
pub fn rss_kb() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// A device copy of `len` bytes within registration `reg` from offset `src` to offset `dst`.
pub fn copy_in(
    dev: &Device,
    m: &Mapping,
    reg: &Registration,
    src: usize,
    dst: usize,
    len: usize,
) -> std::io::Result<u64> {
    dev.copy(
        (reg.handle, m.addr() + src as u64),
        (reg.handle, m.addr() + dst as u64),
        len as u64,
    )
}

/// Copies page `src` of `m` to page `dst` through the device and checks the bytes.
pub fn copy_and_check(
    dev: &Device,
    m: &Mapping,
    reg: &Registration,
    src: usize,
    dst: usize,
) -> TestResult {
    let ps = page_size();
    copy_in(dev, m, reg, src * ps, dst * ps, ps)?;
    let b = m.bytes();
    if b[src * ps..(src + 1) * ps] != b[dst * ps..(dst + 1) * ps] {
        return Err(Outcome::Fail(format!(
            "device copy of page {src} to page {dst}: bytes differ"
        )));
    }
    Ok(())
}
