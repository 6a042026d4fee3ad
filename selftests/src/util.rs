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

/// The IOMMU that translates for a PCI device, as sysfs tells it: the `iommu` link of the device
/// names the IOMMU unit (`dmar*`: Intel VT-d, `ivhd*`: AMD-Vi, a virtio device: virtio-iommu).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IommuModel {
    /// No IOMMU unit for the device.
    None,
    /// Intel VT-d; `caching_mode` is the CM bit (7) of the unit's capability register, which
    /// QEMU's `caching-mode=on` sets: every map is then flushed too, as a VM's vIOMMU needs.
    Intel { unit: String, caching_mode: bool },
    /// AMD-Vi.
    Amd { unit: String },
    /// virtio-iommu.
    Virtio { unit: String },
    /// Another IOMMU.
    Other { unit: String },
}

impl IommuModel {
    /// The IOMMU of PCI device `bdf` (`DDDD:BB:DD.F`).
    pub fn of(bdf: &str) -> Self {
        let link = format!("/sys/bus/pci/devices/{bdf}/iommu");
        let Ok(target) = fs::canonicalize(&link) else {
            return IommuModel::None;
        };
        let unit = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if unit.starts_with("dmar") {
            let cap = fs::read_to_string(format!("/sys/class/iommu/{unit}/intel-iommu/cap"))
                .ok()
                .and_then(|c| u64::from_str_radix(c.trim(), 16).ok())
                .unwrap_or(0);
            IommuModel::Intel {
                unit,
                caching_mode: cap & (1 << 7) != 0,
            }
        } else if unit.starts_with("ivhd") {
            IommuModel::Amd { unit }
        } else if target.to_string_lossy().contains("/virtio") {
            IommuModel::Virtio { unit }
        } else {
            IommuModel::Other { unit }
        }
    }

    /// Whether a translation fault of the device reaches the guest's kernel log. Found by
    /// running the raw-IOVA proof on each model QEMU 10.0 emulates: VT-d and virtio-iommu report
    /// (`DMAR: ... fault addr`, `fault from EP ... at`); QEMU's amd-iommu logs no event for an
    /// IOVA whose page-table entry is zero (its page walk returns with no permission and no
    /// `IO_PAGE_FAULT`), which is exactly what an unlinked page is.
    pub fn reports_faults(&self) -> bool {
        match self {
            IommuModel::Amd { .. } => !under_qemu(),
            IommuModel::Intel { .. } | IommuModel::Virtio { .. } => true,
            IommuModel::None | IommuModel::Other { .. } => false,
        }
    }

    /// Whether `line` of the kernel log reports a translation fault at `dma_addr`: the address
    /// as `{:#x}`, where this model's driver prints it, followed by no more hex digits.
    pub fn is_fault_line(&self, line: &str, dma_addr: u64) -> bool {
        let (marker, prefix) = match self {
            IommuModel::Intel { .. } => ("DMAR:", "fault addr "),
            IommuModel::Amd { .. } => ("IO_PAGE_FAULT", "address="),
            IommuModel::Virtio { .. } => ("fault from EP", " at "),
            IommuModel::None | IommuModel::Other { .. } => return false,
        };
        let needle = format!("{prefix}{dma_addr:#x}");
        line.contains(marker)
            && line.match_indices(&needle).any(|(at, _)| {
                !line[at + needle.len()..].starts_with(|c: char| c.is_ascii_hexdigit())
            })
    }
}

impl std::fmt::Display for IommuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IommuModel::None => write!(f, "no IOMMU"),
            IommuModel::Intel { unit, caching_mode } => write!(
                f,
                "intel-iommu caching-mode={} ({unit})",
                if *caching_mode { "on" } else { "off" }
            ),
            IommuModel::Amd { unit } => write!(f, "amd-iommu ({unit})"),
            IommuModel::Virtio { unit } => write!(f, "virtio-iommu ({unit})"),
            IommuModel::Other { unit } => write!(f, "IOMMU {unit}"),
        }
    }
}

/// Whether the machine is a QEMU guest (DMI).
fn under_qemu() -> bool {
    // DMI is not in every test kernel; QEMU's own PCI vendor ids (0x1234: edu, std VGA; 0x1b36:
    // Red Hat's QEMU devices) are in every guest of the harness.
    let qemu_pci = fs::read_dir("/sys/bus/pci/devices").is_ok_and(|dir| {
        dir.flatten().any(|d| {
            fs::read_to_string(d.path().join("vendor"))
                .is_ok_and(|v| matches!(v.trim(), "0x1234" | "0x1b36"))
        })
    });
    qemu_pci || fs::read_to_string("/sys/class/dmi/id/sys_vendor").is_ok_and(|v| v.contains("QEMU"))
}

