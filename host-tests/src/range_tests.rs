// SPDX-License-Identifier: GPL-2.0

//! Tests of `src/range.rs`: user range validation, sub-ranges, overlaps and chunking.

use crate::range::{PageSpan, RangeError, UserRange};

const SHIFT: u32 = 12;
const PAGE: u64 = 1 << SHIFT;
/// x86-64 `TASK_SIZE` with 4-level paging.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;

fn range(addr: u64, len: u64) -> UserRange {
    UserRange::new(addr, len, SHIFT, TASK_SIZE).unwrap()
}

fn span(first: usize, end: usize) -> PageSpan {
    PageSpan { first, end }
}

#[test]
fn new_accepts_aligned_ranges() {
    // (addr, len, page_shift, limit)
    let table: [(u64, u64, u32, u64); 9] = [
        (0, PAGE, SHIFT, TASK_SIZE),
        (0x1000, 0x1000, SHIFT, TASK_SIZE),
        (0x7f00_0000_0000, 0x20_0000, SHIFT, TASK_SIZE),
        // Ending exactly at the (exclusive) limit is fine.
        (TASK_SIZE - PAGE, PAGE, SHIFT, TASK_SIZE),
        (0, TASK_SIZE, SHIFT, TASK_SIZE),
        (0x1_0000, 0x3_0000, 16, TASK_SIZE),
        (0x20_0000, 0x40_0000, 21, TASK_SIZE),
        (u64::MAX - 2 * PAGE + 1, PAGE, SHIFT, u64::MAX),
        (0, u64::MAX - PAGE + 1, SHIFT, u64::MAX),
    ];
    for (addr, len, shift, limit) in table {
        let r = UserRange::new(addr, len, shift, limit)
            .unwrap_or_else(|e| panic!("{addr:#x}+{len:#x} (shift {shift}): {e:?}"));
        assert_eq!(r.start(), addr);
        assert_eq!(r.end(), addr + len);
        assert_eq!(r.len(), len);
        assert_eq!(r.npages() as u64, len >> shift);
        assert_eq!(r.first_vpn(), addr >> shift);
        assert!(r.end() <= limit);
    }
}

#[test]
fn new_refuses_bad_ranges() {
    // (addr, len, page_shift, limit, error)
    let table: [(u64, u64, u32, u64, RangeError); 21] = [
        (0x1000, 0, SHIFT, TASK_SIZE, RangeError::Empty),
        (0, 0, SHIFT, TASK_SIZE, RangeError::Empty),
        (TASK_SIZE, 0, SHIFT, TASK_SIZE, RangeError::Empty),
        (0x1001, 0x1000, SHIFT, TASK_SIZE, RangeError::Unaligned),
        (0x1800, 0x1000, SHIFT, TASK_SIZE, RangeError::Unaligned),
        (0x1fff, 0x1000, SHIFT, TASK_SIZE, RangeError::Unaligned),
        (0x1000, 0x1001, SHIFT, TASK_SIZE, RangeError::Unaligned),
        (0x1000, 1, SHIFT, TASK_SIZE, RangeError::Unaligned),
        (0x1000, 0xfff, SHIFT, TASK_SIZE, RangeError::Unaligned),
        (0x1800, 0x800, SHIFT, TASK_SIZE, RangeError::Unaligned),
        // Aligned for 4 KiB pages, not for 64 KiB or 2 MiB pages.
        (0x1000, 0x1_0000, 16, TASK_SIZE, RangeError::Unaligned),
        (0x1_0000, 0x1000, 16, TASK_SIZE, RangeError::Unaligned),
        (0x20_0000, 0x1000, 21, TASK_SIZE, RangeError::Unaligned),
        // addr + len wraps around.
        (
            u64::MAX - PAGE + 1,
            PAGE,
            SHIFT,
            u64::MAX,
            RangeError::Overflow,
        ),
        (
            u64::MAX - PAGE + 1,
            2 * PAGE,
            SHIFT,
            u64::MAX,
            RangeError::Overflow,
        ),
        (
            PAGE,
            u64::MAX - PAGE + 1,
            SHIFT,
            u64::MAX,
            RangeError::Overflow,
        ),
        (
            u64::MAX - PAGE + 1,
            u64::MAX - PAGE + 1,
            SHIFT,
            u64::MAX,
            RangeError::Overflow,
        ),
        // Ends above the limit.
        (
            TASK_SIZE - PAGE,
            2 * PAGE,
            SHIFT,
            TASK_SIZE,
            RangeError::Overflow,
        ),
        (TASK_SIZE, PAGE, SHIFT, TASK_SIZE, RangeError::Overflow),
        (0, TASK_SIZE + PAGE, SHIFT, TASK_SIZE, RangeError::Overflow),
        (0x1000, 0x1000, SHIFT, 0x1000, RangeError::Overflow),
    ];
    for (addr, len, shift, limit, error) in table {
        assert_eq!(
            UserRange::new(addr, len, shift, limit),
            Err(error),
            "{addr:#x}+{len:#x} shift {shift} limit {limit:#x}"
        );
    }
}

