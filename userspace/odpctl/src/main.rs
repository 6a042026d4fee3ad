// SPDX-License-Identifier: GPL-2.0

//! odpctl: drive /dev/odp_hmm from the command line.
//!
//! Registrations belong to the process that makes them, so odpctl runs a sequence of commands
//! in one process, on a buffer it maps itself:
//!
//! ```text
//! odpctl info
//! odpctl alloc 8M register rw fault 0 1M snapshot 0 8 copy 0 4096 4096 stats
//! odpctl demo
//! ```
//!
//! Commands (offsets and sizes accept K/M/G suffixes):
//!   info                        the DMA device, its IOMMU domain, the default backend
//!   alloc SIZE [anon|thp|shm]   map a buffer (filled with a pattern); anon: small pages only,
//!                               thp: 2 MiB-aligned and MADV_HUGEPAGE, shm: shared anonymous
//!   backend NAME                backend for the next register: default|rust|kernel|legacy|none
//!   register [ro|rw]            register the whole buffer
//!   fault OFF LEN [read|write|nofault]
//!   snapshot OFF NPAGES         per-page state (only mapped pages are listed)
//!   copy SRC DST LEN            the device copies LEN bytes within the buffer
//!   munmap OFF LEN              unmap part of the buffer (invalidation)
//!   remap OFF LEN               map fresh memory there again, filled with a new pattern
//!   verify SRC DST LEN          compare two parts of the buffer
//!   stats                       counters of the registration
//!   unregister
//!   demo                        a guided tour: fault, device copy, invalidate, refault

use std::{fmt, io, process::ExitCode, ptr};

use odp_hmm_uapi::*;

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

/// [`odp_hmm_uapi::parse_size`], with its error as a command error.
fn parse_size(s: &str) -> Result<usize> {
    odp_hmm_uapi::parse_size(s).map_err(CmdError)
}

/// The buffer odpctl maps.
struct Buffer {
    ptr: *mut u8,
    len: usize,
    generation: u8,
}