/// What the kernel log said about the faults a window expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultLog {
    /// The IOMMU reported a fault at the address.
    Reported,
    /// It reports faults, but none at the address came.
    Missing,
    /// This IOMMU model reports no faults to the guest: the caller's proof is by content only.
    Unreportable,
}

/// Runs `f` between the markers that allow IOMMU faults in the kernel log, and waits (up to 5 s)
/// until `model` has reported a fault at `dma_addr`, the first address `f` makes the device
/// read. Where the model cannot report faults to the guest the window says so (the marker
/// `expect no iommu fault report`) and the result is [`FaultLog::Unreportable`]: the caller must
/// prove by content that the device read nothing. The VM harness fails the run on IOMMU faults
/// outside such windows, and on a window without one (see scripts/scan-kernel-log.sh).
pub fn expecting_iommu_fault<T>(
    model: &IommuModel,
    dma_addr: u64,
    f: impl FnOnce() -> T,
) -> (T, FaultLog) {
    use std::time::{
        Duration,
        Instant, //
    };
    let reports = model.reports_faults();
    kmsg("expect iommu fault begin");
    if !reports {
        println!("# {model} reports no IOMMU faults to the guest: proving by content");
        kmsg("expect no iommu fault report");
    }
    let r = f();
    let done = Instant::now();
    let mut log = FaultLog::Unreportable;
    if reports {
        log = FaultLog::Missing;
        while done.elapsed() < Duration::from_secs(5) {
            let (_, dmesg) = sh("dmesg");
            let window = dmesg
                .rsplit("odp_hmm-test: expect iommu fault begin")
                .next()
                .unwrap_or("");
            if window.lines().any(|l| model.is_fault_line(l, dma_addr)) {
                log = FaultLog::Reported;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The IOMMU drivers rate-limit their fault messages (10 per 5 s, and VT-d spends two per
    // fault): the window stays open until the last interval its faults began is over, so that a
    // fault after it is reported (and fails the run) rather than suppressed. Where nothing is
    // reported, reports of the window's later reads may still be on their way (an interrupt, a
    // virtqueue).
    let hold = if reports {
        Duration::from_secs(6)
    } else {
        Duration::from_millis(300)
    };
    if let Some(wait) = hold.checked_sub(done.elapsed()) {
        std::thread::sleep(wait);
    }
    kmsg("expect iommu fault end");
    (r, log)
}

/// The device reading raw DMA addresses (`ODP_HMM_DMA_SRC_RAW_IOVA`, the module loaded with
/// `debug_raw_dma=1`) into its buffer, and the buffer copied out: how a test proves what the
/// IOMMU lets the device reach. A sentinel page, registered and mapped before the test unmaps
/// anything, fills the buffer first, so a read the IOMMU refused shows as untouched bytes.
pub struct RawProbe<'a> {
    dev: &'a Device,
    sentinel: Mapping,
    sentinel_handle: u64,
    out: Mapping,
    out_handle: u64,
}

impl<'a> RawProbe<'a> {
    /// Registers and maps the sentinel and the output page. Skips without `debug_raw_dma=1`.
    /// Everything it maps is mapped before the caller unmaps the page it probes: with
    /// `dma_map_phys()` (no IOVA window) a later mapping could be given the freed address.
    pub fn new(dev: &'a Device) -> Result<Self, Outcome> {
        if dev.info()?.flags & ODP_HMM_INFO_DEBUG_RAW_DMA == 0 {
            return Err(Outcome::Skip(
                "the module was loaded without debug_raw_dma=1".into(),
            ));
        }
        let ps = page_size();
        let mut sentinel = Mapping::anon(ps)?;
        mark_page(sentinel.bytes_mut(), 0xee, 0);
        let mut out = Mapping::anon(ps)?;
        out.bytes_mut().fill(0x11);
        let sentinel_handle = dev
            .register(sentinel.addr(), ps as u64, ODP_HMM_ACCESS_READ, 0)?
            .handle;
        let out_handle = dev.register(out.addr(), ps as u64, RW, 0)?.handle;
        dev.fault(sentinel_handle, sentinel.addr(), ps as u64, 0)?;
        dev.fault(out_handle, out.addr(), ps as u64, ODP_HMM_FAULT_WRITE)?;
        Ok(Self {
            dev,
            sentinel,
            sentinel_handle,
            out,
            out_handle,
        })
    }

    /// The bytes the buffer holds after [`Self::fill_sentinel`].
    pub fn sentinel(&self) -> &[u8] {
        self.sentinel.bytes()
    }

    /// Fills the device buffer with the sentinel page.
    pub fn fill_sentinel(&self) -> io::Result<()> {
        self.dev
            .dma(&odp_hmm_dma {
                flags: ODP_HMM_DMA_DST_DEVBUF,
                src_handle: self.sentinel_handle,
                src_addr: self.sentinel.addr(),
                dst_addr: 0,
                length: page_size() as u64,
                ..Default::default()
            })
            .map(drop)
    }

    /// Lets the device read `len` bytes at DMA address `dma_addr` into its buffer at `offset`.
    pub fn raw(&self, dma_addr: u64, offset: usize, len: usize) -> io::Result<()> {
        self.dev
            .dma(&odp_hmm_dma {
                flags: ODP_HMM_DMA_SRC_RAW_IOVA | ODP_HMM_DMA_DST_DEVBUF,
                src_addr: dma_addr,
                dst_addr: offset as u64,
                length: len as u64,
                ..Default::default()
            })
            .map(drop)
    }

    /// The device buffer's page, copied out by the device.
    pub fn buffer(&self) -> io::Result<Vec<u8>> {
        self.dev.dma(&odp_hmm_dma {
            flags: ODP_HMM_DMA_SRC_DEVBUF,
            src_addr: 0,
            dst_handle: self.out_handle,
            dst_addr: self.out.addr(),
            length: page_size() as u64,
            ..Default::default()
        })?;
        Ok(self.out.bytes().to_vec())
    }
}

/// Whether the DMA device's IOMMU domain translates: its DMA addresses are IOVAs the IOMMU can
/// refuse (in passthrough or without an IOMMU they are physical addresses).
pub fn translates(info: &odp_hmm_info) -> bool {
    matches!(info.domain_type, ODP_HMM_DOMAIN_DMA | ODP_HMM_DOMAIN_DMA_FQ)
}

/// What a refused device read left in a buffer chunk that held `sentinel` (for the test output:
/// the emulated IOMMUs differ).
pub fn describe_refused_read(got: &[u8], sentinel: &[u8]) -> &'static str {
    if got == sentinel {
        "the buffer kept its sentinel bytes"
    } else if got.iter().all(|&b| b == 0) {
        "the device read zeros"
    } else if got.iter().all(|&b| b == 0xff) {
        "the device read all-ones"
    } else {
        "the buffer holds other bytes"
    }
}

/// A byte that is neither 0 nor 0xff.
fn nonzero(x: usize) -> u8 {
    // CAST: 1..=254.
    (1 + x % 254) as u8
}

/// Fills `buf` with bytes that name `tag` and `page` in its first 8 bytes and are never 0 or
/// 0xff: a page can be told from any other page, from a zeroed page and from an all-ones read,
/// by any 8 of its bytes from the start.
pub fn mark_page(buf: &mut [u8], tag: u8, page: usize) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = nonzero(usize::from(tag) * 31 + page * 13 + k * 7 + (k >> 8));
    }
    let header = [
        0xa5,
        nonzero(usize::from(tag)),
        nonzero(page & 0x7f),
        nonzero((page >> 7) & 0x7f),
        nonzero((page >> 14) & 0x7f),
        nonzero((page >> 21) & 0x7f),
        0x5a,
        0xc3,
    ];
    let n = header.len().min(buf.len());
    buf[..n].copy_from_slice(&header[..n]);
}

