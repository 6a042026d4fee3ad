// SPDX-License-Identifier: GPL-2.0

//! Device copies (`ODP_HMM_IOC_DMA`): the DMA device reads and writes registered memory through
//! the IOMMU, with ODP semantics.
//!
//! The edu engine copies only between its 4 KiB buffer and a DMA address, so a copy between two
//! registrations is two transfers through the buffer. Each side is a device access in the ODP
//! sense: pages the device finds unmapped are faulted in and mapped first
//! ([`OdpUmem::prepare_access`]), without the engine lock, so that a slow page fault stalls no
//! other copy; then, under the engine lock, each transfer runs under its registration's update
//! lock ([`OdpUmem::access_mapped`]), so an invalidation waits until the device is done with the
//! page. If an invalidation came in between, the copy starts over. The engine lock is held across
//! both transfers: the buffer is shared.

use kernel::{
    bindings,
    prelude::*,
    sync::Arc, //
};

use crate::{
    dma_device,
    edu::{
        Direction,
        Engine,
        BUF_SIZE, //
    },
    kapi::{
        mm::capable,
        params,
        sched::fatal_signal_pending, //
    },
    range::DmaSeg,
    registration::{
        AccessPiece,
        Registration, //
    },
    uapi,
};

/// How many times a copy faults its pages in and tries again before giving up with `EBUSY`
/// (each retry means an invalidation hit its pages between the fault and the transfer).
const COPY_ATTEMPTS: usize = 16;

/// One end of a copy.
enum End {
    /// Registered memory: a registration and a user address in it.
    Memory(Registration, u64),
    /// The device buffer, at an offset.
    Buffer(usize),
    /// A raw DMA address nobody checked (source only, debug).
    RawIova(u64),
}

/// Runs the copy `req` asks for on behalf of the open file `file` (an identity that is never
/// reused); `lookup` finds a registration by handle. Returns the number of pages the device had
/// to fault.
pub(crate) fn copy(
    req: &uapi::Dma,
    file: u64,
    lookup: impl Fn(u64) -> Result<Registration>,
) -> Result<u64> {
    let known = uapi::DMA_SRC_DEVBUF | uapi::DMA_DST_DEVBUF | uapi::DMA_SRC_RAW_IOVA;
    let src_flags = req.flags & (uapi::DMA_SRC_DEVBUF | uapi::DMA_SRC_RAW_IOVA);
    if req.flags & !known != 0 || src_flags.count_ones() > 1 || req.length == 0 {
        return Err(EINVAL);
    }
    if req.length > u64::from(uapi::DMA_MAX_LEN) {
        return Err(E2BIG);
    }
    // CAST: At most `DMA_MAX_LEN`.
    let len = req.length as usize;
    let buffer = |offset: u64| -> Result<End> {
        match usize::try_from(offset) {
            Ok(offset) if offset.checked_add(len).is_some_and(|end| end <= BUF_SIZE) => {
                Ok(End::Buffer(offset))
            }
            _ => Err(ERANGE),
        }
    };
    let src = if req.flags & uapi::DMA_SRC_DEVBUF != 0 {
        buffer(req.src_addr)?
    } else if req.flags & uapi::DMA_SRC_RAW_IOVA != 0 {
        if !params::debug_raw_dma() || !capable(bindings::CAP_SYS_RAWIO) {
            return Err(EPERM);
        }
        End::RawIova(req.src_addr)
    } else {
        End::Memory(lookup(req.src_handle)?, req.src_addr)
    };
    let dst = if req.flags & uapi::DMA_DST_DEVBUF != 0 {
        buffer(req.dst_addr)?
    } else {
        End::Memory(lookup(req.dst_handle)?, req.dst_addr)
    };
    // The buffer offset the data passes through.
    let staging = match (&src, &dst) {
        (End::Buffer(_), End::Buffer(_)) => return Err(EINVAL),
        (_, End::Buffer(offset)) | (End::Buffer(offset), _) => *offset,
        _ => 0,
    };

    let dev = dma_device::current()?;
    for end in [&src, &dst] {
        if let End::Memory(reg, _) = end {
            if !Arc::ptr_eq(reg.device(), &dev) {
                return Err(ENODEV);
            }
        }
    }
    let pieces_of = |end: &End| match end {
        End::Memory(reg, addr) => reg.access_pieces(*addr, len),
        _ => Ok([None, None]),
    };
    let attempts = || -> Result<u64> {
        let mut faults = 0;
        for _ in 0..COPY_ATTEMPTS {
            if fatal_signal_pending() {
                return Err(EINTR);
            }
            // The registrations that hold each end (an implicit one may need two chunks).
            let (src_pieces, dst_pieces) = (pieces_of(&src)?, pieces_of(&dst)?);
            // Fault first, with no device lock held ...
            for (umem, addr, len, _) in src_pieces.iter().flatten() {
                faults += umem.prepare_access(*addr, *len, false)?;
            }
            for (umem, addr, len, _) in dst_pieces.iter().flatten() {
                faults += umem.prepare_access(*addr, *len, true)?;
            }
            // ... then move the data, unless an invalidation came in between.
            let engine = dev.engine().lock();
            let engine = engine.as_ref().ok_or(EOPNOTSUPP)?;
            engine.claim(file)?;
            let read = match &src {
                End::Memory(..) => access(engine, &src_pieces, false, staging)?,
                End::RawIova(iova) => {
                    engine.transfer(Direction::ToBuffer, *iova, staging, len)?;
                    true
                }
                End::Buffer(_) => true,
            };
            if !read {
                continue;
            }
            let written = match &dst {
                End::Memory(..) => access(engine, &dst_pieces, true, staging)?,
                _ => true,
            };
            if written {
                return Ok(faults);
            }
        }
        Err(EBUSY)
    };
    let moved = attempts();
    if moved.is_err() {
        // An implicit registration may have made a chunk for nothing (an unmapped address):
        // its next call frees it.
        for end in [&src, &dst] {
            if let End::Memory(reg, _) = end {
                reg.call_failed();
            }
        }
    }
    moved
}

/// Moves the pieces of one end between memory and the buffer (into memory if `write`), each
/// under its registration's update lock; `false` if a page was not reachable (an invalidation
/// came after the fault: fault again).
fn access(
    engine: &Engine,
    pieces: &[Option<AccessPiece>; 2],
    write: bool,
    staging: usize,
) -> Result<bool> {
    let dir = if write {
        Direction::FromBuffer
    } else {
        Direction::ToBuffer
    };
    for (umem, addr, len, offset) in pieces.iter().flatten() {
        let moved = umem.access_mapped(*addr, *len, write, |segs| {
            transfer(engine, dir, segs, staging + offset)
        })?;
        if moved.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Moves the segments `segs` to or from the buffer, from `offset` on.
fn transfer(engine: &Engine, dir: Direction, segs: &[DmaSeg], mut offset: usize) -> Result {
    for seg in segs {
        engine.transfer(dir, seg.dma_addr, offset, seg.len)?;
        offset += seg.len;
    }
    Ok(())
}
