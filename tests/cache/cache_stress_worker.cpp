// One process of the multi-process cache stress test (cache_stress_test.cpp).
// Makes a convjit::Runtime on a given cache directory and, from several threads,
// prewarms (or inspects and checks) a deterministic but shuffled window of
// descriptors for sm_90, then prints its CacheStats as one JSON line on stdout.
//
//   convjit_cache_stress_worker --cache DIR [--first 0] [--count 50] [--threads 4]
//       [--passes 1] [--seed 1] [--mode prewarm|read|hold] [--max-bytes 0]
//       [--start-gate 1] [--progress 1]
//
// --start-gate 1 lines up the processes of one test: each prints "ready" and waits
// for a line on stdin (worker_process.hpp, start_together) before it starts.
// --progress 1 prints "done <i>" after each descriptor, so a test can act (kill the
// Redis server, corrupt an entry, measure the cache) at a known point of the run. The
// remote cache, when a test wants one, comes from the environment
// (CONVJIT_REMOTE_CACHE, ...), as for any program.
// --mode hold takes the compile lock of descriptor --first the way a compiling process
// does, prints "holding <lock file>", and keeps it, as if compiling, until it is
// killed: stdin ending first (the test is gone) makes it exit with status 3. A test
// kills it there to watch another process take over.
// Each pass uses a fresh Runtime, so passes after the first read the disk cache
// instead of this process's memory. Exit status 0 when every request succeeded.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "cache/disk_cache.hpp"
#include "cache/disk_cache_internal.hpp"
#include "convjit/convjit.hpp"

namespace {

struct Args {
  std::string cache;
  int first = 0;
  int count = 50;
  int threads = 4;
  int passes = 1;
  unsigned seed = 1;
  std::string mode = "prewarm";
  std::uint64_t max_bytes = 0;
  bool start_gate = false;
  bool progress = false;
};

Args parse(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--cache")
      args.cache = value;
    else if (flag == "--first")
      args.first = std::atoi(value);
    else if (flag == "--count")
      args.count = std::atoi(value);
    else if (flag == "--threads")
      args.threads = std::atoi(value);
    else if (flag == "--passes")
      args.passes = std::atoi(value);
    else if (flag == "--seed")
      args.seed = static_cast<unsigned>(std::strtoul(value, nullptr, 10));
    else if (flag == "--mode")
      args.mode = value;
    else if (flag == "--max-bytes")
      args.max_bytes = std::strtoull(value, nullptr, 10);
    else if (flag == "--start-gate")
      args.start_gate = std::atoi(value) != 0;
    else if (flag == "--progress")
      args.progress = std::atoi(value) != 0;
    else {
      fmt::print(stderr, "unknown flag {}\n", flag);
      std::exit(2);
    }
  }
  if (args.cache.empty()) {
    fmt::print(stderr, "--cache DIR is required\n");
    std::exit(2);
  }
  return args;
}

