// SPDX-License-Identifier: GPL-2.0

//! odpctl: drive /dev/odp_hmm from the command line.
//!
//! Registrations belong to the process that makes them, so odpctl runs a sequence of commands
//! in one process, on a buffer it maps itself:
//!
//! ```text
//! odpctl info
//! odpctl alloc 8M register rw fault 0 1M snapshot 0 8 copy 0 4096 4096 stats
//! odpctl --json alloc 1M register fault 0 64K snapshot 0 16 stats
//! odpctl alloc 4M register --implicit fault 0 2M --async stats fdinfo
//! odpctl fdinfo 1234 5
//! odpctl demo
//! ```
//!
//! `odpctl help` lists the commands, `odpctl help COMMAND` (or `COMMAND --help`) explains one;
//! offsets and sizes accept K/M/G suffixes. clap parses each command of the sequence; the whole
//! line is parsed before the first command runs, so a mistake anywhere runs nothing.

use std::{fmt, io, process::ExitCode, ptr};

use clap::{
    builder::{
        PossibleValuesParser,
        TypedValueParser, //
    },
    CommandFactory,
    Parser,
    Subcommand,
    ValueEnum, //
};
use odp_hmm_uapi::*;
use serde::Serialize;

/// An error with the command that caused it.
struct CmdError(String);

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<io::Error> for CmdError {
    fn from(e: io::Error) -> Self {
        CmdError(e.to_string())
    }
}

type Result<T = ()> = std::result::Result<T, CmdError>;

/// The buffer odpctl maps.
struct Buffer {
    ptr: *mut u8,
    len: usize,
    generation: u8,
}

impl Buffer {
    fn new(len: usize, kind: Kind) -> Result<Self> {
        const HUGE: usize = 2 << 20;
        let flags = match kind {
            Kind::Anon | Kind::Thp => libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            Kind::Shm => libc::MAP_SHARED | libc::MAP_ANONYMOUS,
        };
        // Placement: "thp" starts on a 2 MiB boundary, so that the kernel can back it with huge
        // pages. "anon" starts one page past one: a munmap that splits the mapping then
        // invalidates exactly what it unmaps (splitting a mapping that covers a whole aligned
        // 2 MiB block makes the kernel invalidate that whole block, whether it holds a huge
        // page or not: mm/huge_memory.c, __split_huge_pmd()).
        let (slack, skew) = match kind {
            Kind::Thp => (HUGE, 0),
            Kind::Anon => (2 * HUGE, page_size()),
            Kind::Shm => (0, 0),
        };
        // SAFETY: A fresh mapping chosen by the kernel.
        let raw = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len + slack,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error().into());
        }
        let mut ptr = raw.cast::<u8>();
        if slack > 0 {
            let start = ((raw as usize + HUGE - 1) & !(HUGE - 1)) + skew;
            let head = start - raw as usize;
            // SAFETY: Trims the head and tail of our own mapping around `start..start + len`.
            unsafe {
                if head > 0 {
                    libc::munmap(raw, head);
                }
                libc::munmap((start + len) as *mut libc::c_void, slack - head);
                let advice = if kind == Kind::Thp {
                    libc::MADV_HUGEPAGE
                } else {
                    libc::MADV_NOHUGEPAGE
                };
                libc::madvise(start as *mut libc::c_void, len, advice);
            }
            ptr = start as *mut u8;
        }
        let mut buf = Self {
            ptr,
            len,
            generation: 1,
        };
        buf.fill(0, len);
        Ok(buf)
    }

    fn addr(&self) -> u64 {
        self.ptr as u64
    }

    fn check(&self, off: usize, len: usize) -> Result {
        if off.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(CmdError(format!("{off:#x}+{len:#x} is outside the buffer")));
        }
        Ok(())
    }

    fn bytes(&self, off: usize, len: usize) -> &[u8] {
        // SAFETY: `check` was called for this range; the buffer is mapped and readable.
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }
    }

    fn fill(&mut self, off: usize, len: usize) {
        let g = self.generation;
        // SAFETY: The range is inside the mapped buffer.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), len) };
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = g.wrapping_mul(31).wrapping_add(((off + i) / 7) as u8);
        }
    }
}

/// What `info` shows, in both output formats.
#[derive(Serialize)]
struct InfoView {
    /// PCI address, `DDDD:BB:DD.F`.
    dma_device: String,
    pci_vendor: u32,
    pci_device: u32,
    edu: bool,
    iommu_domain: &'static str,
    domain_type: u32,
    iova: bool,
    copy_engine: bool,
    default_backend: &'static str,
    dma_mask: u64,
    debug_raw_dma: bool,
    page_size: u32,
    /// Names of the `ODP_HMM_INFO_*` bits set.
    capabilities: Vec<String>,
    /// The sizes one link maps whole, as a bit mask (bit n: 2^n bytes) ...
    link_page_sizes: u64,
    /// ... and by name (`4K`, `2M`, ...).
    link_page_size_names: Vec<String>,
    live_registrations: u64,
    live_pages_mapped: u64,
    live_iova_bytes: u64,
    live_bookkeeping_bytes: u64,
}

/// The `ODP_HMM_INFO_*` bits and the names odpctl shows for them.
const INFO_FLAGS: [(u32, &str); 8] = [
    (ODP_HMM_INFO_COPY_ENGINE, "copy-engine"),
    (ODP_HMM_INFO_IOVA, "iova"),
    (ODP_HMM_INFO_DEBUG_RAW_DMA, "debug-raw-dma"),
    (ODP_HMM_INFO_IMPLICIT, "implicit"),
    (ODP_HMM_INFO_ASYNC_PREFETCH, "async-prefetch"),
    (ODP_HMM_INFO_USERFAULTFD, "userfaultfd"),
    (ODP_HMM_INFO_P2P_HOST_BRIDGE, "p2p-host-bridge"),
    (ODP_HMM_INFO_P2P_BUS, "p2p-bus"),
];

