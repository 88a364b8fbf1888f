#!/usr/bin/env bash
# Builds and runs every test. Without a GPU the GPU tests skip, each saying why.
# The remote cache tests use the Redis at CONVJIT_TEST_REDIS_URL; when none is given
# and redis-server is installed, a throwaway one is started (scripts/with_redis.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
./scripts/setup.sh
cd "${CONVJIT_BUILD_DIR:-build}"
if [ -z "${CONVJIT_TEST_REDIS_URL:-}" ]; then
  exec "$root/scripts/with_redis.sh" ctest --output-on-failure -j "$(nproc)" "$@"
fi
ctest --output-on-failure -j "$(nproc)" "$@"