#[test]
fn npages_addr_of_and_first_vpn() {
    let r = range(0x7f12_3456_7000, 10 * PAGE);
    assert_eq!(r.npages(), 10);
    assert_eq!(r.first_vpn(), 0x7_f123_4567);
    for i in 0..=10 {
        assert_eq!(r.addr_of(i), 0x7f12_3456_7000 + i as u64 * PAGE, "page {i}");
    }
    assert_eq!(r.addr_of(0), r.start());
    assert_eq!(r.addr_of(r.npages()), r.end());

    let big = UserRange::new(0x30_0000, 0x50_0000, 16, TASK_SIZE).unwrap();
    assert_eq!(big.npages(), 0x50);
    assert_eq!(big.first_vpn(), 0x30);
    assert_eq!(big.addr_of(3), 0x33_0000);
}

#[test]
fn sub_range_inside_gives_page_indices() {
    let base = 0x10_0000;
    let r = range(base, 16 * PAGE);
    // (addr, len, span)
    let table = [
        (base, 16 * PAGE, span(0, 16)),
        (base, PAGE, span(0, 1)),
        (base + 15 * PAGE, PAGE, span(15, 16)),
        (base + 3 * PAGE, 5 * PAGE, span(3, 8)),
        (base + 8 * PAGE, 8 * PAGE, span(8, 16)),
    ];
    for (addr, len, expected) in table {
        let s = r.sub_range(addr, len).unwrap();
        assert_eq!(s, expected, "{addr:#x}+{len:#x}");
        assert_eq!(s.len() as u64, len / PAGE);
        assert_eq!(r.addr_of(s.first), addr);
        assert_eq!(r.addr_of(s.end), addr + len);
    }
}

#[test]
fn sub_range_refuses_bad_sub_ranges() {
    let base = 0x10_0000;
    let r = range(base, 16 * PAGE);
    let end = base + 16 * PAGE;
    let table: [(u64, u64, RangeError); 15] = [
        (base, 0, RangeError::Empty),
        (base + PAGE, 0, RangeError::Empty),
        (base + 1, PAGE, RangeError::Unaligned),
        (base, PAGE + 1, RangeError::Unaligned),
        (base + 0x800, 0x800, RangeError::Unaligned),
        // Starts before the registration.
        (base - PAGE, 2 * PAGE, RangeError::OutOfRegistration),
        (base - PAGE, PAGE, RangeError::OutOfRegistration),
        (0, PAGE, RangeError::OutOfRegistration),
        // Ends after it.
        (end - PAGE, 2 * PAGE, RangeError::OutOfRegistration),
        (end, PAGE, RangeError::OutOfRegistration),
        (base, 17 * PAGE, RangeError::OutOfRegistration),
        (base - PAGE, 18 * PAGE, RangeError::OutOfRegistration),
        // Far outside, above TASK_SIZE: still just outside the registration.
        (0xffff_8000_0000_0000, PAGE, RangeError::OutOfRegistration),
        // addr + len wraps around.
        (base, u64::MAX - PAGE + 1, RangeError::Overflow),
        (u64::MAX - PAGE + 1, PAGE, RangeError::Overflow),
    ];
    for (addr, len, error) in table {
        assert_eq!(r.sub_range(addr, len), Err(error), "{addr:#x}+{len:#x}");
    }
}

#[test]
fn sub_range_checks_alignment_with_the_registration_page_size() {
    let r = UserRange::new(0x10_0000, 0x10_0000, 16, TASK_SIZE).unwrap();
    assert_eq!(r.sub_range(0x11_0000, 0x2_0000), Ok(span(1, 3)));
    assert_eq!(r.sub_range(0x11_1000, 0x1_0000), Err(RangeError::Unaligned));
    assert_eq!(r.sub_range(0x11_0000, 0x1000), Err(RangeError::Unaligned));
}

