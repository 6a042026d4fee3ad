// SPDX-License-Identifier: GPL-2.0

//! What a handle of `/dev/odp_hmm` names: an explicit registration ([`OdpUmem`]) or an implicit
//! one ([`ImplicitUmem`], chunks made on demand), and the file's budget both are charged to.

use core::sync::atomic::{
    AtomicU64,
    Ordering, //
};

use kernel::{
    prelude::*,
    sync::Arc, //
};

use crate::{
    dma_device::DmaDevice,
    hmm_dma_map::Backend,
    implicit::ImplicitUmem,
    kapi::{
        hmm::Request,
        params, //
    },
    odp_umem::{
        Faulted,
        OdpUmem,
        Revoked,
        UmemStats, //
    },
    range::{
        PageSpan,
        UserRange, //
    },
    uapi,
};

/// The memory one open file has registered, against `file_limit_mb`: explicit registrations are
/// charged whole when made, implicit ones a chunk at a time.
pub(crate) struct Budget {
    used: AtomicU64,
}

impl Budget {
    /// A budget with nothing charged.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(
            Self {
                used: AtomicU64::new(0),
            },
            GFP_KERNEL,
        )?)
    }

    /// Charges `bytes`; `ENOSPC` (and nothing charged) beyond the limit.
    pub(crate) fn charge(&self, bytes: u64) -> Result {
        let limit = params::file_limit_bytes();
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes)
                    .filter(|&now| limit.is_none_or(|limit| now <= limit))
            })
            .map(drop)
            .map_err(|_| ENOSPC)
    }

    /// Gives back `bytes` an earlier [`Self::charge`] took.
    pub(crate) fn refund(&self, bytes: u64) {
        // The closure never refuses: `fetch_update` cannot fail.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// A registration of an open file.
#[derive(Clone)]
pub(crate) enum Registration {
    /// Per-page state and IOVA for the whole range, made at once.
    Explicit(Arc<OdpUmem>),
    /// Made a chunk at a time.
    Implicit(Arc<ImplicitUmem>),
}

/// One part of a device access: the registration that holds it, its address, length, and offset
/// in the whole access.
pub(crate) type AccessPiece = (Arc<OdpUmem>, u64, usize, usize);

impl Registration {
    /// The registered range.
    pub(crate) fn range(&self) -> &UserRange {
        match self {
            Self::Explicit(umem) => umem.range(),
            Self::Implicit(umem) => umem.range(),
        }
    }

    /// The device it maps for.
    pub(crate) fn device(&self) -> &Arc<DmaDevice> {
        match self {
            Self::Explicit(umem) => umem.device(),
            Self::Implicit(umem) => umem.device(),
        }
    }

    /// The backend, `ODP_HMM_DMA_MODE_*` and the IOVA of the first page (0 if none).
    pub(crate) fn mapping_info(&self) -> Result<(Backend, u32, u64)> {
        match self {
            Self::Explicit(umem) => umem.mapping_info(),
            Self::Implicit(umem) => umem.mapping_info(),
        }
    }

    /// Faults `span` in as `request` asks and maps it.
    pub(crate) fn fault(&self, span: PageSpan, request: Request) -> Result<Faulted> {
        match self {
            Self::Explicit(umem) => umem.fault(span, request),
            Self::Implicit(umem) => umem.fault(span, request),
        }
    }

    /// Queues a fault of `span` and returns at once.
    pub(crate) fn prefetch_async(&self, span: PageSpan, request: Request) -> Result {
        match self {
            Self::Explicit(umem) => umem.prefetch_async(span, request),
            Self::Implicit(umem) => umem.prefetch_async(span, request),
        }
    }

    /// The device's view of pages `first..first + out.len()`.
    pub(crate) fn snapshot(&self, first: usize, out: &mut [uapi::Page]) -> Result {
        match self {
            Self::Explicit(umem) => umem.snapshot(first, out),
            Self::Implicit(umem) => umem.snapshot(first, out),
        }
    }

    /// Counters and gauges.
    pub(crate) fn stats(&self) -> UmemStats {
        match self {
            Self::Explicit(umem) => umem.stats(),
            Self::Implicit(umem) => umem.stats(),
        }
    }

    /// The registrations that hold a device access of `len` bytes at `addr`, with their parts.
    pub(crate) fn access_pieces(&self, addr: u64, len: usize) -> Result<[Option<AccessPiece>; 2]> {
        match self {
            Self::Explicit(umem) => Ok([Some((umem.clone(), addr, len, 0)), None]),
            Self::Implicit(umem) => umem.access_pieces(addr, len),
        }
    }

    /// A call on it failed: an implicit registration frees, at its next call, the chunks that
    /// map nothing (the failed call may have made one for an unmapped address).
    pub(crate) fn call_failed(&self) {
        if let Self::Implicit(umem) = self {
            umem.call_failed();
        }
    }

    /// Tears it down: the device stops reaching its pages now (later calls that still hold it
    /// get `ENOENT`). Returns its final counters.
    pub(crate) fn retire(&self) -> UmemStats {
        match self {
            Self::Explicit(umem) => {
                umem.device().remove_user(umem);
                umem.revoke(Revoked::Unregistered)
            }
            Self::Implicit(umem) => umem.revoke(),
        }
    }
}
