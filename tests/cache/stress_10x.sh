#!/usr/bin/env bash
# Runs the multi-process cache stress tests ten times in a row, stopping at the
# first failure (issue 5, acceptance 1), then the corruption run once more.
#   tests/cache/stress_10x.sh [build-dir]     (default: build)
set -euo pipefail
build="${1:-build}"
cd "$(dirname "$0")/../.."
ninja -C "$build" convjit_cache_stress_tests convjit_cache_stress_worker >/dev/null
cd "$build"
ctest -R 'CacheStress\.' --repeat until-fail:10 --output-on-failure
ctest -R 'CacheStress\.RandomCorruption' --output-on-failure -V | grep -E 'corrupted|verified|sum:|Passed|Failed'
