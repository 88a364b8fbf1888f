#pragma once
// The live counters behind CacheStats; relaxed atomics, bumped from any thread.

#include <atomic>
#include <cstdint>

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
  std::atomic<double> compile_ms{0};

  static void bump(std::atomic<std::uint64_t>& counter) { counter.fetch_add(1, std::memory_order_relaxed); }
  CacheStats snapshot() const;
};

}  // namespace convjit
