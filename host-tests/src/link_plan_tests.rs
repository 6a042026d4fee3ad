// SPDX-License-Identifier: GPL-2.0

//! Tests of `src/link_plan.rs`: the link plan of a fault batch, unit widening, the unlink plan
//! and `must_remap`.

use crate::link_plan::{
    must_remap, Candidate, Grouping, Link, LinkClass, Unlink, LARGE_PAGE_PAGES,
};
use crate::pfn_flags::{HmmPfn, MapKind};

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

/// The longest order-0 run a link may have.
const MAX_RUN: usize = LARGE_PAGE_PAGES - 1;

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
    for order in 1..=10u32 {
        let n = 1usize << order;
        let pfn = 0x10_0000 + (3 << order);
        for class in CLASSES {
            let batch = folio(pfn, order, class);
            let g = grouping(7 << order, true, false);
            assert_eq!(
                links(&g, 0, &batch),
                [link(0, n, pfn, order, class)],
                "order {order} {class:?}"
            );
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
        /// `(first, npages)` of the order-0 runs when coalescing.
        coalesced: &'static [(usize, usize)],
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
    let cases = [
        Case {
            name: "VA unaligned through first_vpn",
            first_vpn: 1,
            first: 0,
            folio_units: true,
            batch: whole(),
            // Page 511 has VA 512 (aligned) but pfn PFN_2M + 511: no unit there either.
            coalesced: &[(0, 511), (511, 1)],
        },
        Case {
            name: "VA unaligned through first",
            first_vpn: 0,
            first: 1,
            folio_units: true,
            batch: whole(),
            coalesced: &[(1, 511), (512, 1)],
        },
        Case {
            name: "VA aligned to 256 only",
            first_vpn: 256,
            first: 0,
            folio_units: true,
            batch: whole(),
            coalesced: &[(0, 511), (511, 1)],
        },
        Case {
            name: "pfn unaligned",
            first_vpn: 0,
            first: 0,
            folio_units: true,
            batch: folio(PFN_2M + 1, 9, MEM_W),
            coalesced: &[(0, 511), (511, 1)],
        },
        Case {
            name: "gap",
            first_vpn: 0,
            first: 0,
            folio_units: true,
            batch: gap,
            coalesced: &[(0, 100), (101, 411)],
        },
        Case {
            name: "pfn discontinuity",
            first_vpn: 0,
            first: 0,
            folio_units: true,
            batch: pfn_break,
            coalesced: &[(0, 100), (100, 1), (101, 411)],
        },
        Case {
            name: "class change (write)",
            first_vpn: 0,
            first: 0,
            folio_units: true,
            batch: class_change,
            coalesced: &[(0, 300), (300, 1), (301, 211)],
        },
        Case {
            name: "class change (kind) at the head",
            first_vpn: 0,
            first: 0,
            folio_units: true,
            batch: kind_change,
            coalesced: &[(0, 1), (1, 511)],
        },
        Case {
            name: "unit crosses the batch end",
            first_vpn: 0,
            first: 0,
            folio_units: true,
            batch: truncated,
            coalesced: &[(0, 511)],
        },
        Case {
            name: "folio units off",
            first_vpn: 0,
            first: 0,
            folio_units: false,
            batch: whole(),
            coalesced: &[(0, 511), (511, 1)],
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
        let runs = links(&g, case.first, &case.batch);
        let expected: Vec<(usize, usize, u32)> =
            case.coalesced.iter().map(|&(f, n)| (f, n, 0)).collect();
        assert_eq!(shape(&runs), expected, "{}", case.name);
    }
}

#[test]
fn folio_unit_checks_the_unit_inside_the_batch_only() {
    // The batch ends inside the folio: no unit even though the head is eligible, and the tail
    // of the folio in the next batch is no unit either (its head is not there).
    let g = grouping(0, true, false);
    let all = folio(PFN_2M, 9, MEM_W);
    let (head, tail) = all.split_at(256);
    assert!(links(&g, 0, head).iter().all(|l| l.unit_order == 0));
    let tail_links = links(&g, 256, tail);
    assert_eq!(tail_links.len(), 256);
    assert!(tail_links
        .iter()
        .all(|l| l.unit_order == 0 && l.npages == 1));
}

// ---------------------------------------------------------------------------------------------
// links(): order-0 runs.

#[test]
fn order0_contiguous_pages_coalesce() {
    let g = grouping(0, true, true);
    let batch = pages(0x1234, 10, 0, MEM_W);
    assert_eq!(links(&g, 5, &batch), [link(5, 10, 0x1234, 0, MEM_W)]);
}

#[test]
fn order0_runs_split_where_pages_differ() {
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
            link(0, 4, 0x1000, 0, MEM_W),
            link(5, 3, 0x1005, 0, MEM_W),
            link(8, 2, 0x2000, 0, MEM_W),
            link(10, 2, 0x2002, 0, MEM_R),
            link(12, 2, 0x2004, 0, HB_R),
            link(14, 2, 0x2003, 0, HB_R),
        ]
    );
}

