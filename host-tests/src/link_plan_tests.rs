// SPDX-License-Identifier: GPL-2.0

//! Tests of `src/link_plan.rs`: the link plan of a fault batch (folio units and aligned blocks),
//! unit widening, the unlink plan, `must_remap`, and the commit and invalidation steps
//! (`map_batch`, `drop_stale`, `unmap`) against a model IOMMU that enforces the unit rule.

use std::collections::BTreeMap;

use crate::link_plan::{
    must_remap, Candidate, Candidates, Grouping, Link, LinkClass, MapOps, Mapped, MemoryWords,
    Unlink, MAX_RUN_ORDER, RELAX_PAGES,
};
use crate::pfn_flags::{HmmPfn, MapKind, ERROR, WRITE};

const MEM_W: LinkClass = LinkClass {
    writable: true,
    kind: MapKind::Memory,
};
const MEM_R: LinkClass = LinkClass {
    writable: false,
    kind: MapKind::Memory,
};
const HB_W: LinkClass = LinkClass {
    writable: true,
    kind: MapKind::P2pHostBridge,
};
const HB_R: LinkClass = LinkClass {
    writable: false,
    kind: MapKind::P2pHostBridge,
};
const CLASSES: [LinkClass; 4] = [MEM_W, MEM_R, HB_W, HB_R];

/// The largest block of order-0 pages.
const MAX_BLOCK: usize = 1 << MAX_RUN_ORDER;

/// Pages in a 2 MiB huge page.
const HUGE: usize = 512;

/// A 2 MiB-aligned page frame number.
const PFN_2M: u64 = 0x4_0000;

fn grouping(first_vpn: u64, folio_units: bool, coalesce: bool) -> Grouping {
    Grouping {
        first_vpn,
        folio_units,
        coalesce,
    }
}

fn cand(pfn: u64, order: u32, class: LinkClass) -> Option<Candidate> {
    Some(Candidate { pfn, order, class })
}

/// `n` pages from `pfn` on, all reporting `order`.
fn pages(pfn: u64, n: usize, order: u32, class: LinkClass) -> Vec<Option<Candidate>> {
    (0..n as u64).map(|k| cand(pfn + k, order, class)).collect()
}

/// A whole folio of `2^order` pages from `pfn` on.
fn folio(pfn: u64, order: u32, class: LinkClass) -> Vec<Option<Candidate>> {
    pages(pfn, 1 << order, order, class)
}

fn links(g: &Grouping, first: usize, batch: &[Option<Candidate>]) -> Vec<Link> {
    g.links(first, batch.len(), |i| batch[i]).collect()
}

fn link(first: usize, npages: usize, pfn: u64, unit_order: u32, class: LinkClass) -> Link {
    Link {
        first,
        npages,
        pfn,
        unit_order,
        class,
    }
}

/// `(first, npages, unit_order)` of each link.
fn shape(links: &[Link]) -> Vec<(usize, usize, u32)> {
    links
        .iter()
        .map(|l| (l.first, l.npages, l.unit_order))
        .collect()
}

/// The shapes of consecutive units: each run is its first page and the sizes of its units in
/// order (a unit's order is log2 of its size).
fn units(runs: &[(usize, &[usize])]) -> Vec<(usize, usize, u32)> {
    let mut shapes = Vec::new();
    for &(mut first, sizes) in runs {
        for &n in sizes {
            shapes.push((first, n, n.trailing_zeros()));
            first += n;
        }
    }
    shapes
}

/// `count` full blocks from registration page `first` on, of a run starting at `pfn` there.
fn full_blocks(first: usize, count: usize, pfn: u64, class: LinkClass) -> Vec<Link> {
    (0..count)
        .map(|k| {
            let off = k * MAX_BLOCK;
            link(
                first + off,
                MAX_BLOCK,
                pfn + off as u64,
                MAX_RUN_ORDER,
                class,
            )
        })
        .collect()
}

fn unlinks(g: &Grouping, states: &[HmmPfn], first: usize, end: usize) -> Vec<Unlink> {
    g.unlinks(states, first, end).collect()
}

fn unlink(first: usize, npages: usize, class: LinkClass) -> Unlink {
    Unlink {
        first,
        npages,
        class,
    }
}

/// `n` mapped states from `pfn` on, in one unit of `order` (0: `n` order-0 units).
fn mapped(pfn: u64, n: usize, order: u32, class: LinkClass) -> Vec<HmmPfn> {
    (0..n as u64)
        .map(|k| HmmPfn::new_valid(pfn + k, class.writable, 0).mapped(class.kind, order))
        .collect()
}

/// `n` pages mapped by bus address (peer memory, nothing to unmap).
fn bus(pfn: u64, n: usize) -> Vec<HmmPfn> {
    (0..n as u64)
        .map(|k| HmmPfn::new_valid(pfn + k, true, 0).mapped(MapKind::P2pBus, 0))
        .collect()
}

