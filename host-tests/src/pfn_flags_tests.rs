// SPDX-License-Identifier: GPL-2.0

//! Tests of `src/pfn_flags.rs`: the `HMM_PFN_*` layout and the state-word operations.

use crate::pfn_flags::{
    HmmPfn, MapKind, DMA_MAPPED, ERROR, FLAGS, INOUT_FLAGS, MAX_ORDER, ORDER_SHIFT, P2PDMA,
    P2PDMA_BUS, REQ_FAULT, REQ_WRITE, VALID, WRITE,
};

/// `BITS_PER_LONG` on the 64-bit targets the module builds for.
const BITS_PER_LONG: u32 = 64;

/// The order field, in place: 5 bits at `ORDER_SHIFT`.
const ORDER_FIELD: u64 = 0x1f << 53;

/// The PFN field: everything below the order field.
const PFN_FIELD: u64 = (1 << 53) - 1;

const KINDS: [MapKind; 3] = [MapKind::Memory, MapKind::P2pHostBridge, MapKind::P2pBus];

/// The kind bit `mapped()` must set for `kind`.
fn kind_bit(kind: MapKind) -> u64 {
    match kind {
        MapKind::Memory => 0,
        MapKind::P2pHostBridge => P2PDMA,
        MapKind::P2pBus => P2PDMA_BUS,
    }
}

#[test]
fn flag_values_are_the_exact_hmm_bits() {
    // The literal bit positions of `enum hmm_pfn_flags` on a 64-bit kernel.
    let table: [(&str, u64, u64); 6] = [
        ("VALID", VALID, 1 << 63),
        ("WRITE", WRITE, 1 << 62),
        ("ERROR", ERROR, 1 << 61),
        ("DMA_MAPPED", DMA_MAPPED, 1 << 60),
        ("P2PDMA", P2PDMA, 1 << 59),
        ("P2PDMA_BUS", P2PDMA_BUS, 1 << 58),
    ];
    for (name, actual, expected) in table {
        assert_eq!(actual, expected, "{name}");
    }
    assert_eq!(VALID, 0x8000_0000_0000_0000);
    assert_eq!(P2PDMA_BUS, 0x0400_0000_0000_0000);
    assert_eq!(ORDER_SHIFT, 53);
    assert_eq!(MAX_ORDER, 31);
}

#[test]
fn flag_values_follow_the_c_header_formulas() {
    // include/linux/hmm.h: HMM_PFN_VALID = 1UL << (BITS_PER_LONG - 1), ... and
    // HMM_PFN_ORDER_SHIFT = BITS_PER_LONG - 11, HMM_PFN_FLAGS = ~((1UL << ORDER_SHIFT) - 1).
    assert_eq!(VALID, 1u64 << (BITS_PER_LONG - 1));
    assert_eq!(WRITE, 1u64 << (BITS_PER_LONG - 2));
    assert_eq!(ERROR, 1u64 << (BITS_PER_LONG - 3));
    assert_eq!(DMA_MAPPED, 1u64 << (BITS_PER_LONG - 4));
    assert_eq!(P2PDMA, 1u64 << (BITS_PER_LONG - 5));
    assert_eq!(P2PDMA_BUS, 1u64 << (BITS_PER_LONG - 6));
    assert_eq!(ORDER_SHIFT, BITS_PER_LONG - 11);
    assert_eq!(FLAGS, !((1u64 << ORDER_SHIFT) - 1));
    assert_eq!(FLAGS, !((1u64 << 53) - 1));
    assert_eq!(FLAGS, 0xffe0_0000_0000_0000);
    assert_eq!(FLAGS.count_ones(), 11);
    // HMM_PFN_INOUT_FLAGS = DMA_MAPPED | P2PDMA | P2PDMA_BUS; REQ_FAULT/REQ_WRITE alias VALID/WRITE.
    assert_eq!(INOUT_FLAGS, DMA_MAPPED | P2PDMA | P2PDMA_BUS);
    assert_eq!(INOUT_FLAGS, 0x1c00_0000_0000_0000);
    assert_eq!(REQ_FAULT, VALID);
    assert_eq!(REQ_WRITE, WRITE);
}