#[test]
fn overlap_rounds_outwards_to_whole_pages() {
    let base = 0x10_0000;
    let end = base + 8 * PAGE;
    let r = range(base, 8 * PAGE);
    // (start, end, overlap)
    let table: [(u64, u64, Option<PageSpan>); 22] = [
        // Entirely before, touching the start, entirely after, touching the end.
        (0, base - PAGE, None),
        (0, base, None),
        (base - 1, base, None),
        (end, end + PAGE, None),
        (end, u64::MAX, None),
        (end + 1, end + 2, None),
        // The whole range and more.
        (0, u64::MAX, Some(span(0, 8))),
        (base, end, Some(span(0, 8))),
        (base - 1, end + 1, Some(span(0, 8))),
        // One byte of a page.
        (base, base + 1, Some(span(0, 1))),
        (base - 1, base + 1, Some(span(0, 1))),
        (end - 1, end, Some(span(7, 8))),
        (end - 1, end + 1, Some(span(7, 8))),
        (base + 3 * PAGE + 5, base + 3 * PAGE + 6, Some(span(3, 4))),
        // Partial pages at either edge.
        (base + 0x800, base + 2 * PAGE, Some(span(0, 2))),
        (base + PAGE, base + 2 * PAGE + 1, Some(span(1, 3))),
        (base + PAGE + 1, base + 3 * PAGE - 1, Some(span(1, 3))),
        (base + 2 * PAGE - 1, base + 2 * PAGE + 1, Some(span(1, 3))),
        // Aligned inner ranges are exact.
        (base + 2 * PAGE, base + 5 * PAGE, Some(span(2, 5))),
        // Clipped at one side.
        (0, base + 2 * PAGE, Some(span(0, 2))),
        (base + 6 * PAGE, end + 100 * PAGE, Some(span(6, 8))),
        (base + 6 * PAGE + 1, u64::MAX, Some(span(6, 8))),
    ];
    for (start, stop, expected) in table {
        assert_eq!(r.overlap(start, stop), expected, "{start:#x}..{stop:#x}");
    }
}

#[test]
fn overlap_at_the_top_of_the_address_space() {
    let top = u64::MAX - PAGE + 1;
    let r = UserRange::new(top - 4 * PAGE, 4 * PAGE, SHIFT, u64::MAX).unwrap();
    assert_eq!(r.end(), top);
    assert_eq!(r.overlap(top - 1, u64::MAX), Some(span(3, 4)));
    assert_eq!(r.overlap(0, u64::MAX), Some(span(0, 4)));
    assert_eq!(r.overlap(top, u64::MAX), None);
}

#[test]
fn overlap_of_an_empty_or_inverted_range_is_none() {
    let base = 0x10_0000;
    let r = range(base, 8 * PAGE);
    let table: [(u64, u64); 5] = [
        (base + 0x10, base + 0x10),
        (base + 3 * PAGE + 1, base + 3 * PAGE + 1),
        (base + 0x20, base + 0x10),
        (base + 3 * PAGE, base + 3 * PAGE),
        (base + 5 * PAGE, base + 2 * PAGE),
    ];
    for (start, stop) in table {
        assert_eq!(r.overlap(start, stop), None, "{start:#x}..{stop:#x}");
    }
}

#[test]
fn page_span_len() {
    assert_eq!(span(0, 1).len(), 1);
    assert_eq!(span(3, 10).len(), 7);
    assert_eq!(span(usize::MAX - 1, usize::MAX).len(), 1);
}

