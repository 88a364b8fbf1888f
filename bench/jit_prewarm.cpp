// Part (c) of jit_overhead: Runtime::prewarm throughput with N threads, an empty cache
// each time, for an explicit arch (no GPU needed).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <random>
#include <thread>

#include "bench_util.hpp"
#include "convjit/convjit.hpp"
#include "jit_overhead.hpp"

namespace convjit::bench {

std::vector<Conv2dDesc> prewarm_descs(int count, int round) {
  std::vector<Conv2dDesc> all;
  for (const MathMode math : {MathMode::kTF32, MathMode::kStrictFp32}) {
    for (const int rs : {1, 3, 5, 7}) {
      for (const int c : {16, 32, 64, 128}) {
        for (const int k : {16, 64}) {
          all.push_back(Conv2dDesc{.n = 8 + round,
                                   .c = c,
                                   .h = 56,
                                   .w = 56,
                                   .k = k,
                                   .r = rs,
                                   .s = rs,
                                   .pad_h = rs / 2,
                                   .pad_w = rs / 2,
                                   .math = math});
        }
      }
    }
  }
  // A fixed shuffle, so that a prefix mixes sizes, math modes and algorithms as the whole does.
  std::shuffle(all.begin(), all.end(), std::mt19937(7));
  all.resize(static_cast<std::size_t>(std::clamp(count, 1, static_cast<int>(all.size()))));
  return all;
}

std::string measure_prewarm(const PrewarmOptions& options) {
  fmt::print(
      "\n(c) prewarm throughput: {} distinct kernels for {}, empty cache for each job count, each job count its "
      "own kernels\n",
      prewarm_descs(options.count).size(), options.arch);
  fmt::print("{:>5} {:>9} {:>9} {:>10} {:>12} {:>8}\n", "jobs", "compiled", "wall s", "kernels/s", "NVRTC cpu s",
             "failed");
  std::vector<std::string> items;
  int round = 0;
  for (const int jobs : options.jobs) {
    // NVRTC keeps what it compiles in the compute cache below it (jit_cold.cpp): the same
    // kernels again would be served from there, not compiled.
    const auto descs = prewarm_descs(options.count, round++);
    const std::filesystem::path dir = options.work_dir / fmt::format("prewarm-{}-{}", round, jobs);
    std::filesystem::remove_all(dir);
    Runtime rt(RuntimeOptions{.cache_dir = dir});
    std::mutex mutex;
    PrewarmResult total;
    const auto start = std::chrono::steady_clock::now();
    {
      std::vector<std::jthread> pool;
      for (int t = 0; t < jobs; ++t) {
        pool.emplace_back([&, t] {
          std::vector<Conv2dDesc> share;
          for (std::size_t i = static_cast<std::size_t>(t); i < descs.size(); i += static_cast<std::size_t>(jobs)) {
            share.push_back(descs[i]);
          }
          const PrewarmResult r = rt.prewarm(share, options.arch);
          const std::lock_guard lock(mutex);
          total.compiled += r.compiled;
          total.already_cached += r.already_cached;
          total.failed += r.failed;
          total.errors.insert(total.errors.end(), r.errors.begin(), r.errors.end());
        });
      }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const CacheStats stats = rt.stats();
    const double rate = seconds > 0 ? double(total.compiled) / seconds : 0;
    fmt::print("{:>5} {:>9} {:>9.2f} {:>10.2f} {:>12.2f} {:>8}\n", jobs, total.compiled, seconds, rate,
               stats.compile_ms / 1e3, total.failed);
    for (const auto& e : total.errors) fmt::print("      failed: {}\n", e.substr(0, e.find('\n')));
    items.push_back(JsonObject()
                        .integer("jobs", jobs)
                        .integer("kernels", static_cast<std::int64_t>(descs.size()))
                        .integer("compiled", static_cast<std::int64_t>(total.compiled))
                        .integer("already_cached", static_cast<std::int64_t>(total.already_cached))
                        .integer("failed", static_cast<std::int64_t>(total.failed))
                        .num("wall_s", seconds)
                        .num("kernels_per_s", rate)
                        .num("nvrtc_cpu_s", stats.compile_ms / 1e3)
                        .text());
    if (!options.keep) std::filesystem::remove_all(dir);
  }
  fmt::print("kernels/s = compiled / wall; NVRTC cpu s = the sum of every compile's wall time across threads\n");
  return json_array(items, true);
}

}  // namespace convjit::bench
