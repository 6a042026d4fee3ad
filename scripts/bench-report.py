#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Turns odp_hmm_bench's JSON records into the benchmark report.

Usage: bench-report.py OUT_DIR BENCH_JSON... [--title TEXT] [--note TEXT]...

Reads the records of one or more VM runs (one per IOMMU configuration), writes
OUT_DIR/bench.json (all records), OUT_DIR/summary.md (the targets table, a summary row per IOMMU
configuration, then per-IOMMU tables) and OUT_DIR/bench-<iommu>.png (one figure per IOMMU
configuration), and prints the summary. Every ratio pairs the variants of one repetition (they
ran interleaved, on the same machine state) and is given as the median over the repetitions,
with the minimum and maximum in parentheses. Exits non-zero if a record set is malformed.
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

VARIANTS = ["rust", "kernel", "legacy", "none", "pinned"]
LABEL = {"rust": "ours", "kernel": "kernel", "legacy": "legacy", "none": "floor", "pinned": "pinned"}
MEMORY = ["contiguous", "fragmented", "thp", "hugetlb"]
MEMORY_LABEL = {
    "contiguous": "4 KiB contiguous",
    "fragmented": "4 KiB fragmented",
    "thp": "THP",
    "hugetlb": "hugetlbfs 2 MiB",
}
# The report order of the IOMMU configurations: the bare-metal-like one first.
IOMMU_ORDER = ["intel", "intel-cm", "amd", "virtio"]
IOMMU_LABEL = {
    "intel": "Intel VT-d, caching-mode=off (bare-metal-like: no flush on map)",
    "intel-cm": "Intel VT-d, caching-mode=on (a vIOMMU: every map flushed)",
    "amd": "AMD-Vi (v1 page table; strict, as the kernel forces in a VM)",
    "virtio": "virtio-iommu (one request per map and unmap)",
}
MODE_ORDER = ["strict", "lazy", "passthrough"]
REQUIRED = {"iommu", "mode", "memory", "fault_pages", "variant", "test", "rep"}


def die(msg):
    sys.exit(f"bench-report: {msg}")


def stats3(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return (min(values), statistics.median(values), max(values))


def fmt3(t, unit="x", prec=2):
    if t is None:
        return "n/a"
    return f"{t[1]:.{prec}f}{unit} ({t[0]:.{prec}f}-{t[2]:.{prec}f})"


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, prec=0, unit=""):
    return "n/a" if v is None else f"{v:.{prec}f}{unit}"


def met(ok):
    return "met" if ok else "**missed**"


class Records:
    def __init__(self, records):
        self.all = records
        # (test, iommu, mode, memory, fault_pages, extra) -> rep -> variant -> record
        self.runs = defaultdict(lambda: defaultdict(dict))
        for r in records:
            key = (r["test"], r["iommu"], r["mode"], r["memory"], r["fault_pages"], r.get("threads", 0))
            self.runs[key][r["rep"]][r["variant"]] = r

    def select(self, **kw):
        return [r for r in self.all if all(r.get(k) == v for k, v in kw.items())]

    def ratio(self, test, iommu, mode, memory, fp, num, den, value, threads=0):
        """num/den of value(record) per repetition, as (min, median, max)."""
        out = []
        for by in self.runs.get((test, iommu, mode, memory, fp, threads), {}).values():
            if num in by and den in by:
                a, b = value(by[num]), value(by[den])
                if a is not None and b:
                    out.append(a / b)
        return stats3(out)

    def median_of(self, value, **kw):
        return med([value(r) for r in self.select(**kw)])


def per_page(key):
    return lambda r: r[key] / r["pages"] if r.get(key) is not None else None


def first_touch(r):
    """Registration plus the whole-region fault: what the device's first use of the memory costs."""
    return (r["register_ns"] + r["fault_wall_ns"]) / r["pages"]


def book_ns(r):
    return (r["map_ns"] - r["link_ns"] - r["sync_ns"]) / r["pages"]