impl Buffer {
    fn new(len: usize, kind: &str) -> Result<Self> {
        const HUGE: usize = 2 << 20;
        let flags = match kind {
            "anon" | "thp" => libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            "shm" => libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            _ => return Err(CmdError(format!("unknown buffer kind {kind}"))),
        };
        // Placement: "thp" starts on a 2 MiB boundary, so that the kernel can back it with huge
        // pages. "anon" starts one page past one: a munmap that splits the mapping then
        // invalidates exactly what it unmaps (splitting a mapping that covers a whole aligned
        // 2 MiB block makes the kernel invalidate that whole block, whether it holds a huge
        // page or not: mm/huge_memory.c, __split_huge_pmd()).
        let (slack, skew) = match kind {
            "thp" => (HUGE, 0),
            "anon" => (2 * HUGE, page_size()),
            _ => (0, 0),
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
                let advice = if kind == "thp" {
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

/// The session: a device, a buffer, a registration.
struct Session {
    dev: Option<Device>,
    buf: Option<Buffer>,
    reg: Option<Registration>,
    backend: u32,
}

impl Session {
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
        println!(
            "DMA device      {} [{:04x}:{:04x}]{}",
            info.pci_address(),
            info.pci_vendor,
            info.pci_device,
            if info.is_edu() { " (QEMU edu)" } else { "" }
        );
        println!("IOMMU domain    {}", domain_name(info.domain_type));
        println!(
            "IOVA mode       {}",
            if info.flags & ODP_HMM_INFO_IOVA != 0 {
                "yes"
            } else {
                "no (dma_map_phys per page)"
            }
        );
        println!(
            "copy engine     {}",
            if info.flags & ODP_HMM_INFO_COPY_ENGINE != 0 {
                "yes"
            } else {
                "no"
            }
        );
        println!("default backend {}", backend_name(info.backend));
        println!("DMA mask        {:#x}", info.dma_mask);
        println!(
            "raw IOVA debug  {}",
            if info.flags & ODP_HMM_INFO_DEBUG_RAW_DMA != 0 {
                "enabled"
            } else {
                "disabled"
            }
        );
        Ok(())
    }

    fn register(&mut self, access: &str) -> Result {
        let flags = match access {
            "ro" => ODP_HMM_ACCESS_READ,
            "rw" => ODP_HMM_ACCESS_READ | ODP_HMM_ACCESS_WRITE,
            _ => return Err(CmdError(format!("access must be ro or rw, not {access}"))),
        };
        let (addr, len) = {
            let b = self.buf()?;
            (b.addr(), b.len as u64)
        };
        let backend = self.backend;
        let reg = self.dev()?.register(addr, len, flags, backend)?;
        println!(
            "registered {len:#x} bytes at {addr:#x}: handle {}, backend {}, DMA mode {}, IOVA base {:#x}",
            reg.handle,
            backend_name(reg.backend),
            dma_mode_name(reg.dma_mode),
            reg.iova_base
        );
        self.reg = Some(reg);
        Ok(())
    }

    fn fault(&mut self, off: usize, len: usize, how: &str) -> Result {
        let flags = match how {
            "read" => 0,
            "write" => ODP_HMM_FAULT_WRITE,
            "nofault" => ODP_HMM_FAULT_NO_FAULT,
            _ => {
                return Err(CmdError(format!(
                    "fault mode must be read, write or nofault, not {how}"
                )))
            }
        };
        self.buf()?.check(off, len)?;
        let (addr, reg) = (self.buf()?.addr(), self.reg()?);
        let f = self
            .dev()?
            .fault(reg.handle, addr + off as u64, len as u64, flags)?;
        println!(
            "fault {how} {off:#x}+{len:#x}: {} pages newly mapped, {} mapped",
            f.pages_mapped, f.pages_valid
        );
        Ok(())
    }

    fn snapshot(&mut self, off: usize, npages: usize) -> Result {
        self.buf()?.check(off, npages * page_size())?;
        let (addr, reg) = (self.buf()?.addr(), self.reg()?);
        let pages = self
            .dev()?
            .snapshot(reg.handle, addr + off as u64, npages)?;
        let mapped = pages
            .iter()
            .filter(|p| p.flags & ODP_HMM_PAGE_DMA_MAPPED != 0)
            .count();
        println!("snapshot {off:#x}, {npages} pages: {mapped} mapped");
        for (i, p) in pages.iter().enumerate().filter(|(_, p)| p.flags != 0) {
            let mut what = Vec::new();
            for (bit, name) in [
                (ODP_HMM_PAGE_VALID, "valid"),
                (ODP_HMM_PAGE_WRITE, "write"),
                (ODP_HMM_PAGE_DMA_MAPPED, "dma-mapped"),
                (ODP_HMM_PAGE_P2P, "p2p"),
                (ODP_HMM_PAGE_P2P_BUS, "p2p-bus"),
            ] {
                if p.flags & bit != 0 {
                    what.push(name);
                }
            }
            println!(
                "  page {:>6}  dma {:#014x}  order {}  {}",
                off / page_size() + i,
                p.dma_addr,
                p.order,
                what.join(",")
            );
        }
        Ok(())
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
        println!("device copied {len} bytes {src:#x} -> {dst:#x} ({faults} device page faults)");
        Ok(())
    }

    fn verify(&mut self, src: usize, dst: usize, len: usize) -> Result {
        let b = self.buf()?;
        b.check(src, len)?;
        b.check(dst, len)?;
        if b.bytes(src, len) != b.bytes(dst, len) {
            return Err(CmdError(format!("bytes at {src:#x} and {dst:#x} differ")));
        }
        println!("verified: {len} bytes at {dst:#x} equal those at {src:#x}");
        Ok(())
    }

    fn munmap(&mut self, off: usize, len: usize) -> Result {
        let b = self.buf()?;
        b.check(off, len)?;
        // SAFETY: The range is inside our buffer; it is remapped before it is used again.
        if unsafe { libc::munmap(b.ptr.add(off).cast(), len) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        println!("munmap {off:#x}+{len:#x}");
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
        println!(
            "remapped {off:#x}+{len:#x} with new contents (generation {})",
            b.generation
        );
        Ok(())
    }

    fn stats(&mut self) -> Result {
        let handle = self.reg.map_or(0, |r| r.handle);
        let s = self.dev()?.stats(handle)?;
        println!(
            "stats: faults {} (retries {}), pages faulted {}, mapped {}, unmapped {}, mapped now {}",
            s.faults, s.fault_retries, s.pages_faulted, s.pages_mapped, s.pages_unmapped, s.pages_now
        );
        println!(
            "       invalidations {} (+{} that unmapped nothing; {} that could not sleep), link {} sync {} unlink {} calls",
            s.invalidations,
            s.invalidations_ignored,
            s.invalidations_nonblocking,
            s.link_calls,
            s.sync_calls,
            s.unlink_calls
        );
        println!(
            "       IOVA reserved {} KiB, bookkeeping {} KiB, P2P pages: host bridge {}, bus {}, refused {}",
            s.iova_bytes / 1024,
            s.bookkeeping_bytes / 1024,
            s.p2p_host_bridge_pages,
            s.p2p_bus_pages,
            s.p2p_refused_pages
        );
        Ok(())
    }

    fn unregister(&mut self) -> Result {
        let reg = self.reg()?;
        self.dev()?.unregister(reg.handle)?;
        self.reg = None;
        println!("unregistered handle {}", reg.handle);
        Ok(())
    }
}

/// The guided tour the README's main command runs.
fn demo(s: &mut Session) -> Result {
    let ps = page_size();
    let step = |title: &str| println!("\n== {title}");
    step("The device");
    s.info()?;
    step("Map 8 MiB of anonymous memory and register it (nothing is faulted or mapped yet)");
    s.buf = Some(Buffer::new(8 << 20, "anon")?);
    s.register("rw")?;
    s.stats()?;
    step("Fault the first 1 MiB for reading: 256 pages linked into the registration's IOVA window");
    s.fault(0, 1 << 20, "read")?;
    s.snapshot(0, 4)?;
    s.stats()?;
    step("The device copies page 0 to page 512 through the IOMMU (page 512 is faulted on demand, writable)");
    s.copy(0, 512 * ps, ps)?;
    s.verify(0, 512 * ps, ps)?;
    s.snapshot(512 * ps, 1)?;
    s.stats()?;
    step("munmap pages 0..4: the notifier unlinks exactly those 4 pages");
    s.munmap(0, 4 * ps)?;
    s.snapshot(0, 6)?;
    s.stats()?;
    step("Map new memory there; the device refaults page 0 and copies its new bytes");
    s.remap(0, 4 * ps)?;
    s.copy(0, 513 * ps, ps)?;
    s.verify(0, 513 * ps, ps)?;
    s.snapshot(0, 2)?;
    s.stats()?;
    step("Unregister");
    s.unregister()?;
    println!("\ndemo complete: every device copy was verified byte for byte");
    Ok(())
}

fn run(args: &[String]) -> Result {
    let mut s = Session {
        dev: None,
        buf: None,
        reg: None,
        backend: ODP_HMM_BACKEND_DEFAULT,
    };
    let mut it = args.iter().map(String::as_str).peekable();
    while let Some(cmd) = it.next() {
        let mut arg = |what: &str| -> Result<String> {
            it.next()
                .map(str::to_string)
                .ok_or_else(|| CmdError(format!("{cmd}: missing {what}")))
        };
        match cmd {
            "info" => s.info()?,
            "demo" => demo(&mut s)?,
            "alloc" => {
                let size = parse_size(&arg("SIZE")?)?;
                let kind = match it.peek() {
                    Some(&k) if ["anon", "thp", "shm"].contains(&k) => {
                        it.next();
                        k
                    }
                    _ => "anon",
                };
                s.buf = Some(Buffer::new(size, kind)?);
                println!(
                    "mapped {size:#x} bytes of {kind} memory at {:#x}",
                    s.buf()?.addr()
                );
            }
            "backend" => {
                let name = arg("NAME")?;
                s.backend = backend_from_name(&name)
                    .ok_or_else(|| CmdError(format!("unknown backend {name}")))?;
            }
            "register" => {
                let access = match it.peek() {
                    Some(&a) if a == "ro" || a == "rw" => {
                        it.next();
                        a
                    }
                    _ => "rw",
                };
                s.register(access)?;
            }
            "fault" => {
                let (off, len) = (parse_size(&arg("OFF")?)?, parse_size(&arg("LEN")?)?);
                let how = match it.peek() {
                    Some(&h) if ["read", "write", "nofault"].contains(&h) => {
                        it.next();
                        h
                    }
                    _ => "read",
                };
                s.fault(off, len, how)?;
            }
            "snapshot" => {
                let (off, n) = (parse_size(&arg("OFF")?)?, parse_size(&arg("NPAGES")?)?);
                s.snapshot(off, n)?;
            }
            "copy" | "verify" => {
                let (src, dst, len) = (
                    parse_size(&arg("SRC")?)?,
                    parse_size(&arg("DST")?)?,
                    parse_size(&arg("LEN")?)?,
                );
                if cmd == "copy" {
                    s.copy(src, dst, len)?;
                } else {
                    s.verify(src, dst, len)?;
                }
            }
            "munmap" | "remap" => {
                let (off, len) = (parse_size(&arg("OFF")?)?, parse_size(&arg("LEN")?)?);
                if cmd == "munmap" {
                    s.munmap(off, len)?;
                } else {
                    s.remap(off, len)?;
                }
            }
            "stats" => s.stats()?,
            "unregister" => s.unregister()?,
            "help" | "-h" | "--help" => {
                println!("{}", USAGE);
            }
            _ => return Err(CmdError(format!("unknown command {cmd} (try odpctl help)"))),
        }
    }
    Ok(())
}

const USAGE: &str = "usage: odpctl COMMAND [ARGS]... [COMMAND [ARGS]...]...
  info | demo | alloc SIZE [anon|thp|shm] | backend NAME | register [ro|rw]
  fault OFF LEN [read|write|nofault] | snapshot OFF NPAGES | copy SRC DST LEN
  verify SRC DST LEN | munmap OFF LEN | remap OFF LEN | stats | unregister";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("odpctl: {e}");
            ExitCode::FAILURE
        }
    }
}