/// The names of the bits of `flags`, in bit order; unknown bits as `bit N`.
fn capability_names(flags: u32) -> Vec<String> {
    (0..32)
        .filter(|n| flags & (1 << n) != 0)
        .map(|n| {
            INFO_FLAGS
                .iter()
                .find(|(bit, _)| *bit == 1 << n)
                .map_or_else(|| format!("bit {n}"), |(_, name)| name.to_string())
        })
        .collect()
}

/// The sizes of a `link_page_sizes` mask, smallest first: `4K`, `8K`, ..., `2M`, `1G`.
fn size_names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|n| mask & (1 << n) != 0)
        .map(|n| match n {
            0..=9 => format!("{}", 1u64 << n),
            10..=19 => format!("{}K", 1u64 << (n - 10)),
            20..=29 => format!("{}M", 1u64 << (n - 20)),
            30..=39 => format!("{}G", 1u64 << (n - 30)),
            _ => format!("{}T", 1u64 << (n - 40)),
        })
        .collect()
}

impl From<&odp_hmm_info> for InfoView {
    fn from(info: &odp_hmm_info) -> Self {
        Self {
            dma_device: info.pci_address(),
            pci_vendor: info.pci_vendor,
            pci_device: info.pci_device,
            edu: info.is_edu(),
            iommu_domain: domain_name(info.domain_type),
            domain_type: info.domain_type,
            iova: info.flags & ODP_HMM_INFO_IOVA != 0,
            copy_engine: info.flags & ODP_HMM_INFO_COPY_ENGINE != 0,
            default_backend: backend_name(info.backend),
            dma_mask: info.dma_mask,
            debug_raw_dma: info.flags & ODP_HMM_INFO_DEBUG_RAW_DMA != 0,
            page_size: info.page_size,
            capabilities: capability_names(info.flags),
            link_page_sizes: info.link_page_sizes,
            link_page_size_names: size_names(info.link_page_sizes),
            live_registrations: info.live_registrations,
            live_pages_mapped: info.live_pages_mapped,
            live_iova_bytes: info.live_iova_bytes,
            live_bookkeeping_bytes: info.live_bookkeeping_bytes,
        }
    }
}

impl fmt::Display for InfoView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool, no: &'static str| if b { "yes" } else { no };
        writeln!(
            f,
            "DMA device      {} [{:04x}:{:04x}]{}",
            self.dma_device,
            self.pci_vendor,
            self.pci_device,
            if self.edu { " (QEMU edu)" } else { "" }
        )?;
        writeln!(f, "IOMMU domain    {}", self.iommu_domain)?;
        writeln!(
            f,
            "IOVA mode       {}",
            yes_no(self.iova, "no (dma_map_phys per page)")
        )?;
        writeln!(f, "copy engine     {}", yes_no(self.copy_engine, "no"))?;
        writeln!(f, "default backend {}", self.default_backend)?;
        writeln!(f, "DMA mask        {:#x}", self.dma_mask)?;
        writeln!(
            f,
            "raw IOVA debug  {}",
            if self.debug_raw_dma {
                "enabled"
            } else {
                "disabled"
            }
        )?;
        writeln!(f, "capabilities    {}", self.capabilities.join(" "))?;
        let sizes = if self.link_page_size_names.is_empty() {
            "none (no IOVA window)".to_string()
        } else {
            self.link_page_size_names.join(" ")
        };
        writeln!(f, "link sizes      {sizes}")?;
        write!(
            f,
            "live            {} registrations, {} pages mapped, IOVA {} KiB, bookkeeping {} KiB",
            self.live_registrations,
            self.live_pages_mapped,
            self.live_iova_bytes / 1024,
            self.live_bookkeeping_bytes / 1024
        )
    }
}

/// One page of a snapshot.
#[derive(Serialize)]
struct PageView {
    /// Page index in the buffer.
    page: usize,
    dma_addr: u64,
    order: u32,
    /// Names of the `ODP_HMM_PAGE_*` bits set.
    flags: Vec<&'static str>,
}

/// What `snapshot` shows: the pages whose state is not empty.
#[derive(Serialize)]
struct SnapshotView {
    offset: usize,
    npages: usize,
    mapped: usize,
    pages: Vec<PageView>,
}

impl SnapshotView {
    fn new(off: usize, npages: usize, pages: &[odp_hmm_page]) -> Self {
        const FLAGS: [(u32, &str); 5] = [
            (ODP_HMM_PAGE_VALID, "valid"),
            (ODP_HMM_PAGE_WRITE, "write"),
            (ODP_HMM_PAGE_DMA_MAPPED, "dma-mapped"),
            (ODP_HMM_PAGE_P2P, "p2p"),
            (ODP_HMM_PAGE_P2P_BUS, "p2p-bus"),
        ];
        Self {
            offset: off,
            npages,
            mapped: pages
                .iter()
                .filter(|p| p.flags & ODP_HMM_PAGE_DMA_MAPPED != 0)
                .count(),
            pages: pages
                .iter()
                .enumerate()
                .filter(|(_, p)| p.flags != 0)
                .map(|(i, p)| PageView {
                    page: off / page_size() + i,
                    dma_addr: p.dma_addr,
                    order: p.order,
                    flags: FLAGS
                        .iter()
                        .filter(|(bit, _)| p.flags & bit != 0)
                        .map(|&(_, name)| name)
                        .collect(),
                })
                .collect(),
        }
    }
}

impl fmt::Display for SnapshotView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "snapshot {:#x}, {} pages: {} mapped",
            self.offset, self.npages, self.mapped
        )?;
        for p in &self.pages {
            write!(
                f,
                "\n  page {:>6}  dma {:#014x}  order {}  {}",
                p.page,
                p.dma_addr,
                p.order,
                p.flags.join(",")
            )?;
        }
        Ok(())
    }
}