/// `n` unmapped states (valid as HMM reported them, with HMM's order, or empty).
fn unmapped(n: usize, order: u32) -> Vec<HmmPfn> {
    (0..n as u64)
        .map(|k| {
            if order == 0 {
                HmmPfn::EMPTY
            } else {
                HmmPfn::new_valid(PFN_2M + k, true, order)
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// links(): folio units.

#[test]
fn folio_unit_formed_when_eligible() {
    let batch = folio(PFN_2M, 9, MEM_W);
    for coalesce in [false, true] {
        // VA-aligned through first_vpn, with the batch at registration page 0.
        let g = grouping(3 * 512, true, coalesce);
        assert_eq!(
            links(&g, 0, &batch),
            [link(0, 512, PFN_2M, 9, MEM_W)],
            "coalesce={coalesce}"
        );
        // VA-aligned through first_vpn + first, the batch later in the registration.
        let g = grouping(100, true, coalesce);
        assert_eq!(
            links(&g, 412, &batch),
            [link(412, 512, PFN_2M, 9, MEM_W)],
            "coalesce={coalesce}"
        );
    }
}

#[test]
fn folio_units_of_every_order() {
    // Folio units are not bounded by MAX_RUN_ORDER, with or without coalescing.
    for order in 1..=10u32 {
        let n = 1usize << order;
        let pfn = 0x10_0000 + (3 << order);
        for class in CLASSES {
            let batch = folio(pfn, order, class);
            for coalesce in [false, true] {
                let g = grouping(7 << order, true, coalesce);
                assert_eq!(
                    links(&g, 0, &batch),
                    [link(0, n, pfn, order, class)],
                    "order {order} {class:?} coalesce {coalesce}"
                );
            }
        }
    }
}

#[test]
fn consecutive_folios_stay_separate_units() {
    // Two physically contiguous order-9 folios are two units, not one call of 1024 pages.
    let mut batch = folio(PFN_2M, 9, MEM_W);
    batch.extend(folio(PFN_2M + 512, 9, MEM_W));
    for coalesce in [false, true] {
        let g = grouping(0, true, coalesce);
        assert_eq!(
            links(&g, 0, &batch),
            [
                link(0, 512, PFN_2M, 9, MEM_W),
                link(512, 512, PFN_2M + 512, 9, MEM_W)
            ]
        );
    }
}

#[test]
fn folio_unit_not_formed_when_a_condition_fails() {
    struct Case {
        name: &'static str,
        first_vpn: u64,
        first: usize,
        folio_units: bool,
        batch: Vec<Option<Candidate>>,
        /// The blocks when coalescing, as runs of block sizes.
        coalesced: &'static [(usize, &'static [usize])],
    }
    let whole = || folio(PFN_2M, 9, MEM_W);
    let mut gap = whole();
    gap[100] = None;
    let mut pfn_break = whole();
    pfn_break[100] = cand(PFN_2M + 1000, 9, MEM_W);
    let mut class_change = whole();
    class_change[300] = cand(PFN_2M + 300, 9, MEM_R);
    let mut kind_change = whole();
    kind_change[0] = cand(PFN_2M, 9, HB_W);
    let mut truncated = whole();
    truncated.truncate(511);
    // Eight full blocks over 0..512 (VA-aligned to at least 64).
    const EIGHT: &[(usize, &[usize])] = &[(0, &[64; 8])];
    let cases = [
        Case {
            name: "VA unaligned through first_vpn",
            first_vpn: 1,
            first: 0,
            folio_units: true,
            batch: whole(),
            // VPNs 1..513: blocks grow with the alignment up to 64 at VPN 64; page 511 has VPN
            // 512 (aligned) but pfn PFN_2M + 511: no unit there either, and only it is left.
            coalesced: &[(0, &[1, 2, 4, 8, 16, 32, 64, 64, 64, 64, 64, 64, 64, 1])],
        },
        Case {
            name: "VA unaligned through first",
            first_vpn: 0,
            first: 1,
            folio_units: true,
            batch: whole(),
            // VPN = registration page: 1..513.
            coalesced: &[(1, &[1, 2, 4, 8, 16, 32, 64, 64, 64, 64, 64, 64, 64, 1])],
        },
        Case {
            name: "VA aligned to 256 only",
            first_vpn: 256,
            first: 0,
            folio_units: true,
            batch: whole(),
            coalesced: EIGHT,
        },
        Case {
            name: "pfn unaligned",
            first_vpn: 0,
            first: 0,
            folio_units: true,
            batch: folio(PFN_2M + 1, 9, MEM_W),
            // Blocks need no physical alignment.
            coalesced: EIGHT,
        },
        Case {
            name: "gap",
            first_vpn: 0,
            first: 0,
            folio_units: true,
            batch: gap,
            // 64..100 holds 36 pages: 32, then 4 at 96; after the gap, alignment again.
            coalesced: &[
                (0, &[64, 32, 4]),
                (101, &[1, 2, 8, 16, 64, 64, 64, 64, 64, 64]),
            ],
        },
        Case {
            name: "pfn discontinuity",
            first_vpn: 0,
            first: 0,
            folio_units: true,
            batch: pfn_break,
            // As with the gap, with the odd page 100 in a block of its own.
            coalesced: &[(0, &[64, 32, 4, 1, 1, 2, 8, 16, 64, 64, 64, 64, 64, 64])],
        },
        Case {
            name: "class change (write)",
            first_vpn: 0,
            first: 0,
            folio_units: true,
            batch: class_change,
            // 256..300 holds 44 pages: 32, 8 (at 288), 4 (at 296); then 300 alone.
            coalesced: &[(0, &[64, 64, 64, 64, 32, 8, 4, 1, 1, 2, 16, 64, 64, 64])],
        },
        Case {
            name: "class change (kind) at the head",
            first_vpn: 0,
            first: 0,
            folio_units: true,
            batch: kind_change,
            coalesced: &[(0, &[1, 1, 2, 4, 8, 16, 32, 64, 64, 64, 64, 64, 64, 64])],
        },
        Case {
            name: "unit crosses the batch end",
            first_vpn: 0,
            first: 0,
            folio_units: true,
            batch: truncated,
            // 448..511 holds 63 pages: 32 + 16 + 8 + 4 + 2 + 1.
            coalesced: &[(0, &[64, 64, 64, 64, 64, 64, 64, 32, 16, 8, 4, 2, 1])],
        },
        Case {
            name: "folio units off",
            first_vpn: 0,
            first: 0,
            folio_units: false,
            batch: whole(),
            coalesced: EIGHT,
        },
    ];
    for case in &cases {
        let present = case.batch.iter().filter(|c| c.is_some()).count();

        let g = grouping(case.first_vpn, case.folio_units, false);
        let single = links(&g, case.first, &case.batch);
        assert_eq!(single.len(), present, "{}: one link per page", case.name);
        for l in &single {
            assert_eq!((l.npages, l.unit_order), (1, 0), "{}: {l:?}", case.name);
            let c = case.batch[l.first - case.first].unwrap();
            assert_eq!((l.pfn, l.class), (c.pfn, c.class), "{}: {l:?}", case.name);
        }

        let g = grouping(case.first_vpn, case.folio_units, true);
        let blocks = links(&g, case.first, &case.batch);
        assert_eq!(shape(&blocks), units(case.coalesced), "{}", case.name);
        for l in &blocks {
            let c = case.batch[l.first - case.first].unwrap();
            assert_eq!((l.pfn, l.class), (c.pfn, c.class), "{}: {l:?}", case.name);
        }
    }
}

#[test]
fn folio_unit_checks_the_unit_inside_the_batch_only() {
    // The batch ends inside the folio: no unit even though the head is eligible, and the tail
    // of the folio in the next batch is no unit either (its head is not there).
    let g = grouping(0, true, false);
    let all = folio(PFN_2M, 9, MEM_W);
    let (head, tail) = all.split_at(256);
    let head_links = links(&g, 0, head);
    assert_eq!(head_links.len(), 256);
    assert!(head_links
        .iter()
        .all(|l| l.unit_order == 0 && l.npages == 1));
    let tail_links = links(&g, 256, tail);
    assert_eq!(tail_links.len(), 256);
    assert!(tail_links
        .iter()
        .all(|l| l.unit_order == 0 && l.npages == 1));
}

// ---------------------------------------------------------------------------------------------
// links(): blocks of order-0 pages.

#[test]
fn order0_contiguous_pages_form_aligned_blocks() {
    // VPNs 5..15: 5 is odd (1 page), 6 is 2-aligned (2), 8 is 8-aligned but only 7 pages are
    // left (4), 12 is 4-aligned with 3 left (2), 14 the last (1).
    let g = grouping(0, true, true);
    let batch = pages(0x1234, 10, 0, MEM_W);
    assert_eq!(
        links(&g, 5, &batch),
        [
            link(5, 1, 0x1234, 0, MEM_W),
            link(6, 2, 0x1235, 1, MEM_W),
            link(8, 4, 0x1237, 2, MEM_W),
            link(12, 2, 0x123b, 1, MEM_W),
            link(14, 1, 0x123d, 0, MEM_W),
        ]
    );
}

#[test]
fn order0_blocks_split_where_pages_differ() {
    let g = grouping(0, true, true);
    let mut batch = pages(0x1000, 4, 0, MEM_W); // 0..4
    batch.push(None); // 4
    batch.extend(pages(0x1005, 3, 0, MEM_W)); // 5..8: pfn continues across the gap
    batch.extend(pages(0x2000, 2, 0, MEM_W)); // 8..10: pfn jump
    batch.extend(pages(0x2002, 2, 0, MEM_R)); // 10..12: write permission differs
    batch.extend(pages(0x2004, 2, 0, HB_R)); // 12..14: kind differs
    batch.extend(pages(0x2003, 2, 0, HB_R)); // 14..16: pfn goes backwards
    assert_eq!(
        links(&g, 0, &batch),
        [
            link(0, 4, 0x1000, 2, MEM_W),
            link(5, 1, 0x1005, 0, MEM_W),
            link(6, 2, 0x1006, 1, MEM_W),
            // 8 is 8-aligned; the run ends at the class change after 2 pages.
            link(8, 2, 0x2000, 1, MEM_W),
            link(10, 2, 0x2002, 1, MEM_R),
            link(12, 2, 0x2004, 1, HB_R),
            link(14, 2, 0x2003, 1, HB_R),
        ]
    );
}

#[test]
fn order0_blocks_stop_at_max_run_order() {
    assert_eq!(MAX_BLOCK, 64);
    for folio_units in [false, true] {
        let g = grouping(0, folio_units, true);
        // 2 MiB-aligned in VA and PA, contiguous, order 0: blocks of 64 and never a large page;
        // the last 48 pages are 32 + 16.
        let batch = pages(PFN_2M, 1200, 0, MEM_W);
        let mut expected = full_blocks(0, 18, PFN_2M, MEM_W);
        expected.push(link(1152, 32, PFN_2M + 1152, 5, MEM_W));
        expected.push(link(1184, 16, PFN_2M + 1184, 4, MEM_W));
        assert_eq!(links(&g, 0, &batch), expected, "folio_units {folio_units}");
    }
}

#[test]
fn order0_blocks_are_the_largest_aligned_powers_of_two() {
    // `n` contiguous pages at registration page `first` form blocks of the sizes `expected`, in
    // every class. The pfn is odd on purpose: blocks are aligned in virtual page numbers only.
    let check = |first_vpn: u64, first: usize, n: usize, expected: &[usize]| {
        for class in CLASSES {
            let g = grouping(first_vpn, true, true);
            let got = links(&g, first, &pages(0x9_9999, n, 0, class));
            let what = format!("first_vpn {first_vpn} first {first} {n} pages {class:?}");
            assert_eq!(shape(&got), units(&[(first, expected)]), "{what}");
            for l in &got {
                assert_eq!(l.pfn, 0x9_9999 + (l.first - first) as u64, "{what}: {l:?}");
                assert_eq!(l.class, class, "{what}: {l:?}");
            }
        }
    };
    check(0, 0, 63, &[32, 16, 8, 4, 2, 1]);
    check(0, 0, 64, &[64]);
    check(0, 0, 65, &[64, 1]);
    check(0, 0, 127, &[64, 32, 16, 8, 4, 2, 1]);
    check(0, 0, 128, &[64, 64]);
    // Starting 32-aligned: 32 first, then full blocks.
    check(0, 32, 100, &[32, 64, 4]);
    // Starting odd: blocks grow with the alignment, then shrink to what the run's end allows.
    check(0, 3, 70, &[1, 4, 8, 16, 32, 8, 1]);
    // The alignment is that of first_vpn + first, not of the index.
    check(61, 3, 64, &[64]);
    check(61, 0, 10, &[1, 2, 4, 2, 1]);
    // More alignment than 64 gives no larger block.
    check(1 << 40, 0, 200, &[64, 64, 64, 8]);
}

#[test]
fn no_coalescing_without_coalesce() {
    for folio_units in [false, true] {
        let g = grouping(0, folio_units, false);
        let batch = pages(0x1234, 10, 0, MEM_W);
        let got = links(&g, 3, &batch);
        let expected: Vec<Link> = (0..10)
            .map(|k| link(3 + k, 1, 0x1234 + k as u64, 0, MEM_W))
            .collect();
        assert_eq!(got, expected);
    }
}

#[test]
fn block_stops_before_an_eligible_folio_unit() {
    // Order-0 pages 0..6, an order-1 folio at 6..8 (pfn 0x1006: aligned), order-0 pages 8..16,
    // all physically contiguous. The folio is its own unit, so the block from 0 stops at 6
    // (4 pages) and the block from 4 too (2 pages, though 4 is 4-aligned).
    let mut batch = pages(0x1000, 6, 0, MEM_W);
    batch.extend(folio(0x1006, 1, MEM_W));
    batch.extend(pages(0x1008, 8, 0, MEM_W));
    let g = grouping(0, true, true);
    assert_eq!(
        links(&g, 0, &batch),
        [
            link(0, 4, 0x1000, 2, MEM_W),
            link(4, 2, 0x1004, 1, MEM_W),
            link(6, 2, 0x1006, 1, MEM_W),
            link(8, 8, 0x1008, 3, MEM_W),
        ]
    );
    // Without folio units the folio is pages like the others: one block of 16.
    let g = grouping(0, false, true);
    assert_eq!(links(&g, 0, &batch), [link(0, 16, 0x1000, 4, MEM_W)]);
}

#[test]
fn blocks_around_an_eligible_huge_page() {
    // Registration pages 502..512 are order-0 pages whose pfns lead straight into a
    // 2 MiB-aligned folio at registration page 512 (VA-aligned with first_vpn 0), and five
    // more follow it. A block cannot reach into the folio: it is aligned to at most 64.
    let mut batch = pages(PFN_2M - 10, 10, 0, MEM_W);
    batch.extend(folio(PFN_2M, 9, MEM_W));
    batch.extend(pages(PFN_2M + 512, 5, 0, MEM_W));
    let g = grouping(0, true, true);
    assert_eq!(
        links(&g, 502, &batch),
        [
            link(502, 2, PFN_2M - 10, 1, MEM_W),
            link(504, 8, PFN_2M - 8, 3, MEM_W),
            link(512, 512, PFN_2M, 9, MEM_W),
            link(1024, 4, PFN_2M + 512, 2, MEM_W),
            link(1028, 1, PFN_2M + 516, 0, MEM_W),
        ]
    );
    // Without folio units the folio's pages are full blocks like any other.
    let g = grouping(0, false, true);
    let mut expected = vec![
        link(502, 2, PFN_2M - 10, 1, MEM_W),
        link(504, 8, PFN_2M - 8, 3, MEM_W),
    ];
    expected.extend(full_blocks(512, 8, PFN_2M, MEM_W));
    expected.push(link(1024, 4, PFN_2M + 512, 2, MEM_W));
    expected.push(link(1028, 1, PFN_2M + 516, 0, MEM_W));
    assert_eq!(links(&g, 502, &batch), expected);
}

#[test]
fn block_continues_over_pages_of_an_ineligible_folio() {
    // A folio whose VA is not aligned is mapped as order-0 pages, in blocks with its neighbours:
    // 21 contiguous pages from VPN 0 are 16 + 4 + 1.
    let mut batch = pages(0x1_0000 - 3, 3, 0, MEM_W);
    batch.extend(folio(0x1_0000, 4, MEM_W)); // VA index 3: unaligned for order 4
    batch.extend(pages(0x1_0010, 2, 0, MEM_W));
    let g = grouping(0, true, true);
    assert_eq!(
        links(&g, 0, &batch),
        [
            link(0, 16, 0x1_0000 - 3, 4, MEM_W),
            link(16, 4, 0x1_000d, 2, MEM_W),
            link(20, 1, 0x1_0011, 0, MEM_W),
        ]
    );
}

#[test]
fn none_pages_are_skipped() {
    let g = grouping(0, true, true);
    assert!(links(&g, 0, &[]).is_empty());
    assert!(links(&g, 0, &[None; 700]).is_empty());
    let mut batch = vec![None; 600];
    batch[599] = cand(0x42, 0, MEM_R);
    batch[0] = cand(0x41, 0, MEM_R);
    assert_eq!(
        links(&g, 1000, &batch),
        [link(1000, 1, 0x41, 0, MEM_R), link(1599, 1, 0x42, 0, MEM_R)]
    );
}

#[test]
fn folio_then_order0_then_folio_with_none_between() {
    let g = grouping(0, true, true);
    let mut batch = folio(PFN_2M, 9, HB_W); // 0..512
    batch.extend(pages(7, 3, 0, HB_W)); // 512..515
    batch.extend(vec![None; 509]); // 515..1024
    batch.extend(folio(2 * PFN_2M, 9, MEM_R)); // 1024..1536
    assert_eq!(
        links(&g, 0, &batch),
        [
            link(0, 512, PFN_2M, 9, HB_W),
            link(512, 2, 7, 1, HB_W),
            link(514, 1, 9, 0, HB_W),
            link(1024, 512, 2 * PFN_2M, 9, MEM_R),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// links(): properties over generated batches.

/// xorshift64*: a small deterministic generator, so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn class(&mut self) -> LinkClass {
        CLASSES[self.index(CLASSES.len())]
    }
}

/// A batch of about `target` pages for registration pages `first..`, mixing holes, order-0 runs
/// (contiguous or not), eligible folios, folios with one defect and folios cut by the batch end.
fn generate_batch(
    rng: &mut Rng,
    first_vpn: u64,
    first: usize,
    target: usize,
) -> Vec<Option<Candidate>> {
    let mut batch: Vec<Option<Candidate>> = Vec::new();
    while batch.len() < target {
        match rng.below(4) {
            0 => {
                let n = 1 + rng.index(20);
                batch.extend(core::iter::repeat_n(None, n));
            }
            1 => {
                // An order-0 run, continuing the previous pfn or not, sometimes longer than a
                // large page.
                let n = if rng.percent(15) {
                    400 + rng.index(800)
                } else {
                    1 + rng.index(40)
                };
                let class = rng.class();
                let pfn = match batch.last() {
                    Some(Some(prev)) if rng.percent(50) => prev.pfn + 1,
                    _ => rng.below(1 << 30),
                };
                batch.extend(pages(pfn, n, 0, class));
            }
            _ => {
                let order = [1, 2, 3, 4, 9, 9, 9, 10][rng.index(8)];
                let n = 1usize << order;
                let class = rng.class();
                let mut base = (1 + rng.below(1 << 16)) << 11;
                if rng.percent(15) {
                    base += 1 + rng.below(n as u64 - 1);
                }
                // Pad to a VA-aligned index, usually; the padding leads into the folio's pfns
                // (same class or not) or is a hole.
                let vpn = first_vpn + (first + batch.len()) as u64;
                let mut pad = ((n as u64 - vpn % n as u64) % n as u64) as usize;
                if rng.percent(15) {
                    pad += 1;
                }
                if rng.percent(60) {
                    let pad_class = if rng.percent(70) { class } else { rng.class() };
                    batch.extend(pages(base - pad as u64, pad, 0, pad_class));
                } else {
                    batch.extend(core::iter::repeat_n(None, pad));
                }
                let start = batch.len();
                batch.extend(folio(base, order, class));
                if rng.percent(20) {
                    let k = start + rng.index(n);
                    batch[k] = match rng.below(3) {
                        0 => None,
                        1 => cand(base + 7777, order, class),
                        _ => cand(
                            base + (k - start) as u64,
                            order,
                            CLASSES[(rng.index(3)) + 1],
                        ),
                    };
                }
            }
        }
    }
    // Cut anywhere, possibly through a folio.
    batch.truncate(target);
    batch
}

/// Whether `batch[i]` starts a folio unit, by the rules in the module doc.
fn eligible(g: &Grouping, first: usize, batch: &[Option<Candidate>], i: usize) -> bool {
    let Some(head) = batch[i] else {
        return false;
    };
    if !g.folio_units || head.order == 0 {
        return false;
    }
    let n = 1usize << head.order;
    let vpn = g.first_vpn + (first + i) as u64;
    i + n <= batch.len()
        && vpn % n as u64 == 0
        && head.pfn % n as u64 == 0
        && (0..n).all(|k| {
            batch[i + k].is_some_and(|c| c.pfn == head.pfn + k as u64 && c.class == head.class)
        })
}

/// Whether batch page `j` can be in the block of order-0 pages that `head`, batch page `i`,
/// starts: physically contiguous with it, of its class, and not the head of a folio unit.
fn joins(
    g: &Grouping,
    first: usize,
    batch: &[Option<Candidate>],
    (i, head): (usize, Candidate),
    j: usize,
) -> bool {
    batch[j].is_some_and(|c| c.pfn == head.pfn + (j - i) as u64 && c.class == head.class)
        && !eligible(g, first, batch, j)
}

/// Whether link `l` of `batch` is a folio unit (else it is a block of order-0 pages).
fn is_folio_unit(g: &Grouping, first: usize, batch: &[Option<Candidate>], l: &Link) -> bool {
    let i = l.first - first;
    eligible(g, first, batch, i) && batch[i].is_some_and(|c| c.order == l.unit_order)
}

/// Checks every rule of the link plan for one batch, and returns the links.
fn check_links(g: &Grouping, first: usize, batch: &[Option<Candidate>], what: &str) -> Vec<Link> {
    let got = links(g, first, batch);
    let mut covered = vec![0u32; batch.len()];
    let mut folio_pages = vec![false; batch.len()];
    let mut prev_end = first;
    for (n, l) in got.iter().enumerate() {
        let what = format!("{what}: link {n} {l:?}");
        assert!(l.first >= prev_end, "{what}: not in order");
        let i = l.first - first;
        // Every link is one unit: a naturally aligned power of two.
        assert!(l.unit_order < usize::BITS, "{what}: order");
        assert_eq!(l.npages, 1 << l.unit_order, "{what}: unit size");
        assert_eq!(
            (g.first_vpn + l.first as u64) % l.npages as u64,
            0,
            "{what}: unit not VA-aligned"
        );
        prev_end = l.first + l.npages;
        assert!(i + l.npages <= batch.len(), "{what}: beyond the batch");
        let head = batch[i].unwrap();
        assert_eq!((l.pfn, l.class), (head.pfn, head.class), "{what}: head");
        assert_ne!(
            l.class.kind,
            MapKind::P2pBus,
            "{what}: bus pages are never linked"
        );
        for k in 0..l.npages {
            covered[i + k] += 1;
            let c = batch[i + k].unwrap_or_else(|| panic!("{what}: covers hole {}", i + k));
            assert_eq!(c.pfn, l.pfn + k as u64, "{what}: pfn of page {k}");
            assert_eq!(c.class, l.class, "{what}: class of page {k}");
        }
        if is_folio_unit(g, first, batch, l) {
            folio_pages[i..i + l.npages].fill(true);
            continue;
        }
        // A block of order-0 pages.
        assert!(
            l.unit_order <= MAX_RUN_ORDER,
            "{what}: block beyond MAX_RUN_ORDER"
        );
        if !g.coalesce {
            assert_eq!(l.npages, 1, "{what}: block without coalesce");
        }
        for k in 1..l.npages {
            assert!(
                joins(g, first, batch, (i, head), i + k),
                "{what}: swallows a unit at {k}"
            );
        }
        // Greedy: the block of twice the size would break a rule.
        if g.coalesce && l.unit_order < MAX_RUN_ORDER {
            let double = 2 * l.npages;
            let allowed = (g.first_vpn + l.first as u64) % double as u64 == 0
                && i + double <= batch.len()
                && (1..double).all(|k| joins(g, first, batch, (i, head), i + k));
            assert!(!allowed, "{what}: a block of {double} pages was possible");
        }
    }
    for (i, c) in batch.iter().enumerate() {
        let expected = u32::from(c.is_some());
        assert_eq!(
            covered[i], expected,
            "{what}: page {i} ({c:?}) covered {} times",
            covered[i]
        );
        if eligible(g, first, batch, i) && !folio_pages[i] {
            panic!("{what}: eligible unit at {i} not mapped as a unit");
        }
    }
    got
}

#[test]
fn links_cover_every_candidate_once_in_generated_batches() {
    let mut rng = Rng::new(0x0dd_4a11);
    let mut folio_units = 0;
    let mut blocks = 0;
    let mut full = 0;
    for round in 0..150 {
        let first_vpn = match round % 3 {
            0 => 0,
            1 => 512 * rng.below(1 << 20),
            _ => rng.below(1 << 30),
        };
        let first = if rng.percent(50) { 0 } else { rng.index(4096) };
        let target = 1 + rng.index(3000);
        let batch = generate_batch(&mut rng, first_vpn, first, target);
        for with_folios in [false, true] {
            for coalesce in [false, true] {
                let g = grouping(first_vpn, with_folios, coalesce);
                let what = format!("round {round} {g:?} first {first} len {}", batch.len());
                for l in check_links(&g, first, &batch, &what) {
                    if is_folio_unit(&g, first, &batch, &l) {
                        folio_units += 1;
                    } else if l.npages > 1 {
                        blocks += 1;
                        full += usize::from(l.npages == MAX_BLOCK);
                    }
                }
            }
        }
    }
    // The generator must exercise what is checked.
    assert!(folio_units > 100, "only {folio_units} folio units");
    assert!(blocks > 100, "only {blocks} multi-page blocks");
    assert!(full > 100, "only {full} blocks of {MAX_BLOCK} pages");
}

/// The words `hmm_range_fault()` could report for `batch`, with the same candidates for a fault
/// that wants to write (host-bridge classes become memory of the same access), plus defects the
/// class ignores: holes as invalid or error words, and now and then a page of a folio reporting
/// another order.
fn words_of(rng: &mut Rng, batch: &[Option<Candidate>]) -> Vec<u64> {
    batch
        .iter()
        .map(|c| match c {
            None if rng.percent(50) => 0,
            None => HmmPfn::new_valid(rng.below(1 << 30), true, 0).raw() | ERROR,
            Some(c) => {
                let order = if c.order > 0 && rng.percent(1) {
                    c.order - 1
                } else {
                    c.order
                };
                HmmPfn::new_valid(c.pfn, c.class.writable, order).raw()
            }
        })
        .collect()
}

#[test]
fn memory_words_plan_as_their_candidates_in_generated_batches() {
    let mut rng = Rng::new(0x5eed_3a11);
    let mut folio_units = 0;
    for round in 0..150 {
        let first_vpn = match round % 3 {
            0 => 0,
            1 => 512 * rng.below(1 << 20),
            _ => rng.below(1 << 30),
        };
        let first = if rng.percent(50) { 0 } else { rng.index(4096) };
        let target = 1 + rng.index(3000);
        let batch = generate_batch(&mut rng, first_vpn, first, target);
        let words = words_of(&mut rng, &batch);
        for want_write in [false, true] {
            // The same candidates, asked one page at a time.
            let mut slow = MemoryWords {
                words: &words,
                want_write,
            };
            let candidates: Vec<Option<Candidate>> =
                (0..words.len()).map(|i| slow.get(i)).collect();
            for with_folios in [false, true] {
                for coalesce in [false, true] {
                    let g = grouping(first_vpn, with_folios, coalesce);
                    let what = format!("round {round} {g:?} write {want_write}");
                    let by_words: Vec<Link> = g
                        .links(
                            first,
                            words.len(),
                            MemoryWords {
                                words: &words,
                                want_write,
                            },
                        )
                        .collect();
                    let by_closure: Vec<Link> =
                        g.links(first, words.len(), |i| candidates[i]).collect();
                    assert_eq!(by_words, by_closure, "{what}");
                    // And they keep the unit rule.
                    check_links(&g, first, &candidates, &what);
                    folio_units += by_words
                        .iter()
                        .filter(|l| is_folio_unit(&g, first, &candidates, l))
                        .count();
                }
            }
        }
    }
    assert!(folio_units > 100, "only {folio_units} folio units");
}

#[test]
fn commit_memory_is_drop_stale_then_map_batch() {
    let mut rng = Rng::new(0xc0_4417);
    let mut dropped_some = 0;
    let mut single = 0;
    for round in 0..400 {
        let npages = 1 + rng.index(2048);
        let first_vpn = if rng.percent(50) {
            0
        } else {
            rng.below(1 << 30)
        };
        let g = grouping(first_vpn, true, true);
        // What an earlier fault mapped (or nothing), then what HMM reports now: the same pages,
        // some moved or made writable, or another batch altogether.
        let before = generate_batch(&mut rng, first_vpn, 0, npages);
        let before_words = words_of(&mut rng, &before);
        let mut now_words = if rng.percent(20) {
            let b = generate_batch(&mut rng, first_vpn, 0, npages);
            words_of(&mut rng, &b)
        } else {
            before_words.clone()
        };
        for w in now_words.iter_mut() {
            if rng.percent(3) {
                *w = HmmPfn::new_valid(rng.below(1 << 30), true, 0).raw();
            } else if rng.percent(10) {
                *w |= WRITE;
            }
        }
        let first_write = rng.percent(50);
        let want_write = rng.percent(70);
        let mut a = (ModelIommu::new(g, npages), vec![HmmPfn::EMPTY; npages]);
        let mut scratch = vec![Link::default(); npages];
        if rng.percent(80) {
            let earlier = MemoryWords {
                words: &before_words,
                want_write: first_write,
            };
            let (_, r) = g.map_batch(&mut a.1, 0, npages, earlier, &mut scratch, &mut a.0);
            assert_eq!(r, Ok(()));
        }
        let mut b = (ModelIommu::new(g, npages), a.1.clone());
        b.0.live = a.0.live.clone();
        a.0.syncs.clear();
        a.0.dirtied.clear();
        // The batch: all of it, a piece, or one page (a NIC's 1-page fault, planned apart).
        let first = rng.index(npages);
        let len = if rng.percent(30) {
            1
        } else {
            1 + rng.index(npages - first)
        };
        let words = &now_words[first..first + len];
        let what = format!("round {round} first {first} len {len} write {want_write}");

        let dropped_a = g.drop_stale(&mut a.1, first, words, want_write, &mut a.0);
        let (mapped_a, result_a) = g.map_batch(
            &mut a.1,
            first,
            len,
            MemoryWords { words, want_write },
            &mut scratch,
            &mut a.0,
        );
        let (dropped_b, mapped_b, result_b) =
            g.commit_memory(&mut b.1, first, words, want_write, &mut scratch, &mut b.0);

        assert_eq!(
            (dropped_a, mapped_a, result_a),
            (dropped_b, mapped_b, result_b),
            "{what}"
        );
        assert_eq!(a.1, b.1, "{what}: state words");
        assert_eq!(a.0.spans(), b.0.spans(), "{what}: mappings");
        assert_eq!(a.0.syncs, b.0.syncs, "{what}: syncs");
        assert_eq!(a.0.take_dirtied(), b.0.take_dirtied(), "{what}: dirtied");
        dropped_some += usize::from(dropped_b > 0);
        single += usize::from(len == 1 && mapped_b.pages == 1);
    }
    assert!(
        dropped_some > 20,
        "only {dropped_some} rounds dropped stale pages"
    );
    assert!(single > 50, "only {single} rounds mapped a single page");
}

#[test]
fn memory_words_reject_what_the_class_rejects() {
    let g = grouping(0, true, true);
    let head = HmmPfn::new_valid(PFN_2M, true, 9).raw();
    let folio_words: Vec<u64> = (0..HUGE as u64).map(|k| head + k).collect();
    let unit = |words: &[u64], want_write: bool| {
        shape(
            &g.links(0, words.len(), MemoryWords { words, want_write })
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(unit(&folio_words, true), [(0, HUGE, 9)]);
    assert_eq!(unit(&folio_words, false), [(0, HUGE, 9)]);
    // One read-only page splits a writable fault's folio, not a read-only one's.
    let mut ro = folio_words.clone();
    ro[300] &= !WRITE;
    assert_ne!(unit(&ro, true), [(0, HUGE, 9)]);
    assert_eq!(unit(&ro, false), [(0, HUGE, 9)]);
    // An error page, a missing page, a frame out of sequence: no unit.
    for (k, word) in [(1, (head + 1) | ERROR), (511, 0), (17, head + 18)] {
        let mut bad = folio_words.clone();
        bad[k] = word;
        let links = unit(&bad, true);
        assert!(
            links.iter().all(|&(_, n, _)| n <= MAX_BLOCK),
            "defect at {k}: {links:?}"
        );
    }
    // A page reporting another order but the same class and frame: still the folio (the class
    // is what a unit needs), as asking page by page says.
    let mut order = folio_words.clone();
    order[5] = HmmPfn::new_valid(PFN_2M + 5, true, 0).raw();
    assert_eq!(unit(&order, true), [(0, HUGE, 9)]);
}

// ---------------------------------------------------------------------------------------------
// expand_to_units().

/// Registration pages whose first_vpn is 100 past a 2 MiB boundary: order-0 pages 0..412, two
/// order-9 units at 412..924 and 924..1436 (VA-aligned), order-0 pages 1436..1500.
fn unit_layout() -> (Grouping, Vec<HmmPfn>) {
    let g = grouping(512 * 5 + 100, true, true);
    let mut states = mapped(0x100, 412, 0, MEM_W);
    states.extend(mapped(PFN_2M, 512, 9, MEM_W));
    states.extend(mapped(2 * PFN_2M, 512, 9, MEM_R));
    states.extend(mapped(0x900, 64, 0, MEM_W));
    assert_eq!(states.len(), 1500);
    (g, states)
}

#[test]
fn expand_to_units_widens_to_whole_units_by_va() {
    let (g, states) = unit_layout();
    let table = [
        // Inside one unit: the whole unit (VA alignment: 412, not 0 or 512).
        ((500, 600), (412, 924)),
        ((412, 413), (412, 924)),
        ((923, 924), (412, 924)),
        // Already whole.
        ((412, 924), (412, 924)),
        ((412, 1436), (412, 1436)),
        // Spanning the two units.
        ((900, 930), (412, 1436)),
        ((923, 925), (412, 1436)),
        // One edge in a unit, the other on order-0 pages.
        ((411, 413), (411, 924)),
        ((10, 600), (10, 924)),
        ((1000, 1440), (924, 1440)),
        ((1435, 1437), (924, 1437)),
        // Order-0 pages only.
        ((10, 20), (10, 20)),
        ((0, 1), (0, 1)),
        ((1436, 1500), (1436, 1500)),
        ((0, 1500), (0, 1500)),
    ];
    for ((first, end), expected) in table {
        assert_eq!(
            g.expand_to_units(&states, first, end),
            expected,
            "{first}..{end}"
        );
    }
}

#[test]
fn expand_to_units_uses_va_not_index_alignment() {
    // first_vpn = 0x300: a unit of order 9 starts at registration page 0x100 (VA 0x400).
    let g = grouping(0x300, true, false);
    let mut states = unmapped(0x100, 0);
    states.extend(mapped(PFN_2M, 512, 9, HB_W));
    states.extend(unmapped(0x100, 0));
    assert_eq!(g.expand_to_units(&states, 0x200, 0x201), (0x100, 0x300));
    assert_eq!(g.expand_to_units(&states, 0x2ff, 0x300), (0x100, 0x300));
    assert_eq!(g.expand_to_units(&states, 0xff, 0x101), (0xff, 0x300));
    assert_eq!(g.expand_to_units(&states, 0x2ff, 0x301), (0x100, 0x301));
    // Smaller units: order 2 at VA 0x404.
    let mut states = unmapped(4, 0);
    states.extend(mapped(0x1000, 4, 2, MEM_W));
    let g = grouping(0x400, true, true);
    assert_eq!(g.expand_to_units(&states, 5, 6), (4, 8));
    assert_eq!(g.expand_to_units(&states, 3, 5), (3, 8));
}

#[test]
fn expand_to_units_ignores_unmapped_pages_and_hmm_orders() {
    // Valid pages that HMM reported with order 9 but that are not mapped are no unit.
    let g = grouping(0, true, true);
    let states = unmapped(1024, 9);
    assert!(states.iter().all(|s| s.order() == 9 && !s.is_dma_mapped()));
    assert_eq!(g.expand_to_units(&states, 100, 200), (100, 200));
    // Order-0 mapped pages are their own units.
    let states = mapped(PFN_2M, 1024, 0, MEM_W);
    assert_eq!(g.expand_to_units(&states, 100, 200), (100, 200));
}

#[test]
fn expand_to_units_leaves_bad_ranges_alone() {
    let (g, states) = unit_layout();
    assert_eq!(g.expand_to_units(&states, 600, 600), (600, 600));
    assert_eq!(g.expand_to_units(&states, 700, 600), (700, 600));
    assert_eq!(g.expand_to_units(&states, 600, 1501), (600, 1501));
    assert_eq!(g.expand_to_units(&[], 0, 1), (0, 1));
}

#[test]
fn expand_to_units_stops_at_the_registration_end() {
    // A unit that would run past the last state is clipped to the states.
    let g = grouping(100, true, true);
    let mut states = mapped(0x10, 412, 0, MEM_W);
    states.extend(mapped(PFN_2M, 88, 9, MEM_W));
    assert_eq!(g.expand_to_units(&states, 450, 460), (412, 500));
}

// ---------------------------------------------------------------------------------------------
// unlinks().

#[test]
fn unlinks_coalesce_or_not() {
    let states = mapped(0x100, 10, 0, MEM_W);
    let g = grouping(0, true, true);
    assert_eq!(unlinks(&g, &states, 0, 10), [unlink(0, 10, MEM_W)]);
    assert_eq!(unlinks(&g, &states, 3, 7), [unlink(3, 4, MEM_W)]);
    let g = grouping(0, true, false);
    let expected: Vec<Unlink> = (0..10).map(|i| unlink(i, 1, MEM_W)).collect();
    assert_eq!(unlinks(&g, &states, 0, 10), expected);
}

#[test]
fn unlinks_coalesce_regardless_of_pfn() {
    // IOVA contiguity is what matters; the pfns of the pages are irrelevant.
    let mut states = mapped(0x100, 3, 0, MEM_R);
    states.extend(mapped(0x9000, 3, 0, MEM_R));
    let g = grouping(0, false, true);
    assert_eq!(unlinks(&g, &states, 0, 6), [unlink(0, 6, MEM_R)]);
}

#[test]
fn unlinks_skip_unmapped_and_bus_pages() {
    let mut states = mapped(0x100, 3, 0, MEM_W); // 0..3
    states.extend(unmapped(2, 0)); // 3..5
    states.extend(mapped(0x200, 2, 0, MEM_W)); // 5..7
    states.extend(bus(0x300, 3)); // 7..10
    states.extend(mapped(0x400, 1, 0, MEM_W)); // 10
    states.extend(unmapped(2, 9)); // 11..13: valid, not mapped
    states.extend(bus(0x500, 1)); // 13
    let g = grouping(0, true, true);
    assert_eq!(
        unlinks(&g, &states, 0, states.len()),
        [
            unlink(0, 3, MEM_W),
            unlink(5, 2, MEM_W),
            unlink(10, 1, MEM_W)
        ]
    );
    let g = grouping(0, true, false);
    let got = unlinks(&g, &states, 0, states.len());
    let firsts: Vec<usize> = got.iter().map(|u| u.first).collect();
    assert_eq!(firsts, [0, 1, 2, 5, 6, 10]);
    assert!(got.iter().all(|u| u.npages == 1 && u.class == MEM_W));
    // Only bus and unmapped pages: nothing to do.
    let mut none = bus(0, 5);
    none.extend(unmapped(5, 0));
    assert!(unlinks(&g, &none, 0, 10).is_empty());
    assert!(unlinks(&grouping(0, true, true), &none, 0, 10).is_empty());
}

#[test]
fn unlinks_split_on_class_changes() {
    let mut states = mapped(0x100, 2, 0, MEM_W); // 0..2
    states.extend(mapped(0x102, 2, 0, MEM_R)); // 2..4
    states.extend(mapped(0x104, 2, 0, HB_R)); // 4..6
    states.extend(mapped(0x106, 2, 0, HB_W)); // 6..8
    states.extend(mapped(0x108, 2, 0, MEM_W)); // 8..10
    let g = grouping(0, true, true);
    assert_eq!(
        unlinks(&g, &states, 0, 10),
        [
            unlink(0, 2, MEM_W),
            unlink(2, 2, MEM_R),
            unlink(4, 2, HB_R),
            unlink(6, 2, HB_W),
            unlink(8, 2, MEM_W),
        ]
    );
}

#[test]
fn unlinks_cover_whole_units() {
    let (g, states) = unit_layout();
    // Coalescing: order-0 pages and the first unit share a class, the second unit differs.
    assert_eq!(
        unlinks(&g, &states, 0, 1500),
        [
            unlink(0, 924, MEM_W),
            unlink(924, 512, MEM_R),
            unlink(1436, 64, MEM_W),
        ]
    );
    // Not coalescing: one call per unit.
    let g1 = grouping(g.first_vpn, true, false);
    let got = unlinks(&g1, &states, 0, 1500);
    assert_eq!(got.len(), 412 + 2 + 64);
    assert_eq!(got[411], unlink(411, 1, MEM_W));
    assert_eq!(got[412], unlink(412, 512, MEM_W));
    assert_eq!(got[413], unlink(924, 512, MEM_R));
    assert_eq!(got[414], unlink(1436, 1, MEM_W));
    // After widening, a request for part of a unit unmaps the whole unit.
    let (first, end) = g1.expand_to_units(&states, 600, 601);
    assert_eq!(unlinks(&g1, &states, first, end), [unlink(412, 512, MEM_W)]);
    let (first, end) = g.expand_to_units(&states, 410, 930);
    assert_eq!(
        unlinks(&g, &states, first, end),
        [unlink(410, 514, MEM_W), unlink(924, 512, MEM_R)]
    );
}

#[test]
fn unlinks_of_adjacent_units() {
    // Two same-class order-9 units: one call when coalescing, two otherwise.
    let mut states = mapped(PFN_2M, 512, 9, HB_W);
    states.extend(mapped(3 * PFN_2M, 512, 9, HB_W));
    assert_eq!(
        unlinks(&grouping(0, true, true), &states, 0, 1024),
        [unlink(0, 1024, HB_W)]
    );
    assert_eq!(
        unlinks(&grouping(0, true, false), &states, 0, 1024),
        [unlink(0, 512, HB_W), unlink(512, 512, HB_W)]
    );
}

#[test]
fn unlinks_stay_inside_the_range() {
    let states = mapped(0x100, 20, 0, MEM_W);
    let g = grouping(0, true, true);
    assert_eq!(unlinks(&g, &states, 5, 15), [unlink(5, 10, MEM_W)]);
    assert_eq!(unlinks(&g, &states, 15, 100), [unlink(15, 5, MEM_W)]);
    assert!(unlinks(&g, &states, 10, 10).is_empty());
    assert!(unlinks(&g, &states, 12, 10).is_empty());
    assert!(unlinks(&g, &states, 20, 30).is_empty());
    // A unit at the end of a clipped range.
    let mut states = mapped(0x100, 4, 0, MEM_W);
    states.extend(mapped(0x1000, 4, 2, MEM_W));
    let g = grouping(0, true, false);
    assert_eq!(
        unlinks(&g, &states, 2, 8),
        [
            unlink(2, 1, MEM_W),
            unlink(3, 1, MEM_W),
            unlink(4, 4, MEM_W)
        ]
    );
}

/// Registration states after the links were made, as the mapping manager records them;
/// `bus_at` marks holes of the batch that were mapped by bus address instead.
fn states_after(first: usize, len: usize, got: &[Link], bus_at: &[usize]) -> Vec<HmmPfn> {
    let mut states = vec![HmmPfn::EMPTY; first + len];
    for l in got {
        for k in 0..l.npages {
            states[l.first + k] = HmmPfn::new_valid(l.pfn + k as u64, l.class.writable, 0)
                .mapped(l.class.kind, l.unit_order);
        }
    }
    for &i in bus_at {
        assert!(!states[i].is_dma_mapped());
        states[i] = HmmPfn::new_valid(i as u64, true, 0).mapped(MapKind::P2pBus, 0);
    }
    states
}

#[test]
fn expand_to_units_widens_to_blocks() {
    // The 10-page run at VPN 5 is linked as blocks 5, 6..8, 8..12, 12..14, 14: each page's word
    // records its block's order, so any page finds its whole block.
    let g = grouping(0, true, true);
    let got = links(&g, 5, &pages(0x1234, 10, 0, MEM_W));
    let states = states_after(5, 10, &got, &[]);
    for ((first, end), expected) in [
        ((5, 6), (5, 6)),
        ((6, 7), (6, 8)),
        ((7, 8), (6, 8)),
        ((9, 10), (8, 12)),
        ((11, 13), (8, 14)),
        ((7, 15), (6, 15)),
        ((14, 15), (14, 15)),
        ((0, 5), (0, 5)),
    ] {
        assert_eq!(
            g.expand_to_units(&states, first, end),
            expected,
            "{first}..{end}"
        );
    }
    // Coalescing, the widened blocks go in one unlink; else one unlink per block.
    let (first, end) = g.expand_to_units(&states, 9, 13);
    assert_eq!(unlinks(&g, &states, first, end), [unlink(8, 6, MEM_W)]);
    let g1 = grouping(0, true, false);
    assert_eq!(
        unlinks(&g1, &states, first, end),
        [unlink(8, 4, MEM_W), unlink(12, 2, MEM_W)]
    );
}

#[test]
fn unlinks_undo_links_in_generated_batches() {
    let mut rng = Rng::new(0x5eed);
    let mut folio_unlinks = 0;
    let mut merged_unlinks = 0;
    for round in 0..60 {
        let first_vpn = if round % 2 == 0 {
            rng.below(1 << 30)
        } else {
            512 * rng.below(1 << 20)
        };
        let first = rng.index(1024);
        let target = 1 + rng.index(2500);
        let batch = generate_batch(&mut rng, first_vpn, first, target);
        for folio_units in [false, true] {
            for coalesce in [false, true] {
                let g = grouping(first_vpn, folio_units, coalesce);
                let what = format!("round {round} {g:?} first {first}");
                let got = links(&g, first, &batch);
                let bus_at: Vec<usize> = (0..batch.len())
                    .filter(|&i| batch[i].is_none() && i % 3 == 0)
                    .map(|i| first + i)
                    .collect();
                let states = states_after(first, batch.len(), &got, &bus_at);
                // Which link each page belongs to.
                let mut owner = vec![usize::MAX; states.len()];
                for (n, l) in got.iter().enumerate() {
                    owner[l.first..l.first + l.npages].fill(n);
                }
                // Every link is a unit: nothing may start or end inside one.
                let inside_unit = |p: usize| {
                    p > 0 && p < states.len() && owner[p] != usize::MAX && owner[p] == owner[p - 1]
                };
                for _ in 0..20 {
                    let a = rng.index(states.len());
                    let b = a + 1 + rng.index(states.len() - a);
                    let (s, e) = g.expand_to_units(&states, a, b);
                    let what = format!("{what}: {a}..{b} -> {s}..{e}");
                    assert!(s <= a && e >= b && e <= states.len(), "{what}");
                    assert!(!inside_unit(s) && !inside_unit(e), "{what}: splits a unit");
                    let mut covered = vec![false; states.len()];
                    let mut prev: Option<Unlink> = None;
                    for u in g.unlinks(&states, s, e) {
                        let what = format!("{what}: {u:?}");
                        let u_end = u.first + u.npages;
                        assert!(u.npages > 0 && u.first >= s && u_end <= e, "{what}");
                        assert!(!inside_unit(u.first), "{what}: starts inside a unit");
                        assert!(!inside_unit(u_end), "{what}: ends inside a unit");
                        for p in u.first..u_end {
                            assert!(!covered[p], "{what}: page {p} twice");
                            covered[p] = true;
                            let st = states[p];
                            assert!(st.is_dma_mapped(), "{what}: unmapped page {p}");
                            assert_ne!(st.map_kind(), Some(MapKind::P2pBus), "{what}: bus {p}");
                            assert_eq!(st.map_kind(), Some(u.class.kind), "{what}: kind {p}");
                            assert_eq!(st.is_writable(), u.class.writable, "{what}: write {p}");
                        }
                        if coalesce {
                            if let Some(p) = prev {
                                let adjacent = p.first + p.npages == u.first;
                                assert!(!adjacent || p.class != u.class, "{what}: not coalesced");
                            }
                            merged_unlinks += usize::from(owner[u.first] != owner[u_end - 1]);
                        } else {
                            // Exactly one link call per unlink call.
                            let l = got[owner[u.first]];
                            assert_eq!(
                                (u.first, u.npages, u.class),
                                (l.first, l.npages, l.class),
                                "{what}"
                            );
                        }
                        folio_unlinks += usize::from(u.npages >= HUGE);
                        prev = Some(u);
                    }
                    for (p, st) in states.iter().enumerate().take(e).skip(s) {
                        let wanted = st.is_dma_mapped() && st.map_kind() != Some(MapKind::P2pBus);
                        assert_eq!(covered[p], wanted, "{what}: page {p} {st:?}");
                    }
                }
            }
        }
    }
    assert!(folio_unlinks > 50, "only {folio_unlinks} large unlinks");
    assert!(merged_unlinks > 50, "only {merged_unlinks} merged unlinks");
}

// ---------------------------------------------------------------------------------------------
// The commit and invalidation steps against a model IOMMU.

/// The model IOMMU's failure of a call it was told to fail.
#[derive(Debug, PartialEq, Eq)]
struct Refused;

/// What one link call mapped in the model IOMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    npages: usize,
    pfn: u64,
    unit_order: u32,
    class: LinkClass,
}

/// An IOMMU that holds its caller to the unit rule. It keeps each mapping that one link call
/// made, and panics on an unlink that is not a union of whole live mappings without holes (or,
/// without coalescing, where each `dma_map_phys()` call has its own IOVA, not exactly one), on a
/// link over a live mapping or out of alignment, and on a sync that misses a link.
struct ModelIommu {
    grouping: Grouping,
    npages: usize,
    /// Live mappings by first registration page.
    live: BTreeMap<usize, Mapping>,
    /// `first..end` of each link made since the last sync.
    unsynced: Vec<(usize, usize)>,
    /// The links of the last link call, and how many of them were made.
    asked: Vec<Link>,
    made: usize,
    /// Every sync, as `first..end`.
    syncs: Vec<(usize, usize)>,
    /// Fail the link at this index of the next link call.
    fail_link_at: Option<usize>,
    /// Fail the next sync; whether the last one failed.
    fail_sync: bool,
    sync_failed: bool,
    /// `first..end` of each unlink since this was last cleared.
    unlinked: Vec<(usize, usize)>,
    /// Frames of the writable memory mappings that went, and frames marked dirty, since these
    /// were last taken.
    unmapped_writable: Vec<u64>,
    dirtied: Vec<u64>,
    relaxed: usize,
    /// Unlinks that took more than one mapping, and unlinks of a huge page or more.
    merged_unlinks: usize,
    huge_unlinks: usize,
    /// What the caller is doing, for failure messages.
    what: String,
}

impl ModelIommu {
    fn new(grouping: Grouping, npages: usize) -> Self {
        Self {
            grouping,
            npages,
            live: BTreeMap::new(),
            unsynced: Vec::new(),
            asked: Vec::new(),
            made: 0,
            syncs: Vec::new(),
            fail_link_at: None,
            fail_sync: false,
            sync_failed: false,
            unlinked: Vec::new(),
            unmapped_writable: Vec::new(),
            dirtied: Vec::new(),
            relaxed: 0,
            merged_unlinks: 0,
            huge_unlinks: 0,
            what: String::new(),
        }
    }

    /// The live mappings, as `(first, npages, pfn)`.
    fn spans(&self) -> Vec<(usize, usize, u64)> {
        self.live
            .iter()
            .map(|(&f, m)| (f, m.npages, m.pfn))
            .collect()
    }

    /// Whether a live mapping covers any of registration pages `a..b`.
    fn maps_any(&self, a: usize, b: usize) -> bool {
        // Mappings do not overlap: only the last one starting before `b` can reach into `a..b`.
        self.live
            .range(..b)
            .next_back()
            .is_some_and(|(&f, m)| f + m.npages > a)
    }

    /// The frames marked dirty since last taken, sorted.
    fn take_dirtied(&mut self) -> Vec<u64> {
        let mut dirtied = core::mem::take(&mut self.dirtied);
        dirtied.sort_unstable();
        dirtied
    }
}

impl MapOps for ModelIommu {
    type Error = Refused;

    fn link(&mut self, links: &[Link]) -> (usize, Result<(), Refused>) {
        self.asked = links.to_vec();
        self.made = 0;
        for (n, l) in links.iter().enumerate() {
            if self.fail_link_at == Some(n) {
                self.fail_link_at = None;
                return (n, Err(Refused));
            }
            let what = format!("{}: link {n} {l:?}", self.what);
            let end = l.first + l.npages;
            assert!(
                l.unit_order < usize::BITS && l.npages == 1 << l.unit_order,
                "{what}: not a power of two"
            );
            let vpn = self.grouping.first_vpn + l.first as u64;
            assert_eq!(vpn % l.npages as u64, 0, "{what}: not VA-aligned");
            assert!(end <= self.npages, "{what}: beyond the registration");
            assert_ne!(l.class.kind, MapKind::P2pBus, "{what}: a bus page");
            assert!(!self.maps_any(l.first, end), "{what}: over a live mapping");
            let mapping = Mapping {
                npages: l.npages,
                pfn: l.pfn,
                unit_order: l.unit_order,
                class: l.class,
            };
            self.live.insert(l.first, mapping);
            self.unsynced.push((l.first, end));
            self.made = n + 1;
        }
        (links.len(), Ok(()))
    }

    fn sync(&mut self, first: usize, end: usize) -> Result<(), Refused> {
        for &(f, e) in &self.unsynced {
            assert!(
                first <= f && e <= end,
                "{}: sync {first}..{end} misses the link {f}..{e}",
                self.what
            );
        }
        self.unsynced.clear();
        self.syncs.push((first, end));
        self.sync_failed = core::mem::take(&mut self.fail_sync);
        if self.sync_failed {
            Err(Refused)
        } else {
            Ok(())
        }
    }

    fn unlink(&mut self, u: &Unlink) {
        let what = format!("{}: {u:?}", self.what);
        let end = u.first + u.npages;
        assert!(u.npages > 0 && end <= self.npages, "{what}: bad range");
        let mut at = u.first;
        let mut taken = 0;
        while at < end {
            let m = self.live.remove(&at).unwrap_or_else(|| {
                panic!("{what}: no mapping starts at {at}: a hole, or inside a mapping")
            });
            assert_eq!(m.class, u.class, "{what}: class of the mapping at {at}");
            assert!(
                at + m.npages <= end,
                "{what}: ends inside the mapping {at}+{}",
                m.npages
            );
            if m.class.writable && m.class.kind == MapKind::Memory {
                self.unmapped_writable
                    .extend(m.pfn..m.pfn + m.npages as u64);
            }
            at += m.npages;
            taken += 1;
        }
        if !self.grouping.coalesce {
            assert_eq!(taken, 1, "{what}: more than one dma_map_phys() mapping");
        }
        self.merged_unlinks += usize::from(taken > 1);
        self.huge_unlinks += usize::from(u.npages >= HUGE);
        self.unlinked.push((u.first, end));
    }

    fn dirty(&mut self, pfn: u64) {
        self.dirtied.push(pfn);
    }

    fn relax(&mut self) {
        self.relaxed += 1;
    }
}

/// The blocks, as `(first, npages, pfn)`, of ten contiguous pages from pfn 0x1234 at registration
/// pages 5..15 with VPN = page (see `order0_contiguous_pages_form_aligned_blocks`).
const RUN_AT_5: [(usize, usize, u64); 5] = [
    (5, 1, 0x1234),
    (6, 2, 0x1235),
    (8, 4, 0x1237),
    (12, 2, 0x123b),
    (14, 1, 0x123d),
];

/// `map_batch()` of `batch` at registration page `first`, with the model's grouping.
fn map_batch(
    ops: &mut ModelIommu,
    states: &mut [HmmPfn],
    first: usize,
    batch: &[Option<Candidate>],
) -> (Mapped, Result<(), Refused>) {
    let mut scratch = vec![Link::default(); batch.len()];
    let g = ops.grouping;
    g.map_batch(states, first, batch.len(), |i| batch[i], &mut scratch, ops)
}

/// A model IOMMU and empty state words for a registration of `npages` pages at VPN 0.
fn model(folio_units: bool, coalesce: bool, npages: usize) -> (ModelIommu, Vec<HmmPfn>) {
    let g = grouping(0, folio_units, coalesce);
    (ModelIommu::new(g, npages), vec![HmmPfn::EMPTY; npages])
}

#[test]
fn map_batch_links_the_plan_and_syncs_once() {
    let (mut ops, mut states) = model(true, true, 32);
    // Batch 4..16: the 10-page run at 5..15 between two holes.
    let mut batch = vec![None];
    batch.extend(pages(0x1234, 10, 0, MEM_W));
    batch.push(None);
    let (done, result) = map_batch(&mut ops, &mut states, 4, &batch);
    assert_eq!(result, Ok(()));
    assert_eq!(
        done,
        Mapped {
            pages: 10,
            host_bridge_pages: 0,
            rolled_back: 0,
            already: 0,
        }
    );
    assert_eq!(ops.spans(), RUN_AT_5);
    assert_eq!(ops.syncs, [(5, 15)]);
    // Each word records its page and the order of its block.
    let words: Vec<(u64, u32)> = states[4..16].iter().map(|s| (s.pfn(), s.order())).collect();
    let mut expected = vec![(0, 0)];
    for (k, order) in [0, 1, 1, 2, 2, 2, 2, 1, 1, 0].into_iter().enumerate() {
        expected.push((0x1234 + k as u64, order));
    }
    expected.push((0, 0));
    assert_eq!(words, expected);
    assert!(states[5..15]
        .iter()
        .all(|s| s.is_writable() && s.map_kind() == Some(MapKind::Memory)));
    assert!(!states[4].is_dma_mapped() && !states[15].is_dma_mapped());
    // Mapped pages are not linked again (they are counted), and nothing linked needs no sync.
    let (done, result) = map_batch(&mut ops, &mut states, 4, &batch);
    let already = Mapped {
        already: 10,
        ..Mapped::default()
    };
    assert_eq!((done, result), (already, Ok(())));
    assert!(ops.asked.is_empty());
    assert_eq!(ops.syncs.len(), 1);
}

#[test]
fn map_batch_counts_host_bridge_pages() {
    let (mut ops, mut states) = model(true, true, 16);
    let mut batch = pages(0x100, 4, 0, HB_R);
    batch.extend(pages(0x104, 4, 0, MEM_R));
    let (done, result) = map_batch(&mut ops, &mut states, 0, &batch);
    assert_eq!(result, Ok(()));
    assert_eq!((done.pages, done.host_bridge_pages), (8, 4));
}

#[test]
fn map_batch_rolls_back_what_lies_between_when_the_sync_fails() {
    let (mut ops, mut states) = model(true, true, 32);
    let run = pages(0x1234, 10, 0, MEM_W); // for pages 5..15
                                           // Page 10 was mapped before.
    assert_eq!(map_batch(&mut ops, &mut states, 10, &run[5..6]).1, Ok(()));
    ops.fail_sync = true;
    let (done, result) = map_batch(&mut ops, &mut states, 5, &run);
    assert_eq!(result, Err(Refused));
    // Nine pages linked around page 10, in one sync that failed.
    assert_eq!(
        shape(&ops.asked),
        [
            (5, 1, 0),
            (6, 2, 1),
            (8, 2, 1),
            (11, 1, 0),
            (12, 2, 1),
            (14, 1, 0)
        ]
    );
    assert_eq!(ops.syncs.last(), Some(&(5, 15)));
    // Everything in 5..15 went, page 10 too, and the device may have written all of it.
    assert_eq!(
        done,
        Mapped {
            pages: 9,
            host_bridge_pages: 0,
            rolled_back: 10,
            already: 1,
        }
    );
    assert!(ops.live.is_empty());
    assert!(states.iter().all(|s| !s.is_dma_mapped()));
    assert_eq!(ops.take_dirtied(), (0x1234..0x123e).collect::<Vec<u64>>());
}

#[test]
fn map_batch_keeps_the_links_made_before_a_failed_one() {
    let (mut ops, mut states) = model(true, true, 32);
    let run = pages(0x1234, 10, 0, MEM_R);
    ops.fail_link_at = Some(2);
    let (done, result) = map_batch(&mut ops, &mut states, 5, &run);
    assert_eq!(result, Err(Refused));
    assert_eq!(
        done,
        Mapped {
            pages: 3,
            host_bridge_pages: 0,
            rolled_back: 0,
            already: 0,
        }
    );
    // What was linked is synced and stays.
    assert_eq!(ops.syncs, [(5, 8)]);
    assert_eq!(ops.spans(), [(5, 1, 0x1234), (6, 2, 0x1235)]);
    assert!(states[5..8]
        .iter()
        .all(|s| s.is_dma_mapped() && !s.is_writable()));
    assert!(states[8..15].iter().all(|s| !s.is_dma_mapped()));
    // The next try maps the rest.
    let (done, result) = map_batch(&mut ops, &mut states, 5, &run);
    assert_eq!((done.pages, result), (7, Ok(())));
    assert_eq!(ops.spans(), RUN_AT_5);
}

#[test]
fn drop_stale_unmaps_whole_units() {
    let (mut ops, mut states) = model(true, true, 32);
    let g = ops.grouping;
    assert_eq!(
        map_batch(&mut ops, &mut states, 5, &pages(0x1234, 10, 0, MEM_R)).1,
        Ok(())
    );
    // HMM's words for 5..15: the same pages, writable now, but a new frame at 13.
    let mut words: Vec<u64> = (0..10)
        .map(|k| HmmPfn::new_valid(0x1234 + k, true, 0).raw())
        .collect();
    words[8] = HmmPfn::new_valid(0x9999, true, 0).raw();
    // A read fault: only the block of the moved page (12..14) goes.
    assert_eq!(g.drop_stale(&mut states, 5, &words, false, &mut ops), 2);
    assert_eq!(ops.unlinked, [(12, 14)]);
    // A write fault for page 9 alone: its read-only block 8..12 goes whole.
    ops.unlinked.clear();
    assert_eq!(
        g.drop_stale(&mut states, 9, &words[4..5], true, &mut ops),
        4
    );
    assert_eq!(ops.unlinked, [(8, 12)]);
    assert!(
        ops.take_dirtied().is_empty(),
        "read-only pages are not dirty"
    );
    // Nothing stale, nothing unmapped.
    ops.unlinked.clear();
    assert_eq!(
        g.drop_stale(&mut states, 5, &words[..3], false, &mut ops),
        0
    );
    assert!(ops.unlinked.is_empty());
    // The batch maps page 9 again, writable, on its own.
    let (done, result) = map_batch(&mut ops, &mut states, 9, &[cand(0x1238, 0, MEM_W)]);
    assert_eq!((done.pages, result), (1, Ok(())));
    let kept = [&RUN_AT_5[..2], &[(9, 1, 0x1238)], &RUN_AT_5[4..]].concat();
    assert_eq!(ops.spans(), kept);
}

#[test]
fn unmap_takes_whole_units_and_marks_written_pages_dirty() {
    let (mut ops, mut states) = model(true, true, 32);
    let g = ops.grouping;
    let mut batch = pages(0x1234, 10, 0, MEM_W); // 5..15: 5, 6..8, 8..12, 12..14, 14
    batch.extend(pages(0x2000, 4, 0, MEM_R)); // 15..19: 15, 16..18, 18
    assert_eq!(map_batch(&mut ops, &mut states, 5, &batch).1, Ok(()));
    // 9..16 widens to 8..16: one unlink for the writable blocks, one for the read-only page.
    assert_eq!(g.unmap(&mut states, 9, 16, &mut ops), 8);
    assert_eq!(ops.unlinked, [(8, 15), (15, 16)]);
    assert_eq!(ops.take_dirtied(), (0x1237..0x123e).collect::<Vec<u64>>());
    assert!(states[8..16].iter().all(|&s| s == HmmPfn::EMPTY));
    let kept = [&RUN_AT_5[..2], &[(16, 2, 0x2001), (18, 1, 0x2003)]].concat();
    assert_eq!(ops.spans(), kept);
}

#[test]
fn long_unmaps_relax() {
    for coalesce in [true, false] {
        let n = 3 * RELAX_PAGES;
        let (mut ops, mut states) = model(true, coalesce, n);
        let g = ops.grouping;
        for first in (0..n).step_by(HUGE) {
            let batch = pages(0x10_0000 + first as u64, HUGE, 0, MEM_W);
            assert_eq!(map_batch(&mut ops, &mut states, first, &batch).1, Ok(()));
        }
        // An unmap shorter than RELAX_PAGES does not stop.
        let short = g.unmap(&mut states, 0, RELAX_PAGES - MAX_BLOCK, &mut ops);
        assert_eq!((short, ops.relaxed), (RELAX_PAGES - MAX_BLOCK, 0));
        // A long one stops at least once every RELAX_PAGES pages.
        let long = g.unmap(&mut states, 0, n, &mut ops);
        assert_eq!(long, n - short);
        assert!(
            ops.relaxed >= long / RELAX_PAGES,
            "coalesce {coalesce}: {} relaxes",
            ops.relaxed
        );
        assert!(ops.live.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// The unit rule over random sequences of faults, upgrades, invalidations and remaps.

/// Page frames from here on are PCI peer memory behind the host bridge ...
const HOST_BRIDGE_PFN: u64 = 1 << 36;
/// ... and from here on peer memory that the device reaches by bus address.
const BUS_PFN: u64 = 1 << 37;

/// How the kernel's peer classification reaches page frame `pfn`.
fn kind_of(pfn: u64) -> MapKind {
    if pfn >= BUS_PFN {
        MapKind::P2pBus
    } else if pfn >= HOST_BRIDGE_PFN {
        MapKind::P2pHostBridge
    } else {
        MapKind::Memory
    }
}

/// What `commit_own()` asks `map_batch()` to map for HMM's `word`.
fn candidate_of(word: u64, want_write: bool) -> Option<Candidate> {
    let new = HmmPfn::from_raw(word);
    let kind = kind_of(new.pfn());
    if !new.is_valid() || new.is_error() || kind == MapKind::P2pBus {
        return None;
    }
    Some(Candidate {
        pfn: new.pfn(),
        order: new.order(),
        class: LinkClass {
            writable: want_write && new.is_writable(),
            kind,
        },
    })
}

/// Pages whose words say they are mapped, bus pages included.
fn mapped_pages(states: &[HmmPfn]) -> usize {
    states.iter().filter(|s| s.is_dma_mapped()).count()
}

/// A page of the model address space: what `hmm_range_fault()` reports for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MemPage {
    pfn: u64,
    writable: bool,
    order: u32,
}

/// How a remap changes pages, after the invalidation the kernel makes first.
#[derive(Clone, Copy, Debug)]
enum Remap {
    /// Migration, munmap and mmap, a huge-page collapse: new frames, folios and holes.
    Move,
    /// mprotect, fork, write-protection for dirty tracking: the same frames, read-only.
    Protect,
    /// A huge-page split: the same frames, of order 0.
    Split,
}

/// What the runs of one mode exercised: the generator must reach what the checks are about.
#[derive(Debug, Default)]
struct Seen {
    ops: usize,
    faults: usize,
    folio_units: usize,
    huge_units: usize,
    blocks: usize,
    full_blocks: usize,
    upgrades: usize,
    rollbacks: usize,
    partial_links: usize,
    invalidations: usize,
    widened: usize,
    merged_unlinks: usize,
    huge_unlinks: usize,
}

/// A registration, the memory behind it, the manager's state words and the model IOMMU, driven
/// as `hmm_dma_map.rs` drives `link_plan`.
struct World {
    rng: Rng,
    g: Grouping,
    mem: Vec<Option<MemPage>>,
    states: Vec<HmmPfn>,
    scratch: Vec<Link>,
    iommu: ModelIommu,
    seen: Seen,
    /// Mode and seed, for failure messages.
    name: String,
}

impl World {
    fn new(seed: u64, folio_units: bool, coalesce: bool, name: String, seen: Seen) -> Self {
        let mut rng = Rng::new(seed);
        let first_vpn = match rng.below(3) {
            0 => rng.below(1 << 36),
            1 => HUGE as u64 * rng.below(1 << 27),
            // Just below a 2 MiB boundary: a huge page cut by the registration's start.
            _ => HUGE as u64 * (1 + rng.below(1 << 27)) - 1 - rng.below(64),
        };
        let npages = 1000 + rng.index(3000);
        let g = grouping(first_vpn, folio_units, coalesce);
        let mut world = Self {
            rng,
            g,
            mem: vec![None; npages],
            states: vec![HmmPfn::EMPTY; npages],
            scratch: vec![Link::default(); HUGE],
            iommu: ModelIommu::new(g, npages),
            seen,
            name: format!("{name} first_vpn {first_vpn:#x} npages {npages}"),
        };
        world.fill(0, npages);
        world
    }

    fn vpn(&self, i: usize) -> u64 {
        self.g.first_vpn + i as u64
    }

    /// A fresh 1024-aligned page frame: memory, or now and then (if `peer`) peer memory.
    fn fresh_frame(&mut self, peer: bool) -> u64 {
        let base = (1 + self.rng.below(1 << 20)) << 10;
        match self.rng.below(10) {
            0 if peer => HOST_BRIDGE_PFN + base,
            1 if peer => BUS_PFN + base,
            _ => base,
        }
    }

    /// Gives pages `lo..hi` new contents: holes, order-0 runs (contiguous with what precedes or
    /// not, some of mixed write permission), and folios of order 1 to 4 and 9 at their natural
    /// alignment. A folio is cut only by the registration's edges.
    fn fill(&mut self, lo: usize, hi: usize) {
        let n = self.mem.len();
        let mut i = lo;
        while i < hi {
            let vpn = self.vpn(i);
            match self.rng.below(10) {
                0 | 1 => {
                    let len = (1 + self.rng.index(16)).min(hi - i);
                    self.mem[i..i + len].fill(None);
                    i += len;
                }
                2..=4 => {
                    let len = if self.rng.percent(10) {
                        MAX_BLOCK + self.rng.index(500)
                    } else {
                        1 + self.rng.index(80)
                    };
                    let len = len.min(hi - i);
                    let pfn = match i.checked_sub(1).and_then(|p| self.mem[p]) {
                        Some(prev) if self.rng.percent(40) => prev.pfn + 1,
                        _ => self.fresh_frame(true) + self.rng.below(1 << 10),
                    };
                    let writable = self.rng.percent(70);
                    let mixed = self.rng.percent(10);
                    for k in 0..len {
                        let writable = if mixed {
                            self.rng.percent(50)
                        } else {
                            writable
                        };
                        self.mem[i + k] = Some(MemPage {
                            pfn: pfn + k as u64,
                            writable,
                            order: 0,
                        });
                    }
                    i += len;
                }
                _ => {
                    let order = [1, 2, 3, 4, 9, 9, 9, 9][self.rng.index(8)];
                    let size = 1u64 << order;
                    let start = if i == 0 && self.rng.percent(30) {
                        vpn & !(size - 1)
                    } else {
                        vpn.next_multiple_of(size)
                    };
                    let folio_end = (start + size - self.g.first_vpn) as usize;
                    if folio_end > hi && hi < n {
                        continue;
                    }
                    // HMM reports a huge page only where its frames are aligned; the plan must
                    // check that anyway.
                    let base = self.fresh_frame(true) + u64::from(self.rng.percent(3));
                    let writable = self.rng.percent(70);
                    let head = (start.max(vpn) - self.g.first_vpn) as usize;
                    // Up to the head: pages leading into the folio's frames, or a hole.
                    let lead = self.rng.percent(60);
                    for p in i..head.min(hi) {
                        self.mem[p] = lead.then(|| MemPage {
                            pfn: base - (head - p) as u64,
                            writable,
                            order: 0,
                        });
                    }
                    for p in head..folio_end.min(hi) {
                        self.mem[p] = Some(MemPage {
                            pfn: base + (self.vpn(p) - start),
                            writable,
                            order,
                        });
                    }
                    i = folio_end.min(hi);
                }
            }
        }
    }

    /// `a..b` widened to the whole huge pages at its edges: what the kernel invalidates when it
    /// changes part of one.
    fn folio_span(&self, a: usize, b: usize) -> (usize, usize) {
        let span = |p: usize| match self.mem[p] {
            Some(pg) if pg.order > 0 => {
                let size = 1u64 << pg.order;
                let start = self.vpn(p) & !(size - 1);
                let lo = start.saturating_sub(self.g.first_vpn) as usize;
                let hi = (start + size - self.g.first_vpn) as usize;
                (lo, hi.min(self.mem.len()))
            }
            _ => (p, p + 1),
        };
        (span(a).0, span(b - 1).1)
    }

    /// A start for `len` pages: `aligned` percent of the time at a 2 MiB boundary, if one leaves
    /// room.
    fn pick_start(&mut self, len: usize, aligned: u64) -> usize {
        let n = self.mem.len();
        let huge = HUGE as u64;
        let boundary = ((huge - self.g.first_vpn % huge) % huge) as usize;
        if self.rng.percent(aligned) && boundary + len <= n {
            boundary + HUGE * self.rng.index((n - len - boundary) / HUGE + 1)
        } else {
            self.rng.index(n - len + 1)
        }
    }

    /// A range to invalidate or remap: one page, a few, 2 MiB, or all.
    fn pick_range(&mut self) -> (usize, usize) {
        let n = self.mem.len();
        let len = match self.rng.below(20) {
            0..=5 => 1,
            6..=11 => 2 + self.rng.index(15),
            12..=18 => HUGE,
            _ => n,
        };
        let len = len.min(n);
        let a = self.pick_start(len, 50);
        (a, a + len)
    }

    /// One random operation, and the checks after it.
    fn step(&mut self, op: usize) {
        let what = match self.rng.below(100) {
            0..=59 => {
                // Often a whole 2 MiB window, where huge pages can be units.
                let (len, aligned) = if self.rng.percent(50) {
                    (HUGE, 90)
                } else {
                    (1 + self.rng.index(HUGE), 30)
                };
                let len = len.min(self.mem.len());
                let first = self.pick_start(len, aligned);
                let want_write = self.rng.percent(45);
                let what = format!(
                    "{} op {op}: fault {first}..{} write {want_write}",
                    self.name,
                    first + len
                );
                self.fault(&what, first, len, want_write);
                what
            }
            60..=77 => {
                let (a, b) = self.pick_range();
                let what = format!("{} op {op}: invalidate {a}..{b}", self.name);
                self.invalidate(&what, a, b);
                what
            }
            r => {
                let how = match r {
                    78..=89 => Remap::Move,
                    90..=94 => Remap::Protect,
                    _ => Remap::Split,
                };
                let (a, b) = self.pick_range();
                let what = format!("{} op {op}: remap {a}..{b} {how:?}", self.name);
                self.remap(&what, a, b, how);
                what
            }
        };
        self.seen.ops += 1;
        self.check(&what);
    }

    /// A device fault of pages `first..first + len`, as `commit_own()` commits it.
    fn fault(&mut self, what: &str, first: usize, len: usize, want_write: bool) {
        let end = first + len;
        if want_write {
            self.make_writable(what, first, end);
        }
        self.iommu.what = what.to_owned();
        // What hmm_range_fault() reports; for a hole nothing, or an error.
        let words: Vec<u64> = (first..end)
            .map(|p| match self.mem[p] {
                Some(pg) => HmmPfn::new_valid(pg.pfn, pg.writable, pg.order).raw(),
                None if p % 2 == 0 => 0,
                None => ERROR,
            })
            .collect();

        // Mappings that no longer fit go first, whole units.
        let upgrade = self.states[first..end].iter().zip(&words).any(|(s, &w)| {
            want_write
                && s.is_dma_mapped()
                && !s.is_writable()
                && s.pfn() == HmmPfn::from_raw(w).pfn()
        });
        let before = mapped_pages(&self.states);
        let g = self.g;
        let dropped = g.drop_stale(&mut self.states, first, &words, want_write, &mut self.iommu);
        assert_eq!(dropped, before - mapped_pages(&self.states), "{what}");
        for (i, (s, &w)) in self.states[first..end].iter().zip(&words).enumerate() {
            let stale = must_remap(*s, HmmPfn::from_raw(w), want_write);
            assert!(!stale, "{what}: stale page {} kept: {s:?}", first + i);
        }
        self.seen.upgrades += usize::from(upgrade);

        // Peer pages reached by bus address are recorded, not linked.
        for (s, &w) in self.states[first..end].iter_mut().zip(&words) {
            let new = HmmPfn::from_raw(w);
            let bus = kind_of(new.pfn()) == MapKind::P2pBus;
            if bus && new.is_valid() && !new.is_error() && !s.is_dma_mapped() {
                let writable = want_write && new.is_writable();
                *s = HmmPfn::new_valid(new.pfn(), writable, 0).mapped(MapKind::P2pBus, 0);
            }
        }

        // The plan, checked against the rules; the model IOMMU must be asked exactly it.
        let batch: Vec<Option<Candidate>> = self.states[first..end]
            .iter()
            .zip(&words)
            .map(|(s, &w)| {
                if s.is_dma_mapped() {
                    None
                } else {
                    candidate_of(w, want_write)
                }
            })
            .collect();
        let plan = check_links(&g, first, &batch, what);
        // Calls fail now and then. (Only an IOVA window's sync can fail in the kernel; failing
        // it in every mode checks the rollback over every kind of unit.)
        if !plan.is_empty() && self.rng.percent(4) {
            self.iommu.fail_link_at = Some(self.rng.index(plan.len()));
        }
        self.iommu.fail_sync = self.rng.percent(4);
        self.iommu.sync_failed = false;
        self.iommu.asked.clear();
        self.iommu.made = 0;
        let before = self.states.clone();
        let (done, result) = g.map_batch(
            &mut self.states,
            first,
            len,
            |i| candidate_of(words[i], want_write),
            &mut self.scratch,
            &mut self.iommu,
        );
        self.iommu.fail_link_at = None;
        self.iommu.fail_sync = false;

        assert_eq!(self.iommu.asked, plan, "{what}: the calls are not the plan");
        let made = &plan[..self.iommu.made];
        let pages: usize = made.iter().map(|l| l.npages).sum();
        let host_bridge: usize = made
            .iter()
            .filter(|l| l.class.kind == MapKind::P2pHostBridge)
            .map(|l| l.npages)
            .sum();
        assert_eq!(
            (done.pages, done.host_bridge_pages),
            (pages, host_bridge),
            "{what}: {done:?}"
        );
        let link_failed = made.len() < plan.len();
        if self.iommu.sync_failed {
            // Everything between the first and the last link went again.
            let last = made[made.len() - 1];
            let (lo, hi) = (made[0].first, last.first + last.npages);
            assert!(result.is_err(), "{what}: sync failure not reported");
            assert!(
                self.states[lo..hi].iter().all(|s| !s.is_dma_mapped()),
                "{what}: rollback of {lo}..{hi} left pages mapped"
            );
            let old = mapped_pages(&before[lo..hi]);
            assert_eq!(done.rolled_back, old + pages, "{what}: rolled back");
            self.seen.rollbacks += 1;
        } else {
            assert_eq!(done.rolled_back, 0, "{what}: rolled back without cause");
            assert_eq!(result.is_err(), link_failed, "{what}: {result:?}");
            // What was linked stays linked, even before a failed link.
            for l in made {
                let live = self.iommu.live.get(&l.first).map(|m| (m.npages, m.pfn));
                assert_eq!(live, Some((l.npages, l.pfn)), "{what}: {l:?} went");
            }
            self.seen.partial_links += usize::from(link_failed && !made.is_empty());
        }
        if result.is_ok() {
            // Every page HMM reported is mapped now, as reported, writable if it is to be.
            for (i, &w) in words.iter().enumerate() {
                let new = HmmPfn::from_raw(w);
                let s = self.states[first + i];
                if new.is_valid() && !new.is_error() {
                    assert!(
                        s.is_dma_mapped()
                            && s.pfn() == new.pfn()
                            && (s.is_writable() || !want_write),
                        "{what}: page {} is {s:?} after a fault that reported {new:?}",
                        first + i
                    );
                }
            }
        }
        for l in made {
            if is_folio_unit(&g, first, &batch, l) {
                self.seen.folio_units += 1;
                self.seen.huge_units += usize::from(l.npages >= HUGE);
            } else if l.npages > 1 {
                self.seen.blocks += 1;
                self.seen.full_blocks += usize::from(l.npages == MAX_BLOCK);
            }
        }
        self.seen.faults += 1;
    }

    /// A write fault makes pages writable: a shared page gets a copy of its own (the kernel
    /// invalidates it first, splitting its huge page), an exclusive one becomes writable in
    /// place (nothing is invalidated: a read-only device mapping of it stays right).
    fn make_writable(&mut self, what: &str, first: usize, end: usize) {
        for p in first..end {
            let Some(pg) = self.mem[p] else {
                continue;
            };
            if pg.writable {
                continue;
            }
            let (a, b) = self.folio_span(p, p + 1);
            if kind_of(pg.pfn) == MapKind::Memory && self.rng.percent(15) {
                self.invalidate(&format!("{what}: copy-on-write of page {p}"), a, b);
                for q in self.mem[a..b].iter_mut().flatten() {
                    q.order = 0;
                }
                let pfn = self.fresh_frame(false) + self.rng.below(1 << 10);
                self.mem[p] = Some(MemPage {
                    pfn,
                    writable: true,
                    order: 0,
                });
            } else {
                for q in self.mem[a..b].iter_mut().flatten() {
                    q.writable = true;
                }
            }
        }
    }

    /// An invalidation of pages `a..b`, as the MMU notifier makes it.
    fn invalidate(&mut self, what: &str, a: usize, b: usize) {
        self.iommu.what = what.to_owned();
        self.iommu.unlinked.clear();
        let before = mapped_pages(&self.states);
        let n = self.g.unmap(&mut self.states, a, b, &mut self.iommu);
        assert_eq!(n, before - mapped_pages(&self.states), "{what}: count");
        // Never under-invalidated: the device reaches nothing of a..b any more.
        assert!(
            !self.iommu.maps_any(a, b),
            "{what}: still mapped: {:?}",
            self.iommu.spans()
        );
        assert!(
            self.states[a..b].iter().all(|s| !s.is_dma_mapped()),
            "{what}: words still mapped"
        );
        self.seen.invalidations += 1;
        let beyond = self.iommu.unlinked.iter().any(|&(f, e)| f < a || e > b);
        self.seen.widened += usize::from(beyond);
    }

    /// Pages `a..b` change as `how` says, after the invalidation of the huge pages they touch.
    fn remap(&mut self, what: &str, a: usize, b: usize, how: Remap) {
        let (a, b) = self.folio_span(a, b);
        self.invalidate(what, a, b);
        match how {
            Remap::Move => self.fill(a, b),
            Remap::Protect => self.mem[a..b]
                .iter_mut()
                .flatten()
                .for_each(|pg| pg.writable = false),
            Remap::Split => self.mem[a..b]
                .iter_mut()
                .flatten()
                .for_each(|pg| pg.order = 0),
        }
    }

    /// The invariants after every operation: each word marked DMA_MAPPED (but for bus pages)
    /// is covered by exactly one live mapping, of its frame and writability, whose unit the word
    /// alone gives; no live mapping covers any other page; no mapping is stale; every link was
    /// synced; exactly the writable memory pages unmapped were marked dirty.
    fn check(&mut self, what: &str) {
        let mut cover: Vec<Option<(usize, Mapping)>> = vec![None; self.states.len()];
        for (&f, m) in &self.iommu.live {
            for c in &mut cover[f..f + m.npages] {
                assert!(c.is_none(), "{what}: mappings overlap at {f}");
                *c = Some((f, *m));
            }
        }
        for (p, (st, cov)) in self.states.iter().zip(&cover).enumerate() {
            match (st.map_kind(), cov) {
                (None | Some(MapKind::P2pBus), None) => {}
                (None | Some(MapKind::P2pBus), Some((f, m))) => {
                    panic!("{what}: page {p} ({st:?}) is not linked, but {f} {m:?} covers it")
                }
                (Some(_), None) => panic!("{what}: page {p} ({st:?}) has no mapping"),
                (Some(kind), Some((f, m))) => {
                    let expected = (m.pfn + (p - f) as u64, m.class.writable, m.class.kind);
                    let got = (st.pfn(), st.is_writable(), kind);
                    assert_eq!(got, expected, "{what}: page {p} of mapping {f}");
                    let size = 1u64 << st.order();
                    let unit_start = p.checked_sub((self.vpn(p) % size) as usize);
                    assert_eq!(
                        (unit_start, st.order()),
                        (Some(*f), m.unit_order),
                        "{what}: the word of page {p} does not give its unit"
                    );
                }
            }
            if st.is_dma_mapped() {
                let pg = self.mem[p].unwrap_or_else(|| panic!("{what}: page {p} maps a hole"));
                assert_eq!(pg.pfn, st.pfn(), "{what}: page {p} maps a stale frame");
                assert!(
                    pg.writable || !st.is_writable(),
                    "{what}: page {p} is read-only but mapped writable"
                );
            }
        }
        assert!(
            self.iommu.unsynced.is_empty(),
            "{what}: links never synced: {:?}",
            self.iommu.unsynced
        );
        let mut unmapped = core::mem::take(&mut self.iommu.unmapped_writable);
        unmapped.sort_unstable();
        assert_eq!(
            self.iommu.take_dirtied(),
            unmapped,
            "{what}: the pages marked dirty are not the writable pages unmapped"
        );
    }

    /// Unmaps everything, as the registration's end does, and returns what was exercised.
    fn finish(mut self) -> Seen {
        let what = format!("{} end", self.name);
        self.invalidate(&what, 0, self.mem.len());
        self.check(&what);
        assert!(
            self.iommu.live.is_empty(),
            "{what}: {:?}",
            self.iommu.spans()
        );
        self.seen.merged_unlinks += self.iommu.merged_unlinks;
        self.seen.huge_unlinks += self.iommu.huge_unlinks;
        self.seen
    }
}

/// Runs `rounds` registrations of `ops` random operations each in one mode.
fn run_model(mode: &str, folio_units: bool, coalesce: bool, rounds: u64, ops: usize) -> Seen {
    let mut seen = Seen::default();
    for round in 0..rounds {
        let seed = 0x0d9_0000 + round;
        let name = format!("{mode} seed {seed:#x}");
        let mut world = World::new(seed, folio_units, coalesce, name, seen);
        for op in 0..ops {
            world.step(op);
        }
        seen = world.finish();
    }
    println!("{mode}: {seen:?}");
    seen
}

/// Registrations per mode, and operations per registration.
const ROUNDS: u64 = 12;
const OPS: usize = 400;

/// Asserts that a run exercised what every mode has (upgrades, failures of either call), folio
/// units if `folio_units`, and each of `more`, as `(what, count, more than)`.
fn assert_exercised(seen: &Seen, folio_units: bool, more: &[(&str, usize, usize)]) {
    let every_mode = [
        ("upgrades", seen.upgrades, 200),
        ("rollbacks", seen.rollbacks, 30),
        ("failed links after others", seen.partial_links, 30),
    ];
    let folios = [
        ("folio units", seen.folio_units, 800),
        ("huge folio units", seen.huge_units, 30),
        ("unlinks of a huge page", seen.huge_unlinks, 30),
    ];
    let folios = if folio_units { &folios[..] } else { &[] };
    for &(what, count, min) in every_mode.iter().chain(folios).chain(more) {
        assert!(count > min, "only {count} {what}: {seen:?}");
    }
}

#[test]
fn unit_rule_holds_in_iova_mode() {
    let seen = run_model("iova", true, true, ROUNDS, OPS);
    let more = [
        ("multi-page blocks", seen.blocks, 10_000),
        ("full blocks", seen.full_blocks, 800),
        ("invalidations beyond their range", seen.widened, 500),
        ("unlinks of several units", seen.merged_unlinks, 1000),
    ];
    assert_exercised(&seen, true, &more);
}

#[test]
fn unit_rule_holds_in_fallback_mode() {
    let seen = run_model("fallback", true, false, ROUNDS, OPS);
    // Only folio units can make an invalidation unmap more than asked.
    assert_exercised(
        &seen,
        true,
        &[("invalidations beyond their range", seen.widened, 15)],
    );
}

#[test]
fn unit_rule_holds_in_legacy_mode() {
    let seen = run_model("legacy", false, false, ROUNDS, OPS);
    assert_exercised(&seen, false, &[]);
    // Every unit is one page: an invalidation unmaps nothing beyond its range.
    assert_eq!(seen.widened, 0, "{seen:?}");
}

// ---------------------------------------------------------------------------------------------
// must_remap().

#[test]
fn must_remap_truth_table() {
    let pfn = 0x1234;
    let old_rw = HmmPfn::new_valid(pfn, true, 0).mapped(MapKind::Memory, 0);
    let old_ro = HmmPfn::new_valid(pfn, false, 0).mapped(MapKind::Memory, 0);
    let old_unmapped = HmmPfn::new_valid(pfn, true, 0);
    let new_rw = HmmPfn::new_valid(pfn, true, 0);
    let new_ro = HmmPfn::new_valid(pfn, false, 0);
    let moved_rw = HmmPfn::new_valid(pfn + 1, true, 0);
    let moved_ro = HmmPfn::new_valid(pfn + 1, false, 0);
    let error = HmmPfn::from_raw(crate::pfn_flags::ERROR);
    // (old, new, want_write, remap)
    let table = [
        // Not mapped before: nothing to remap.
        (HmmPfn::EMPTY, new_rw, true, false),
        (HmmPfn::EMPTY, moved_ro, false, false),
        (old_unmapped, new_rw, true, false),
        (old_unmapped, moved_rw, true, false),
        // Not valid now: nothing to remap with.
        (old_rw, HmmPfn::EMPTY, false, false),
        (old_rw, HmmPfn::EMPTY, true, false),
        (old_ro, error, true, false),
        // Same page, write permission enough.
        (old_rw, new_rw, false, false),
        (old_rw, new_rw, true, false),
        (old_rw, new_ro, false, false),
        (old_rw, new_ro, true, false),
        (old_ro, new_ro, false, false),
        (old_ro, new_rw, false, false),
        // Same page, read-only mapping to be written.
        (old_ro, new_rw, true, true),
        (old_ro, new_ro, true, true),
        // A different page.
        (old_rw, moved_rw, false, true),
        (old_rw, moved_rw, true, true),
        (old_rw, moved_ro, false, true),
        (old_ro, moved_ro, false, true),
        (old_ro, moved_rw, true, true),
    ];
    for (n, (old, new, want_write, remap)) in table.into_iter().enumerate() {
        assert_eq!(
            must_remap(old, new, want_write),
            remap,
            "row {n}: {old:?} {new:?} {want_write}"
        );
    }
}

#[test]
fn must_remap_ignores_kind_and_order() {
    for kind in [MapKind::Memory, MapKind::P2pHostBridge, MapKind::P2pBus] {
        for order in [0, 9] {
            let old = HmmPfn::new_valid(PFN_2M, true, 0).mapped(kind, order);
            assert!(!must_remap(old, HmmPfn::new_valid(PFN_2M, true, 9), true));
            assert!(must_remap(
                old,
                HmmPfn::new_valid(PFN_2M + 1, true, 9),
                false
            ));
            let old = old.with_write(false);
            assert!(must_remap(old, HmmPfn::new_valid(PFN_2M, true, 9), true));
            assert!(!must_remap(old, HmmPfn::new_valid(PFN_2M, true, 9), false));
        }
    }
}
