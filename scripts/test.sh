#!/usr/bin/env bash
# Builds and runs every test. Without a GPU the GPU tests skip, each saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cd "${CONVJIT_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" "$@"
