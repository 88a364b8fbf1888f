#!/usr/bin/env bash
# The Python package on the GPU machine, which has no network: install convjit there,
# run its tests (python/tests: the GPU ones, opcheck, torch.compile, CUDA graphs, and
# the CPU ones) and the ResNet-50 example, with logs and results under $OUT.
#
#   scripts/device_python.sh [all|tests|example]     on the GPU machine (default: all)
#   scripts/device_python.sh --wheel                 on the CPU machine, first (optional)
#
# The extension gets there one of two ways:
# - a wheel built on the CPU machine for the GPU machine's Python (3.12 there):
#   `--wheel` writes build-py/wheelhouse/convjit-*-cp312-*.whl with python3.12 (pyenv
#   has it here); the device call carries "build-py/wheelhouse";
# - else a build there from the sources: pip install --no-build-isolation --no-deps
#   (scikit-build-core, nanobind, cmake, ninja and nvcc are there; libfmt-dev headers
#   are needed too).
# It installs with --target into /tmp/convjit-site (PYTHONPATH), leaving the machine's
# Python environment as it was. Kernels compile there into a fresh cache
# (CONVJIT_CACHE_DIR=/tmp/convjit-cache), in parallel for the example's prewarm.
# Expected time on an H200: install 10 s from a wheel (2-3 min building), tests ~5 min,
# example ~3 min.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--wheel" ]; then
  set -e
  # The GPU machine's Python is 3.12: a python3.12 here (pyenv's, if not on PATH).
  py="${CONVJIT_DEVICE_PYTHON:-}"
  if [ -z "$py" ]; then
    for candidate in python3.12 $(ls -d "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 2>/dev/null); do
      if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
        py="$candidate"
        break
      fi
    done
  fi
  [ -n "$py" ] || { echo "device_python --wheel: no Python 3.12 here (set CONVJIT_DEVICE_PYTHON)" >&2; exit 1; }
  rm -rf build-py/wheelhouse
  "$py" -m pip wheel --no-deps -w build-py/wheelhouse .
  ls -la build-py/wheelhouse
  exit 0
fi

what="${1:-all}"
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export CONVJIT_CACHE_DIR="${CONVJIT_CACHE_DIR:-/tmp/convjit-cache}"
export PATH="/usr/local/cuda/bin:$PATH"
site=/tmp/convjit-site
tag="$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"

{
  date -u
  nvidia-smi -L
  python3 -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'
} 2>&1 | tee "$OUT/machine.txt"

if ! PYTHONPATH="$site" python3 -c 'import convjit._convjit' 2>/dev/null; then
  wheel="$(ls build-py/wheelhouse/convjit-*-"$tag"-*.whl 2>/dev/null | head -1)"
  if [ -n "$wheel" ]; then
    echo "== installing $wheel"
    python3 -m pip install -q --no-index --no-deps --target "$site" "$wheel" 2>&1 | tee "$OUT/install.txt"
  else
    echo "== no $tag wheel in build-py/wheelhouse: building the package here"
    python3 -m pip install --no-build-isolation --no-deps --target "$site" \
      -C build-dir=/tmp/convjit-build . > "$OUT/install.txt" 2>&1
    tail -5 "$OUT/install.txt"
  fi
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
python3 -c 'import torch, convjit.torch, convjit; print("convjit", convjit.__version__, "from", convjit.__file__)' \
  || { echo "device_python: convjit does not import; see $OUT/install.txt"; exit 1; }

status=0
if [ "$what" = all ] || [ "$what" = tests ]; then
  echo "== python/tests (GPU tests first)"
  # PYTEST_K: a pytest -k expression, to run part of the suite in a short call.
  python3 -m pytest -q -rs -p no:cacheprovider ${PYTEST_K:+-k "$PYTEST_K"} python/tests/test_torch_gpu.py \
    python/tests/test_torch_cpu.py python/tests/test_runtime.py > "$OUT/pytest.txt" 2>&1
  rc=$?
  tail -25 "$OUT/pytest.txt"
  echo "pytest exit $rc"
  [ $rc = 0 ] || status=1
fi
if [ "$what" = all ] || [ "$what" = example ]; then
  echo "== examples/resnet50_torch.py (batch ${BATCH:-32})"
  python3 examples/resnet50_torch.py --batch "${BATCH:-32}" --iters "${ITERS:-30}" \
    --json "$OUT/resnet50.json" --markdown "$OUT/resnet50.md" > "$OUT/resnet50.txt" 2>&1
  rc=$?
  cat "$OUT/resnet50.txt"
  echo "example exit $rc"
  [ $rc = 0 ] || status=1
fi
exit $status
