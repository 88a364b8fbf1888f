#!/usr/bin/env bash
# Installs what the build needs (when missing and apt-get can), then configures
# and builds into ${CONVJIT_BUILD_DIR:-build}. Safe to run again: it only rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
command -v g++ >/dev/null || need+=(g++)
[ -e /usr/include/fmt/format.h ] || [ -e /usr/local/include/fmt/format.h ] || need+=(libfmt-dev)
[ -e /usr/include/gtest/gtest.h ] || [ -e /usr/local/include/gtest/gtest.h ] || need+=(libgtest-dev)
command -v python3 >/dev/null || need+=(python3)
# The test command checks the tree's format with Debian's clang-format (the version CI has).
command -v clang-format >/dev/null || need+=(clang-format)
# Wanted, not needed: libhiredis-dev for the remote cache, its headers for the build and
# its library, loaded at run time, for the tests (without them convjit builds and says
# the remote cache is unavailable), redis-server for its tests (without it they skip).
want=()
[ -e /usr/include/hiredis/hiredis.h ] || [ -e /usr/local/include/hiredis/hiredis.h ] || want+=(libhiredis-dev)
command -v redis-server >/dev/null || want+=(redis-server)
if [ $((${#need[@]} + ${#want[@]})) -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need[*]} ${want[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" "${want[@]}" >/dev/null
  elif [ ${#need[@]} -gt 0 ]; then
    echo "setup: missing ${need[*]}; install them (apt-get needs root)" >&2
    exit 1
  else
    echo "setup: without ${want[*]} the remote cache is not built or not tested (apt-get needs root)" >&2
  fi
fi
if [ ! -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null; then
  echo "setup: the CUDA toolkit (NVRTC, cuBLAS headers) was not found at /usr/local/cuda" >&2
  exit 1
fi
export PATH="/usr/local/cuda/bin:$PATH"

build="${CONVJIT_BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc ${CONVJIT_CMAKE_ARGS:-} >/dev/null
cmake --build "$build"