// Descriptor i of the stress set: small (quick to compile), all distinct.
convjit::Conv2dDesc stress_desc(int i) {
  return convjit::Conv2dDesc{
      .n = 1, .c = 1 + i % 4, .h = 6 + i / 4, .w = 5, .k = 2, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
}

void add(convjit::CacheStats& total, const convjit::CacheStats& s) {
  total.memory_hits += s.memory_hits;
  total.disk_hits += s.disk_hits;
  total.misses += s.misses;
  total.compiles += s.compiles;
  total.corrupt_rebuilt += s.corrupt_rebuilt;
  total.disk_writes += s.disk_writes;
  total.disk_write_errors += s.disk_write_errors;
  total.evictions += s.evictions;
  total.bytes_read += s.bytes_read;
  total.bytes_written += s.bytes_written;
  total.lock_waits += s.lock_waits;
  total.lock_takeovers += s.lock_takeovers;
  total.lock_timeouts += s.lock_timeouts;
  total.compile_ms += s.compile_ms;
  total.compile_ms_saved += s.compile_ms_saved;
  total.remote_hits += s.remote_hits;
  total.remote_misses += s.remote_misses;
  total.remote_rejects += s.remote_rejects;
  total.remote_unavailable += s.remote_unavailable;
  total.remote_timeouts += s.remote_timeouts;
  total.remote_errors += s.remote_errors;
  total.remote_skipped += s.remote_skipped;
  total.remote_publishes += s.remote_publishes;
  total.remote_lock_waits += s.remote_lock_waits;
  total.remote_lock_takeovers += s.remote_lock_takeovers;
  total.remote_lock_timeouts += s.remote_lock_timeouts;
  total.remote_ms += s.remote_ms;
}

// Blocks until a line (or the end) comes on stdin.
void wait_for_stdin() {
  for (char c = 0; ::read(STDIN_FILENO, &c, 1) == 1 && c != '\n';) {
  }
}

// --mode hold: the compile lock of `desc`, taken by DiskCache::fetch_or_build itself
// (the lock file, its owner record), whose build then lasts until the process is killed.
[[noreturn]] void hold_compile_lock(const Args& args, const convjit::Conv2dDesc& desc) {
  std::string key_hash;
  {
    // The key the cache would use for this descriptor: compiled in memory only.
    convjit::RuntimeOptions options;
    options.disk_cache = false;
    options.remote_cache = "off";
    convjit::Runtime local(options);
    key_hash = local.inspect(desc, "sm_90").key_hash;
  }
  const convjit::CacheKey key{"held by convjit_cache_stress_worker --mode hold", key_hash};
  const convjit::DiskCache cache(args.cache);
  const std::filesystem::path lock =
      cache.entry_path(key).parent_path() / (key_hash + std::string(convjit::kLockSuffix));
  convjit::DiskCache::FetchReport report;
  cache.fetch_or_build(
      key,
      [&]() -> convjit::CacheEntry {
        // The cache builds without the lock when it cannot take it: say so, not "holding".
        std::string owner;
        std::getline(std::ifstream(lock), owner);
        if (!owner.starts_with(fmt::format("pid {} on host ", ::getpid()))) {
          fmt::print(stderr, "pid {}: building without the compile lock '{}' (owner: '{}')\n", ::getpid(),
                     lock.string(), owner);
          std::_Exit(2);
        }
        fmt::print("holding {}\n", lock.string());
        std::fflush(stdout);
        wait_for_stdin();
        std::_Exit(3);  // NOTE: no release, no publication: as if the compiler had crashed
      },
      report);
  fmt::print(stderr, "pid {}: never held the compile lock (hit {}, waited {})\n", ::getpid(), report.hit,
             report.waited);
  std::_Exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  std::vector<convjit::Conv2dDesc> descs;
  for (int i = args.first; i < args.first + args.count; ++i) descs.push_back(stress_desc(i));
  if (args.mode == "hold") hold_compile_lock(args, descs.front());

  if (args.start_gate) {
    fmt::print("ready\n");
    std::fflush(stdout);
    wait_for_stdin();
  }

  const auto started = std::chrono::steady_clock::now();
  convjit::CacheStats total;
  std::atomic<int> failed{0};
  std::mutex out_mutex;
  for (int pass = 0; pass < args.passes; ++pass) {
    convjit::RuntimeOptions options{.cache_dir = args.cache};
    if (args.max_bytes != 0) options.cache_max_bytes = args.max_bytes;
    convjit::Runtime rt(options);
    std::vector<std::thread> threads;
    for (int t = 0; t < args.threads; ++t) {
      threads.emplace_back([&, t] {
        std::vector<convjit::Conv2dDesc> order = descs;
        std::mt19937 rng(args.seed * 7919u + static_cast<unsigned>(pass * 131 + t));
        std::shuffle(order.begin(), order.end(), rng);
        if (args.mode == "read") {
          for (std::size_t i = 0; i < order.size(); ++i) {
            const convjit::Conv2dDesc& d = order[i];
            try {
              const auto info = rt.inspect(d, "sm_90");
              if (info.ptx.find(".entry " + info.kernel_name) == std::string::npos || info.cubin_bytes == 0 ||
                  info.cache_path.stem().string() != info.key_hash) {
                fmt::print(stderr, "pid {}: wrong content for {}\n", ::getpid(), d.to_string());
                ++failed;
              }
            } catch (const std::exception& e) {
              fmt::print(stderr, "pid {}: inspect failed: {}\n", ::getpid(), e.what());
              ++failed;
            }
            if (args.progress) {
              std::lock_guard lock(out_mutex);
              fmt::print("done {}\n", i);
              std::fflush(stdout);
            }
          }
        } else {
          // With --progress, one descriptor at a time, each reported when done.
          const std::size_t step = args.progress ? 1 : order.size();
          for (std::size_t i = 0; i < order.size(); i += step) {
            try {
              const auto result = rt.prewarm(std::span(order).subspan(i, std::min(step, order.size() - i)), "sm_90");
              failed += static_cast<int>(result.failed);
              for (const auto& error : result.errors) fmt::print(stderr, "pid {}: {}\n", ::getpid(), error);
            } catch (const std::exception& e) {
              fmt::print(stderr, "pid {}: prewarm threw: {}\n", ::getpid(), e.what());
              ++failed;
            }
            if (args.progress) {
              std::lock_guard lock(out_mutex);
              fmt::print("done {}\n", i);
              std::fflush(stdout);
            }
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    add(total, rt.stats());
  }

  fmt::print(
      "{{\"pid\":{},\"failed\":{},\"compiles\":{},\"misses\":{},\"disk_hits\":{},\"memory_hits\":{},"
      "\"corrupt_rebuilt\":{},\"disk_writes\":{},\"disk_write_errors\":{},\"evictions\":{},\"lock_waits\":{},"
      "\"lock_takeovers\":{},\"lock_timeouts\":{},\"bytes_read\":{},\"bytes_written\":{},\"compile_ms\":{:.1f},"
      "\"compile_ms_saved\":{:.1f},\"remote_hits\":{},\"remote_misses\":{},\"remote_rejects\":{},"
      "\"remote_unavailable\":{},\"remote_timeouts\":{},\"remote_errors\":{},\"remote_skipped\":{},"
      "\"remote_publishes\":{},\"remote_lock_waits\":{},\"remote_lock_takeovers\":{},\"remote_lock_timeouts\":{},"
      "\"remote_ms\":{:.1f},\"wall_ms\":{:.1f}}}\n",
      ::getpid(), failed.load(), total.compiles, total.misses, total.disk_hits, total.memory_hits,
      total.corrupt_rebuilt, total.disk_writes, total.disk_write_errors, total.evictions, total.lock_waits,
      total.lock_takeovers, total.lock_timeouts, total.bytes_read, total.bytes_written, total.compile_ms,
      total.compile_ms_saved, total.remote_hits, total.remote_misses, total.remote_rejects, total.remote_unavailable,
      total.remote_timeouts, total.remote_errors, total.remote_skipped, total.remote_publishes, total.remote_lock_waits,
      total.remote_lock_takeovers, total.remote_lock_timeouts, total.remote_ms,
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
  std::fflush(stdout);
  return failed.load() == 0 ? 0 : 1;
}