#[test]
fn flags_are_single_disjoint_bits_above_the_order_field() {
    let flags = [VALID, WRITE, ERROR, DMA_MAPPED, P2PDMA, P2PDMA_BUS];
    for (i, &a) in flags.iter().enumerate() {
        assert_eq!(a.count_ones(), 1, "flag {i} is not one bit");
        assert_eq!(a & FLAGS, a, "flag {i} is outside FLAGS");
        assert_eq!(a & ORDER_FIELD, 0, "flag {i} overlaps the order field");
        assert_eq!(a & PFN_FIELD, 0, "flag {i} overlaps the pfn field");
        for (j, &b) in flags.iter().enumerate().skip(i + 1) {
            assert_eq!(a & b, 0, "flags {i} and {j} overlap");
        }
    }
    // The six flags and the 5-bit order field make up FLAGS exactly.
    let all = flags.iter().fold(0, |acc, f| acc | f);
    assert_eq!(all | ORDER_FIELD, FLAGS);
    assert_eq!(all & ORDER_FIELD, 0);
    assert_eq!(FLAGS | PFN_FIELD, u64::MAX);
    assert_eq!(FLAGS & PFN_FIELD, 0);
}

#[test]
fn empty_word_is_nothing() {
    let e = HmmPfn::EMPTY;
    assert_eq!(e.raw(), 0);
    assert_eq!(HmmPfn::default(), e);
    assert!(!e.is_valid());
    assert!(!e.is_writable());
    assert!(!e.is_error());
    assert!(!e.is_dma_mapped());
    assert_eq!(e.map_kind(), None);
    assert_eq!(e.order(), 0);
    assert_eq!(e.pfn(), 0);
}

#[test]
fn from_raw_and_raw_round_trip() {
    let words = [
        0,
        1,
        PFN_FIELD,
        VALID | 0x1234,
        ERROR,
        FLAGS,
        u64::MAX,
        DMA_MAPPED | VALID | WRITE | (9 << 53) | 0xabcde,
    ];
    for raw in words {
        assert_eq!(HmmPfn::from_raw(raw).raw(), raw, "{raw:#x}");
    }
}

#[test]
fn accessors_read_their_bit_of_a_raw_word() {
    // (raw, valid, writable, error, dma_mapped, order, pfn)
    let table: [(u64, bool, bool, bool, bool, u32, u64); 9] = [
        (VALID, true, false, false, false, 0, 0),
        (WRITE, false, true, false, false, 0, 0),
        (ERROR, false, false, true, false, 0, 0),
        (DMA_MAPPED, false, false, false, true, 0, 0),
        (VALID | WRITE | 0x42, true, true, false, false, 0, 0x42),
        (1 << 53, false, false, false, false, 1, 0),
        (9 << 53 | VALID | 0x200, true, false, false, false, 9, 0x200),
        (ORDER_FIELD, false, false, false, false, 31, 0),
        (u64::MAX, true, true, true, true, 31, PFN_FIELD),
    ];
    for (raw, valid, writable, error, mapped, order, pfn) in table {
        let w = HmmPfn::from_raw(raw);
        assert_eq!(w.is_valid(), valid, "valid of {raw:#x}");
        assert_eq!(w.is_writable(), writable, "writable of {raw:#x}");
        assert_eq!(w.is_error(), error, "error of {raw:#x}");
        assert_eq!(w.is_dma_mapped(), mapped, "dma_mapped of {raw:#x}");
        assert_eq!(w.order(), order, "order of {raw:#x}");
        assert_eq!(w.pfn(), pfn, "pfn of {raw:#x}");
    }
}

#[test]
fn new_valid_round_trips() {
    let pfns = [
        0,
        1,
        0x1234,
        0x4_0000,
        0x1f_ffff_ffff,
        PFN_FIELD - 1,
        PFN_FIELD,
    ];
    for pfn in pfns {
        for writable in [false, true] {
            for order in 0..=MAX_ORDER {
                let w = HmmPfn::new_valid(pfn, writable, order);
                assert_eq!(w.pfn(), pfn);
                assert!(w.is_valid());
                assert_eq!(w.is_writable(), writable);
                assert_eq!(w.order(), order);
                assert!(!w.is_error());
                assert!(!w.is_dma_mapped());
                assert_eq!(w.map_kind(), None);
                let write = if writable { WRITE } else { 0 };
                assert_eq!(w.raw(), pfn | VALID | write | (u64::from(order) << 53));
            }
        }
    }
}

