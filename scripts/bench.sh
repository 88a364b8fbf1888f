#!/usr/bin/env bash
# The benchmarks, on a GPU machine: convjit against cuDNN (conv_bench), the JIT's own
# costs (jit_overhead), PyTorch eager on the same problems (torch_conv.py) and the bar
# charts (plot_bench.py). Results go to the directory $1 (default bench-results/):
#   conv_bench.json  jit_overhead.json  torch_conv.json  conv_bench_speedup.png
#   conv_bench_time.png  bench.log
# docs/bench.md says how to read them. Environment:
#   CONVJIT_BUILD_DIR  build directory (default build-bench)
#   BENCH_BUILD=0      use the binaries already in the build directory (e.g. carried to
#                      a machine that cannot build); otherwise scripts/setup.sh builds them,
#                      and a failed build falls back to binaries already there
#   BENCH_IDS          KernelBench ids (default 50,55,56,62,63,80,82,83,84,85,86,87)
#   BENCH_MATH         conv_bench math modes (default strict,tf32)
#   BENCH_LAYOUT       layouts for conv_bench and torch_conv.py: nchw, nhwc or both
#                      (default nchw); each row's cuDNN / PyTorch runs in the same layout
#   BENCH_CONV_ARGS, BENCH_TORCH_ARGS, BENCH_JIT_ARGS
#                      more options for conv_bench, torch_conv.py and jit_overhead
# Each step has a time limit so that one slow step leaves the others their share
# (about 8 minutes in all on an H100); conv_bench rewrites its JSON after every problem.
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
out="${1:-bench-results}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
build="${CONVJIT_BUILD_DIR:-build-bench}"
ids="${BENCH_IDS:-50,55,56,62,63,80,82,83,84,85,86,87}"
log="$out/bench.log"
: >"$log"
say() { echo "== $*" | tee -a "$log"; }
status=0
step_done() {  # name, exit status
  echo "$1 exit status $2" | tee -a "$log"
  [ "$2" = 0 ] || status=1
}

if [ "${BENCH_BUILD:-1}" != 0 ]; then
  say "build ($build, CONVJIT_BUILD_BENCH=ON)"
  if ! CONVJIT_BUILD_DIR="$build" \
       CONVJIT_CMAKE_ARGS="-DCONVJIT_BUILD_BENCH=ON -DCONVJIT_BUILD_TESTS=OFF -DCONVJIT_BUILD_EXAMPLES=OFF ${CONVJIT_CMAKE_ARGS:-}" \
       ./scripts/setup.sh >>"$log" 2>&1; then
    say "build failed (see above); using the binaries already in $build if there are any"
  fi
fi
for bin in conv_bench jit_overhead; do
  if [ ! -x "$build/bench/$bin" ]; then
    say "missing $build/bench/$bin: build with CONVJIT_BUILD_BENCH=ON first"
    exit 1
  fi
done

# Libraries the loader cannot find (cuDNN where the toolkit lacks it, say): look in the
# toolkit and in Python's site-packages, whose NVIDIA wheels (PyTorch's) carry them.
missing="$(ldd "$build/bench/conv_bench" "$build/bench/jit_overhead" 2>/dev/null | awk '/not found/ {print $1}' | sort -u)"
if [ -n "$missing" ]; then
  sites="$(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)"
  for lib in $missing; do
    found="$(find /usr/local/cuda/lib64/ $sites -name "$lib" 2>/dev/null | head -n 1)"
    if [ -n "$found" ]; then
      export LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      say "$lib from $(dirname "$found")"
    else
      say "$lib not found: the benchmarks cannot start"
    fi
  done
fi

# Kernels compile into a cache outside the results directory, empty for each run here.
export CONVJIT_CACHE_DIR="${CONVJIT_CACHE_DIR:-/tmp/convjit-bench-cache-$$}"
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv 2>&1; } | tee -a "$log"

say "conv_bench (ids $ids, ${BENCH_MATH:-strict,tf32}, ${BENCH_LAYOUT:-nchw})"
timeout 240 "$build/bench/conv_bench" --workloads "$root/workloads/kernelbench_level1_conv.json" --ids "$ids" \
  --math "${BENCH_MATH:-strict,tf32}" --layout "${BENCH_LAYOUT:-nchw}" --skip-slow-ms 25 --json "$out/conv_bench.json" ${BENCH_CONV_ARGS:-} 2>&1 |
  tee -a "$log"
step_done conv_bench "${PIPESTATUS[0]}"

say "torch_conv.py (PyTorch eager, same problems)"
PYTHONUNBUFFERED=1 timeout 90 python3 bench/torch_conv.py --workloads "$root/workloads/kernelbench_level1_conv.json" \
  --ids "$ids" --layout "${BENCH_LAYOUT:-nchw}" --json "$out/torch_conv.json" ${BENCH_TORCH_ARGS:-} 2>&1 | tee -a "$log"
step_done torch_conv.py "${PIPESTATUS[0]}"

say "plot_bench.py"
if [ -s "$out/conv_bench.json" ]; then
  torch_arg=()
  [ -s "$out/torch_conv.json" ] && torch_arg=(--torch "$out/torch_conv.json")
  for metric in speedup time; do
    python3 bench/plot_bench.py "$out/conv_bench.json" ${torch_arg[@]+"${torch_arg[@]}"} --metric "$metric" \
      -o "$out/conv_bench_$metric.png" 2>&1 | tee -a "$log"
    step_done "plot_bench.py --metric $metric" "${PIPESTATUS[0]}"
  done
else
  say "no conv_bench.json to plot"
  status=1
fi

say "jit_overhead"
timeout 120 "$build/bench/jit_overhead" --json "$out/jit_overhead.json" ${BENCH_JIT_ARGS:-} 2>&1 | tee -a "$log"
step_done jit_overhead "${PIPESTATUS[0]}"

case "$CONVJIT_CACHE_DIR" in /tmp/convjit-bench-cache-*) rm -rf "$CONVJIT_CACHE_DIR" ;; esac
say "results in $out"
ls -l "$out" | tee -a "$log"
exit "$status"