/// What `stats` shows: the counters of `struct odp_hmm_stats`.
#[derive(Serialize)]
#[serde(transparent)]
struct StatsView(odp_hmm_stats);

impl fmt::Display for StatsView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.0;
        writeln!(
            f,
            "stats: faults {} (retries {}), pages faulted {}, mapped {}, unmapped {}, mapped now {}",
            s.faults, s.fault_retries, s.pages_faulted, s.pages_mapped, s.pages_unmapped, s.pages_now
        )?;
        writeln!(
            f,
            "       invalidations {} (+{} that unmapped nothing; {} that could not sleep), link {} sync {} unlink {} calls",
            s.invalidations,
            s.invalidations_ignored,
            s.invalidations_nonblocking,
            s.link_calls,
            s.sync_calls,
            s.unlink_calls
        )?;
        writeln!(
            f,
            "       IOVA reserved {} KiB, bookkeeping {} KiB, P2P pages: host bridge {}, bus {}, refused {}",
            s.iova_bytes / 1024,
            s.bookkeeping_bytes / 1024,
            s.p2p_host_bridge_pages,
            s.p2p_bus_pages,
            s.p2p_refused_pages
        )?;
        let avg_us = s.fault_latency_ns.checked_div(s.fault_calls).unwrap_or(0) / 1000;
        write!(
            f,
            "       fault calls {} (latency avg {} us, max {} us), prefetched {} pages ({} prefetch errors), implicit chunks {}",
            s.fault_calls,
            avg_us,
            s.fault_latency_max_ns / 1000,
            s.prefetched_pages,
            s.prefetch_errors,
            s.chunks
        )
    }
}

/// One value of an fdinfo line: a number (decimal or `0x` hex) or a word (`backend=rust`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
enum FdValue {
    Number(u64),
    Word(String),
}

impl fmt::Display for FdValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdValue::Number(n) => write!(f, "{n}"),
            FdValue::Word(w) => f.write_str(w),
        }
    }
}

/// The fields of one `odp_hmm-registration:` line, in the order the module prints them.
type FdinfoLine = Vec<(String, FdValue)>;

/// The `odp_hmm-registration:` lines of an fdinfo file (`key=value` words), one per
/// registration; other lines (`pos:`, `flags:`, ...) are skipped.
fn parse_fdinfo(text: &str) -> Result<Vec<FdinfoLine>> {
    text.lines()
        .filter_map(|l| l.strip_prefix("odp_hmm-registration:"))
        .map(|rest| {
            rest.split_whitespace()
                .map(|kv| {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| CmdError(format!("fdinfo: not key=value: {kv:?}")))?;
                    let n = match v.strip_prefix("0x") {
                        Some(hex) => u64::from_str_radix(hex, 16).ok(),
                        None => v.parse().ok(),
                    };
                    let v = n.map_or_else(|| FdValue::Word(v.to_string()), FdValue::Number);
                    Ok((k.to_string(), v))
                })
                .collect()
        })
        .collect()
}

/// What `fdinfo` shows: the registrations of one open file, with their counters.
#[derive(Serialize)]
struct FdinfoView {
    pid: u32,
    fd: u32,
    #[serde(serialize_with = "lines_as_objects")]
    registrations: Vec<FdinfoLine>,
}

/// Each line as a JSON object, its fields in order.
fn lines_as_objects<S: serde::Serializer>(
    lines: &[FdinfoLine],
    ser: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::{
        SerializeMap,
        SerializeSeq, //
    };
    struct Line<'a>(&'a FdinfoLine);
    impl Serialize for Line<'_> {
        fn serialize<S: serde::Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
            let mut map = ser.serialize_map(Some(self.0.len()))?;
            for (k, v) in self.0 {
                map.serialize_entry(k, v)?;
            }
            map.end()
        }
    }
    let mut seq = ser.serialize_seq(Some(lines.len()))?;
    for line in lines {
        seq.serialize_element(&Line(line))?;
    }
    seq.end()
}

impl fmt::Display for FdinfoView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fdinfo {}/{}: {} registrations",
            self.pid,
            self.fd,
            self.registrations.len()
        )?;
        for line in &self.registrations {
            let words: Vec<String> = line.iter().map(|(k, v)| format!("{k} {v}")).collect();
            write!(f, "\n  {}", words.join(", "))?;
        }
        Ok(())
    }
}

/// A result `--json` prints: one object per line, tagged with the command that made it.
#[derive(Serialize)]
#[serde(tag = "command", rename_all = "lowercase")]
enum Report {
    Info(InfoView),
    Snapshot(SnapshotView),
    Stats(StatsView),
    Fdinfo(FdinfoView),
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Info(v) => v.fmt(f),
            Report::Snapshot(v) => v.fmt(f),
            Report::Stats(v) => v.fmt(f),
            Report::Fdinfo(v) => v.fmt(f),
        }
    }
}

/// The session: a device, a buffer, a registration.
struct Session {
    dev: Option<Device>,
    buf: Option<Buffer>,
    reg: Option<Registration>,
    backend: u32,
    json: bool,
}

impl Session {
    fn new(json: bool) -> Self {
        Self {
            dev: None,
            buf: None,
            reg: None,
            backend: ODP_HMM_BACKEND_DEFAULT,
            json,
        }
    }

    /// Prints a message; with `--json` to standard error, so that standard output carries only
    /// JSON.
    fn say(&self, msg: fmt::Arguments<'_>) {
        if self.json {
            eprintln!("{msg}");
        } else {
            println!("{msg}");
        }
    }

    /// Prints a result: as text, or as one line of JSON.
    fn report(&self, r: Report) -> Result {
        if self.json {
            let line = serde_json::to_string(&r).map_err(|e| CmdError(e.to_string()))?;
            println!("{line}");
        } else {
            println!("{r}");
        }
        Ok(())
    }

