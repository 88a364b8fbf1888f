#!/usr/bin/env bash
# One device call that checks and measures a whole tree (docs/bench.md): every GPU test
# (sharded) beside compute-sanitizer memcheck on the newest kernels, then the start-up
# costs, then the benchmarks against cuDNN (networks in both layouts and every math
# mode; all 35 KernelBench problems in NCHW and the 2-D ones in NHWC). Each step has a
# time bound so the call ends inside the device's limit; results under $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/out}"
BIN="${BIN:-.exp}"
mkdir -p "$OUT/logs"
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start )) s] $*" | tee -a "$OUT/summary.txt"; }
stamp "start $(nvidia-smi -L | head -1)"
STEPS="${STEPS:-tests jit networks kernelbench kernelbench_nhwc}"
want() { [[ " $STEPS " == *" $1 "* ]]; }
if want tests; then
T="${TEST_TIMEOUT:-190}"
pids=()
for i in $(seq 0 7); do
  GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i CONVJIT_CACHE_DIR=/tmp/cj-t$i timeout "$T" \
    "$BIN/convjit_gpu_tests" --gtest_brief=1 --gtest_filter="${GPU_FILTER:-*}" > "$OUT/logs/gpu_$i.txt" 2>&1 & pids+=($!)
done
CONVJIT_CACHE_DIR=/tmp/cj-tool timeout "$T" "$BIN/convjit_tool_gpu_tests" --gtest_brief=1 > "$OUT/logs/tool.txt" 2>&1 & pids+=($!)
for i in 0 1; do
  GTEST_TOTAL_SHARDS=2 GTEST_SHARD_INDEX=$i CONVJIT_CACHE_DIR=/tmp/cj-m$i timeout "$T" \
    compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 "$BIN/convjit_gpu_tests" --gtest_brief=1 \
    --gtest_filter="${MEMCHECK_FILTER:-WgmmaNhwc.*Pointers*:WgmmaNhwc.Split*:ConvNdCorrectness.Random*}" \
    > "$OUT/logs/memcheck_$i.txt" 2>&1 & pids+=($!)
done
rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done
stamp "tests exit $rc; failed: $(cat "$OUT"/logs/gpu_*.txt "$OUT"/logs/tool.txt | grep -E '^\[  FAILED  \] [A-Z]' | sort -u | wc -l); \
passed lines: $(cat "$OUT"/logs/gpu_*.txt "$OUT"/logs/tool.txt | grep -c 'PASSED'); timeouts: $(grep -L 'PASSED\|FAILED' "$OUT"/logs/gpu_*.txt | wc -l)"
cat "$OUT"/logs/gpu_*.txt "$OUT"/logs/tool.txt | grep -E '^\[  FAILED  \] [A-Z]' | sort -u | head -20 | tee -a "$OUT/summary.txt"
grep -h "ERROR SUMMARY" "$OUT"/logs/memcheck_*.txt | tee -a "$OUT/summary.txt"
fi
want jit && { CONVJIT_CACHE_DIR=/tmp/cj-jit timeout "${JIT_TIMEOUT:-60}" "$BIN/jit_overhead" --parts cold --json "$OUT/jit_overhead.json" \
  > "$OUT/jit_overhead.txt" 2>&1
stamp "jit_overhead exit $?"; }
bench() {  # name, timeout, args...
  local name=$1 t=$2; shift 2
  want "$name" || return 0
  CONVJIT_CACHE_DIR=/tmp/cj-bench timeout "$t" "$BIN/conv_bench" --iters "${ITERS:-5}" --warmup "${WARMUP:-2}" \
    --skip-slow-ms 20 --json "$OUT/$name.json" "$@" > "$OUT/logs/$name.txt" 2>&1
  stamp "conv_bench $name exit $?"
  grep -iE "geomean|geometric" -A8 "$OUT/logs/$name.txt" | head -12 | tee -a "$OUT/summary.txt"
}
bench networks "${NET_TIMEOUT:-170}" --workloads workloads/networks.json --layout "${NET_LAYOUT:-nchw,nhwc}" --math tf32,strict,fp16,bf16 --algos auto
bench kernelbench "${KB_TIMEOUT:-150}" ${KB_IDS:+--ids "$KB_IDS"} --math tf32,strict,fp16,bf16 --algos auto
bench kernelbench_nhwc "${KBN_TIMEOUT:-90}" --ids 50,55,56,62,63,80,82,83,84,85,86,87 --layout nhwc --math tf32,strict,fp16,bf16 --algos auto
stamp "done"
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$OUT/logs"
