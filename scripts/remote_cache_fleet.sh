#!/usr/bin/env bash
# Measures the remote cache on this machine (docs/perf.md, "Remote cache"):
#  1. two nodes, one Redis: node 1 prewarms the KernelBench set into an empty cache
#     directory, then node 2 does into another empty one (it should compile nothing);
#  2. a cold fleet: 8 processes on 8 empty directories prewarm the same 50 small
#     problems at once through one Redis (total compiles should be 50);
#  3. for comparison, the same fleet without the remote cache (each compiles all).
# Uses the Redis at CONVJIT_TEST_REDIS_URL, else starts a throwaway one
# (scripts/with_redis.sh). Needs a build (scripts/setup.sh).
#
#   scripts/remote_cache_fleet.sh [--arch sm_90]
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
if [ -z "${CONVJIT_TEST_REDIS_URL:-}" ]; then
  exec "$root/scripts/with_redis.sh" --require "$0" "$@"
fi
arch=sm_90
if [ "${1:-}" = "--arch" ]; then arch="$2"; fi
convjit="$root/${CONVJIT_BUILD_DIR:-build}/tools/convjit"
work="$(mktemp -d "${TMPDIR:-/tmp}/convjit-fleet.XXXXXX")"
trap 'rm -rf "$work"' EXIT

export CONVJIT_REMOTE_CACHE="$CONVJIT_TEST_REDIS_URL"
export CONVJIT_REMOTE_CACHE_KEY="hex:$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
export CONVJIT_REMOTE_CACHE_PREFIX="convjit-fleet-bench:$$:"
export CONVJIT_PROGRESS=plain
unset CONVJIT_CACHE_DIR

echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -m), Redis at $CONVJIT_REMOTE_CACHE"
echo "== 1. two nodes, one Redis: workloads/kernelbench_level1_conv.json for $arch"
for node in 1 2; do
  out="$("$convjit" prewarm workloads/kernelbench_level1_conv.json --arch "$arch" --dir "$work/node$node")"
  echo "node $node:"
  grep -E '^(summary|runtime|remote) ' <<<"$out" | sed 's/^/  /'
done
echo "  entries: $("$convjit" cache stats --dir "$work/node1" | grep -E '^entries' | head -1)"

for i in $(seq 0 49); do
  echo "n1c$((1 + i % 4))h$((6 + i / 4))w5k2r3s3 pad=1"
done >"$work/fifty.txt"

# Starts 8 prewarm processes of the 50 problems at once, each on an empty directory
# named $1<node>, waits for all, and sums their counters.
fleet() {
  local name=$1 start end status=0 compiles=0 hits=0 waits=0 pids=()
  start=$(date +%s.%N)
  for node in $(seq 1 8); do
    "$convjit" prewarm "$work/fifty.txt" --arch "$arch" --dir "$work/$name$node" >"$work/$name$node.out" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  end=$(date +%s.%N)
  for node in $(seq 1 8); do
    local line remote n h=0 w=0
    line="$(grep -E '^runtime ' "$work/$name$node.out")"
    n=$(sed -E 's/^runtime +compiles ([0-9]+).*/\1/' <<<"$line")
    if remote="$(grep -E '^remote +hits' "$work/$name$node.out")"; then
      h=$(sed -E 's/^remote +hits ([0-9]+).*/\1/' <<<"$remote")
      w=$(sed -E 's/.*lock waits ([0-9]+).*/\1/' <<<"$remote")
    fi
    echo "  process $node: compiles $n, remote hits $h, fleet lock waits $w"
    compiles=$((compiles + n))
    hits=$((hits + h))
    waits=$((waits + w))
  done
  local wall
  wall=$(awk "BEGIN { printf \"%.1f\", $end - $start }")
  echo "  total: compiles $compiles for 50 problems, remote hits $hits, fleet lock waits $waits, $wall s wall"
  [ "$status" = 0 ] || { echo "a process failed" >&2; exit 1; }
}

echo "== 2. cold fleet: 8 processes, 8 empty directories, the same 50 problems at once, one Redis"
fleet fleet
echo "== 3. the same without the remote cache"
CONVJIT_REMOTE_CACHE=off fleet alone