/// Whether THP can be had for `MADV_HUGEPAGE` ranges (turns `madvise` mode on if it is off).
pub fn thp_enabled() -> bool {
    let path = "/sys/kernel/mm/transparent_hugepage/enabled";
    let cur = fs::read_to_string(path).unwrap_or_default();
    if cur.contains("[always]") || cur.contains("[madvise]") {
        return true;
    }
    fs::write(path, "madvise").is_ok()
}

/// The page frame number of the page mapped at `addr` (/proc/self/pagemap; root only).
pub fn pfn_of(addr: u64) -> Result<u64, Outcome> {
    use std::io::{
        Read,
        Seek,
        SeekFrom, //
    };
    let mut f = fs::File::open("/proc/self/pagemap")?;
    f.seek(SeekFrom::Start(addr / page_size() as u64 * 8))?;
    let mut entry = [0u8; 8];
    f.read_exact(&mut entry)?;
    let entry = u64::from_le_bytes(entry);
    if entry & (1 << 63) == 0 {
        return Err(Outcome::Fail(format!("page at {addr:#x} not present")));
    }
    Ok(entry & ((1 << 55) - 1))
}

/// A field of the /proc/self/smaps entry of the mapping that holds `addr`, in kB.
pub fn smaps_kb(addr: u64, key: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
            {
                inside = start <= addr && addr < end;
                continue;
            }
        }
        if inside {
            if let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
                return rest.split_whitespace().next()?.parse().ok();
            }
        }
    }
    None
}

/// The sysfs file of odp_hmm's module parameter `name`.
fn module_param_path(name: &str) -> String {
    format!("/sys/module/odp_hmm/parameters/{name}")
}