    fn dev(&mut self) -> Result<&Device> {
        if self.dev.is_none() {
            self.dev = Some(Device::open().map_err(|e| {
                CmdError(format!(
                    "cannot open {ODP_HMM_DEVICE_PATH}: {e} (is odp_hmm loaded? root?)"
                ))
            })?);
        }
        self.dev
            .as_ref()
            .ok_or_else(|| CmdError("no device".into()))
    }

    fn buf(&self) -> Result<&Buffer> {
        self.buf
            .as_ref()
            .ok_or_else(|| CmdError("no buffer: use alloc first".into()))
    }

    fn reg(&self) -> Result<Registration> {
        self.reg
            .ok_or_else(|| CmdError("no registration: use register first".into()))
    }

    fn info(&mut self) -> Result {
        let info = self.dev()?.info()?;
        self.report(Report::Info(InfoView::from(&info)))
    }

    fn alloc(&mut self, size: usize, kind: Kind) -> Result {
        let buf = Buffer::new(size, kind)?;
        let addr = buf.addr();
        self.buf = Some(buf);
        self.say(format_args!(
            "mapped {size:#x} bytes of {} memory at {addr:#x}",
            value_name(&kind)
        ));
        Ok(())
    }

    fn register(&mut self, access: Access, implicit: bool) -> Result {
        let mut flags = match access {
            Access::Ro => ODP_HMM_ACCESS_READ,
            Access::Rw => ODP_HMM_ACCESS_READ | ODP_HMM_ACCESS_WRITE,
        };
        // Implicit: the whole address space (addr 0, length 0), chunks made on first touch.
        let (addr, len) = if implicit {
            flags |= ODP_HMM_REGISTER_IMPLICIT;
            (0, 0)
        } else {
            let b = self.buf()?;
            (b.addr(), b.len as u64)
        };
        let backend = self.backend;
        let reg = self.dev()?.register(addr, len, flags, backend)?;
        let what = if implicit {
            "the whole address space (implicit, 2 MiB chunks on first touch)".to_string()
        } else {
            format!("{len:#x} bytes at {addr:#x}")
        };
        self.say(format_args!(
            "registered {what}: handle {}, backend {}, DMA mode {}, IOVA base {:#x}",
            reg.handle,
            backend_name(reg.backend),
            dma_mode_name(reg.dma_mode),
            reg.iova_base
        ));
        self.reg = Some(reg);
        Ok(())
    }

    fn fault(&mut self, off: usize, len: usize, how: How, asynchronous: bool) -> Result {
        let mut flags = match how {
            How::Read => 0,
            How::Write => ODP_HMM_FAULT_WRITE,
            How::Nofault => ODP_HMM_FAULT_NO_FAULT,
        };
        if asynchronous {
            flags |= ODP_HMM_FAULT_ASYNC;
        }
        self.buf()?.check(off, len)?;
        let (addr, reg) = (self.buf()?.addr(), self.reg()?);
        let f = self
            .dev()?
            .fault(reg.handle, addr + off as u64, len as u64, flags)?;
        if asynchronous {
            self.say(format_args!(
                "fault {} {off:#x}+{len:#x} queued (asynchronous: stats shows prefetched pages and errors)",
                value_name(&how)
            ));
        } else {
            self.say(format_args!(
                "fault {} {off:#x}+{len:#x}: {} pages newly mapped, {} mapped",
                value_name(&how),
                f.pages_mapped,
                f.pages_valid
            ));
        }
        Ok(())
    }

    /// `/proc/PID/fdinfo/FD` of a file of `/dev/odp_hmm`: of this process's own by default.
    fn fdinfo(&mut self, target: Option<(u32, u32)>) -> Result {
        let (pid, fd) = match target {
            Some(t) => t,
            None => {
                use std::os::fd::AsRawFd;
                // CAST: Descriptors are never negative.
                let fd = self.dev()?.file().as_raw_fd() as u32;
                (std::process::id(), fd)
            }
        };
        let path = format!("/proc/{pid}/fdinfo/{fd}");
        let text = std::fs::read_to_string(&path).map_err(|e| CmdError(format!("{path}: {e}")))?;
        self.report(Report::Fdinfo(FdinfoView {
            pid,
            fd,
            registrations: parse_fdinfo(&text)?,
        }))
    }

    fn snapshot(&mut self, off: usize, npages: usize) -> Result {
        self.buf()?.check(off, npages * page_size())?;
        let (addr, reg) = (self.buf()?.addr(), self.reg()?);
        let pages = self
            .dev()?
            .snapshot(reg.handle, addr + off as u64, npages)?;
        self.report(Report::Snapshot(SnapshotView::new(off, npages, &pages)))
    }

    fn copy(&mut self, src: usize, dst: usize, len: usize) -> Result {
        self.buf()?.check(src, len)?;
        self.buf()?.check(dst, len)?;
        let (addr, reg) = (self.buf()?.addr(), self.reg()?);
        let faults = self.dev()?.copy(
            (reg.handle, addr + src as u64),
            (reg.handle, addr + dst as u64),
            len as u64,
        )?;
        self.say(format_args!(
            "device copied {len} bytes {src:#x} -> {dst:#x} ({faults} device page faults)"
        ));
        Ok(())
    }

    fn verify(&mut self, src: usize, dst: usize, len: usize) -> Result {
        let b = self.buf()?;
        b.check(src, len)?;
        b.check(dst, len)?;
        if b.bytes(src, len) != b.bytes(dst, len) {
            return Err(CmdError(format!("bytes at {src:#x} and {dst:#x} differ")));
        }
        self.say(format_args!(
            "verified: {len} bytes at {dst:#x} equal those at {src:#x}"
        ));
        Ok(())
    }