#[test]
fn chunks_examples() {
    type Case = (PageSpan, usize, &'static [(usize, usize)]);
    let table: [Case; 9] = [
        (span(0, 10), 4, &[(0, 4), (4, 8), (8, 10)]),
        (span(0, 8), 4, &[(0, 4), (4, 8)]),
        (span(3, 4), 4, &[(3, 4)]),
        (span(3, 7), 4, &[(3, 7)]),
        (span(3, 8), 4, &[(3, 7), (7, 8)]),
        (span(5, 8), 1, &[(5, 6), (6, 7), (7, 8)]),
        // A zero maximum is taken as one page.
        (span(5, 8), 0, &[(5, 6), (6, 7), (7, 8)]),
        (span(5, 8), usize::MAX, &[(5, 8)]),
        (
            span(usize::MAX - 5, usize::MAX),
            2,
            &[
                (usize::MAX - 5, usize::MAX - 3),
                (usize::MAX - 3, usize::MAX - 1),
                (usize::MAX - 1, usize::MAX),
            ],
        ),
    ];
    for (s, max, expected) in table {
        let got: Vec<(usize, usize)> = s.chunks(max).map(|c| (c.first, c.end)).collect();
        assert_eq!(got, expected, "{s:?} by {max}");
    }
}

#[test]
fn chunks_cover_the_span_exactly_once() {
    for first in [0, 1, 7, 100, 511, 512] {
        for len in [1, 2, 3, 63, 64, 65, 511, 512, 513, 1000, 1024] {
            for max in [1, 2, 3, 16, 64, 512, 1023, 1024, 4096] {
                let s = span(first, first + len);
                let chunks: Vec<PageSpan> = s.chunks(max).collect();
                assert_eq!(chunks.len(), len.div_ceil(max), "{s:?} by {max}");
                let mut next = first;
                for (k, c) in chunks.iter().enumerate() {
                    assert_eq!(c.first, next, "{s:?} by {max}: chunk {k} is not adjacent");
                    assert!(c.end > c.first, "{s:?} by {max}: chunk {k} is empty");
                    if k + 1 < chunks.len() {
                        assert_eq!(c.len(), max, "{s:?} by {max}: inner chunk {k} is short");
                    } else {
                        let tail = len - max * (chunks.len() - 1);
                        assert_eq!(c.len(), tail, "{s:?} by {max}: last chunk");
                        assert!(c.len() <= max);
                    }
                    next = c.end;
                }
                assert_eq!(next, s.end, "{s:?} by {max}: not covered to the end");
            }
        }
    }
}

#[test]
fn sub_range_chunks_map_back_to_addresses() {
    // What a fault does: sub_range, then chunks, then addr_of for each chunk.
    let base = 0x7f00_0000_0000;
    let r = range(base, 1000 * PAGE);
    let s = r.sub_range(base + 10 * PAGE, 600 * PAGE).unwrap();
    let mut addr = base + 10 * PAGE;
    for c in s.chunks(256) {
        assert_eq!(r.addr_of(c.first), addr);
        addr = r.addr_of(c.end);
    }
    assert_eq!(addr, base + 610 * PAGE);
}

// dma_segments ------------------------------------------------------------------------------

use crate::range::{dma_segments, DmaSeg};

fn segs(addr: u64, len: usize, pages: &[u64]) -> Vec<DmaSeg> {
    dma_segments(addr, len, PAGE, pages).as_slice().to_vec()
}

#[test]
fn dma_segments_within_one_page() {
    let base = 0x10_0000;
    assert_eq!(
        segs(base + 0x100, 0x200, &[0xa000]),
        vec![DmaSeg {
            dma_addr: 0xa100,
            len: 0x200
        }]
    );
    assert_eq!(
        segs(base, PAGE as usize, &[0xa000]),
        vec![DmaSeg {
            dma_addr: 0xa000,
            len: 4096
        }]
    );
}

#[test]
fn dma_segments_across_contiguous_pages_merge() {
    let addr = 0x10_0000 + 0xf00;
    assert_eq!(
        segs(addr, 0x400, &[0xa000, 0xb000]),
        vec![DmaSeg {
            dma_addr: 0xaf00,
            len: 0x400
        }]
    );
}

#[test]
fn dma_segments_across_scattered_pages_split() {
    let addr = 0x10_0000 + 0xf00;
    assert_eq!(
        segs(addr, 0x400, &[0xa000, 0x5000]),
        vec![
            DmaSeg {
                dma_addr: 0xaf00,
                len: 0x100
            },
            DmaSeg {
                dma_addr: 0x5000,
                len: 0x300
            },
        ]
    );
}

#[test]
fn dma_segments_cover_exactly_len() {
    for offset in [0u64, 1, 0x7ff, 0xfff] {
        for len in [1usize, 100, 4095, 4096] {
            let total: usize = segs(0x20_0000 + offset, len, &[0x1000, 0x9000])
                .iter()
                .map(|s| s.len)
                .sum();
            assert_eq!(total, len, "offset {offset:#x} len {len}");
        }
    }
}

#[test]
fn dma_segments_stop_at_two() {
    // Never more than two segments, even if asked for more pages than a page-long access needs.
    assert!(segs(0x1000, 4096, &[0x1000, 0x9000, 0x3000]).len() <= 2);
}
