#!/usr/bin/env bash
# The GPU-side checks, for one call on a machine with an NVIDIA GPU. Expects the
# binaries built on the CPU machine and carried in $BIN (default .exp/):
#   convjit_gpu_tests  convjit (the CLI)  conv_bench  jit_overhead  headline_conv
# Steps (STEPS, comma separated; default all but bench):
#   info       the GPU, driver and compute-sanitizer
#   tests      the GPU test suite (convjit_gpu_tests), every test
#   memcheck   compute-sanitizer memcheck over the launch-safety and correctness tests
#   racecheck  compute-sanitizer racecheck over the wgmma and depthwise tests (shared memory)
#   synccheck  compute-sanitizer synccheck over the same
#   bench      conv_bench against cuDNN on KernelBench and networks.json (BENCH_MATH, BENCH_SETS)
# Logs go under $OUT (at most 8 files come back from a device call: logs are tarred).
set -uo pipefail
OUT="${OUT:-/tmp/out}"
BIN="${BIN:-.exp}"
STEPS="${STEPS:-info,tests,memcheck,racecheck,synccheck}"
mkdir -p "$OUT"
LOGS="$OUT/logs"
mkdir -p "$LOGS"
# The test binaries hold the CPU machine's absolute paths (workload files): make them resolve.
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
export CONVJIT_CACHE_DIR="${CONVJIT_CACHE_DIR:-/tmp/convjit-cache}"
has() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
say() { echo "== $*" | tee -a "$LOGS/summary.txt"; }

if has info; then
  { date -u; nvidia-smi -L; nvidia-smi --query-gpu=driver_version,clocks.sm,clocks.max.sm --format=csv
    compute-sanitizer --version | tail -1; } 2>&1 | tee "$LOGS/machine.txt"
fi

if has tests; then
  say "GPU tests"
  "$BIN/convjit_gpu_tests" --gtest_brief=1 > "$LOGS/gpu_tests.txt" 2>&1
  say "gpu tests exit $?: $(grep -E '^\[  (PASSED|FAILED)' "$LOGS/gpu_tests.txt" | tr '\n' ' ')"
  grep -E '^\[  FAILED|Failure' "$LOGS/gpu_tests.txt" | head -20
fi

sanitize() {  # tool, gtest filter, log name
  timeout "${SANITIZER_TIMEOUT:-240}" compute-sanitizer --tool "$1" --error-exitcode 9 ${SANITIZER_ARGS:-} \
    "$BIN/convjit_gpu_tests" \
    --gtest_brief=1 --gtest_filter="$2" > "$LOGS/$3.txt" 2>&1
  local rc=$?
  say "$1 ($2): exit $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOGS/$3.txt" | tail -1)"
}
# Small problems: under the sanitizers kernels run 10-100 times slower.
SMALL='LaunchSafety.Pointers*:LaunchSafety.AnOffset*:LaunchSafety.Warmed*:RuntimeGpu.*:Conv2dCorrectness.Seventy*:Conv2dCorrectness.SixteenBitRandom*:WgmmaCorrectness.Random*:DepthwiseCorrectness.Random*'
SHARED='WgmmaCorrectness.Random*:DepthwiseCorrectness.Random*:Conv2dCorrectness.Seventy*:Conv2dCorrectness.SixteenBitRandom*'
has memcheck && sanitize memcheck "$SMALL" memcheck
has racecheck && sanitize racecheck "$SHARED" racecheck
has synccheck && sanitize synccheck "$SHARED" synccheck

if has bench; then
  say "conv_bench against cuDNN"
  for set in ${BENCH_SETS:-kernelbench networks}; do
    file=workloads/kernelbench_level1_conv.json
    [ "$set" = networks ] && file=workloads/networks.json
    timeout "${BENCH_TIMEOUT:-300}" "$BIN/conv_bench" --workloads "$file" ${BENCH_IDS:+--ids $BENCH_IDS} \
      --math "${BENCH_MATH:-tf32,strict,fp16,bf16}" --algos "${BENCH_ALGOS:-auto}" --iters 20 --warmup 5 \
      ${BENCH_ARGS:-} --json "$OUT/conv_bench_$set.json" > "$LOGS/conv_bench_$set.txt" 2>&1
    say "conv_bench $set exit $?"
    grep -iE "geomean|geo" "$LOGS/conv_bench_$set.txt" | tail -8
  done
fi

tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$LOGS"
ls "$OUT"
