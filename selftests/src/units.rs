// SPDX-License-Identifier: GPL-2.0

//! Link units seen from the device: invalidating one page of a unit that one link call mapped
//! must leave nothing of it reachable (`src/link_plan.rs`, the unit rule), proven with raw device
//! reads of the DMA addresses; and the `lazy` group, which runs the raw-IOVA proofs on a
//! flush-queue (`iommu.strict=0`) domain.

use std::env;

use odp_hmm_uapi::*;

use crate::{
    check, check_eq,
    ktap::{
        Test,
        TestResult, //
    },
    odp, skip,
    util::*,
};

/// Tests for the `odp` group.
pub const TESTS: &[&Test] = &[&Test {
    name: "invalidate_one_page_of_coalesced_unit",
    run: one_page_of_a_unit,
}];

/// The `lazy` group: the module loaded on a DMA-FQ domain (scripts/test.sh boots with
/// `iommu.strict=0`), once in IOVA mode and once with `backend=legacy` (`dma_map_phys()`).
pub const LAZY: &[&Test] = &[
    &Test {
        name: "lazy_domain_is_dma_fq",
        run: lazy_domain,
    },
    &Test {
        name: "raw_iova_faults_after_invalidation",
        run: odp::raw_iova_after_invalidation,
    },
    &Test {
        name: "invalidate_one_page_of_coalesced_unit",
        run: one_page_of_a_unit,
    },
];

/// The largest unit of order-0 pages the Rust manager links (`link_plan::MAX_RUN_ORDER`).
const MAX_RUN_ORDER: u32 = 6;

/// Pages on each side of the unit that the survey reads too.
const MARGIN: usize = 8;

/// Bytes the survey reads of each page: enough to tell every page apart (see [`mark_page`]),
/// few enough that one buffer holds the whole survey.
const CHUNK: usize = 32;

/// The page the test invalidates: in the middle of the fourth unit of 64 pages.
const TARGET: usize = 3 * 64 + 37;

fn lazy_domain() -> TestResult {
    let dev = Device::open()?;
    let info = dev.info()?;
    check_eq!(
        domain_name(info.domain_type),
        domain_name(ODP_HMM_DOMAIN_DMA_FQ),
        "the DMA device's domain with iommu.strict=0"
    );
    let m = Mapping::anon(page_size())?;
    let reg = dev.register(m.addr(), m.len() as u64, RW, 0)?;
    let args = env::var("ODP_HMM_MODULE_ARGS").unwrap_or_default();
    let want = if args.split_whitespace().any(|a| a == "backend=legacy") {
        ODP_HMM_DMA_MODE_MAP
    } else {
        ODP_HMM_DMA_MODE_IOVA
    };
    println!(
        "# {}: {} backend, {} mode",
        IommuModel::of(&info.pci_address()),
        backend_name(reg.backend),
        dma_mode_name(reg.dma_mode)
    );
    check_eq!(
        dma_mode_name(reg.dma_mode),
        dma_mode_name(want),
        "DMA mode for module arguments {args:?}"
    );
    dev.unregister(reg.handle)?;
    Ok(())
}

/// The first [`CHUNK`] bytes of page `i` of `m`.
fn head(m: &Mapping, i: usize) -> Vec<u8> {
    let at = i * page_size();
    m.bytes()[at..at + CHUNK].to_vec()
}

