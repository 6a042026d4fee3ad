// SPDX-License-Identifier: GPL-2.0

//! The `/dev/odp_hmm` ioctl ABI for Rust userspace.
//!
//! [`abi`] mirrors `include/uapi/linux/odp_hmm.h`, the one source of truth (field for field; the
//! `layout` test compiles the header with the C compiler and checks every size, offset, constant
//! and ioctl number against this crate). [`Device`] is a thin safe wrapper: one method per ioctl,
//! errors as [`std::io::Error`] carrying the errno the header documents. System calls and their
//! constants come from the `libc` crate.

#![forbid(unsafe_op_in_unsafe_fn)]

use std::{
    fs::{
        File,
        OpenOptions, //
    },
    io,
    os::fd::AsRawFd,
    path::Path,
};

pub mod abi;

pub use abi::*;

/// The page size.
pub fn page_size() -> usize {
    // SAFETY: `sysconf` has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Parses a size or offset as the command-line tools take it: `4096`, `16K`, `8M`, `1G`, or
/// `0x1000`. The error says what is wrong with `s`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let (num, shift) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let value = match num.strip_prefix("0x") {
        Some(hex) => usize::from_str_radix(hex, 16),
        None => num.parse(),
    }
    .map_err(|_| format!("not a size: {s}"))?;
    value
        .checked_shl(shift)
        .filter(|v| v >> shift == value)
        .ok_or_else(|| format!("size too large: {s}"))
}

/// An open `/dev/odp_hmm`.
#[derive(Debug)]
pub struct Device {
    file: File,
}

/// A registration, as [`Device::register`] returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Names the registration in later calls.
    pub handle: u64,
    /// The backend used (`ODP_HMM_BACKEND_*`).
    pub backend: u32,
    /// `ODP_HMM_DMA_MODE_*`.
    pub dma_mode: u32,
    /// DMA address of the first page in IOVA mode, else 0.
    pub iova_base: u64,
}

/// What [`Device::fault`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faulted {
    /// Pages newly mapped.
    pub pages_mapped: u64,
    /// Pages of the range mapped afterwards.
    pub pages_valid: u64,
}

