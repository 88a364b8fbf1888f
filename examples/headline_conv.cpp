// KernelBench level-1 problem 56 through convjit: Conv2d(64 -> 128, kernel (5,7)) on an
// 8x64x512x256 float32 NCHW input. Checks the result against a float64 reference
// and prints time to first result (cold or warm cache, see the counters) and the
// steady-state time.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "convjit/convjit.hpp"

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Relative L2 error over `samples` random output pixels (all channels of each), in float64.
double sampled_rel_err(const convjit::Conv2dDesc& d, const std::vector<float>& x, const std::vector<float>& w,
                       const std::vector<float>& y, int samples, std::uint64_t seed) {
  const auto o = d.output_shape();
  const int threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<double> diff(threads), norm(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937_64 rng(seed + t);
      for (int i = t; i < samples; i += threads) {
        const std::int64_t n = rng() % o.n, p = rng() % o.p, q = rng() % o.q;
        for (std::int64_t k = 0; k < o.k; ++k) {
          double acc = 0;
          for (int c = 0; c < d.c; ++c)
            for (int r = 0; r < d.r; ++r)
              for (int s = 0; s < d.s; ++s)
                acc += double(x[((n * d.c + c) * d.h + p + r) * d.w + q + s]) *
                       double(w[((k * d.c + c) * d.r + r) * d.s + s]);
          const double e = double(y[((n * o.k + k) * o.p + p) * o.q + q]) - acc;
          diff[t] += e * e;
          norm[t] += acc * acc;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  double dsum = 0, nsum = 0;
  for (int t = 0; t < threads; ++t) dsum += diff[t], nsum += norm[t];
  return std::sqrt(dsum / nsum);
}

}  // namespace

int main() try {
  convjit::Runtime rt;
  const convjit::Conv2dDesc base{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7};
  fmt::print("problem   {}\ndevice    {}\ncache     {}\n", base.to_string(), rt.device_arch(), rt.cache_dir().string());

  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  auto random_vec = [&](std::int64_t count) {
    std::vector<float> v(static_cast<std::size_t>(count));
    for (auto& e : v) do
        e = dist(rng);
      while (e == 0.0f);
    return v;
  };
  const auto x = random_vec(base.x_elements());
  const auto w = random_vec(base.w_elements());
  convjit::DeviceBuffer dx(rt, x.size() * 4), dw(rt, w.size() * 4), dy(rt, base.y_elements() * 4);
  dx.upload(x.data(), x.size() * 4);
  dw.upload(w.data(), w.size() * 4);
  std::vector<float> y(static_cast<std::size_t>(base.y_elements()));

  bool ok = true;
  // TF32 first: it is the default, as in PyTorch; then strict fp32.
  for (const auto math : {convjit::MathMode::kTF32, convjit::MathMode::kStrictFp32}) {
    convjit::Conv2dDesc desc = base;
    desc.math = math;
    const double bound = math == convjit::MathMode::kTF32 ? 1e-3 : 1e-5;
    const auto before = rt.stats();
    dy.fill_u32(0x7fc00000u);  // NaN: an unwritten output fails the check
    rt.synchronize();

    auto t0 = Clock::now();
    rt.conv2d(desc, dx.data(), dw.data(), nullptr, dy.data());
    rt.synchronize();
    const double first_ms = ms_since(t0);
    const auto after_first = rt.stats();
    // A cold first call ran the first tier's generic kernel while this one compiled.
    rt.wait_for_compiles();

    t0 = Clock::now();
    rt.conv2d(desc, dx.data(), dw.data(), nullptr, dy.data());
    rt.synchronize();
    const double hot_ms = ms_since(t0);

    const auto plan = rt.plan(desc);
    for (int i = 0; i < 3; ++i) plan.run(dx.data(), dw.data(), nullptr, dy.data());
    std::vector<double> times;
    for (int i = 0; i < 30; ++i) {
      t0 = Clock::now();
      plan.run(dx.data(), dw.data(), nullptr, dy.data());
      rt.synchronize();
      times.push_back(ms_since(t0));
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    // The check is of the problem's own kernel: the plan's output, on a NaN-poisoned y.
    dy.fill_u32(0x7fc00000u);
    plan.run(dx.data(), dw.data(), nullptr, dy.data());
    rt.synchronize();
    dy.download(y.data(), y.size() * 4);
    const auto unwritten = std::count_if(y.begin(), y.end(), [](float v) { return !std::isfinite(v); });
    const double rel_err = sampled_rel_err(desc, x, w, y, 4096, rng());

    const auto compiles = after_first.compiles - before.compiles;
    const auto disk_hits = after_first.disk_hits - before.disk_hits;
    const bool tier = after_first.first_tier_runs > before.first_tier_runs;
    const char* start = tier            ? "cold (the first tier's generic kernel; the kernel compiled behind it)"
                        : compiles > 0  ? "cold (compiled)"
                        : disk_hits > 0 ? "warm disk"
                                        : "hot";
    fmt::print("\n[{} math] kernel {} ({})\n", convjit::to_string(math), plan.kernel_name(),
               convjit::to_string(plan.algorithm()));
    fmt::print("first     {:.1f} ms to first result, {} (compiles={}, disk_hits={}, compile_ms={:.1f})\n", first_ms,
               start, compiles, disk_hits, after_first.compile_ms - before.compile_ms);
    fmt::print("hot       {:.3f} ms to result (same process)\n", hot_ms);
    fmt::print(
        "check     rel L2 error {:.3e} (bound {:.0e}) vs float64 over 4096x128 sampled outputs; non-finite: {}\n",
        rel_err, bound, unwritten);
    fmt::print("time      {:.3f} ms median of 30 (host clock around run + synchronize), {:.1f} TFLOP/s\n", median,
               desc.flops() / median / 1e9);
    ok = ok && rel_err < bound && unwritten == 0;
  }
  fmt::print("\n{}\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
} catch (const convjit::Error& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 2;
}
