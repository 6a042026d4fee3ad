#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The benchmarks: odp_hmm_bench in the VM, then the report (ratio tables, JSON, plot, summary).
#
# Usage: scripts/bench.sh [--quick]
#   (full)   the perf kernel profile (the test profile minus lockdep, DMA-API debugging, kmemleak,
#            KFENCE; built on demand into its own cache entry), regions of 2..512 MiB, 5
#            repetitions, IOMMU strict, lazy and passthrough, 4 KiB and THP pages. Results in
#            results/<date>-perf/; the summary and plot are also copied to docs/benchmarks/.
#   --quick  the test kernel, 2 and 4 MiB, 2 repetitions: a correctness pass of the benchmark
#            code, as CI runs it. Results in a temporary directory, printed.

. "$(dirname "$0")/lib.sh"

quick=0
[ "${1:-}" = --quick ] && quick=1

"$ODP_TOP/scripts/setup.sh"
if [ "$quick" = 1 ]; then
	profile=test
	args=(--sizes 2M,4M --reps 2)
	memory=2G
	out=$(mktemp -d /tmp/odp-bench.XXXXXX)
	trap 'rm -rf "$out"' EXIT
else
	profile=perf
	args=()
	memory=4G
	"$ODP_TOP/scripts/kernel.sh" build perf
	out=$ODP_TOP/results/$(date +%Y%m%d-%H%M%S)-perf
	mkdir -p "$out"
fi
kdir=$("$ODP_TOP/scripts/kernel.sh" dir "$profile")

if [ "$profile" = test ]; then
	"$ODP_TOP/scripts/build.sh"
	module=$ODP_TOP/odp_hmm.ko
else
	# A separate copy of the sources: Kbuild builds in place, and the repository's objects are
	# the test kernel's.
	build=$ODP_CACHE/bench-build
	mkdir -p "$build"
	rsync -a --delete --exclude /target --exclude /.git --exclude /results "$ODP_TOP/" "$build/"
	log "building odp_hmm.ko against the perf kernel ($kdir)"
	make -s -C "$build" KDIR="$kdir" RUSTC="$KRUSTC" BINDGEN="$BINDGEN" modules
	module=$build/odp_hmm.ko
fi
(cd "$ODP_TOP" && cargo build --quiet --release --locked -p odp-hmm-bench)

log "running the benchmarks in the VM ($profile kernel) into $out"
# tsc=reliable: under TCG the clocksource watchdog sees the TSC lag and may switch the guest to
# the HPET in the middle of a run, which changes what every timer read costs.
"$ODP_TOP/scripts/vm-run.sh" --kernel "$kdir" --module "$module" --memory "$memory" \
	--append tsc=reliable --rwdir "$out" -- "$ODP_TOP/target/release/odp_hmm_bench" "${args[@]}" --out "$out/bench.json"

title="odp_hmm benchmarks ($profile kernel, $(date +%Y-%m-%d))"
/usr/bin/python3 "$ODP_TOP/scripts/bench-report.py" "$out/bench.json" "$out" --title "$title"
if [ "$quick" = 0 ]; then
	mkdir -p "$ODP_TOP/docs/benchmarks"
	cp "$out/summary.md" "$out/bench.json" "$ODP_TOP/docs/benchmarks/"
	[ ! -f "$out/fault.png" ] || cp "$out/fault.png" "$ODP_TOP/docs/benchmarks/"
	log "summary: docs/benchmarks/summary.md"
fi