/// A 2 MiB THP whose PMD is split: its 512 pages are PTE-mapped and physically contiguous, so a
/// write fault hands the manager order-0 pages it links as aligned blocks of 64 (order 6).
fn split_thp() -> Result<Option<Mapping>, crate::ktap::Outcome> {
    let ps = page_size();
    let n = HUGE / ps;
    let mut m = Mapping::anon_huge(HUGE)?;
    for i in 0..n {
        mark_page(&mut m.bytes_mut()[i * ps..(i + 1) * ps], 0x3c, i);
    }
    let huge_kb = smaps_kb(m.addr(), "AnonHugePages").unwrap_or(0);
    if huge_kb < (HUGE / 1024) as u64 {
        return Ok(None);
    }
    // mprotect of one page cannot keep a PMD mapping: the kernel splits it into PTEs (and
    // merges the VMA back on the second call); the folio itself stays whole.
    let last = (n - 1) * ps;
    m.protect(last, ps, libc::PROT_READ)?;
    m.protect(last, ps, libc::PROT_READ | libc::PROT_WRITE)?;
    // khugepaged must not collapse it again during the test (into a new, copied huge page).
    m.advise(0, HUGE, libc::MADV_NOHUGEPAGE)?;
    check_eq!(
        smaps_kb(m.addr(), "AnonHugePages"),
        Some(0),
        "kB still PMD-mapped after the split"
    );
    let pfns = (0..n)
        .map(|i| pfn_of(m.addr() + (i * ps) as u64))
        .collect::<Result<Vec<_>, _>>()?;
    check!(
        pfns[0] % n as u64 == 0
            && pfns
                .iter()
                .enumerate()
                .all(|(i, &p)| p == pfns[0] + i as u64),
        "the split pages are not the one aligned 2 MiB folio (pfns {:#x}..)",
        pfns[0]
    );
    Ok(Some(m))
}