/// odp_hmm's module parameter `name` as sysfs shows it (trimmed).
pub fn module_param(name: &str) -> io::Result<String> {
    Ok(fs::read_to_string(module_param_path(name))?
        .trim()
        .to_string())
}

/// A writable module parameter of odp_hmm, set for a test and put back as it was on drop.
pub struct ModuleParam {
    path: String,
    old: String,
}

impl ModuleParam {
    /// Sets `/sys/module/odp_hmm/parameters/<name>` to `value`.
    pub fn set(name: &str, value: &str) -> io::Result<Self> {
        let path = module_param_path(name);
        let old = module_param(name)?;
        fs::write(&path, value)?;
        Ok(Self { path, old })
    }
}

impl Drop for ModuleParam {
    fn drop(&mut self) {
        if let Err(e) = fs::write(&self.path, &self.old) {
            println!("# could not restore {} to {}: {e}", self.path, self.old);
        }
    }
}

/// A test body running in a forked child; [`ChildTest::join`] returns its result (its failure
/// message comes back through a pipe). The child never returns into the caller: a panic is
/// caught and reported. Killed on drop if not joined.
pub struct ChildTest {
    child: Child,
    rx: fs::File,
}

impl ChildTest {
    /// Forks; the child runs `test`.
    pub fn spawn(test: impl FnOnce() -> TestResult) -> io::Result<Self> {
        let (rx, mut tx) = pipe()?;
        let child = Child::spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(test))
                .unwrap_or_else(|_| Err(Outcome::Fail("the child panicked".into())));
            let (code, msg) = match result {
                Ok(()) => (0, String::new()),
                Err(Outcome::Fail(m)) => (1, m),
                Err(Outcome::Skip(m)) => (2, m),
            };
            let _ = tx.write_all(msg.as_bytes());
            code
        })?;
        Ok(Self { child, rx })
    }

    /// Waits for the child; its test's result.
    pub fn join(mut self) -> TestResult {
        use std::io::Read;
        let mut msg = String::new();
        let read = self.rx.read_to_string(&mut msg);
        let code = self.child.wait()?;
        read?;
        match code {
            0 => Ok(()),
            1 => Err(Outcome::Fail(format!("in the child: {msg}"))),
            2 => Err(Outcome::Skip(msg)),
            _ => Err(Outcome::Fail(format!("the child ended with {code}: {msg}"))),
        }
    }
}

/// Runs `test` in a forked child and returns its result.
pub fn in_child_test(test: impl FnOnce() -> TestResult) -> TestResult {
    ChildTest::spawn(test)?.join()
}

/// A raw system call's result: its value, or the error `errno` holds.
pub fn syscall_result(ret: libc::c_long) -> io::Result<i32> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // CAST: The calls used here return a descriptor or 0.
    Ok(ret as i32)
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: i32) -> io::Result<fs::File> {
    // SAFETY: `pidfd_open(pid, 0)` takes no pointers.
    let fd = syscall_result(unsafe {
        libc::syscall(
            libc::SYS_pidfd_open,
            libc::c_long::from(pid),
            0 as libc::c_long,
        )
    })?;
    // SAFETY: `fd` is a new descriptor, ours from here on.
    Ok(unsafe { fs::File::from_raw_fd(fd) })
}

/// `pidfd_getfd(pidfd, fd, 0)`: a duplicate of descriptor `fd` of the process `pidfd` names.
pub fn pidfd_getfd(pidfd: &fs::File, fd: i32) -> io::Result<fs::File> {
    use std::os::fd::AsRawFd;
    // SAFETY: `pidfd_getfd(pidfd, fd, 0)` takes no pointers.
    let dup = syscall_result(unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            libc::c_long::from(pidfd.as_raw_fd()),
            libc::c_long::from(fd),
            0 as libc::c_long,
        )
    })?;
    // SAFETY: `dup` is a new descriptor, ours from here on.
    Ok(unsafe { fs::File::from_raw_fd(dup) })
}

/// A forked child, killed and waited for on drop unless [`Child::wait`] already did.
pub struct Child(pub Option<i32>);

impl Child {
    /// Forks; the child runs `child` and exits with the code it returns.
    pub fn spawn(child: impl FnOnce() -> i32) -> io::Result<Self> {
        // SAFETY: The selftests are single-threaded when they fork; the child runs `child` and
        // leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
            // SAFETY: Leaves the child at once.
            unsafe { libc::_exit(code) };
        }
        Ok(Child(Some(pid)))
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.0.unwrap_or(-1)
    }

    /// Waits for the child; returns its exit code (128 + signal if killed).
    pub fn wait(&mut self) -> io::Result<i32> {
        match self.0.take() {
            Some(pid) => wait_child(pid),
            None => Ok(-1),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: `kill` takes no pointers; `pid` is our child, not yet waited for.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = self.wait();
        }
    }
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
