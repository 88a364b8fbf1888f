#!/usr/bin/env bash
# One device-machine call that checks and times everything GPU-side. Expects build/
# made on the CPU machine (carried; configured with -DCONVJIT_BUILD_BENCH=ON) and
# build/prewarmed-cache filled there by `convjit prewarm --arch sm_90`. Writes
# logs under $OUT (at most 8 files come back: logs go into one tarball).
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
LOGS="$OUT/logs"; mkdir -p "$LOGS"
# The carried build has the CPU machine's absolute paths: make them resolve here.
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
cd /work/main
CLI=build/tools/convjit
{ date -u; nvidia-smi -L; nvidia-smi --query-gpu=driver_version,clocks.sm,clocks.max.sm --format=csv; } 2>&1 | tee "$LOGS/machine.txt"

echo "== CPU-prewarmed cache served here (expect compiles 0)"
cp -r build/prewarmed-cache /tmp/prewarmed && chmod -R go-w /tmp/prewarmed
CONVJIT_CACHE_DIR=/tmp/prewarmed $CLI run "n8c64h512w256k128r5s7" --iters 20 2>&1 | tee "$LOGS/cli_run_prewarmed.txt" | tail -8
CONVJIT_CACHE_DIR=/tmp/prewarmed $CLI run "n8c64h512w256k128r5s7 math=strict" --iters 20 2>&1 | tee -a "$LOGS/cli_run_prewarmed.txt" | tail -8
CONVJIT_CACHE_DIR=/tmp/prewarmed $CLI inspect "n8c64h512w256k128r5s7" --sass > "$LOGS/sass_headline_tf32.txt" 2>&1
echo "SASS lines: $(wc -l < "$LOGS/sass_headline_tf32.txt"), HMMA: $(grep -c HMMA "$LOGS/sass_headline_tf32.txt"), LDSM: $(grep -c LDSM "$LOGS/sass_headline_tf32.txt"), spills(LDL/STL): $(grep -cE 'LDL|STL' "$LOGS/sass_headline_tf32.txt")"
CONVJIT_CACHE_DIR=/tmp/prewarmed $CLI inspect "n8c64h512w256k128r5s7 math=strict" --sass > "$LOGS/sass_headline_strict.txt" 2>&1
echo "strict SASS HMMA: $(grep -c HMMA "$LOGS/sass_headline_strict.txt")"
CONVJIT_CACHE_DIR=/tmp/prewarmed $CLI cache stats 2>&1 | tail -4

echo "== headline example: cold (empty cache, new process), then warm disk (new process)"
rm -rf /tmp/cj-cold
CONVJIT_CACHE_DIR=/tmp/cj-cold build/examples/headline_conv 2>&1 | tee "$LOGS/headline_cold.txt" | grep -E "kernel|first|hot|check|time|PASS|FAIL"
CONVJIT_CACHE_DIR=/tmp/cj-cold build/examples/headline_conv 2>&1 | tee "$LOGS/headline_warm.txt" | grep -E "first|PASS|FAIL"

echo "== ctest (cpu + gpu; the multi-process stress suite runs in CPU CI)"
(cd build && ctest --output-on-failure -j 4 -E 'CacheStress' 2>&1) > "$LOGS/ctest.txt"
grep -E "tests passed|Failed|\*\*\*" "$LOGS/ctest.txt" | tail -8

if [ "${SANITIZE:-1}" = 1 ]; then
  echo "== compute-sanitizer memcheck (every kernel family)"
  compute-sanitizer --tool memcheck --error-exitcode 9 build/tests/convjit_gpu_tests \
    --gtest_filter='RuntimeGpu.*:*KernelBench*:*Im2col*:*Positive*' > "$LOGS/sanitizer.txt" 2>&1
  echo "sanitizer exit $?"; tail -2 "$LOGS/sanitizer.txt"
fi

if [ "${BENCH:-1}" = 1 ] && [ -x scripts/bench.sh ]; then
  echo "== benchmark vs cuDNN, JIT overheads, PyTorch"
  timeout 330 scripts/bench.sh "$OUT/bench" > "$LOGS/bench.txt" 2>&1
  echo "bench exit $?"; tail -45 "$LOGS/bench.txt"
fi
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$LOGS"
ls "$OUT" "$OUT/bench" 2>/dev/null