#[test]
fn new_valid_drops_pfn_bits_that_would_hit_the_flags() {
    let w = HmmPfn::new_valid(u64::MAX, false, 0);
    assert_eq!(w.pfn(), PFN_FIELD);
    assert_eq!(w.raw(), VALID | PFN_FIELD);
    assert!(!w.is_writable());
    assert!(!w.is_error());
    assert!(!w.is_dma_mapped());
    assert_eq!(w.order(), 0);

    let w = HmmPfn::new_valid((1 << 53) | 7, false, 2);
    assert_eq!(w.pfn(), 7);
    assert_eq!(w.order(), 2);
}

#[test]
fn order_is_clamped_to_the_field() {
    for order in [32, 33, 63, 64, 100, u32::MAX] {
        let w = HmmPfn::new_valid(0x1000, true, order);
        assert_eq!(w.order(), MAX_ORDER, "order {order}");
        // Clamping must not spill into the neighbouring fields.
        assert_eq!(w.pfn(), 0x1000, "order {order}");
        assert_eq!(
            w.raw(),
            VALID | WRITE | ORDER_FIELD | 0x1000,
            "order {order}"
        );

        let m = HmmPfn::new_valid(0x1000, false, 0).mapped(MapKind::Memory, order);
        assert_eq!(m.order(), MAX_ORDER, "mapped order {order}");
        assert_eq!(m.map_kind(), Some(MapKind::Memory), "mapped order {order}");
        assert_eq!(m.raw() & (P2PDMA | P2PDMA_BUS), 0, "mapped order {order}");
        assert_eq!(m.pfn(), 0x1000, "mapped order {order}");
    }
    assert_eq!(HmmPfn::new_valid(0, false, MAX_ORDER).order(), MAX_ORDER);
    assert_eq!(
        HmmPfn::new_valid(0, false, MAX_ORDER - 1).order(),
        MAX_ORDER - 1
    );
}

#[test]
fn mapped_sets_dma_mapped_kind_and_order() {
    for kind in KINDS {
        for writable in [false, true] {
            for (hmm_order, unit_order) in [(0, 0), (9, 0), (0, 9), (9, 9), (4, 1), (31, 18)] {
                let pfn = 0x12_3400;
                let w = HmmPfn::new_valid(pfn, writable, hmm_order).mapped(kind, unit_order);
                assert!(w.is_dma_mapped());
                assert_eq!(w.map_kind(), Some(kind));
                assert_eq!(w.order(), unit_order, "the unit order replaces HMM's");
                assert_eq!(w.pfn(), pfn);
                assert!(w.is_valid());
                assert_eq!(w.is_writable(), writable);
                assert!(!w.is_error());
                let write = if writable { WRITE } else { 0 };
                assert_eq!(
                    w.raw(),
                    pfn | VALID
                        | write
                        | DMA_MAPPED
                        | kind_bit(kind)
                        | (u64::from(unit_order) << 53),
                    "{kind:?} writable={writable} {hmm_order}->{unit_order}"
                );
            }
        }
    }
}

#[test]
fn mapped_replaces_a_previous_kind() {
    for old in KINDS {
        for new in KINDS {
            let w = HmmPfn::new_valid(0x777, true, 0)
                .mapped(old, 3)
                .mapped(new, 0);
            assert_eq!(w.map_kind(), Some(new), "{old:?} -> {new:?}");
            assert_eq!(
                w.raw() & (P2PDMA | P2PDMA_BUS),
                kind_bit(new),
                "{old:?} -> {new:?}"
            );
            assert_eq!(w.order(), 0, "{old:?} -> {new:?}");
            assert_eq!(w.pfn(), 0x777);
            assert!(w.is_valid() && w.is_writable());
        }
    }
}

