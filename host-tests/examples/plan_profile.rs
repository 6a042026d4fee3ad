// SPDX-License-Identifier: GPL-2.0

//! A host microbenchmark of the per-page work of committing a fault batch (the state words and
//! the link planning of `src/link_plan.rs`), for a profiler: what the module's timers call
//! "state words and planning" (`map_ns - link_ns - sync_ns`), without the DMA calls.
//!
//! It runs the Rust manager's commit of a batch of ordinary memory (`commit_memory`, as
//! `commit_own` calls it) and the floor's (`commit_unmapped`), on
//! 512-page batches as `hmm_range_fault()` reports them, for a region of THP, physically
//! contiguous 4 KiB pages or scattered ones, then forgets everything. The DMA calls are a no-op
//! [`MapOps`]. Repeatable instruction counts:
//!
//! ```text
//! cargo build --release -p odp-hmm-host-tests --example plan_profile
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/examples/plan_profile thp rust
//! callgrind_annotate /tmp/cg.out | head -30
//! ```
//!
//! Arguments: `thp|contiguous|fragmented`, `rust|floor` (default `thp rust`), and `single` for
//! batches of one page (a NIC's 1-page faults) instead of 512; it prints the
//! instructions' worth of work as nanoseconds per page of wall time on this host, which is a
//! rough guide only (under the VM's TCG every instruction costs many).

#![allow(dead_code)]

#[path = "../../src/pfn_flags.rs"]
mod pfn_flags;

#[path = "../../src/link_plan.rs"]
mod link_plan;

use std::{hint::black_box, time::Instant};

use link_plan::{Grouping, Link, MapOps, Unlink};
use pfn_flags::HmmPfn;

/// Pages per fault batch (`FAULT_BATCH` in `src/odp_umem.rs`).
const BATCH: usize = 512;
/// Pages in the region: 64 MiB of 4 KiB pages.
const PAGES: usize = 16384;
/// Rounds, for a measurable wall time.
const ROUNDS: usize = 200;

/// DMA calls that do nothing (their cost is the module's `link_ns` and `sync_ns`).
struct NoDma {
    links: u64,
}

impl MapOps for NoDma {
    type Error = ();

    fn link(&mut self, links: &[Link]) -> (usize, Result<(), ()>) {
        self.links += links.len() as u64;
        (links.len(), Ok(()))
    }

    fn sync(&mut self, _first: usize, _end: usize) -> Result<(), ()> {
        Ok(())
    }

    fn unlink(&mut self, unlink: &Unlink) {
        black_box(unlink);
    }

    fn dirty(&mut self, pfn: u64) {
        black_box(pfn);
    }
}

/// What `hmm_range_fault()` reports for the region: writable pages, 2 MiB folios mapped by PMD
/// (order 9), contiguous order-0 pages, or order-0 pages in descending, scattered frames.
fn hmm_words(kind: &str) -> Vec<u64> {
    let base = 0x10_0000u64;
    (0..PAGES as u64)
        .map(|i| {
            let (pfn, order) = match kind {
                "thp" => (base + i, 9),
                "contiguous" => (base + i, 0),
                _ => (base + 2 * (PAGES as u64 - i), 0),
            };
            HmmPfn::new_valid(pfn, true, order).raw()
        })
        .collect()
}

/// The Rust manager's commit of one batch of ordinary memory (`HmmDmaMap::commit` with
/// `commit_own`): returns the pages valid afterwards.
fn commit_rust(
    g: &Grouping,
    states: &mut [HmmPfn],
    first: usize,
    faulted: &[u64],
    links: &mut [Link],
    ops: &mut NoDma,
) -> usize {
    let (_, mapped, result) = g.commit_memory(states, first, faulted, true, links, ops);
    assert!(result.is_ok() && mapped.pages == faulted.len());
    mapped.already + mapped.pages
}

/// The floor's commit of one batch (`commit_unmapped`).
fn commit_floor(states: &mut [HmmPfn], first: usize, faulted: &[u64]) -> usize {
    let mut valid = 0;
    for (slot, &word) in states[first..first + faulted.len()].iter_mut().zip(faulted) {
        let new = HmmPfn::from_raw(word);
        *slot = if new.is_valid() && !new.is_error() {
            valid += 1;
            HmmPfn::new_valid(new.pfn(), new.is_writable(), new.order())
        } else {
            HmmPfn::EMPTY
        };
    }
    valid
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = args.first().map_or("thp", String::as_str);
    let variant = args.get(1).map_or("rust", String::as_str);
    let single = args.get(2).is_some_and(|a| a == "single");
    if !["thp", "contiguous", "fragmented"].contains(&kind) || !["rust", "floor"].contains(&variant)
    {
        eprintln!("usage: plan_profile [thp|contiguous|fragmented] [rust|floor] [single]");
        std::process::exit(2);
    }
    let words = hmm_words(kind);
    // The region starts 2 MiB-aligned, as the benchmark's does.
    let g = Grouping {
        first_vpn: 0x7f00_0000_0000 >> 12,
        folio_units: true,
        coalesce: true,
    };
    let mut states = vec![HmmPfn::EMPTY; PAGES];
    let mut links = vec![Link::default(); BATCH];
    let mut ops = NoDma { links: 0 };
    let mut valid = 0;
    // `single`: one page per batch, as a NIC's 1-page faults come.
    let batch_len = if single { 1 } else { BATCH };
    let start = Instant::now();
    for _ in 0..ROUNDS {
        for first in (0..PAGES).step_by(batch_len) {
            let batch = &words[first..first + batch_len];
            let v = match variant {
                "rust" => commit_rust(&g, &mut states, first, batch, &mut links, &mut ops),
                _ => commit_floor(&mut states, first, batch),
            };
            valid += v;
        }
        black_box(&states);
        // Forgotten without unlinks: the unmap is the invalidation's cost, not the fault's.
        states.fill(HmmPfn::EMPTY);
    }
    let took = start.elapsed();
    assert_eq!(valid, ROUNDS * PAGES);
    println!(
        "{kind} {variant}: {:.2} ns/page committed ({} links per round)",
        took.as_nanos() as f64 / (ROUNDS * PAGES) as f64,
        ops.links / ROUNDS as u64
    );
}
