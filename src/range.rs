// SPDX-License-Identifier: GPL-2.0

//! Address and page-index arithmetic for registrations.
//!
//! Every user-supplied address and length passes through here before it reaches the mm or the
//! DMA layer: alignment, emptiness and overflow are checked once, and what comes out is a range
//! of page indices that cannot wrap.
//!
//! Pure logic: no kernel dependency, unit-tested on the host (`host-tests/`).

/// Why a user range was refused. The ioctl layer turns each into its documented errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeError {
    /// The address or the length is not page-aligned (`EINVAL`).
    Unaligned,
    /// The length is zero (`EINVAL`).
    Empty,
    /// `addr + length` wraps or ends above the user address space (`EOVERFLOW`).
    Overflow,
    /// A sub-range leaves the registration it names (`ERANGE`).
    OutOfRegistration,
}

/// A page-aligned, non-empty range of user virtual addresses.
///
/// # Invariants
///
/// `start` and `end` are multiples of the page size, `start < end <= limit` for the address
/// space limit it was checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UserRange {
    start: u64,
    end: u64,
    page_shift: u32,
}

impl UserRange {
    /// Checks `addr` and `len` against the page size `1 << page_shift` and the address space
    /// limit `limit` (exclusive, e.g. `TASK_SIZE`).
    pub(crate) fn new(
        addr: u64,
        len: u64,
        page_shift: u32,
        limit: u64,
    ) -> Result<Self, RangeError> {
        let page_mask = (1u64 << page_shift) - 1;
        if len == 0 {
            return Err(RangeError::Empty);
        }
        if addr & page_mask != 0 || len & page_mask != 0 {
            return Err(RangeError::Unaligned);
        }
        let end = addr.checked_add(len).ok_or(RangeError::Overflow)?;
        if end > limit {
            return Err(RangeError::Overflow);
        }
        // INVARIANT: Both ends are aligned, `len > 0` and `end <= limit` were checked above.
        Ok(Self {
            start: addr,
            end,
            page_shift,
        })
    }

    /// First address.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// One past the last address.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Number of pages.
    pub(crate) fn npages(&self) -> usize {
        // CAST: A user range is below the address-space limit, so its page count fits `usize`
        // on the 64-bit targets this module builds for.
        (self.len() >> self.page_shift) as usize
    }

    /// The page indices, relative to this range, of the sub-range `addr..addr + len`.
    ///
    /// The sub-range must be page-aligned, non-empty and inside this range.
    pub(crate) fn sub_range(&self, addr: u64, len: u64) -> Result<PageSpan, RangeError> {
        let sub = Self::new(addr, len, self.page_shift, u64::MAX)?;
        if sub.start < self.start || sub.end > self.end {
            return Err(RangeError::OutOfRegistration);
        }
        Ok(self.span_of(sub.start, sub.end))
    }

    /// The page indices of the part of `start..end` (any addresses) that overlaps this range,
    /// rounded outwards to whole pages; `None` if nothing overlaps.
    pub(crate) fn overlap(&self, start: u64, end: u64) -> Option<PageSpan> {
        if start >= end {
            return None;
        }
        let page_mask = (1u64 << self.page_shift) - 1;
        let first = start.max(self.start) & !page_mask;
        let last = end.min(self.end);
        if first >= last {
            return None;
        }
        // Round the end up to a page; it stays <= self.end, which is aligned.
        let last = (last + page_mask) & !page_mask;
        Some(self.span_of(first, last))
    }

    /// The user address of page `index` of this range.
    pub(crate) fn addr_of(&self, index: usize) -> u64 {
        // CAST: `usize` is 64 bits wide on the targets this module builds for.
        self.start + ((index as u64) << self.page_shift)
    }

    /// The virtual page number of the first page.
    pub(crate) fn first_vpn(&self) -> u64 {
        self.start >> self.page_shift
    }

    /// Indices of `start..end`, both aligned and inside this range.
    fn span_of(&self, start: u64, end: u64) -> PageSpan {
        // CAST: Both offsets are below the range length, whose page count fits `usize`.
        PageSpan {
            first: ((start - self.start) >> self.page_shift) as usize,
            end: ((end - self.start) >> self.page_shift) as usize,
        }
    }
}

/// A non-empty span of page indices `first..end` within a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageSpan {
    /// First index.
    pub(crate) first: usize,
    /// One past the last index.
    pub(crate) end: usize,
}

impl PageSpan {
    /// Number of pages.
    pub(crate) fn len(&self) -> usize {
        self.end - self.first
    }

    /// Splits the span into consecutive pieces of at most `max` pages.
    pub(crate) fn chunks(self, max: usize) -> impl Iterator<Item = PageSpan> {
        let max = max.max(1);
        let end = self.end;
        (self.first..self.end)
            .step_by(max)
            .map(move |first| PageSpan {
                first,
                end: first.saturating_add(max).min(end),
            })
    }
}

/// A piece of a device access: `len` bytes at DMA address `dma_addr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DmaSeg {
    /// Where the device reads or writes.
    pub(crate) dma_addr: u64,
    /// How many bytes.
    pub(crate) len: usize,
}

/// Up to two DMA segments: what a device access of at most one page needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segments {
    segs: [DmaSeg; 2],
    n: usize,
}

impl Segments {
    /// The segments.
    pub(crate) fn as_slice(&self) -> &[DmaSeg] {
        // PANIC: `n` only grows when a slot of `segs` was filled.
        &self.segs[..self.n]
    }
}

/// The DMA segments of a device access of `len` bytes (at most one page) at user address
/// `addr`, whose pages, from the page of `addr` on, have the DMA addresses `pages`: one segment,
/// or two where the pages are not contiguous for the device.
pub(crate) fn dma_segments(addr: u64, len: usize, page_size: u64, pages: &[u64]) -> Segments {
    let offset = addr % page_size;
    let mut out = Segments {
        segs: [DmaSeg::default(); 2],
        n: 0,
    };
    // CAST: `usize` is at most 64 bits wide.
    let mut left = len as u64;
    for (i, &base) in pages.iter().enumerate() {
        let (start, room) = if i == 0 {
            (base + offset, page_size - offset)
        } else {
            (base, page_size)
        };
        let piece = left.min(room);
        if piece == 0 {
            break;
        }
        left -= piece;
        // CAST: A piece is at most one page.
        let piece = piece as usize;
        match out.n.checked_sub(1).and_then(|last| out.segs.get_mut(last)) {
            // CAST: As above.
            Some(last) if last.dma_addr + last.len as u64 == start => last.len += piece,
            _ => {
                if let Some(seg) = out.segs.get_mut(out.n) {
                    *seg = DmaSeg {
                        dma_addr: start,
                        len: piece,
                    };
                    out.n += 1;
                }
            }
        }
    }
    out
}
