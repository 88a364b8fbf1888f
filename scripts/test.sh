#!/usr/bin/env bash
# Builds and runs every test. Without a GPU the GPU tests skip, each saying why.
# 0. the tree's shape: no include points up a layer and docs/architecture.md is what the
#    includes say (scripts/check_layers.py); every C++/CUDA file is clang-formatted
#    (scripts/check_format.sh). Either failing fails the tests;
# 1. the C++ suites (ctest; arguments go to ctest). The remote cache tests use the Redis
#    at CONVJIT_TEST_REDIS_URL; when none is given and redis-server is installed, a
#    throwaway one is started for them (scripts/with_redis.sh);
# 2. the Python package: `pip install .` into a venv under build-py/, with a CPU-usable
#    PyTorch and torchvision from PyPI (CONVJIT_PY_TORCH=0 leaves them out: the torch
#    tests then skip, saying why), then pytest on python/tests. CONVJIT_PY=0 skips step 2.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
./scripts/setup.sh
python3 scripts/check_layers.py
./scripts/check_format.sh
(
  cd "${CONVJIT_BUILD_DIR:-build}"
  if [ -z "${CONVJIT_TEST_REDIS_URL:-}" ]; then
    exec "$root/scripts/with_redis.sh" ctest --output-on-failure -j "$(nproc)" "$@"
  fi
  exec ctest --output-on-failure -j "$(nproc)" "$@"
)

if [ "${CONVJIT_PY:-1}" = 1 ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
  venv="${CONVJIT_PY_DIR:-build-py}/venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if [ "${CONVJIT_PY_TORCH:-1}" = 1 ]; then
    # The versions the GPU machine has (scripts/device_python.sh); PyPI's Linux wheel
    # imports and runs on CPU (its CUDA libraries are pip packages, ~4 GB installed).
    "$venv/bin/pip" install -q torch==2.11.0 torchvision==0.26.0
  fi
  echo "test: building the Python package (pip install .)"
  "$venv/bin/pip" install -q . pytest
  # From the repository root, `import convjit` is the installed package: the sources
  # live in python/convjit, which is not on sys.path.
  "$venv/bin/python" -m pytest -q -rs python/tests
fi
