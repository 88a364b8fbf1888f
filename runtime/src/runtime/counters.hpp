#pragma once
// The live counters behind CacheStats; relaxed atomics, bumped from any thread.

#include <atomic>
#include <cstdint>
#include <string>

#include "convjit/runtime.hpp"

namespace convjit {

struct Counters {
  std::atomic<std::uint64_t> memory_hits{0};
  std::atomic<std::uint64_t> disk_hits{0};
  std::atomic<std::uint64_t> misses{0};
  std::atomic<std::uint64_t> compiles{0};
  std::atomic<std::uint64_t> corrupt_rebuilt{0};
  std::atomic<std::uint64_t> disk_writes{0};
  std::atomic<std::uint64_t> module_loads{0};
  std::atomic<std::uint64_t> disk_write_errors{0};
  std::atomic<std::uint64_t> evictions{0};
  std::atomic<std::uint64_t> bytes_read{0};
  std::atomic<std::uint64_t> bytes_written{0};
  std::atomic<std::uint64_t> lock_waits{0};
  std::atomic<std::uint64_t> lock_takeovers{0};
  std::atomic<std::uint64_t> lock_timeouts{0};
  std::atomic<std::uint64_t> autotune_runs{0};
  std::atomic<std::uint64_t> autotune_reused{0};
  std::atomic<std::uint64_t> first_tier_runs{0};
  std::atomic<std::uint64_t> background_builds{0};
  std::atomic<std::uint64_t> background_failures{0};
  std::atomic<double> compile_ms{0};
  std::atomic<double> compile_ms_saved{0};
  std::atomic<double> key_ms{0};
  std::atomic<double> disk_read_ms{0};
  std::atomic<double> disk_verify_ms{0};
  std::atomic<double> module_load_ms{0};
  std::atomic<double> function_load_ms{0};
  std::atomic<std::uint64_t> remote_hits{0};
  std::atomic<std::uint64_t> remote_misses{0};
  std::atomic<std::uint64_t> remote_rejects{0};
  std::atomic<std::uint64_t> remote_unavailable{0};
  std::atomic<std::uint64_t> remote_timeouts{0};
  std::atomic<std::uint64_t> remote_errors{0};
  std::atomic<std::uint64_t> remote_skipped{0};
  std::atomic<std::uint64_t> remote_publishes{0};
  std::atomic<std::uint64_t> remote_lock_waits{0};
  std::atomic<std::uint64_t> remote_lock_takeovers{0};
  std::atomic<std::uint64_t> remote_lock_timeouts{0};
  std::atomic<std::uint64_t> remote_bytes_read{0};
  std::atomic<std::uint64_t> remote_bytes_written{0};
  std::atomic<double> remote_ms{0};
  // NOTE: plain fields, written once while the Runtime is constructed, before any
  // other thread can see it.
  DiskCacheMode disk_mode = DiskCacheMode::kReadWrite;
  std::string disk_note;
  RemoteCacheMode remote_mode = RemoteCacheMode::kOff;
  std::string remote_note;

  static void bump(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) {
    counter.fetch_add(by, std::memory_order_relaxed);
  }
  CacheStats snapshot() const;
};

}  // namespace convjit
