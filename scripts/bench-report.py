#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Turns odp_hmm_bench's JSON records into the benchmark report.

Usage: bench-report.py BENCH_JSON OUT_DIR [--title TEXT]

Writes OUT_DIR/summary.md (tables and the statement against the targets) and OUT_DIR/fault.png
(fault-and-map throughput against region size, one line per variant), and prints the ratio
tables. Every ratio pairs the variants of one repetition (they ran interleaved, on the same
machine state) and is given as min/median/max over the repetitions.
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

VARIANTS = ["rust", "kernel", "legacy", "none"]
LABEL = {"rust": "ours", "kernel": "kernel", "legacy": "legacy", "none": "floor"}
TARGETS = {"4k_vs_kernel": 1.5, "thp_vs_kernel": 5.0, "vs_floor": 1.3, "bytes_per_page": 8}


def mib(size):
    return size >> 20


def per_page(r, key):
    return r[key] / r["pages"]


def stats3(values):
    if not values:
        return None
    return (min(values), statistics.median(values), max(values))


def fmt3(t, unit="x"):
    if t is None:
        return "n/a"
    return f"{t[1]:.2f}{unit} ({t[0]:.2f}-{t[2]:.2f})"


def load(path):
    records = json.loads(Path(path).read_text())
    # (mode, kind, size, rep) -> variant -> record
    runs = defaultdict(dict)
    for r in records:
        runs[(r["mode"], r["kind"], r["size"], r["rep"])][r["variant"]] = r
    return records, runs


def ratios(runs, mode, kind, size, num, den, key):
    """num/den of `key` per page, one value per repetition where both ran."""
    out = []
    for (m, k, s, _), by in runs.items():
        if (m, k, s) == (mode, kind, size) and num in by and den in by:
            d = per_page(by[den], key)
            if d > 0:
                out.append(per_page(by[num], key) / d)
    return stats3(out)


def medians(records, mode, kind, variant, key):
    by_size = defaultdict(list)
    for r in records:
        if (r["mode"], r["kind"], r["variant"]) == (mode, kind, variant):
            by_size[r["size"]].append(per_page(r, key))
    return {s: statistics.median(v) for s, v in sorted(by_size.items())}


