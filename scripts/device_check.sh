#!/usr/bin/env bash
# The GPU-side checks, for calls on a machine with an NVIDIA GPU (docs/bench.md). Expects
# the binaries built on the CPU machine, carried in $BIN (default .exp/):
#   convjit_gpu_tests convjit_tool_gpu_tests convjit conv_bench mbarrier_racecheck_probe
# Steps (STEPS, comma separated; default info,tests,memcheck,racecheck,synccheck):
#   info       the GPU, driver and compute-sanitizer
#   probe      tools/probes/mbarrier_racecheck_probe under racecheck, every variant
#   tests      the GPU test suites, in SHARDS processes at once (compiles are CPU-bound)
#   memcheck   compute-sanitizer memcheck over the launch-safety matrix and random problems
#   racecheck  compute-sanitizer racecheck over the shared-memory kernels' random problems
#   synccheck  compute-sanitizer synccheck over the same
#   python     scripts/device_python.sh $PY_WHAT (tests, example or all; PYTEST_K selects;
#              carry build-py/wheelhouse)
#   release    racecheck on the brief's small problem (n2c64h12w20k64r3s3 pad=1), implicit GEMM
#   bench      conv_bench against cuDNN on KernelBench and networks.json (BENCH_MATH, BENCH_SETS)
#   anchor     the CUTLASS 3 anchor ($BIN/conv_sm90, ANCHOR_ARGS), after bench
#   jit        jit_overhead (JIT_PARTS, default cold; JIT_ARGS), after bench
# The steps before bench run at the same time (they check, they do not time); bench runs
# alone afterwards. Logs go under $OUT, tarred: at most 8 files come back from a call.
set -uo pipefail
OUT="${OUT:-/tmp/out}"
BIN="${BIN:-.exp}"
STEPS="${STEPS:-info,tests,memcheck,racecheck,synccheck}"
SHARDS="${SHARDS:-6}"
mkdir -p "$OUT"
LOGS="$OUT/logs"
mkdir -p "$LOGS"
# The test binaries hold the CPU machine's absolute paths (workload files): make them resolve.
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
# Shared libraries the machine may lack, carried beside the binaries (none is needed
# today: libhiredis is loaded only for a remote cache, which these steps do not use).
[ -d "$BIN/lib" ] && export LD_LIBRARY_PATH="$PWD/$BIN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
has() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
say() { echo "== $*" | tee -a "$LOGS/summary.txt"; }

if has info; then
  { date -u; nvidia-smi -L; nvidia-smi --query-gpu=driver_version,clocks.sm,clocks.max.sm --format=csv
    compute-sanitizer --version | tail -1; } 2>&1 | tee "$LOGS/machine.txt"
fi

if has probe; then
  for v in mbarrier_store mbarrier_cp_async mbarrier_wait_all lane0_syncwarp lane0 syncthreads unordered; do
    compute-sanitizer --tool racecheck --racecheck-report hazard "$BIN/mbarrier_racecheck_probe" "$v" \
      > "$LOGS/probe_$v.txt" 2>&1
    say "racecheck probe $v: $(grep -E 'result|lane' "$LOGS/probe_$v.txt" | head -1); \
$(grep -E 'RACECHECK SUMMARY' "$LOGS/probe_$v.txt" | tail -1 | sed 's/=* *//'); \
$(grep -oE 'Potential [A-Z]+ hazard|Error: Race [a-z ]*' "$LOGS/probe_$v.txt" | sort | uniq -c | tr '\n' ' ')"
  done
fi

# racecheck on the brief's small problem, the implicit-GEMM kernel (wgmma on Hopper) in
# each math mode and a 16-bit type.
if has release; then
  for math in tf32 strict "tf32 dtype=f16" "tf32 dtype=bf16"; do
    tag="$(echo "$math" | tr ' =' '__')"
    CONVJIT_CACHE_DIR=/tmp/cj-release compute-sanitizer --tool racecheck --racecheck-report hazard \
      "$BIN/convjit" run "n2c64h12w20k64r3s3 pad=1 math=$math" --algorithm implicit_gemm --iters 1 --warmup 0 \
      > "$LOGS/release_racecheck_$tag.txt" 2>&1
    say "racecheck n2c64h12w20k64r3s3 pad=1 math=$math: exit $?; \
$(grep -E 'RACECHECK SUMMARY' "$LOGS/release_racecheck_$tag.txt" | sed 's/=* *//'); \
$(grep -oE 'Potential [A-Z]+ hazard' "$LOGS/release_racecheck_$tag.txt" | sort | uniq -c | tr '\n' ' ')"
  done