    fn munmap(&mut self, off: usize, len: usize) -> Result {
        let b = self.buf()?;
        b.check(off, len)?;
        // SAFETY: The range is inside our buffer; it is remapped before it is used again.
        if unsafe { libc::munmap(b.ptr.add(off).cast(), len) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        self.say(format_args!("munmap {off:#x}+{len:#x}"));
        Ok(())
    }

    fn remap(&mut self, off: usize, len: usize) -> Result {
        let b = self
            .buf
            .as_mut()
            .ok_or_else(|| CmdError("no buffer".into()))?;
        b.check(off, len)?;
        // SAFETY: MAP_FIXED over a range of our own buffer.
        let p = unsafe {
            libc::mmap(
                b.ptr.add(off).cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error().into());
        }
        b.generation = b.generation.wrapping_add(1);
        b.fill(off, len);
        let generation = b.generation;
        self.say(format_args!(
            "remapped {off:#x}+{len:#x} with new contents (generation {generation})"
        ));
        Ok(())
    }

    fn stats(&mut self) -> Result {
        let handle = self.reg.map_or(0, |r| r.handle);
        let s = self.dev()?.stats(handle)?;
        self.report(Report::Stats(StatsView(s)))
    }

    fn unregister(&mut self) -> Result {
        let reg = self.reg()?;
        self.dev()?.unregister(reg.handle)?;
        self.reg = None;
        self.say(format_args!("unregistered handle {}", reg.handle));
        Ok(())
    }

    fn run(&mut self, cmd: Cmd) -> Result {
        match cmd {
            Cmd::Info => self.info(),
            Cmd::Alloc { size, kind } => self.alloc(size, kind),
            Cmd::Backend { name } => {
                self.backend = name;
                Ok(())
            }
            Cmd::Register { access, implicit } => self.register(access, implicit),
            Cmd::Fault {
                span,
                how,
                asynchronous,
            } => self.fault(span.off, span.len, how, asynchronous),
            Cmd::Fdinfo { pid, fd } => self.fdinfo(pid.zip(fd)),
            Cmd::Snapshot { off, npages } => self.snapshot(off, npages),
            Cmd::Copy(t) => self.copy(t.src, t.dst, t.len),
            Cmd::Verify(t) => self.verify(t.src, t.dst, t.len),
            Cmd::Munmap(span) => self.munmap(span.off, span.len),
            Cmd::Remap(span) => self.remap(span.off, span.len),
            Cmd::Stats => self.stats(),
            Cmd::Unregister => self.unregister(),
            Cmd::Demo => demo(self),
            Cmd::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "odpctl", &mut io::stdout());
                Ok(())
            }
        }
    }
}

/// The guided tour the README's main command runs.
fn demo(s: &mut Session) -> Result {
    let ps = page_size();
    let step = |s: &Session, title: &str| s.say(format_args!("\n== {title}"));
    step(s, "The device");
    s.info()?;
    step(
        s,
        "Map 8 MiB of anonymous memory and register it (nothing is faulted or mapped yet)",
    );
    s.buf = Some(Buffer::new(8 << 20, Kind::Anon)?);
    s.register(Access::Rw, false)?;
    s.stats()?;
    step(
        s,
        "Fault the first 1 MiB for reading: 256 pages linked into the registration's IOVA window",
    );
    s.fault(0, 1 << 20, How::Read, false)?;
    s.snapshot(0, 4)?;
    s.stats()?;
    step(s, "The device copies page 0 to page 512 through the IOMMU (page 512 is faulted on demand, writable)");
    s.copy(0, 512 * ps, ps)?;
    s.verify(0, 512 * ps, ps)?;
    s.snapshot(512 * ps, 1)?;
    s.stats()?;
    step(
        s,
        "munmap pages 0..4: the notifier unlinks them, with the rest of their link units (the IOMMU cannot split what one call linked)",
    );
    s.munmap(0, 4 * ps)?;
    s.snapshot(0, 6)?;
    s.stats()?;
    step(
        s,
        "Map new memory there; the device refaults page 0 and copies its new bytes",
    );
    s.remap(0, 4 * ps)?;
    s.copy(0, 513 * ps, ps)?;
    s.verify(0, 513 * ps, ps)?;
    s.snapshot(0, 2)?;
    s.stats()?;
    step(s, "Unregister");
    s.unregister()?;
    s.say(format_args!(
        "\ndemo complete: every device copy was verified byte for byte"
    ));
    Ok(())
}

/// What `alloc` maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// Private anonymous memory, small pages only (MADV_NOHUGEPAGE)
    Anon,
    /// Private anonymous memory, 2 MiB-aligned and MADV_HUGEPAGE
    Thp,
    /// Shared anonymous memory
    Shm,
}

/// How `register` lets the device access the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Access {
    /// The device may only read (mapped read-only in the IOMMU)
    Ro,
    /// The device may read and write
    Rw,
}

/// How `fault` asks for the pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum How {
    /// Fault the pages in for reading
    Read,
    /// Fault the pages in writable (breaks copy-on-write)
    Write,
    /// Map only the pages already present; fault nothing in
    Nofault,
}

/// The name clap shows and parses for a value of a [`ValueEnum`].
fn value_name<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// The `ODP_HMM_BACKEND_*` value of a backend name, for clap.
fn backend_parser() -> impl TypedValueParser<Value = u32> {
    let names = [
        ODP_HMM_BACKEND_DEFAULT,
        ODP_HMM_BACKEND_RUST,
        ODP_HMM_BACKEND_KERNEL,
        ODP_HMM_BACKEND_LEGACY,
        ODP_HMM_BACKEND_NONE,
        ODP_HMM_BACKEND_PINNED,
    ]
    .map(backend_name);
    // Only the names above get past the possible-values check, and each has a value.
    PossibleValuesParser::new(names).map(|name| backend_from_name(&name).unwrap_or_default())
}