def plot(records, out_dir, modes, kinds):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# matplotlib is not installed: no plot", file=sys.stderr)
        return None
    fig, axes = plt.subplots(len(kinds), len(modes), figsize=(5 * len(modes), 4 * len(kinds)), squeeze=False)
    for i, kind in enumerate(kinds):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            for v in VARIANTS:
                med = medians(records, mode, kind, v, "fault_wall_ns")
                if med:
                    xs = [mib(s) for s in med]
                    ys = [1e9 / ns for ns in med.values()]
                    ax.plot(xs, ys, marker="o", label=LABEL[v])
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{kind.upper()} pages, IOMMU {mode}")
            ax.set_xlabel("region (MiB)")
            ax.set_ylabel("fault-and-map (pages/s, median)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.tight_layout()
    path = Path(out_dir) / "fault.png"
    fig.savefig(path, dpi=110)
    return path


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    title = "odp_hmm benchmarks"
    if "--title" in args:
        i = args.index("--title")
        title = args[i + 1]
        del args[i : i + 2]
    records, runs = load(args[0])
    out_dir = Path(args[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    modes = [m for m in ["strict", "lazy", "passthrough"] if any(r["mode"] == m for r in records)]
    kinds = [k for k in ["4k", "thp"] if any(r["kind"] == k for r in records)]
    sizes = sorted({r["size"] for r in records})
    reps = len({r["rep"] for r in records})
    lines = [f"# {title}", ""]
    lines += [
        f"{len(records)} measurements: modes {', '.join(modes)}; page kinds {', '.join(kinds)}; "
        f"sizes {', '.join(str(mib(s)) + ' MiB' for s in sizes)}; {reps} repetitions, variants interleaved "
        "(rotated per repetition). Ratios pair the variants of one repetition: median (min-max).",
        "",
        "Speed-up is the other variant's time over ours (>1: ours is faster); cost vs floor is our time "
        "over the floor's (`hmm_range_fault()` alone; 1.0 would be free mapping). *fault*: faulting and "
        "mapping the whole populated region; *holes*: munmap of one 4 KiB page in every 64, per hole "
        "(the kernel's unmap work included); *munmap*: munmap of the rest, per page. A hole splits the "
        "mapping, and splitting makes the kernel invalidate the whole 2 MiB block around the split point "
        "before it checks for a huge page (`__split_huge_pmd()`, mm/huge_memory.c; seen in the module's "
        "invalidation log while writing the demo), so the first hole in a block unmaps all of its mapped "
        "pages, in every variant.",
        "",
    ]

    def table(mode, kind):
        rows = [
            f"### {kind.upper()} pages, IOMMU {mode}",
            "",
            "| size | fault: ours ns/page | speed-up vs kernel | vs legacy | cost vs floor "
            "| holes: ours ns/hole | vs kernel | munmap: ours ns/page | vs kernel | cost vs floor |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in sizes:
            ours = medians(records, mode, kind, "rust", "fault_wall_ns").get(s)
            if ours is None:
                continue
            hole = ratios_holes(runs, mode, kind, s)
            holes_ns = statistics.median(
                r["holes_wall_ns"] / max(1, r["holes"])
                for r in records
                if (r["mode"], r["kind"], r["size"], r["variant"]) == (mode, kind, s, "rust")
            )
            unmap_ns = medians(records, mode, kind, "rust", "unmap_wall_ns").get(s, 0)
            rows.append(
                f"| {mib(s)} MiB | {ours:.0f} | {fmt3(ratios(runs, mode, kind, s, 'kernel', 'rust', 'fault_wall_ns'))} "
                f"| {fmt3(ratios(runs, mode, kind, s, 'legacy', 'rust', 'fault_wall_ns'))} "
                f"| {fmt3(ratios(runs, mode, kind, s, 'rust', 'none', 'fault_wall_ns'))} "
                f"| {holes_ns:.0f} | {fmt3(hole)} "
                f"| {unmap_ns:.0f} | {fmt3(ratios(runs, mode, kind, s, 'kernel', 'rust', 'unmap_wall_ns'))} "
                f"| {fmt3(ratios(runs, mode, kind, s, 'rust', 'none', 'unmap_wall_ns'))} |"
            )
        return rows + [""]

    for mode in modes:
        for kind in kinds:
            lines += table(mode, kind)

    # Calls and bookkeeping.
    lines += ["### Calls per MiB and bookkeeping (strict mode, largest size)", ""]
    lines += ["| variant | kind | link/MiB | sync/MiB | unlink/MiB | bookkeeping B/page |", "|---|---|---:|---:|---:|---:|"]
    big = sizes[-1]
    for kind in kinds:
        for v in VARIANTS:
            rs = [r for r in records if (r["mode"], r["kind"], r["size"], r["variant"]) == (modes[0], kind, big, v)]
            if not rs:
                continue
            r = rs[0]
            m = mib(r["size"])
            lines.append(
                f"| {LABEL[v]} | {kind} | {r['link_calls'] / m:.1f} | {r['sync_calls'] / m:.2f} | "
                f"{r['unlink_calls'] / m:.1f} | {r['bookkeeping_bytes'] / r['pages']:.1f} |"
            )
    lines.append("")

    # Where our fault time goes.
    lines += ["### Where our fault-and-map time goes (module's own timers, median over repetitions)", ""]
    lines += ["| mode | kind | size | hmm_range_fault | link calls | IOTLB sync | bookkeeping | rest (syscall, locking) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for mode in modes:
        for kind in kinds:
            for s in sizes:
                rs = [r for r in records if (r["mode"], r["kind"], r["size"], r["variant"]) == (mode, kind, s, "rust")]
                if not rs:
                    continue
                f = statistics.median(r["fault_ns"] / r["fault_wall_ns"] for r in rs)
                l = statistics.median(r["link_ns"] / r["fault_wall_ns"] for r in rs)
                y = statistics.median(r["sync_ns"] / r["fault_wall_ns"] for r in rs)
                b = statistics.median((r["map_ns"] - r["sync_ns"] - r["link_ns"]) / r["fault_wall_ns"] for r in rs)
                lines.append(
                    f"| {mode} | {kind} | {mib(s)} MiB | {100 * f:.0f}% | {100 * l:.0f}% | {100 * y:.0f}% | {100 * b:.0f}% | {100 * max(0.0, 1 - f - l - y - b):.0f}% |"
                )
    lines.append("")

    # The statement against the targets.
    at = 64 << 20 if (64 << 20) in sizes else sizes[-1]
    lines += [f"## Against the targets ({mib(at)} MiB, strict)", ""]
    for kind, key in (("4k", "4k_vs_kernel"), ("thp", "thp_vs_kernel")):
        if kind not in kinds or "strict" not in modes:
            continue
        vk = ratios(runs, "strict", kind, at, "kernel", "rust", "fault_wall_ns")
        vf = ratios(runs, "strict", kind, at, "rust", "none", "fault_wall_ns")
        ok_k = vk and vk[1] >= TARGETS[key]
        ok_f = vf and vf[1] <= TARGETS["vs_floor"]
        lines.append(
            f"- {kind.upper()}: ours is **{fmt3(vk)}** the kernel's C path (target >= {TARGETS[key]}x: "
            f"{'met' if ok_k else 'missed'}); ours costs **{fmt3(vf)}** the floor "
            f"(target <= {TARGETS['vs_floor']}x: {'met' if ok_f else 'missed'})."
        )
        if not (ok_k and ok_f):
            lines.append("  " + where_time_goes(records, "strict", kind, at))
    bpp = [r["bookkeeping_bytes"] / r["pages"] for r in records if r["variant"] == "rust" and r["dma_mode"] == "iova"]
    if bpp:
        b = max(bpp)
        lines.append(
            f"- Bookkeeping in IOVA mode: **{b:.0f} bytes per page** "
            f"(target <= {TARGETS['bytes_per_page']}: {'met' if b <= TARGETS['bytes_per_page'] else 'missed'})."
        )
    lines.append("")
    png = plot(records, out_dir, modes, kinds)
    if png:
        lines += ["## Fault-and-map throughput", "", f"![fault-and-map throughput]({png.name})", ""]
    text = "\n".join(lines)
    (out_dir / "summary.md").write_text(text)
    print(text)


def where_time_goes(records, mode, kind, size):
    """One sentence: how our and the floor's fault time split, per page, at one point."""

    def split(variant):
        rs = [r for r in records if (r["mode"], r["kind"], r["size"], r["variant"]) == (mode, kind, size, variant)]
        med = lambda f: statistics.median(f(r) / r["pages"] for r in rs)
        return {
            "wall": med(lambda r: r["fault_wall_ns"]),
            "hmm": med(lambda r: r["fault_ns"]),
            "link": med(lambda r: r["link_ns"]),
            "sync": med(lambda r: r["sync_ns"]),
            "book": med(lambda r: r["map_ns"] - r["link_ns"] - r["sync_ns"]),
        }

    o, f = split("rust"), split("none")
    return (
        f"Profile (module timers, ns per page, median): ours {o['wall']:.0f} = hmm_range_fault {o['hmm']:.0f} "
        f"+ link calls {o['link']:.0f} + IOTLB sync {o['sync']:.0f} + state words and planning {o['book']:.0f} "
        f"+ the rest; the floor {f['wall']:.0f} = hmm_range_fault {f['hmm']:.0f} + state words {f['book']:.0f} "
        f"+ the rest. What ours adds over the floor is the IOMMU page-table updates (links) and the "
        f"per-page planning before them."
    )


def ratios_holes(runs, mode, kind, size):
    out = []
    for (m, k, s, _), by in runs.items():
        if (m, k, s) == (mode, kind, size) and "rust" in by and "kernel" in by:
            ours = by["rust"]["holes_wall_ns"] / max(1, by["rust"]["holes"])
            theirs = by["kernel"]["holes_wall_ns"] / max(1, by["kernel"]["holes"])
            if ours > 0:
                out.append(theirs / ours)
    return stats3(out)


if __name__ == "__main__":
    main()