def whole_fp(recs, iommu, mode, memory):
    rs = recs.select(test="region", iommu=iommu, mode=mode, memory=memory)
    return rs[0]["fault_pages"] if rs else None


def region_ratio(recs, iommu, mode, memory, num, den, value=per_page("fault_wall_ns")):
    fp = whole_fp(recs, iommu, mode, memory)
    if fp is None:
        return None
    return recs.ratio("region", iommu, mode, memory, fp, num, den, value)


def fault_ratio(recs, iommu, mode, memory, fp, num, den, key="latency_median_us"):
    return recs.ratio("faults", iommu, mode, memory, fp, num, den, lambda r: r[key])


def configs(recs):
    """(iommu, mode) pairs present, bare-metal-like first."""
    pairs = {(r["iommu"], r["mode"]) for r in recs.all}
    order = lambda p: (
        IOMMU_ORDER.index(p[0]) if p[0] in IOMMU_ORDER else 99,
        MODE_ORDER.index(p[1]) if p[1] in MODE_ORDER else 99,
    )
    return sorted(pairs, key=order)


def domain_of(recs, iommu, mode):
    ds = {r.get("domain", "?") for r in recs.select(iommu=iommu, mode=mode)}
    return "/".join(sorted(ds))


def translating(recs, iommu, mode):
    return domain_of(recs, iommu, mode) in ("DMA", "DMA-FQ")


def profile_sentence(recs, iommu, mode, memory):
    """One sentence: how our and the floor's fault time split, per page, at one point."""

    def split(variant):
        rs = recs.select(test="region", iommu=iommu, mode=mode, memory=memory, variant=variant)
        if not rs:
            return None
        m = lambda f: statistics.median(f(r) for r in rs)
        return {
            "wall": m(lambda r: r["fault_wall_ns"] / r["pages"]),
            "hmm": m(lambda r: r["fault_ns"] / r["pages"]),
            "link": m(lambda r: r["link_ns"] / r["pages"]),
            "sync": m(lambda r: r["sync_ns"] / r["pages"]),
            "book": m(book_ns),
            "links": m(lambda r: r["link_calls"] / r["pages"]),
        }

    o, f = split("rust"), split("none")
    if not o or not f:
        return ""
    anchor = recs.select(test="dma_map_benchmark", iommu=iommu, mode=mode, fault_pages=1)
    a = f" (one `dma_map_single()` of a page: {anchor[0]['map_us'] * 1e3:.0f} ns)" if anchor else ""
    return (
        f"Profile ({IOMMU_SHORT(iommu)} {mode}, {MEMORY_LABEL[memory]}, module timers, ns per page, median): "
        f"ours {o['wall']:.0f} = hmm_range_fault {o['hmm']:.0f} + link calls {o['link']:.0f} "
        f"({o['links']:.3f} calls per page{a}) + IOTLB sync {o['sync']:.0f} + state words and planning "
        f"{o['book']:.0f} + the rest (syscall, locking) {max(0.0, o['wall'] - o['hmm'] - o['link'] - o['sync'] - o['book']):.0f}; "
        f"the floor {f['wall']:.0f} = hmm_range_fault {f['hmm']:.0f} + state words {f['book']:.0f} + the rest "
        f"{max(0.0, f['wall'] - f['hmm'] - f['book']):.0f}."
    )


def IOMMU_SHORT(iommu):
    return {"intel": "intel cm=off", "intel-cm": "intel cm=on", "amd": "amd", "virtio": "virtio"}.get(iommu, iommu)