/// Issues ioctl `cmd` with `arg`, retrying on `EINTR`.
///
/// # Safety
///
/// `cmd` must be an ioctl whose argument is a `T`.
unsafe fn ioctl<T>(file: &File, cmd: u32, arg: &mut T) -> io::Result<()> {
    loop {
        // SAFETY: `arg` is a valid, exclusive `T` for the duration of the call, and the caller
        // guarantees `cmd` takes a `T`.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), cmd as libc::c_ulong, arg as *mut T) };
        if ret == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

impl Device {
    /// Opens [`ODP_HMM_DEVICE_PATH`].
    pub fn open() -> io::Result<Self> {
        Self::open_path(ODP_HMM_DEVICE_PATH)
    }

    /// Opens the device node at `path`.
    pub fn open_path(path: impl AsRef<Path>) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Self { file })
    }

    /// A device file opened elsewhere (inherited, passed over a socket, or `pidfd_getfd()`).
    pub fn from_file(file: File) -> Self {
        Self { file }
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Issues a raw ioctl: for tests of malformed requests.
    ///
    /// # Safety
    ///
    /// `cmd` must be an ioctl whose argument is a `T`, or one the module does not know.
    pub unsafe fn raw_ioctl<T>(&self, cmd: u32, arg: &mut T) -> io::Result<()> {
        // SAFETY: Forwarded from the caller.
        unsafe { ioctl(&self.file, cmd, arg) }
    }

    /// `ODP_HMM_IOC_INFO`.
    pub fn info(&self) -> io::Result<odp_hmm_info> {
        let mut arg = odp_hmm_info {
            version: ODP_HMM_ABI_VERSION,
            ..Default::default()
        };
        // SAFETY: `ODP_HMM_IOC_INFO` takes a `struct odp_hmm_info`.
        unsafe { ioctl(&self.file, ODP_HMM_IOC_INFO, &mut arg)? };
        Ok(arg)
    }

    /// `ODP_HMM_IOC_REGISTER` of `len` bytes at `addr` with `ODP_HMM_ACCESS_*` `flags`.
    pub fn register(
        &self,
        addr: u64,
        len: u64,
        flags: u32,
        backend: u32,
    ) -> io::Result<Registration> {
        let mut arg = odp_hmm_register {
            version: ODP_HMM_ABI_VERSION,
            flags,
            addr,
            length: len,
            backend,
            ..Default::default()
        };
        // SAFETY: `ODP_HMM_IOC_REGISTER` takes a `struct odp_hmm_register`.
        unsafe { ioctl(&self.file, ODP_HMM_IOC_REGISTER, &mut arg)? };
        Ok(Registration {
            handle: arg.handle,
            backend: arg.backend,
            dma_mode: arg.dma_mode,
            iova_base: arg.iova_base,
        })
    }

    /// `ODP_HMM_IOC_UNREGISTER`.
    pub fn unregister(&self, handle: u64) -> io::Result<()> {
        let mut arg = odp_hmm_unregister {
            version: ODP_HMM_ABI_VERSION,
            reserved: 0,
            handle,
        };
        // SAFETY: `ODP_HMM_IOC_UNREGISTER` takes a `struct odp_hmm_unregister`.
        unsafe { ioctl(&self.file, ODP_HMM_IOC_UNREGISTER, &mut arg) }
    }

    /// `ODP_HMM_IOC_FAULT` of `len` bytes at `addr` with `ODP_HMM_FAULT_*` `flags`.
    pub fn fault(&self, handle: u64, addr: u64, len: u64, flags: u32) -> io::Result<Faulted> {
        let mut arg = odp_hmm_fault {
            version: ODP_HMM_ABI_VERSION,
            flags,
            handle,
            addr,
            length: len,
            ..Default::default()
        };
        // SAFETY: `ODP_HMM_IOC_FAULT` takes a `struct odp_hmm_fault`.
        unsafe { ioctl(&self.file, ODP_HMM_IOC_FAULT, &mut arg)? };
        Ok(Faulted {
            pages_mapped: arg.pages_mapped,
            pages_valid: arg.pages_valid,
        })
    }

    /// `ODP_HMM_IOC_SNAPSHOT` of `npages` pages from `addr`.
    pub fn snapshot(&self, handle: u64, addr: u64, npages: usize) -> io::Result<Vec<odp_hmm_page>> {
        let mut pages = vec![odp_hmm_page::default(); npages];
        let mut arg = odp_hmm_snapshot {
            version: ODP_HMM_ABI_VERSION,
            flags: 0,
            handle,
            addr,
            npages: npages as u64,
            pages: pages.as_mut_ptr() as u64,
        };
        // SAFETY: `ODP_HMM_IOC_SNAPSHOT` takes a `struct odp_hmm_snapshot`, whose `pages` points
        // at `npages` entries that stay alive across the call.
        unsafe { ioctl(&self.file, ODP_HMM_IOC_SNAPSHOT, &mut arg)? };
        Ok(pages)
    }

    /// `ODP_HMM_IOC_STATS` of one registration, or of all (`handle` 0).
    pub fn stats(&self, handle: u64) -> io::Result<odp_hmm_stats> {
        let mut arg = odp_hmm_stats {
            version: ODP_HMM_ABI_VERSION,
            handle,
            ..Default::default()
        };
        // SAFETY: `ODP_HMM_IOC_STATS` takes a `struct odp_hmm_stats`.
        unsafe { ioctl(&self.file, ODP_HMM_IOC_STATS, &mut arg)? };
        Ok(arg)
    }

    /// `ODP_HMM_IOC_DMA`; returns the pages the device had to fault.
    pub fn dma(&self, req: &odp_hmm_dma) -> io::Result<u64> {
        let mut arg = odp_hmm_dma {
            version: ODP_HMM_ABI_VERSION,
            ..*req
        };
        // SAFETY: `ODP_HMM_IOC_DMA` takes a `struct odp_hmm_dma`.
        unsafe { ioctl(&self.file, ODP_HMM_IOC_DMA, &mut arg)? };
        Ok(arg.faults)
    }

    /// Device copy of `len` bytes from registered memory to registered memory.
    pub fn copy(&self, src: (u64, u64), dst: (u64, u64), len: u64) -> io::Result<u64> {
        self.dma(&odp_hmm_dma {
            src_handle: src.0,
            src_addr: src.1,
            dst_handle: dst.0,
            dst_addr: dst.1,
            length: len,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16K"), Ok(16 << 10));
        assert_eq!(parse_size("8m"), Ok(8 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("0x1000"), Ok(0x1000));
        assert_eq!(parse_size("0x10K"), Ok(16 << 10));
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in ["", "K", "12Q", "-1", "0x", "1.5M"] {
            assert_eq!(
                parse_size(bad),
                Err(format!("not a size: {bad}")),
                "{bad:?}"
            );
        }
        let huge = format!("{}G", usize::MAX >> 29);
        assert_eq!(parse_size(&huge), Err(format!("size too large: {huge}")));
    }
}