#[test]
fn mapped_touches_only_the_inout_bits_and_the_order() {
    let words = [
        0,
        VALID,
        VALID | WRITE | 0x1_0000,
        ERROR | 0x55,
        VALID | (5 << 53) | PFN_FIELD,
        u64::MAX,
        0x5a5a_5a5a_5a5a_5a5a,
        0xa5a5_a5a5_a5a5_a5a5,
    ];
    let untouched = !(INOUT_FLAGS | ORDER_FIELD);
    for raw in words {
        for kind in KINDS {
            for order in [0, 1, 9, 31] {
                let w = HmmPfn::from_raw(raw).mapped(kind, order);
                assert_eq!(
                    w.raw() & untouched,
                    raw & untouched,
                    "{raw:#x} {kind:?} {order}"
                );
                assert_eq!(
                    w.raw() & (INOUT_FLAGS | ORDER_FIELD),
                    DMA_MAPPED | kind_bit(kind) | (u64::from(order) << 53),
                    "{raw:#x} {kind:?} {order}"
                );
            }
        }
    }
}

#[test]
fn map_kind_reads_the_sticky_bits() {
    let table: [(u64, Option<MapKind>); 8] = [
        (0, None),
        (VALID | WRITE, None),
        // Kind bits without DMA_MAPPED do not make the page mapped.
        (P2PDMA, None),
        (P2PDMA_BUS | P2PDMA | VALID, None),
        (DMA_MAPPED | VALID, Some(MapKind::Memory)),
        (DMA_MAPPED | P2PDMA, Some(MapKind::P2pHostBridge)),
        (DMA_MAPPED | P2PDMA_BUS, Some(MapKind::P2pBus)),
        // BUS wins when both kind bits are set.
        (DMA_MAPPED | P2PDMA | P2PDMA_BUS, Some(MapKind::P2pBus)),
    ];
    for (raw, kind) in table {
        assert_eq!(HmmPfn::from_raw(raw).map_kind(), kind, "{raw:#x}");
    }
}

#[test]
fn with_write_sets_and_clears_only_write() {
    let words = [
        0,
        VALID,
        VALID | WRITE | 0x99,
        HmmPfn::new_valid(0x200, false, 9)
            .mapped(MapKind::P2pHostBridge, 9)
            .raw(),
        u64::MAX,
        !WRITE,
    ];
    for raw in words {
        let w = HmmPfn::from_raw(raw);
        let set = w.with_write(true);
        let clear = w.with_write(false);
        assert!(set.is_writable());
        assert!(!clear.is_writable());
        assert_eq!(set.raw(), raw | WRITE, "{raw:#x}");
        assert_eq!(clear.raw(), raw & !WRITE, "{raw:#x}");
        // Idempotent, and each undoes the other.
        assert_eq!(set.with_write(true), set);
        assert_eq!(clear.with_write(false), clear);
        assert_eq!(set.with_write(false), clear);
        assert_eq!(clear.with_write(true), set);
        // Nothing else changes.
        assert_eq!(set.pfn(), w.pfn());
        assert_eq!(set.order(), w.order());
        assert_eq!(set.map_kind(), w.map_kind());
        assert_eq!(clear.is_valid(), w.is_valid());
        assert_eq!(clear.is_error(), w.is_error());
    }
}

#[test]
fn with_pfn_offset_moves_only_the_pfn() {
    for kind in KINDS {
        for order in [0, 1, 9, 18, MAX_ORDER] {
            for writable in [false, true] {
                let head = HmmPfn::new_valid(0x12_3400, writable, 0).mapped(kind, order);
                for k in [0, 1, 63, 511] {
                    let w = head.with_pfn_offset(k);
                    assert_eq!(w.pfn(), 0x12_3400 + k);
                    assert_eq!(w.raw() & FLAGS, head.raw() & FLAGS);
                    assert_eq!(
                        w,
                        HmmPfn::new_valid(0x12_3400 + k, writable, 0).mapped(kind, order)
                    );
                }
            }
        }
    }
    // The frame number stays in its field, as `new_valid` keeps it, and the flags stay.
    let top = HmmPfn::new_valid(PFN_FIELD, true, 0).mapped(MapKind::Memory, 3);
    let wrapped = top.with_pfn_offset(1);
    assert_eq!(wrapped.pfn(), 0);
    assert_eq!(wrapped.raw() & FLAGS, top.raw() & FLAGS);
}