def targets(recs):
    """The issue's targets table rows: (target, configuration, figure, verdict, note)."""
    rows = []
    strict = [(i, m) for (i, m) in configs(recs) if m == "strict" and translating(recs, i, m)]
    # "Any IOMMU": every configuration measured, passthrough included.
    allcfg = configs(recs)

    # THP: >= 10x the kernel on every translating IOMMU, <= 1.5x the floor.
    for iommu, mode in strict:
        vk = region_ratio(recs, iommu, mode, "thp", "kernel", "rust")
        vf = region_ratio(recs, iommu, mode, "thp", "rust", "none")
        ok = vk is not None and vk[1] >= 10
        rows.append(("THP: ours >= 10x kernel", f"{IOMMU_SHORT(iommu)} {mode}", fmt3(vk), met(ok),
                     "" if ok else profile_sentence(recs, iommu, mode, "thp")))
        ok = vf is not None and vf[1] <= 1.5
        rows.append(("THP: ours <= 1.5x floor", f"{IOMMU_SHORT(iommu)} {mode}", fmt3(vf), met(ok),
                     "" if ok else profile_sentence(recs, iommu, mode, "thp")))
    # 4 KiB contiguous, caching-mode=off.
    for mode in ("strict",):
        if ("intel", mode) not in configs(recs):
            continue
        vk = region_ratio(recs, "intel", mode, "contiguous", "kernel", "rust")
        vf = region_ratio(recs, "intel", mode, "contiguous", "rust", "none")
        ok = vk is not None and vk[1] >= 2.5
        rows.append(("4 KiB contiguous: ours >= 2.5x kernel", f"intel cm=off {mode}", fmt3(vk), met(ok),
                     "" if ok else profile_sentence(recs, "intel", mode, "contiguous")))
        ok = vf is not None and vf[1] <= 2.0
        rows.append(("4 KiB contiguous: ours <= 2.0x floor", f"intel cm=off {mode}", fmt3(vf), met(ok),
                     "" if ok else profile_sentence(recs, "intel", mode, "contiguous")))
    # 4 KiB fragmented and 1-page faults: never slower than the kernel.
    for iommu, mode in allcfg:
        vk = region_ratio(recs, iommu, mode, "fragmented", "kernel", "rust")
        ok = vk is not None and vk[1] >= 1.0
        rows.append(("4 KiB fragmented: ours >= 1.0x kernel", f"{IOMMU_SHORT(iommu)} {mode}", fmt3(vk), met(ok),
                     "" if ok else profile_sentence(recs, iommu, mode, "fragmented")))
        for memory in ("contiguous", "fragmented"):
            v1 = fault_ratio(recs, iommu, mode, memory, 1, "kernel", "rust")
            if v1 is None:
                continue
            ok = v1[1] >= 1.0
            rows.append((f"1-page faults ({MEMORY_LABEL[memory]}, median latency): ours >= 1.0x kernel",
                         f"{IOMMU_SHORT(iommu)} {mode}", fmt3(v1, prec=3), met(ok), "" if ok else fault_note(recs, iommu, mode, memory)))
    # virtio-iommu: >= 5x for 4 KiB contiguous.
    if ("virtio", "strict") in configs(recs):
        vk = region_ratio(recs, "virtio", "strict", "contiguous", "kernel", "rust")
        ok = vk is not None and vk[1] >= 5
        rows.append(("virtio-iommu 4 KiB contiguous: ours >= 5x kernel", "virtio strict", fmt3(vk), met(ok),
                     "" if ok else profile_sentence(recs, "virtio", "strict", "contiguous")))
    # Bookkeeping.
    bpp = [r["bookkeeping_bytes"] / r["pages"] for r in recs.select(test="region", variant="rust") if r["dma_mode"] == "iova"]
    if bpp:
        b = max(bpp)
        rows.append(("Bookkeeping in IOVA mode <= 8 B/page", "every IOVA-mode run", f"{b:.1f} B/page", met(b <= 8), ""))
    # State words and planning, THP: ours against the floor's state words.
    for iommu, mode in strict[:1]:
        o = recs.median_of(book_ns, test="region", iommu=iommu, mode=mode, memory="thp", variant="rust")
        f = recs.median_of(book_ns, test="region", iommu=iommu, mode=mode, memory="thp", variant="none")
        rows.append(("THP state words and planning (was 66 ns/page, floor 30)", f"{IOMMU_SHORT(iommu)} {mode}",
                     f"ours {fmt(o)} ns/page, floor {fmt(f)}", "(profiled)", ""))
    return rows


