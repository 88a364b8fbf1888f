#!/usr/bin/env bash
# The main job. On a GPU: the headline convolution (KernelBench level-1 #56),
# checked against float64 and timed. Without one: prewarm the cache for the
# KernelBench 2D shapes (for sm_90) and show the PTX of the headline kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
build="${CONVJIT_BUILD_DIR:-build}"
if ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1' && nvidia-smi -L >/dev/null 2>&1; then
  "$build/examples/headline_conv"
else
  echo "main: no GPU here; prewarming and showing PTX instead"
  "$build/examples/prewarm_and_ptx" --arch "${CONVJIT_ARCH:-sm_90}"
fi
