#!/usr/bin/env bash
# One device-machine call: GPU tests, the headline example cold / warm-disk / hot,
# a CPU-prewarmed cache served without compiling, compute-sanitizer, and PyTorch's
# time for the same problem as a yardstick. Expects a build/ made on the CPU machine
# (carried) and writes logs under $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
# The carried build has absolute paths of the CPU machine's checkout: make them resolve here.
if [ ! -e /work/main ]; then mkdir -p /work && ln -s "$PWD" /work/main; fi
cd /work/main
{ date -u; nvidia-smi -L; nvidia-smi --query-gpu=driver_version,clocks.sm,clocks.max.sm --format=csv; ldd --version | head -1; } 2>&1 | tee "$OUT/machine.txt"
ldd build/tests/convjit_gpu_tests | grep "not found" && echo "MISSING LIBS"

echo "== ctest (cpu + gpu)"
(cd build && ctest --output-on-failure -j 4 2>&1) > "$OUT/ctest.txt"; tail -15 "$OUT/ctest.txt"
echo "== gpu tests verbose"
build/tests/convjit_gpu_tests 2>&1 | tail -25 > "$OUT/gpu_tests.txt"; grep -E "PASSED|FAILED|OK \]" "$OUT/gpu_tests.txt" | tail -12

echo "== CPU-prewarmed cache carried here (expect compiles=0)"
CONVJIT_CACHE_DIR="$PWD/build/prewarmed-cache" CONVJIT_LOG_LEVEL=info build/examples/headline_conv 2>&1 | tee "$OUT/headline_prewarmed.txt"

echo "== headline cold (empty cache, new process)"
rm -rf /tmp/cj-cold
CONVJIT_CACHE_DIR=/tmp/cj-cold build/examples/headline_conv 2>&1 | tee "$OUT/headline_cold.txt"
echo "== headline warm disk (new process)"
CONVJIT_CACHE_DIR=/tmp/cj-cold build/examples/headline_conv 2>&1 | tee "$OUT/headline_warm.txt"

if [ "${SANITIZE:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  echo "== compute-sanitizer memcheck"
  compute-sanitizer --tool memcheck --error-exitcode 9 build/tests/convjit_gpu_tests \
    --gtest_filter='RuntimeGpu.*:Conv2dCorrectness.PlanRun*:Conv2dCorrectness.KernelBench*' > "$OUT/sanitizer.txt" 2>&1
  echo "sanitizer exit $?"; tail -4 "$OUT/sanitizer.txt"
fi

if [ "${TORCH:-1}" = 1 ]; then
  echo "== PyTorch on the same GPU, headline problem"
  python3 - <<'PY' 2>&1 | tee "$OUT/torch.txt"
import torch, torch.nn.functional as F
x = torch.rand(8, 64, 512, 256, device="cuda") * 2 - 1
w = torch.rand(128, 64, 5, 7, device="cuda") * 2 - 1
def med(fn, n=30):
    for _ in range(3): fn()
    ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(True), torch.cuda.Event(True)
        a.record(); fn(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b))
    return sorted(ts)[n // 2]
torch.backends.cudnn.benchmark = False
torch.backends.cudnn.allow_tf32 = False
print(f"torch {torch.__version__} cudnn {torch.backends.cudnn.version()} strict fp32: {med(lambda: F.conv2d(x, w)):.3f} ms")
torch.backends.cudnn.allow_tf32 = True
print(f"torch tf32 (default): {med(lambda: F.conv2d(x, w)):.3f} ms")
PY
fi