def fault_note(recs, iommu, mode, memory):
    rs = {v: recs.select(test="faults", iommu=iommu, mode=mode, memory=memory, fault_pages=1, variant=v) for v in ("rust", "kernel", "none")}
    m = lambda v, f: med([f(r) for r in rs[v]]) if rs[v] else None
    per_call = lambda key: (lambda r: r[key] / max(1, r["calls"]) / 1e3)
    lat = lambda v: m(v, lambda r: r["latency_median_us"])
    return (
        f"Per 1-page call (median over repetitions, module timers, µs): ours {fmt(lat('rust'), 2)} in all = "
        f"hmm_range_fault {fmt(m('rust', per_call('fault_ns')), 2)} + mapping {fmt(m('rust', per_call('map_ns')), 2)} "
        f"+ the rest (syscall, locking); the kernel's {fmt(lat('kernel'), 2)} = hmm_range_fault "
        f"{fmt(m('kernel', per_call('fault_ns')), 2)} + mapping {fmt(m('kernel', per_call('map_ns')), 2)} + the rest; "
        f"the floor's mapping {fmt(m('none', per_call('map_ns')), 2)}. A 1-page fault is one link (or "
        f"`dma_map_phys()`) and one sync for both: the mapping figures show what each does around that call, "
        f"the rest is the same code for both (the min-max of the ratio shows the run's noise)."
    )


def config_summary_rows(recs):
    rows = []
    for iommu, mode in configs(recs):
        fr = lambda m: fmt3(region_ratio(recs, iommu, mode, m, "kernel", "rust"), prec=1)
        fl = lambda m: fmt3(region_ratio(recs, iommu, mode, m, "rust", "none"), prec=1)
        f1 = fmt3(fault_ratio(recs, iommu, mode, "contiguous", 1, "kernel", "rust"), prec=2)
        anchors = {r["fault_pages"]: r for r in recs.select(test="dma_map_benchmark", iommu=iommu, mode=mode)}
        a = lambda g: f"{anchors[g]['map_us']:.1f}" if g in anchors else "n/a"
        rows.append(
            f"| {IOMMU_SHORT(iommu)} | {mode} ({domain_of(recs, iommu, mode)}) | {fr('contiguous')} | {fr('fragmented')} | {fr('thp')} "
            f"| {fr('hugetlb')} | {fl('contiguous')} | {fl('thp')} | {f1} | {a(1)} / {a(512)} |"
        )
    return rows


def mean_runs(recs, iommu):
    out = {}
    for m in MEMORY:
        v = med([r.get("mean_run") for r in recs.select(test="region", iommu=iommu, memory=m)])
        if v is not None:
            out[m] = v
    return out


