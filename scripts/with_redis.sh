#!/usr/bin/env bash
# Runs a command with a throwaway Redis for the remote cache tests: starts
# redis-server on a free loopback port (no persistence), exports
# CONVJIT_TEST_REDIS_URL=redis://127.0.0.1:PORT/0, runs the command, stops the server
# when it ends (however it ends) and exits with the command's status.
#
#   scripts/with_redis.sh [--require] COMMAND [ARGS...]
#
# Without redis-server the command runs as it is and the tests that need Redis skip,
# saying so; with --require (CI) that is an error instead.
set -euo pipefail

require=0
if [ "${1:-}" = "--require" ]; then
  require=1
  shift
fi
if ! command -v redis-server >/dev/null; then
  if [ "$require" = 1 ]; then
    echo "with_redis: redis-server is not installed (apt-get install redis-server)" >&2
    exit 1
  fi
  echo "with_redis: redis-server not found; the remote cache tests will skip (apt-get install redis-server)" >&2
  exec "$@"
fi

dir="$(mktemp -d "${TMPDIR:-/tmp}/convjit-redis.XXXXXX")"
pid=""
stop() {
  local status=$?
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
  exit "$status"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A random port; if another process holds it, redis-server exits and another is tried.
port=""
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  candidate=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
  : >"$dir/redis.log"
  redis-server --port "$candidate" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$dir" --logfile "$dir/redis.log" --maxmemory 1gb --maxmemory-policy allkeys-lru &
  pid=$!
  for _ in $(seq 200); do
    if grep -q "Ready to accept connections" "$dir/redis.log"; then
      port=$candidate
      break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$port" ] && break
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
done
if [ -z "$port" ]; then
  echo "with_redis: redis-server did not start; its log:" >&2
  cat "$dir/redis.log" >&2
  exit 1
fi

export CONVJIT_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
echo "with_redis: redis-server (pid $pid) at $CONVJIT_TEST_REDIS_URL for the remote cache tests"
set +e
"$@"
status=$?
set -e
exit "$status"