#[test]
fn order0_runs_never_reach_a_large_page() {
    for folio_units in [false, true] {
        let g = grouping(0, folio_units, true);
        // 2 MiB-aligned in VA and PA, contiguous, order 0: still no 512-page call.
        let batch = pages(PFN_2M, 1200, 0, MEM_W);
        let got = links(&g, 0, &batch);
        assert_eq!(
            got,
            [
                link(0, MAX_RUN, PFN_2M, 0, MEM_W),
                link(511, MAX_RUN, PFN_2M + 511, 0, MEM_W),
                link(1022, 178, PFN_2M + 1022, 0, MEM_W),
            ]
        );
        assert!(got.iter().all(|l| l.npages < LARGE_PAGE_PAGES));
    }
    assert_eq!(MAX_RUN, 511);
}

#[test]
fn order0_runs_of_exactly_the_cap() {
    let g = grouping(0, true, true);
    for (n, expected) in [
        (510, &[(0, 510, 0)][..]),
        (511, &[(0, 511, 0)][..]),
        (512, &[(0, 511, 0), (511, 1, 0)][..]),
        (1022, &[(0, 511, 0), (511, 511, 0)][..]),
        (1023, &[(0, 511, 0), (511, 511, 0), (1022, 1, 0)][..]),
    ] {
        let batch = pages(0x9_9999, n, 0, HB_W);
        assert_eq!(shape(&links(&g, 0, &batch)), expected, "{n} pages");
    }
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
fn run_stops_before_an_eligible_folio_unit() {
    // Registration pages 502..512 are order-0 pages whose pfns lead straight into a
    // 2 MiB-aligned folio at registration page 512 (VA-aligned with first_vpn 0).
    let mut batch = pages(PFN_2M - 10, 10, 0, MEM_W);
    batch.extend(folio(PFN_2M, 9, MEM_W));
    batch.extend(pages(PFN_2M + 512, 5, 0, MEM_W));
    let g = grouping(0, true, true);
    assert_eq!(
        links(&g, 502, &batch),
        [
            link(502, 10, PFN_2M - 10, 0, MEM_W),
            link(512, 512, PFN_2M, 9, MEM_W),
            link(1024, 5, PFN_2M + 512, 0, MEM_W),
        ]
    );
    // Without folio units the same pages are plain runs, capped.
    let g = grouping(0, false, true);
    assert_eq!(
        shape(&links(&g, 502, &batch)),
        [(502, 511, 0), (1013, 16, 0)]
    );
}

#[test]
fn run_continues_over_pages_of_an_ineligible_folio() {
    // A folio whose pfn is not aligned is mapped as order-0 pages, coalesced with its neighbours.
    let mut batch = pages(0x1_0000 - 3, 3, 0, MEM_W);
    batch.extend(folio(0x1_0000, 4, MEM_W)); // VA index 3: unaligned for order 4
    batch.extend(pages(0x1_0010, 2, 0, MEM_W));
    let g = grouping(0, true, true);
    assert_eq!(links(&g, 0, &batch), [link(0, 21, 0x1_0000 - 3, 0, MEM_W)]);
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
            link(512, 3, 7, 0, HB_W),
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

/// Checks every rule of the link plan for one batch, and returns the links.
fn check_links(g: &Grouping, first: usize, batch: &[Option<Candidate>], what: &str) -> Vec<Link> {
    let got = links(g, first, batch);
    let mut covered = vec![0u32; batch.len()];
    let mut folio_pages = vec![false; batch.len()];
    let mut prev_end = first;
    for (n, l) in got.iter().enumerate() {
        let what = format!("{what}: link {n} {l:?}");
        assert!(l.npages > 0, "{what}: empty");
        assert!(l.first >= prev_end, "{what}: not in order");
        prev_end = l.first + l.npages;
        let i = l.first - first;
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
        if l.unit_order > 0 {
            assert!(g.folio_units, "{what}: unit without folio_units");
            assert_eq!(l.npages, 1 << l.unit_order, "{what}: unit size");
            assert_eq!(head.order, l.unit_order, "{what}: unit order");
            assert!(eligible(g, first, batch, i), "{what}: ineligible unit");
            assert_eq!((g.first_vpn + l.first as u64) % l.npages as u64, 0);
            assert_eq!(l.pfn % l.npages as u64, 0);
            folio_pages[i..i + l.npages].fill(true);
        } else {
            assert!(l.npages <= MAX_RUN, "{what}: run reaches a large page");
            if !g.coalesce {
                assert_eq!(l.npages, 1, "{what}: coalesced without coalesce");
            }
            for k in 0..l.npages {
                assert!(
                    !eligible(g, first, batch, i + k),
                    "{what}: swallows a unit at {k}"
                );
            }
            // Greedy: a run shorter than the cap ends at something it could not take.
            let j = i + l.npages;
            if g.coalesce && l.npages < MAX_RUN && j < batch.len() {
                let next = batch[j];
                let joinable =
                    next.is_some_and(|c| c.pfn == l.pfn + l.npages as u64 && c.class == l.class);
                assert!(
                    !joinable || eligible(g, first, batch, j),
                    "{what}: stops early before {j}"
                );
            }
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
    let mut units = 0;
    let mut runs = 0;
    let mut capped = 0;
    for round in 0..150 {
        let first_vpn = match round % 3 {
            0 => 0,
            1 => 512 * rng.below(1 << 20),
            _ => rng.below(1 << 30),
        };
        let first = if rng.percent(50) { 0 } else { rng.index(4096) };
        let target = 1 + rng.index(3000);
        let batch = generate_batch(&mut rng, first_vpn, first, target);
        for folio_units in [false, true] {
            for coalesce in [false, true] {
                let g = grouping(first_vpn, folio_units, coalesce);
                let what = format!("round {round} {g:?} first {first} len {}", batch.len());
                let got = check_links(&g, first, &batch, &what);
                units += got.iter().filter(|l| l.unit_order > 0).count();
                runs += got
                    .iter()
                    .filter(|l| l.unit_order == 0 && l.npages > 1)
                    .count();
                capped += got.iter().filter(|l| l.npages == MAX_RUN).count();
            }
        }
    }
    // The generator must exercise what is checked.
    assert!(units > 100, "only {units} folio units");
    assert!(runs > 100, "only {runs} coalesced runs");
    assert!(capped > 10, "only {capped} capped runs");
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
fn unlinks_undo_links_in_generated_batches() {
    let mut rng = Rng::new(0x5eed);
    let mut folio_unlinks = 0;
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
                let inside_unit = |p: usize| {
                    p > 0
                        && p < states.len()
                        && owner[p] != usize::MAX
                        && owner[p] == owner[p - 1]
                        && got[owner[p]].unit_order > 0
                };
                for _ in 0..20 {
                    let a = rng.index(states.len());
                    let b = a + 1 + rng.index(states.len() - a);
                    let (s, e) = g.expand_to_units(&states, a, b);
                    let what = format!("{what}: {a}..{b} -> {s}..{e}");
                    assert!(s <= a && e >= b && e <= states.len(), "{what}");
                    assert!(!inside_unit(s) && !inside_unit(e), "{what}: splits a unit");
                    if !coalesce {
                        // Fallback mappings are unmapped as they were mapped: whole calls.
                        let split = |p: usize| {
                            p > 0
                                && p < states.len()
                                && owner[p] != usize::MAX
                                && owner[p] == owner[p - 1]
                        };
                        assert!(!split(s) && !split(e), "{what}: splits a call");
                    }
                    let mut covered = vec![false; states.len()];
                    let mut prev: Option<Unlink> = None;
                    for u in g.unlinks(&states, s, e) {
                        let what = format!("{what}: {u:?}");
                        assert!(
                            u.npages > 0 && u.first >= s && u.first + u.npages <= e,
                            "{what}"
                        );
                        assert!(!inside_unit(u.first), "{what}: starts inside a unit");
                        assert!(
                            !inside_unit(u.first + u.npages),
                            "{what}: ends inside a unit"
                        );
                        for p in u.first..u.first + u.npages {
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
                        } else {
                            // Exactly one link call per unlink call.
                            let l = got[owner[u.first]];
                            assert_eq!(
                                (u.first, u.npages, u.class),
                                (l.first, l.npages, l.class),
                                "{what}"
                            );
                        }
                        folio_unlinks += usize::from(u.npages >= LARGE_PAGE_PAGES);
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