def section(recs, iommu, mode, png):
    L = [f"### {IOMMU_LABEL.get(iommu, iommu)}: {mode} (IOMMU group type {domain_of(recs, iommu, mode)})", ""]
    # Whole region.
    L += [
        "Whole region, one fault call (ns per page, median over repetitions; ratios per repetition):",
        "",
        "| memory | mean phys. run | ours | kernel | legacy | floor | vs kernel | vs legacy | cost vs floor | pinned registration | first touch: pinned vs ours |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in MEMORY:
        rs = recs.select(test="region", iommu=iommu, mode=mode, memory=m)
        if not rs:
            continue
        w = lambda v: fmt(recs.median_of(per_page("fault_wall_ns"), test="region", iommu=iommu, mode=mode, memory=m, variant=v))
        run = med([r.get("mean_run") for r in rs])
        pin_reg = recs.median_of(per_page("register_ns"), test="region", iommu=iommu, mode=mode, memory=m, variant="pinned")
        ft = region_ratio(recs, iommu, mode, m, "pinned", "rust", first_touch)
        L.append(
            f"| {MEMORY_LABEL[m]} | {fmt(run, 1)} | {w('rust')} | {w('kernel')} | {w('legacy')} | {w('none')} "
            f"| {fmt3(region_ratio(recs, iommu, mode, m, 'kernel', 'rust'))} "
            f"| {fmt3(region_ratio(recs, iommu, mode, m, 'legacy', 'rust'))} "
            f"| {fmt3(region_ratio(recs, iommu, mode, m, 'rust', 'none'))} | {fmt(pin_reg)} | {fmt3(ft)} |"
        )
    L.append("")
    # Calls and time split.
    L += [
        "Where the whole-region fault time goes (ns per page, module timers, median) and the calls made:",
        "",
        "| memory | variant | hmm_range_fault | link | IOTLB sync | state words and planning | links per MiB | syncs per MiB | bookkeeping B/page |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in MEMORY:
        for v in ("rust", "kernel", "legacy", "none"):
            rs = recs.select(test="region", iommu=iommu, mode=mode, memory=m, variant=v)
            if not rs:
                continue
            g = lambda f: med([f(r) for r in rs])
            mib = lambda r: r["size"] / (1 << 20)
            L.append(
                f"| {MEMORY_LABEL[m]} | {LABEL[v]} | {fmt(g(per_page('fault_ns')))} | {fmt(g(per_page('link_ns')))} "
                f"| {fmt(g(per_page('sync_ns')))} | {fmt(g(book_ns))} | {fmt(g(lambda r: r['link_calls'] / mib(r)), 1)} "
                f"| {fmt(g(lambda r: r['sync_calls'] / mib(r)), 2)} | {fmt(g(lambda r: r['bookkeeping_bytes'] / r['pages']), 1)} |"
            )
    L.append("")
    # Small faults.
    fps = sorted({r["fault_pages"] for r in recs.select(test="faults", iommu=iommu, mode=mode)})
    if fps:
        L += [
            "Faults of N pages per call at random offsets (latency per call in µs: median / p99; speed-up: the kernel's median over ours, per repetition):",
            "",
            "| memory | pages per call | calls | ours | kernel | legacy | floor | vs kernel | ours ns/page |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in MEMORY:
            for fp in fps:
                rs = recs.select(test="faults", iommu=iommu, mode=mode, memory=m, fault_pages=fp)
                if not rs:
                    continue
                lat = lambda v: (
                    f"{fmt(recs.median_of(lambda r: r['latency_median_us'], test='faults', iommu=iommu, mode=mode, memory=m, fault_pages=fp, variant=v), 1)} / "
                    f"{fmt(recs.median_of(lambda r: r['latency_p99_us'], test='faults', iommu=iommu, mode=mode, memory=m, fault_pages=fp, variant=v), 1)}"
                )
                npp = recs.median_of(lambda r: r["ns_per_page"], test="faults", iommu=iommu, mode=mode, memory=m, fault_pages=fp, variant="rust")
                L.append(
                    f"| {MEMORY_LABEL[m]} | {fp} | {rs[0]['calls']} | {lat('rust')} | {lat('kernel')} | {lat('legacy')} | {lat('none')} "
                    f"| {fmt3(fault_ratio(recs, iommu, mode, m, fp, 'kernel', 'rust'))} | {fmt(npp)} |"
                )
        L.append("")
    # Invalidation.
    L += [
        "Invalidation after the whole-region fault: munmap wall time / time in the module's notifier, µs (median); "
        "the rest of the region per page, ns. A munmap that splits a mapping inside a 2 MiB block makes the kernel "
        "invalidate the whole block first, huge page or not (`vma_adjust_trans_huge()` calls `__split_huge_pmd()`, "
        "which notifies before it looks), so a 1-page munmap unmaps 512 pages in every variant; a pinned "
        "registration unmaps nothing.",
        "",
        "| memory | variant | 1 page: wall / notifier | pages unmapped | 2 MiB: wall / notifier | rest: wall / notifier ns/page |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for m in MEMORY:
        for v in VARIANTS:
            rs = recs.select(test="region", iommu=iommu, mode=mode, memory=m, variant=v)
            if not rs:
                continue
            g = lambda k, scale=1e3: med([r[k] / scale if k in r else None for r in rs])
            rest = lambda k: med([r[k] / max(1, r["pages"] - 513) for r in rs])
            L.append(
                f"| {MEMORY_LABEL[m]} | {LABEL[v]} | {fmt(g('inv_page_wall_ns'), 1)} / {fmt(g('inv_page_notifier_ns'), 1)} "
                f"| {fmt(g('inv_page_pages', 1))} | {fmt(g('inv_huge_wall_ns'), 1)} / {fmt(g('inv_huge_notifier_ns'), 1)} "
                f"| {fmt(rest('inv_rest_wall_ns'))} / {fmt(rest('inv_rest_notifier_ns'))} |"
            )
    L.append("")
    # Registration: pinned against ODP.
    L += [
        "Registration and teardown (µs, median): the pinned registration pins and maps everything up front; "
        "an ODP registration maps on first touch (the whole-region fault above).",
        "",
        "| memory | variant | register | first fault (whole region) | register + fault | unregister |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for m in MEMORY:
        for v in ("rust", "kernel", "pinned"):
            rs = recs.select(test="region", iommu=iommu, mode=mode, memory=m, variant=v)
            if not rs:
                continue
            g = lambda f: med([f(r) for r in rs])
            L.append(
                f"| {MEMORY_LABEL[m]} | {LABEL[v]} | {fmt(g(lambda r: r['register_ns'] / 1e3))} | {fmt(g(lambda r: r['fault_wall_ns'] / 1e3))} "
                f"| {fmt(g(lambda r: (r['register_ns'] + r['fault_wall_ns']) / 1e3))} | {fmt(g(lambda r: r['unregister_ns'] / 1e3))} |"
            )
    L.append("")
    # Threads.
    th = recs.select(test="threads", iommu=iommu, mode=mode)
    if th:
        L += [
            "One registration (eight times the region size) faulted by one thread (one call) or by two threads at once (one call each, disjoint halves), 2 vCPUs: wall time, ms (median), the speed-up of two threads, and the share of the one-thread time spent under the update lock (mapping):",
            "",
            "| memory | variant | 1 thread | 2 threads | speed-up | under the lock |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for m in ("contiguous", "thp"):
            for v in ("rust", "kernel", "none"):
                one = [r for r in th if (r["memory"], r["variant"], r["threads"]) == (m, v, 1)]
                two = [r for r in th if (r["memory"], r["variant"], r["threads"]) == (m, v, 2)]
                if not one or not two:
                    continue
                sp = stats3([a["fault_wall_ns"] / b["fault_wall_ns"] for a in one for b in two if a["rep"] == b["rep"]])
                lock = med([r["map_ns"] / r["fault_wall_ns"] for r in one])
                L.append(
                    f"| {MEMORY_LABEL[m]} | {LABEL[v]} | {med([r['fault_wall_ns'] / 1e6 for r in one]):.1f} "
                    f"| {med([r['fault_wall_ns'] / 1e6 for r in two]):.1f} | {fmt3(sp)} | {100 * lock:.0f}% |"
                )
        L.append("")
    # The kernel's own map benchmark.
    an = recs.select(test="dma_map_benchmark", iommu=iommu, mode=mode)
    if an:
        L += [
            "The kernel's `dma_map_benchmark` on the same device and domain (one thread, average µs per call ± standard deviation):",
            "",
            "| pages per map | dma_map_single | dma_unmap_single |",
            "|---:|---:|---:|",
        ]
        for r in sorted(an, key=lambda r: r["fault_pages"]):
            L.append(f"| {r['fault_pages']} | {r['map_us']:.1f} ± {r['map_sd_us']:.1f} | {r['unmap_us']:.1f} ± {r['unmap_sd_us']:.1f} |")
        L.append("")
    return L


def plot(recs, iommu, out_dir):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# matplotlib is not installed: no plot", file=sys.stderr)
        return None
    modes = [m for (i, m) in configs(recs) if i == iommu]
    fig, axes = plt.subplots(len(modes), 2, figsize=(13, 4.2 * len(modes)), squeeze=False)
    for row, mode in enumerate(modes):
        ax = axes[row][0]
        mems = [m for m in MEMORY if recs.select(test="region", iommu=iommu, mode=mode, memory=m)]
        width = 0.8 / len(VARIANTS)
        for k, v in enumerate(VARIANTS):
            key = first_touch if v == "pinned" else per_page("fault_wall_ns")
            ys = [recs.median_of(key, test="region", iommu=iommu, mode=mode, memory=m, variant=v) or 0 for m in mems]
            label = "pinned (registration)" if v == "pinned" else LABEL[v]
            ax.bar([x + k * width for x in range(len(mems))], ys, width, label=label)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(mems))])
        ax.set_xticklabels([MEMORY_LABEL[m] for m in mems])
        ax.set_yscale("log")
        ax.set_ylabel("ns per page (median)")
        ax.set_title(f"{IOMMU_SHORT(iommu)} {mode}: whole region, one fault")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax = axes[row][1]
        for v in ("rust", "kernel", "legacy", "none"):
            for m, style in (("contiguous", "-"), ("fragmented", "--"), ("thp", ":")):
                pts = sorted({r["fault_pages"] for r in recs.select(test="faults", iommu=iommu, mode=mode, memory=m, variant=v)})
                if not pts:
                    continue
                ys = [recs.median_of(lambda r: r["latency_median_us"], test="faults", iommu=iommu, mode=mode, memory=m, fault_pages=p, variant=v) for p in pts]
                color = {"rust": "C0", "kernel": "C1", "legacy": "C2", "none": "C3"}[v]
                ax.plot(pts, ys, style, marker="o", color=color, label=f"{LABEL[v]}, {MEMORY_LABEL[m]}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("pages per fault call (random offsets)")
        ax.set_ylabel("latency per call, µs (median)")
        ax.set_title(f"{IOMMU_SHORT(iommu)} {mode}: NIC-like faults")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path = Path(out_dir) / f"bench-{iommu}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main():
    args = sys.argv[1:]
    title = "odp_hmm benchmarks"
    notes = []
    while "--title" in args or "--note" in args:
        for flag in ("--title", "--note"):
            if flag in args:
                i = args.index(flag)
                if i + 1 >= len(args):
                    die(f"{flag} needs a value")
                if flag == "--title":
                    title = args[i + 1]
                else:
                    notes.append(args[i + 1])
                del args[i : i + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    out_dir = Path(args[0])
    records = []
    for path in args[1:]:
        try:
            part = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            die(f"{path}: {e}")
        if not isinstance(part, list) or not part:
            die(f"{path}: no records")
        for r in part:
            missing = REQUIRED - r.keys()
            if missing:
                die(f"{path}: a record lacks {sorted(missing)}: {r}")
        records += part
    recs = Records(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text("[\n" + ",\n".join(json.dumps(r, separators=(",", ":")) for r in records) + "\n]\n")

    sizes = sorted({r["size"] >> 20 for r in records if r["test"] in ("region", "faults")})
    reps = len({r["rep"] for r in records})
    L = [f"# {title}", ""]
    L += notes + ([""] if notes else [])
    L += [
        f"{len(records)} measurements; regions of {', '.join(f'{s} MiB' for s in sizes)}; {reps} repetitions, "
        "the variants interleaved (rotated per repetition); every ratio pairs the variants of one repetition and is "
        "the median over the repetitions (min-max in parentheses). Variants: **ours** (the Rust manager), **kernel** "
        "(the kernel's `hmm_dma_map_pfn()`), **legacy** (`dma_map_phys()` per page, stored address), **floor** "
        "(`hmm_range_fault()` alone, nothing mapped) and **pinned** (not ODP: `pin_user_pages_fast(FOLL_LONGTERM)` "
        "and the same IOVA window, linked at registration). Memory: 4 KiB contiguous (anonymous memory populated as "
        "THPs, then split into 4 KiB pages and folios through debugfs `split_huge_pages`: physically contiguous runs "
        "of 512 pages or more), 4 KiB fragmented (populated after freeing every other page of a pool twice its size), "
        "THP (`MADV_HUGEPAGE`), hugetlbfs (2 MiB pages). Speed-ups are the other variant's time over ours (>1: ours "
        "is faster); *cost vs floor* is our time over the floor's.",
        "",
        "## Targets",
        "",
        f"The targets are set for the perf kernel, 64 MiB regions, strict, the median ratio of one run (this run: "
        f"regions of {', '.join(f'{s} MiB' for s in sizes)}); where a target says *every translating IOMMU* each "
        "strict configuration is listed, where it says *any IOMMU* each configuration measured, passthrough included.",
        "",
        "| target | configuration | figure | verdict |",
        "|---|---|---:|---|",
    ]
    notes_out = []
    for t, cfg, fig, verdict, note in targets(recs):
        if note:
            notes_out.append(f"- {t}, {cfg}: {note}")
            verdict += f" [{len(notes_out)}]"
        L.append(f"| {t} | {cfg} | {fig} | {verdict} |")
    L.append("")
    if notes_out:
        L += ["What the profile says where a target is missed (numbered as in the table):", ""]
        L += [f"{k + 1}. {n[2:]}" for k, n in enumerate(notes_out)] + [""]
    L += [
        "## Summary per IOMMU configuration",
        "",
        "Whole region of 64 MiB faulted in one call; ours over the kernel's C path (x: speed-up), ours over the "
        "floor (cost), the median latency of 1-page faults on 4 KiB contiguous memory (kernel over ours), and the "
        "kernel's own `dma_map_single()` of 1 and 512 pages (µs) as the reference for one map call.",
        "",
        "| IOMMU | mode | 4 KiB contiguous vs kernel | 4 KiB fragmented vs kernel | THP vs kernel | hugetlbfs vs kernel "
        "| 4 KiB cost vs floor | THP cost vs floor | 1-page faults vs kernel | dma_map_single 1 / 512 pages, µs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    L += config_summary_rows(recs)
    L.append("")
    runs = {i: mean_runs(recs, i) for i in {r["iommu"] for r in records}}
    L += ["Mean physical run length of the regions (pages per run of contiguous frames, from `/proc/self/pagemap`):", ""]
    for iommu in sorted(runs, key=lambda i: IOMMU_ORDER.index(i) if i in IOMMU_ORDER else 99):
        L.append(f"- {IOMMU_SHORT(iommu)}: " + ", ".join(f"{MEMORY_LABEL[m]} {v:.1f}" for m, v in runs[iommu].items()))
    L.append("")
    for iommu in sorted({r["iommu"] for r in records}, key=lambda i: IOMMU_ORDER.index(i) if i in IOMMU_ORDER else 99):
        L += [f"## {IOMMU_LABEL.get(iommu, iommu)}", ""]
        png = plot(recs, iommu, out_dir)
        for i, mode in configs(recs):
            if i == iommu:
                L += section(recs, iommu, mode, png)
        if png:
            L += [f"![{iommu}]({png.name})", ""]
    text = "\n".join(L)
    (out_dir / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