fi
# One suite in $SHARDS processes, each with a cache directory of its own.
sharded() {  # name, binary, filter, [wrapper...]
  local name=$1 bin=$2 filter=$3
  shift 3
  local pids=()
  for ((i = 0; i < SHARDS; i++)); do
    GTEST_TOTAL_SHARDS=$SHARDS GTEST_SHARD_INDEX=$i CONVJIT_CACHE_DIR=/tmp/cj-$name-$i \
      timeout "${STEP_TIMEOUT:-400}" "$@" "$bin" --gtest_brief=1 --gtest_filter="$filter" \
      > "$LOGS/${name}_$i.txt" 2>&1 &
    pids+=($!)
  done
  local rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  say "$name: exit $rc; $(cat "$LOGS/${name}"_*.txt | grep -cE '^\[       OK \]|^\[  PASSED') passing lines, \
$(cat "$LOGS/${name}"_*.txt | grep -E '^\[  FAILED  \] [A-Z]' | sort -u | wc -l) failed; \
$(cat "$LOGS/${name}"_*.txt | grep -E 'ERROR SUMMARY' | awk '{s += $4} END {if (NR) print "sanitizer errors " s}')"
  cat "$LOGS/${name}"_*.txt | grep -E '^\[  FAILED  \] [A-Z]|Failure$' | sort -u | head -20
}
SMALL='NhwcImplicitGemm.*:NhwcDirectIm2col.*:LaunchSafety.Pointers*:LaunchSafety.AnOffset*:LaunchSafety.Warmed*:RuntimeGpu.*:Conv2dCorrectness.Seventy*:Conv2dCorrectness.SixteenBitRandom*:WgmmaCorrectness.Random*:DepthwiseCorrectness.Random*'
SHARED="${SHARED_FILTER:-WgmmaCorrectness.Random*:DepthwiseCorrectness.Random*:Conv2dCorrectness.Seventy*:Conv2dCorrectness.SixteenBitRandom*}"
sanitizer() { echo compute-sanitizer --tool "$1" --error-exitcode 9 --print-limit 20; }

jobs_started=()
if has tests; then
  (sharded gpu_tests "$BIN/convjit_gpu_tests" '*'
   sharded tool_gpu_tests "$BIN/convjit_tool_gpu_tests" '*') &
  jobs_started+=($!)
fi
has memcheck && { sharded memcheck "$BIN/convjit_gpu_tests" "$SMALL" $(sanitizer memcheck) & jobs_started+=($!); }
has racecheck && { sharded racecheck "$BIN/convjit_gpu_tests" "$SHARED" $(sanitizer racecheck) & jobs_started+=($!); }
has synccheck && { sharded synccheck "$BIN/convjit_gpu_tests" "$SHARED" $(sanitizer synccheck) & jobs_started+=($!); }
if has python; then
  (OUT="$LOGS/python" PYTEST_K="${PYTEST_K:-}" timeout "${STEP_TIMEOUT:-400}" bash scripts/device_python.sh "${PY_WHAT:-tests}" \
     > "$LOGS/python.txt" 2>&1; say "python tests exit $?"; tail -15 "$LOGS/python.txt") &
  jobs_started+=($!)
fi
for j in "${jobs_started[@]}"; do wait "$j"; done

if has bench; then
  say "conv_bench against cuDNN"
  for set in ${BENCH_SETS:-kernelbench networks}; do
    file=workloads/kernelbench_level1_conv.json
    [ "$set" = networks ] && file=workloads/networks.json
    CONVJIT_CACHE_DIR=/tmp/cj-bench timeout "${BENCH_TIMEOUT:-300}" "$BIN/conv_bench" --workloads "$file" \
      ${BENCH_IDS:+--ids $BENCH_IDS} --math "${BENCH_MATH:-tf32,strict,fp16,bf16}" --algos "${BENCH_ALGOS:-auto}" \
      --iters "${BENCH_ITERS:-20}" --warmup 5 ${BENCH_ARGS:-} --json "$OUT/conv_bench_$set.json" \
      > "$LOGS/conv_bench_$set.txt" 2>&1
    say "conv_bench $set exit $?"
    grep -iE "geomean" -A8 "$LOGS/conv_bench_$set.txt" | head -12
  done
fi

# The CUTLASS 3 Hopper anchor (built from the shared anchors, carried as $BIN/conv_sm90):
# every problem, precision and tile configuration it has; BEST lines are the fastest
# passing configuration per problem and precision.
if has anchor && [ -x "$BIN/conv_sm90" ]; then
  timeout "${ANCHOR_TIMEOUT:-240}" "$BIN/conv_sm90" ${ANCHOR_ARGS:-} > "$OUT/cutlass3_anchor.txt" 2>&1
  say "cutlass3 anchor exit $?"
  grep -E '^BEST' "$OUT/cutlass3_anchor.txt" | tee -a "$LOGS/summary.txt"
fi
# Start-up costs (issue 17): cold, warm and hot first results, each in a new process.
if has jit; then
  timeout "${JIT_TIMEOUT:-300}" "$BIN/jit_overhead" --parts "${JIT_PARTS:-cold}" ${JIT_ARGS:-} \
    --json "$OUT/jit_overhead.json" > "$OUT/jit_overhead.txt" 2>&1
  say "jit_overhead exit $?"
fi

tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$LOGS"
ls "$OUT"
