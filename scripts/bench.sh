#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The benchmarks: odp_hmm_bench in one VM per IOMMU configuration, then the report (targets,
# per-IOMMU tables, JSON, plots, summary).
#
# Usage: scripts/bench.sh [--quick] [--iommu MODEL]... [--reps N]
#   (full)   the perf kernel profile (the test profile minus lockdep, DMA-API debugging, kmemleak,
#            KFENCE, KASAN; built on demand into its own cache entry). One VM run per IOMMU:
#              intel     caching-mode=off: strict, lazy and passthrough (the only passthrough run)
#              intel-cm  caching-mode=on: strict (the kernel forces strict there)
#              amd       AMD-Vi: strict (likewise forced in a VM)
#              virtio    virtio-iommu: strict and lazy
#            64 MiB regions, 5 repetitions, every variant, memory kind and fault size, the
#            two-thread test and the kernel's dma_map_benchmark. Results in
#            results/<date>-perf/; the summary, JSON and plots are also copied to docs/benchmarks/.
#   --quick  the test kernel, one VM (intel, caching-mode=off, unless --iommu says otherwise) in
#            the same modes, 4 MiB regions, 1 repetition, a few calls per fault size, but every
#            variant, memory kind, fault size, the two-thread test and dma_map_benchmark: a
#            correctness pass of the benchmark code, as CI runs it (about 2-3 minutes per model).
#            Results in a temporary directory, printed. It fails if the benchmark or the report
#            errs, or the guest log has a report.
#   --iommu  restricts the run to the models given (repeatable); --reps sets the repetitions.
#            A full run restricted either way is not copied to docs/benchmarks/.
# ODP_HMM_BENCH_KEEP=1 keeps the quick pass's results directory (its path is printed).

. "$(dirname "$0")/lib.sh"

quick=0
only=()
reps=
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=1; shift ;;
	--iommu) only+=("$2"); shift 2 ;;
	--reps) reps=$2; shift 2 ;;
	*) die "usage: scripts/bench.sh [--quick] [--iommu intel|intel-cm|amd|virtio]... [--reps N]" ;;
	esac
done
# Only a full run with every model and the default repetitions makes the committed report.
publish=$([ "$quick" = 0 ] && [ ${#only[@]} = 0 ] && [ -z "$reps" ] && echo 1 || echo 0)

# IOMMU model -> the modes measured under it.
declare -A modes=([intel]=strict,lazy,passthrough [intel-cm]=strict [amd]=strict [virtio]=strict,lazy)
order=(intel intel-cm amd virtio)

"$ODP_TOP/scripts/setup.sh"
if [ "$quick" = 1 ]; then
	profile=test
	args=(--size 4M --reps 1 --max-calls 4 --call-pages 16 --dma-seconds 1 --no-warm-up)
	memory=2G
	# One VM, the model with the most modes: every mode switch and both DMA paths (IOVA and
	# dma_map_phys) of every variant.
	[ ${#only[@]} -gt 0 ] || only=(intel)
	out=$(mktemp -d /tmp/odp-bench.XXXXXX)
	[ -n "${ODP_HMM_BENCH_KEEP:-}" ] || trap 'rm -rf "$out"' EXIT
else
	profile=perf
	args=(--size 64M --reps 5)
	memory=4G
	"$ODP_TOP/scripts/kernel.sh" build perf
	out=$ODP_TOP/results/$(date +%Y%m%d-%H%M%S)-perf
	mkdir -p "$out"
fi
[ ${#only[@]} -gt 0 ] || only=("${order[@]}")
[ -z "$reps" ] || args+=(--reps "$reps")
for m in "${only[@]}"; do [ -n "${modes[$m]:-}" ] || die "unknown IOMMU model $m"; done
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

# The kernel's dma_map_benchmark tool (tools/dma/ of the kernel source), built here from the
# test kernel's tree into the results directory (the guest sees it there), removed afterwards.
tools=$out/tools
mkdir -p "$tools/include/linux"
ksrc=$("$ODP_TOP/scripts/kernel.sh" dir test)
cp "$ksrc/include/uapi/linux/map_benchmark.h" "$tools/include/linux/"
gcc -O2 -Wall -D_GNU_SOURCE -I"$tools/include" "$ksrc/tools/dma/dma_map_benchmark.c" \
	-o "$tools/dma_map_benchmark"
[ "$quick" = 1 ] || trap 'rm -rf "$tools"' EXIT

jsons=()
timings=()
# A full run of the model with three modes takes about 15 minutes under TCG: room to spare.
vm_timeout=3600
for iommu in "${order[@]}"; do
	case " ${only[*]} " in *" $iommu "*) ;; *) continue ;; esac
	log "running the benchmarks in the VM ($profile kernel, $iommu: ${modes[$iommu]}) into $out"
	# tsc=reliable: under TCG the clocksource watchdog sees the TSC lag and may switch the guest
	# to the HPET in the middle of a run, which changes what every timer read costs.
	ODP_HMM_ENTRY_TIMEOUT=$vm_timeout ODP_HMM_VM_TIME_FILE=$out/vm-time-$iommu \
		"$ODP_TOP/scripts/vm-run.sh" --iommu "$iommu" --kernel "$kdir" --module "$module" \
		--memory "$memory" --append tsc=reliable --rwdir "$out" -- \
		"$ODP_TOP/target/release/odp_hmm_bench" "${args[@]}" --iommu "$iommu" \
		--modes "${modes[$iommu]}" --dma-tool "$tools/dma_map_benchmark" \
		--out "$out/bench-$iommu.json"
	took=$(cat "$out/vm-time-$iommu")
	timings+=("$iommu ${took}s")
	log "$iommu: ${took} s"
	jsons+=("$out/bench-$iommu.json")
done

total=0
for t in "${timings[@]}"; do s=${t##* }; total=$((total + ${s%s})); done
title="odp_hmm benchmarks ($profile kernel, $(date +%Y-%m-%d))"
note="Run with \`scripts/bench.sh$([ "$quick" = 1 ] && echo ' --quick')\`: QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}') under TCG (no KVM), 2 vCPUs, $memory, $profile kernel ($(basename "$(dirname "$kdir")")); one VM run per IOMMU, VM time per run (boot included): ${timings[*]} (${total} s in all)."
/usr/bin/python3 "$ODP_TOP/scripts/bench-report.py" "$out" "${jsons[@]}" --title "$title" --note "$note"
if [ "$publish" = 1 ]; then
	mkdir -p "$ODP_TOP/docs/benchmarks"
	rm -f "$ODP_TOP/docs/benchmarks/"*.png
	cp "$out/summary.md" "$out/bench.json" "$out"/*.png "$ODP_TOP/docs/benchmarks/"
	log "summary: docs/benchmarks/summary.md (VM time ${total} s)"
fi