/// Invalidates one page in the middle of a coalesced unit (`MADV_DONTNEED`: the old page stays
/// allocated in the large folio with its old bytes, so a stale link would return them) and reads
/// every page of the unit and 8 pages on each side through their DMA addresses: each is either
/// still mapped with its bytes, or unmapped and unreadable; never stale.
fn one_page_of_a_unit() -> TestResult {
    if !thp_enabled() {
        skip!("transparent huge pages are not available");
    }
    let dev = Device::open()?;
    let info = dev.info()?;
    if !translates(&info) {
        skip!(
            "the DMA device's domain is {}: a DMA address is a physical address, nothing to prove",
            domain_name(info.domain_type)
        );
    }
    let probe = RawProbe::new(&dev)?;
    let model = IommuModel::of(&info.pci_address());
    let ps = page_size();
    let n = HUGE / ps;
    let Some(m) = split_thp()? else {
        skip!("the kernel gave no THP for a 2 MiB-aligned MADV_HUGEPAGE range");
    };
    let reg = dev.register(m.addr(), HUGE as u64, RW, 0)?;
    dev.fault(reg.handle, m.addr(), HUGE as u64, ODP_HMM_FAULT_WRITE)?;
    let before = dev.snapshot(reg.handle, m.addr(), n)?;
    check_eq!(
        mapped(&before).len(),
        n,
        "pages mapped by the write fault ({})",
        flags_str(&before)
    );
    let orders: Vec<u32> = before.iter().map(|p| p.order).collect();
    if reg.backend == ODP_HMM_BACKEND_RUST && reg.dma_mode == ODP_HMM_DMA_MODE_IOVA {
        // Contiguous, aligned, one class: linked as blocks of the largest order a run may have.
        check!(
            orders.iter().all(|&o| o == MAX_RUN_ORDER),
            "orders of the split THP's pages: {orders:?}"
        );
    } else {
        let mut seen = orders.clone();
        seen.dedup();
        println!(
            "# {} backend, {} mode: unit orders {seen:?}",
            backend_name(reg.backend),
            dma_mode_name(reg.dma_mode)
        );
    }
    let order = before[TARGET].order;
    let unit_len = 1usize << order;
    let unit = (TARGET & !(unit_len - 1))..(TARGET & !(unit_len - 1)) + unit_len;
    check!(
        unit.clone().all(|i| before[i].order == order),
        "the pages of page {TARGET}'s unit {unit:?} disagree on its order: {:?}",
        &orders[unit.clone()]
    );
    if reg.dma_mode == ODP_HMM_DMA_MODE_IOVA {
        for (i, p) in before.iter().enumerate() {
            check_eq!(
                p.dma_addr,
                reg.iova_base + (i * ps) as u64,
                "IOVA of page {i}"
            );
        }
    }
    // The invalidated page first: its fault is the one the log must show.
    let survey: Vec<usize> = std::iter::once(TARGET)
        .chain(
            (unit.start.saturating_sub(MARGIN)..(unit.end + MARGIN).min(n))
                .filter(|&i| i != TARGET),
        )
        .collect();
    check!(
        survey.len() * CHUNK <= ODP_HMM_DMA_MAX_LEN as usize,
        "the survey does not fit the device buffer"
    );
    let old: Vec<Vec<u8>> = survey.iter().map(|&i| head(&m, i)).collect();
    let read_survey = || -> std::io::Result<Vec<u8>> {
        probe.fill_sentinel()?;
        for (k, &i) in survey.iter().enumerate() {
            probe.raw(before[i].dma_addr, k * CHUNK, CHUNK)?;
        }
        probe.buffer()
    };

    // While everything is mapped, every read returns its page (and leaves each translation in
    // the IOMMU's IOTLB, where a missing flush would keep it).
    let buf = read_survey()?;
    for (k, &i) in survey.iter().enumerate() {
        check!(
            buf[k * CHUNK..(k + 1) * CHUNK] == old[k][..],
            "page {i}: raw read of its mapped DMA address {:#x} returned other bytes",
            before[i].dma_addr
        );
    }

    m.advise(TARGET * ps, ps, libc::MADV_DONTNEED)?;
    let after = dev.snapshot(reg.handle, m.addr(), n)?;
    let kept: Vec<usize> = unit
        .clone()
        .filter(|&i| after[i].flags & ODP_HMM_PAGE_DMA_MAPPED != 0)
        .collect();
    check!(
        kept.is_empty(),
        "pages of the invalidated page's unit {unit:?} still mapped: {kept:?} ({})",
        flags_str(&after[unit.clone()])
    );
    let target_addr = before[TARGET].dma_addr;
    let (buf, log) = expecting_iommu_fault(&model, target_addr, read_survey);
    let buf = buf?;
    check!(
        log != FaultLog::Missing,
        "{model}: no IOMMU fault was logged for the unmapped DMA address {target_addr:#x}"
    );
    let mut refused = 0;
    for (k, &i) in survey.iter().enumerate() {
        let got = &buf[k * CHUNK..(k + 1) * CHUNK];
        if after[i].flags & ODP_HMM_PAGE_DMA_MAPPED != 0 {
            check_eq!(
                after[i].dma_addr,
                before[i].dma_addr,
                "page {i}: DMA address of a page that stayed mapped"
            );
            check!(
                got == &old[k][..],
                "page {i}: still mapped, but the device read other bytes through {:#x}",
                before[i].dma_addr
            );
        } else {
            check!(
                got != &old[k][..],
                "page {i}: unmapped, yet the device read its old bytes through {:#x}",
                before[i].dma_addr
            );
            refused += 1;
        }
    }
    println!(
        "# {model}: page {TARGET} invalidated, its unit {unit:?} (order {order}) unmapped; {refused} \
         of {} surveyed pages unmapped and unreadable ({}), the rest mapped with their bytes; \
         {}",
        survey.len(),
        describe_refused_read(&buf[..CHUNK], &probe.sentinel()[..CHUNK]),
        match log {
            FaultLog::Reported => "IOMMU fault reported",
            _ => "no fault report",
        }
    );

    // The device refaults what it needs: the discarded page reads as zeros, its unit's other
    // pages as they were.
    let faults = copy_in(&dev, &m, &reg, TARGET * ps, 0, ps)?;
    check!(faults >= 1, "the device did not refault page {TARGET}");
    check!(
        m.bytes()[..ps].iter().all(|&b| b == 0),
        "device read of the discarded page {TARGET}"
    );
    copy_and_check(&dev, &m, &reg, TARGET + 1, 1)?;
    dev.unregister(reg.handle)?;
    Ok(())
}
