// SPDX-License-Identifier: GPL-2.0

//! Per-page state words in the `HMM_PFN_*` layout.
//!
//! C header: [`include/linux/hmm.h`](srctree/include/linux/hmm.h).
//!
//! `hmm_range_fault()` reports each page as one `unsigned long`: the page frame number in the low
//! bits, flags and a 5-bit map order in the top 11 bits. The mapping manager keeps one such word
//! per registered page as its whole per-page bookkeeping: the same layout, with the sticky
//! `DMA_MAPPED`, `P2PDMA` and `P2PDMA_BUS` bits saying how the page is mapped for the device and
//! the order field saying how many pages were linked with it as one unit.
//!
//! Pure logic: no kernel dependency, unit-tested on the host (`host-tests/`). The kernel build
//! checks these constants against the kernel's own `enum hmm_pfn_flags` at compile time.

/// Bits in a 64-bit word (the kernel's `BITS_PER_LONG` on the 64-bit targets this module has).
const BITS: u32 = u64::BITS;

/// The pfn field points to a valid, at least readable, page (input: fault it in).
pub(crate) const VALID: u64 = 1 << (BITS - 1);
/// The page is writable (input: fault it in for write).
pub(crate) const WRITE: u64 = 1 << (BITS - 2);
/// The page cannot be accessed (no VMA, special or poisoned page, ...).
pub(crate) const ERROR: u64 = 1 << (BITS - 3);
/// The page is mapped for the device (sticky across `hmm_range_fault()`).
pub(crate) const DMA_MAPPED: u64 = 1 << (BITS - 4);
/// PCI peer memory mapped through the host bridge with `DMA_ATTR_MMIO` (sticky).
pub(crate) const P2PDMA: u64 = 1 << (BITS - 5);
/// PCI peer memory reached by bus address; nothing to unmap (sticky).
pub(crate) const P2PDMA_BUS: u64 = 1 << (BITS - 6);
/// Shift of the 5-bit map order field.
pub(crate) const ORDER_SHIFT: u32 = BITS - 11;
/// Mask of the map order field, in place.
const ORDER_MASK: u64 = 0x1f << ORDER_SHIFT;
/// Every flag and the order field: what is not the PFN.
pub(crate) const FLAGS: u64 = !((1 << ORDER_SHIFT) - 1);
/// The bits `hmm_range_fault()` carries from input to output.
pub(crate) const INOUT_FLAGS: u64 = DMA_MAPPED | P2PDMA | P2PDMA_BUS;

/// Input flag: the output must be valid or the fault fails.
pub(crate) const REQ_FAULT: u64 = VALID;
/// Input flag: the output must be writable or the fault fails.
pub(crate) const REQ_WRITE: u64 = WRITE;

/// The largest map order the 5-bit field holds.
pub(crate) const MAX_ORDER: u32 = 31;

/// How a page is mapped for the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum MapKind {
    /// Ordinary memory: linked into the IOVA window or mapped with `dma_map_phys()`.
    #[default]
    Memory,
    /// PCI peer memory behind the host bridge: mapped like memory, with `DMA_ATTR_MMIO`.
    P2pHostBridge,
    /// PCI peer memory the device reaches by bus address: no IOMMU mapping at all.
    P2pBus,
}

/// One page's state word, in the `HMM_PFN_*` layout.
///
/// # Invariants
///
/// None beyond the layout: every `u64` is a state word. A word with `DMA_MAPPED` always has
/// `VALID` too (the mapping manager only sets both together); `P2PDMA` and `P2PDMA_BUS` only
/// appear with `DMA_MAPPED`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct HmmPfn(u64);

impl HmmPfn {
    /// The empty word: nothing known, nothing mapped.
    pub(crate) const EMPTY: Self = Self(0);

    /// Wraps a raw word, as `hmm_range_fault()` writes it.
    pub(crate) const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw word.
    pub(crate) const fn raw(self) -> u64 {
        self.0
    }

    /// A valid page at `pfn` with the given write permission and map order.
    pub(crate) const fn new_valid(pfn: u64, writable: bool, order: u32) -> Self {
        let write = if writable { WRITE } else { 0 };
        Self((pfn & !FLAGS) | VALID | write | order_bits(order))
    }

    /// The page frame number.
    pub(crate) const fn pfn(self) -> u64 {
        self.0 & !FLAGS
    }

    /// Whether the word describes a valid (readable) page.
    pub(crate) const fn is_valid(self) -> bool {
        self.0 & VALID != 0
    }

    /// Whether the page is writable.
    pub(crate) const fn is_writable(self) -> bool {
        self.0 & WRITE != 0
    }

    /// Whether `hmm_range_fault()` reported the page as inaccessible.
    pub(crate) const fn is_error(self) -> bool {
        self.0 & ERROR != 0
    }

    /// Whether the page is mapped for the device.
    pub(crate) const fn is_dma_mapped(self) -> bool {
        self.0 & DMA_MAPPED != 0
    }

    /// The map order: log2 of the pages mapped (or reported by HMM) as one unit.
    pub(crate) const fn order(self) -> u32 {
        // CAST: The field is 5 bits wide, so it always fits.
        ((self.0 & ORDER_MASK) >> ORDER_SHIFT) as u32
    }

    /// How the page is mapped, if it is.
    pub(crate) const fn map_kind(self) -> Option<MapKind> {
        if !self.is_dma_mapped() {
            None
        } else if self.0 & P2PDMA_BUS != 0 {
            Some(MapKind::P2pBus)
        } else if self.0 & P2PDMA != 0 {
            Some(MapKind::P2pHostBridge)
        } else {
            Some(MapKind::Memory)
        }
    }

    /// This word, marked mapped as `kind` in a unit of `order`.
    pub(crate) const fn mapped(self, kind: MapKind, order: u32) -> Self {
        let kind_bits = match kind {
            MapKind::Memory => 0,
            MapKind::P2pHostBridge => P2PDMA,
            MapKind::P2pBus => P2PDMA_BUS,
        };
        let without = self.0 & !(INOUT_FLAGS | ORDER_MASK);
        Self(without | DMA_MAPPED | kind_bits | order_bits(order))
    }

    /// This word with `offset` added to its page frame number, flags unchanged (the frames of
    /// one unit). Like [`Self::new_valid`], it keeps the frame number to its field.
    pub(crate) const fn with_pfn_offset(self, offset: u64) -> Self {
        Self((self.0 & FLAGS) | (self.0.wrapping_add(offset) & !FLAGS))
    }

    /// This word with the write permission set or cleared.
    pub(crate) const fn with_write(self, writable: bool) -> Self {
        if writable {
            Self(self.0 | WRITE)
        } else {
            Self(self.0 & !WRITE)
        }
    }
}

/// The order field holding `order`, clamped to what 5 bits hold.
const fn order_bits(order: u32) -> u64 {
    let order = if order > MAX_ORDER { MAX_ORDER } else { order };
    (order as u64) << ORDER_SHIFT
}
