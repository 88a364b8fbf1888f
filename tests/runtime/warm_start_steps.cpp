// Not a test: the host-side steps of a warm first plan, in a new process, on the fake
// CUDA driver (support/fake_cuda_driver.hpp), so that the cache's and the plan's own
// work can be measured on a machine without a GPU (docs/perf.md, "Warm start").
//
//   convjit_warm_start_steps CACHE_DIR [SHAPE]
//
// The first run on an empty CACHE_DIR compiles and fills it; later runs are warm starts.
// Prints one line of milliseconds: plan (rt.plan in all), then its parts as CacheStats
// counts them, and "other" (the plan's time outside those parts). The fake's module
// load is not the driver's: compare the steps before it, not the total.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <exception>

#include "convjit/convjit.hpp"
#include "workload/shape_text.hpp"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s CACHE_DIR [SHAPE]\n", argv[0]);
    return 2;
  }
  try {
    const convjit::Conv2dDesc desc = convjit::parse_shape(argc == 3 ? argv[2] : "n8c64h512w256k128r5s7");
    convjit::Runtime rt(convjit::RuntimeOptions{.cache_dir = argv[1], .autotune = false});
    const convjit::CacheStats before = rt.stats();
    const auto start = std::chrono::steady_clock::now();
    const convjit::Conv2dPlan plan = rt.plan(desc);
    const double plan_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    const convjit::CacheStats s = rt.stats();
    const double key = s.key_ms - before.key_ms;
    const double read = s.disk_read_ms - before.disk_read_ms;
    const double verify = s.disk_verify_ms - before.disk_verify_ms;
    const double module = s.module_load_ms - before.module_load_ms;
    const double function = s.function_load_ms - before.function_load_ms;
    const double compile = s.compile_ms - before.compile_ms;
    fmt::print("{} plan {:.3f} key {:.3f} read {:.3f} verify {:.3f} module {:.3f} func {:.3f} other {:.3f} bytes {}\n",
               s.disk_hits > before.disk_hits ? "warm" : "cold", plan_ms, key, read, verify, module, function,
               plan_ms - key - read - verify - module - function - compile, s.bytes_read - before.bytes_read);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