const AFTER_HELP: &str = "\
Commands run in the order given, in one process, on one buffer and registration (both belong \
to the process that made them):
  odpctl info
  odpctl alloc 8M register rw fault 0 1M snapshot 0 8 copy 0 4096 4096 stats
  odpctl --json alloc 1M register fault 0 64K snapshot 0 16 stats
  odpctl alloc 4M register --implicit fault 0 2M --async stats fdinfo
  odpctl fdinfo PID FD
Offsets and sizes take K/M/G suffixes or 0x. With --json, info, snapshot, stats and fdinfo print one \
JSON object per line on standard output (its \"command\" key names the command) and every \
other message goes to standard error.";

/// Drive /dev/odp_hmm: map a buffer, register it, fault it, let the device copy it, invalidate
/// it, and read the counters.
#[derive(Debug, Parser)]
#[command(
    name = "odpctl",
    version,
    override_usage = "odpctl [--json] COMMAND [ARGS]... [COMMAND [ARGS]...]...",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Print info, snapshot, stats and fdinfo as JSON (one object per line)
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
enum Cmd {
    /// The DMA device, its IOMMU domain, the default backend
    Info,
    /// Map a buffer, filled with a pattern
    Alloc {
        /// Size of the buffer
        #[arg(value_parser = parse_size)]
        size: usize,
        /// What memory to map
        #[arg(value_enum, default_value_t = Kind::Anon)]
        kind: Kind,
    },
    /// The backend of the next register
    Backend {
        /// The mapping backend (default: the module's backend= parameter)
        #[arg(value_parser = backend_parser())]
        name: u32,
    },
    /// Register the whole buffer (or, with --implicit, the whole address space)
    Register {
        /// What the device may do with the buffer
        #[arg(value_enum, default_value_t = Access::Rw)]
        access: Access,
        /// Implicit ODP (ODP_HMM_REGISTER_IMPLICIT): the whole address space, per-page state
        /// made per 2 MiB chunk at the first fault or device access in it
        #[arg(long)]
        implicit: bool,
    },
    /// Fault LEN bytes at OFF in: the pages become device-mapped
    Fault {
        #[command(flatten)]
        span: Span,
        /// How to fault the pages
        #[arg(value_enum, default_value_t = How::Read)]
        how: How,
        /// Queue the fault and return at once (ODP_HMM_FAULT_ASYNC, a prefetch): stats shows
        /// what it mapped (prefetched pages) and whether it failed (prefetch errors)
        #[arg(long = "async")]
        asynchronous: bool,
    },
    /// Per-page state of NPAGES pages at OFF (pages with no state are not listed)
    Snapshot {
        /// Offset in the buffer
        #[arg(value_parser = parse_size)]
        off: usize,
        /// Number of pages
        #[arg(value_parser = parse_size)]
        npages: usize,
    },
    /// The device copies LEN bytes from SRC to DST within the buffer
    Copy(Transfer),
    /// Compare LEN bytes at SRC and DST
    Verify(Transfer),
    /// Unmap part of the buffer (the kernel invalidates it)
    Munmap(Span),
    /// Map fresh memory over part of the buffer, filled with a new pattern
    Remap(Span),
    /// Counters of the registration (of all registrations before register)
    Stats,
    /// Unregister the registration
    Unregister,
    /// The registrations of an open /dev/odp_hmm and their counters, from /proc/PID/fdinfo/FD
    /// (default: odpctl's own file)
    Fdinfo {
        /// Process id
        #[arg(requires = "fd")]
        pid: Option<u32>,
        /// File descriptor of /dev/odp_hmm in that process
        fd: Option<u32>,
    },
    /// A guided tour: fault, device copy, invalidate, refault
    Demo,
    /// Print a completion script for SHELL (its commands and their values)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

/// `OFF LEN`: a part of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
struct Span {
    /// Offset in the buffer
    #[arg(value_parser = parse_size)]
    off: usize,
    /// Length in bytes
    #[arg(value_parser = parse_size)]
    len: usize,
}

/// `SRC DST LEN`: a copy or comparison within the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
struct Transfer {
    /// Source offset in the buffer
    #[arg(value_parser = parse_size)]
    src: usize,
    /// Destination offset in the buffer
    #[arg(value_parser = parse_size)]
    dst: usize,
    /// Length in bytes
    #[arg(value_parser = parse_size)]
    len: usize,
}

/// Parses a command line of one or more commands: splits it before each command name and lets
/// clap parse each part (with the options given before the first command). A `help` command
/// takes the rest of the line, as clap's own would.
fn parse_chain(args: &[String]) -> std::result::Result<Vec<Cli>, clap::Error> {
    let cli = Cli::command();
    let names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
    let is_cmd = |a: &String| names.contains(&a.as_str());
    let first = args.iter().position(is_cmd).unwrap_or(args.len());
    let (lead, rest) = args.split_at(first);
    let mut parts: Vec<Vec<&String>> = Vec::new();
    for a in rest {
        match parts.last_mut() {
            Some(part) if !is_cmd(a) || lead.iter().any(|l| l == "help") => part.push(a),
            _ => parts.push(vec![a]),
        }
    }
    if parts.is_empty() {
        // No command: clap prints the help, the version, or what is missing.
        parts.push(Vec::new());
    }
    parts
        .into_iter()
        .map(|part| {
            Cli::try_parse_from(
                ["odpctl"]
                    .iter()
                    .copied()
                    .chain(lead.iter().chain(part).map(String::as_str)),
            )
        })
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let chain = match parse_chain(&args) {
        Ok(chain) => chain,
        // Help and version exit 0, usage errors 2.
        Err(e) => e.exit(),
    };
    let mut s = Session::new(chain.iter().any(|c| c.json));
    for c in chain {
        if let Err(e) = s.run(c.command) {
            eprintln!("odpctl: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> std::result::Result<Vec<Cli>, clap::Error> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse_chain(&args)
    }

    fn commands(line: &str) -> Vec<Cmd> {
        parse(line)
            .expect("parses")
            .into_iter()
            .map(|c| c.command)
            .collect()
    }

    #[test]
    fn a_chain_is_one_command_per_name() {
        assert_eq!(
            commands(
                "alloc 8M thp backend kernel register ro fault 0 1M write snapshot 0x1000 8 stats"
            ),
            [
                Cmd::Alloc {
                    size: 8 << 20,
                    kind: Kind::Thp
                },
                Cmd::Backend {
                    name: ODP_HMM_BACKEND_KERNEL
                },
                Cmd::Register {
                    access: Access::Ro,
                    implicit: false
                },
                Cmd::Fault {
                    span: Span {
                        off: 0,
                        len: 1 << 20
                    },
                    how: How::Write,
                    asynchronous: false
                },
                Cmd::Snapshot {
                    off: 0x1000,
                    npages: 8
                },
                Cmd::Stats,
            ]
        );
    }

    #[test]
    fn optional_values_take_their_defaults() {
        assert_eq!(
            commands("alloc 4K register fault 0 4K"),
            [
                Cmd::Alloc {
                    size: 4096,
                    kind: Kind::Anon
                },
                Cmd::Register {
                    access: Access::Rw,
                    implicit: false
                },
                Cmd::Fault {
                    span: Span { off: 0, len: 4096 },
                    how: How::Read,
                    asynchronous: false
                },
            ]
        );
    }

    #[test]
    fn implicit_async_and_fdinfo_parse() {
        assert_eq!(
            commands("alloc 4M register --implicit fault 0 2M write --async fdinfo fdinfo 42 5"),
            [
                Cmd::Alloc {
                    size: 4 << 20,
                    kind: Kind::Anon
                },
                Cmd::Register {
                    access: Access::Rw,
                    implicit: true
                },
                Cmd::Fault {
                    span: Span {
                        off: 0,
                        len: 2 << 20
                    },
                    how: How::Write,
                    asynchronous: true
                },
                Cmd::Fdinfo {
                    pid: None,
                    fd: None
                },
                Cmd::Fdinfo {
                    pid: Some(42),
                    fd: Some(5)
                },
            ]
        );
        assert_eq!(
            commands("register ro --implicit fault --async 0 4K nofault"),
            [
                Cmd::Register {
                    access: Access::Ro,
                    implicit: true
                },
                Cmd::Fault {
                    span: Span { off: 0, len: 4096 },
                    how: How::Nofault,
                    asynchronous: true
                },
            ]
        );
        for bad in [
            "fdinfo 42",
            "fdinfo x 5",
            "register --implicit=3",
            "fault 0 4K --sync",
        ] {
            let e = parse(bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn capability_bits_and_link_sizes_are_named() {
        assert_eq!(
            capability_names(
                ODP_HMM_INFO_COPY_ENGINE
                    | ODP_HMM_INFO_IMPLICIT
                    | ODP_HMM_INFO_ASYNC_PREFETCH
                    | ODP_HMM_INFO_USERFAULTFD
                    | ODP_HMM_INFO_P2P_HOST_BRIDGE
                    | ODP_HMM_INFO_P2P_BUS
                    | 1 << 20
            ),
            [
                "copy-engine",
                "implicit",
                "async-prefetch",
                "userfaultfd",
                "p2p-host-bridge",
                "p2p-bus",
                "bit 20"
            ]
        );
        assert!(capability_names(0).is_empty());
        // Every bit of the header has a name.
        for n in 0..8 {
            assert!(!capability_names(1 << n)[0].starts_with("bit"), "bit {n}");
        }
        assert_eq!(
            size_names((1 << 12) | (1 << 13) | (1 << 18) | (1 << 21) | (1 << 30)),
            ["4K", "8K", "256K", "2M", "1G"]
        );
        assert!(size_names(0).is_empty());
    }

    #[test]
    fn fdinfo_lines_parse() {
        let text = "pos:\t0\nflags:\t02\nmnt_id:\t23\nino:\t5\n\
            odp_hmm-registration: handle=1 start=0x7f0000001000 length=0x10000 backend=rust \
            mode=iova faults=2 pages_faulted=16 pages_now=14 invalidations=1 prefetched=8 \
            prefetch_errors=0 fault_calls=2 fault_latency_ns=1234 fault_latency_max_ns=1000 \
            iova_bytes=65536 bookkeeping_bytes=128 chunks=0\n\
            odp_hmm-registration: handle=2 start=0x1000 length=0x7ffffffff000 backend=- \
            mode=revoked faults=0\n";
        let lines = parse_fdinfo(text).ok().expect("parses");
        assert_eq!(lines.len(), 2);
        let get = |i: usize, k: &str| {
            lines[i]
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get(0, "handle"), Some(FdValue::Number(1)));
        assert_eq!(get(0, "start"), Some(FdValue::Number(0x7f00_0000_1000)));
        assert_eq!(get(0, "backend"), Some(FdValue::Word("rust".into())));
        assert_eq!(get(0, "prefetched"), Some(FdValue::Number(8)));
        assert_eq!(get(0, "chunks"), Some(FdValue::Number(0)));
        assert_eq!(get(1, "backend"), Some(FdValue::Word("-".into())));
        assert_eq!(get(1, "mode"), Some(FdValue::Word("revoked".into())));
        assert_eq!(lines[0][0].0, "handle", "fields keep their order");

        let view = FdinfoView {
            pid: 7,
            fd: 3,
            registrations: lines,
        };
        let v = serde_json::to_value(Report::Fdinfo(view)).expect("json");
        assert_eq!(v["command"], "fdinfo");
        assert_eq!(v["pid"], 7);
        assert_eq!(v["registrations"][0]["faults"], 2);
        assert_eq!(v["registrations"][0]["mode"], "iova");
        assert_eq!(v["registrations"][1]["handle"], 2);

        assert!(parse_fdinfo("odp_hmm-registration: handle=1 junk\n").is_err());
        assert!(parse_fdinfo("pos:\t0\n").ok().expect("parses").is_empty());
    }

    #[test]
    fn json_counts_wherever_it_is_given() {
        for line in [
            "--json info stats",
            "info --json stats",
            "info stats --json",
        ] {
            let chain = parse(line).expect("parses");
            assert!(chain.iter().any(|c| c.json), "{line}");
        }
        assert!(!parse("info stats").expect("parses").iter().any(|c| c.json));
    }

    #[test]
    fn a_mistake_anywhere_refuses_the_whole_line() {
        for line in [
            "info alloc 1M bogus",
            "alloc 1M fault 0",
            "alloc 12Q",
            "backend nonsense",
            "info frobnicate",
            "frobnicate",
            "",
        ] {
            let e = parse(line)
                .err()
                .unwrap_or_else(|| panic!("{line:?} parsed"));
            assert_eq!(e.exit_code(), 2, "{line:?}: {e}");
        }
    }

    #[test]
    fn help_takes_the_rest_of_the_line() {
        let e = parse("help fault").expect_err("help is not a command to run");
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(e.to_string().contains("odpctl fault"), "{e}");
    }

    #[test]
    fn reports_serialize_tagged_with_their_command() {
        let stats = odp_hmm_stats {
            version: ODP_HMM_ABI_VERSION,
            handle: 7,
            faults: 3,
            pages_now: 16,
            ..Default::default()
        };
        let v = serde_json::to_value(Report::Stats(StatsView(stats))).expect("json");
        assert_eq!(v["command"], "stats");
        assert_eq!(v["handle"], 7);
        assert_eq!(v["faults"], 3);
        assert_eq!(v["pages_now"], 16);
        assert!(
            v.get("version").is_none() && v.get("reserved").is_none(),
            "{v}"
        );

        let ps = page_size();
        let pages = [
            odp_hmm_page::default(),
            odp_hmm_page {
                dma_addr: 0xff80_1000,
                flags: ODP_HMM_PAGE_VALID | ODP_HMM_PAGE_DMA_MAPPED,
                order: 0,
            },
        ];
        let v = serde_json::to_value(Report::Snapshot(SnapshotView::new(2 * ps, 2, &pages)))
            .expect("json");
        assert_eq!(v["command"], "snapshot");
        assert_eq!(v["mapped"], 1);
        assert_eq!(v["pages"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["pages"][0]["page"], 3);
        assert_eq!(v["pages"][0]["dma_addr"], 0xff80_1000u64);
        assert_eq!(
            v["pages"][0]["flags"],
            serde_json::json!(["valid", "dma-mapped"])
        );

        let info = odp_hmm_info {
            pci_vendor: 0x1234,
            pci_device: 0x11e8,
            pci_devfn: 0x50,
            domain_type: ODP_HMM_DOMAIN_DMA,
            flags: ODP_HMM_INFO_IOVA,
            ..Default::default()
        };
        let v = serde_json::to_value(Report::Info(InfoView::from(&info))).expect("json");
        assert_eq!(v["command"], "info");
        assert_eq!(v["dma_device"], "0000:00:0a.0");
        assert_eq!(v["edu"], true);
        assert_eq!(v["iova"], true);
        assert_eq!(v["copy_engine"], false);
        assert_eq!(v["iommu_domain"], domain_name(ODP_HMM_DOMAIN_DMA));
        assert_eq!(v["capabilities"], serde_json::json!(["iova"]));
        assert_eq!(v["link_page_sizes"], 0);

        let info = odp_hmm_info {
            flags: ODP_HMM_INFO_IMPLICIT | ODP_HMM_INFO_ASYNC_PREFETCH,
            link_page_sizes: (1 << 12) | (1 << 21),
            live_registrations: 3,
            ..Default::default()
        };
        let v = serde_json::to_value(Report::Info(InfoView::from(&info))).expect("json");
        assert_eq!(
            v["capabilities"],
            serde_json::json!(["implicit", "async-prefetch"])
        );
        assert_eq!(v["link_page_sizes"], (1u64 << 12) | (1 << 21));
        assert_eq!(v["link_page_size_names"], serde_json::json!(["4K", "2M"]));
        assert_eq!(v["live_registrations"], 3);
        let text = InfoView::from(&info).to_string();
        assert!(
            text.contains("capabilities    implicit async-prefetch"),
            "{text}"
        );
        assert!(text.contains("link sizes      4K 2M"), "{text}");

        let stats = odp_hmm_stats {
            fault_calls: 4,
            fault_latency_ns: 8000,
            fault_latency_max_ns: 5000,
            prefetched_pages: 32,
            prefetch_errors: 1,
            chunks: 3,
            ..Default::default()
        };
        let text = StatsView(stats).to_string();
        assert!(
            text.contains("fault calls 4 (latency avg 2 us, max 5 us), prefetched 32 pages (1 prefetch errors), implicit chunks 3"),
            "{text}"
        );
        let v = serde_json::to_value(Report::Stats(StatsView(stats))).expect("json");
        assert_eq!(v["prefetched_pages"], 32);
        assert_eq!(v["chunks"], 3);
    }

    #[test]
    fn completions_list_the_commands() {
        let mut out = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "odpctl",
            &mut out,
        );
        let script = String::from_utf8(out).expect("utf-8");
        for name in ["info", "alloc", "snapshot", "completions"] {
            assert!(script.contains(name), "{name} missing");
        }
    }
}
