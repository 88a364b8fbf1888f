// Not a test: the host-side steps of a warm first plan, in a new process, on the fake
// CUDA driver (support/fake_cuda_driver.hpp), so that the cache's and the plan's own
// work can be measured on a machine without a GPU (docs/perf.md, "Warm start").
//
//   convjit_warm_start_steps CACHE_DIR [SHAPE]
//   convjit_warm_start_steps --key SHAPE      (the key step's parts, no cache, no device)
//   convjit_warm_start_steps --conv2d CACHE_DIR tier|off
//                                             (the headline's first rt.conv2d in ms, the first
//                                             tier on or off; its kernel on disk: a warm start)
//
// The first run on an empty CACHE_DIR compiles and fills it; later runs are warm starts.
// Prints one line of milliseconds: plan (rt.plan in all), then its parts as CacheStats
// counts them, and "other" (the plan's time outside those parts). The fake's module
// load is not the driver's: compare the steps before it, not the total. "device": the
// device's first use (context creation), before the plan's clock starts.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <string_view>

#include "base/sha256.hpp"
#include "compile/kernel_key.hpp"
#include "compile/nvrtc.hpp"
#include "convjit/convjit.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/templates.hpp"
#include "workload/shape_text.hpp"

namespace {
double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// "--key SHAPE": the key step's parts, each the first of its kind in this process.
int key_parts(const convjit::Conv2dDesc& desc) {
  using namespace convjit;
  const std::string arch = "sm_90";
  auto t = std::chrono::steady_clock::now();
  const Algorithm algorithm = resolve_algorithm(desc, Algorithm::kAuto, arch);
  const double resolve = ms_since(t);
  t = std::chrono::steady_clock::now();
  resolve_algorithm(desc, Algorithm::kAuto, arch);
  const double resolve2 = ms_since(t);
  t = std::chrono::steady_clock::now();
  const Specialization spec = specialize(desc, algorithm, arch, kFullAlignment);
  const double specialize_ms = ms_since(t);
  t = std::chrono::steady_clock::now();
  const Specialization again = specialize(desc, algorithm, arch, kFullAlignment);
  const double specialize2 = ms_since(t);
  t = std::chrono::steady_clock::now();
  const std::string version = Nvrtc::version();
  const auto options = Nvrtc::options_for(arch);
  const double options_ms = ms_since(t);
  t = std::chrono::steady_clock::now();
  std::size_t embedded_bytes = template_text(spec.source.template_name).size();
  std::string digests = sha256_hex(template_text(spec.source.template_name));
  for (const auto& header : embedded_headers()) {
    digests += sha256_hex(header.text);
    embedded_bytes += header.text.size();
  }
  const double embedded_ms = ms_since(t);
  t = std::chrono::steady_clock::now();
  digests += sha256_hex(spec.source.text);
  const double source_ms = ms_since(t);
  t = std::chrono::steady_clock::now();
  const KernelKey first = make_kernel_key(desc, spec.source, arch, options, version);
  const double first_key = ms_since(t);
  t = std::chrono::steady_clock::now();
  const KernelKey second = make_kernel_key(desc, spec.source, arch, options, version);
  const double second_key = ms_since(t);
  fmt::print(
      "warm resolve {:.3f} resolve2 {:.3f} specialize {:.3f} specialize2 {:.3f} options {:.3f} embedded_sha {:.3f} "
      "source_sha {:.3f} key1 "
      "{:.3f} "
      "key2 {:.3f} embedded_bytes {} source_bytes {} key_bytes {}\n",
      resolve, resolve2, specialize_ms, specialize2 + (again.source.text == spec.source.text ? 0 : 1), options_ms,
      embedded_ms, source_ms, first_key, second_key, embedded_bytes, spec.source.text.size(),
      first.text.size() + (second.hash == first.hash ? 0 : digests.size()));
  return 0;
}
}  // namespace

// "--conv2d CACHE_DIR tier|off": a warm first Runtime::conv2d of the headline, whose kernel
// the first tier must find on disk before it stands aside.
int first_conv2d(const char* dir, bool tier) {
  using namespace convjit;
  const Conv2dDesc desc = parse_shape("n8c64h512w256k128r5s7");
  Runtime rt(RuntimeOptions{.cache_dir = dir, .autotune = false, .first_tier = tier});
  rt.device_arch();
  DeviceBuffer x(rt, desc.x_elements() * 4), w(rt, desc.w_elements() * 4), y(rt, desc.y_elements() * 4);
  const CacheStats before = rt.stats();
  const auto start = std::chrono::steady_clock::now();
  rt.conv2d(desc, x.data(), w.data(), nullptr, y.data());
  rt.synchronize();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const CacheStats s = rt.stats();
  fmt::print("conv2d {} first {:.3f} key {:.3f} disk_hits {} compiles {} first_tier_runs {}\n", tier ? "tier" : "off",
             ms, s.key_ms - before.key_ms, s.disk_hits - before.disk_hits, s.compiles - before.compiles,
             s.first_tier_runs - before.first_tier_runs);
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 3 && std::string_view(argv[1]) == "--key") return key_parts(convjit::parse_shape(argv[2]));
  if (argc == 4 && std::string_view(argv[1]) == "--conv2d") {
    try {
      return first_conv2d(argv[2], std::string_view(argv[3]) == "tier");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 1;
    }
  }
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s CACHE_DIR [SHAPE]\n", argv[0]);
    return 2;
  }
  try {
    const convjit::Conv2dDesc desc = convjit::parse_shape(argc == 3 ? argv[2] : "n8c64h512w256k128r5s7");
    convjit::Runtime rt(convjit::RuntimeOptions{.cache_dir = argv[1], .autotune = false});
    // The device and its context first, as jit_overhead's child makes them before its clock.
    const auto init_start = std::chrono::steady_clock::now();
    rt.device_arch();
    const double init_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - init_start).count();
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
    fmt::print(
        "{} plan {:.3f} key {:.3f} read {:.3f} verify {:.3f} module {:.3f} func {:.3f} other {:.3f} bytes {} device "
        "{:.3f}\n",
        s.disk_hits > before.disk_hits ? "warm" : "cold", plan_ms, key, read, verify, module, function,
        plan_ms - key - read - verify - module - function - compile, s.bytes_read - before.bytes_read, init_ms);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
