// Development timer: runs one problem through each requested algorithm / math mode
// on the same random buffers, checks a sampled float64 reference, and prints the
// median of CUDA-event timings. The side-by-side benchmark with cuDNN is conv_bench.
//   variant_timer SHAPE... (shape: n,c,h,w,k,r,s[,stride,pad,dilation,groups])
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "convjit/convjit.hpp"
#include "tooling/tooling.hpp"

using namespace convjit;

namespace {
double sampled_error(const Conv2dDesc& d, const std::vector<float>& x, const std::vector<float>& w,
                     const std::vector<float>& y, std::mt19937_64& rng) {
  const auto o = d.output_shape();
  double diff = 0, norm = 0;
  const int cpg = d.c / d.groups, kpg = d.k / d.groups;
  for (int i = 0; i < 2000; ++i) {
    const std::int64_t n = rng() % o.n, k = rng() % o.k, p = rng() % o.p, q = rng() % o.q;
    const std::int64_t g = k / kpg;
    double acc = 0;
    for (int c = 0; c < cpg; ++c)
      for (int r = 0; r < d.r; ++r)
        for (int s = 0; s < d.s; ++s) {
          const std::int64_t ih = p * d.stride_h - d.pad_h + r * d.dilation_h;
          const std::int64_t iw = q * d.stride_w - d.pad_w + s * d.dilation_w;
          if (ih < 0 || ih >= d.h || iw < 0 || iw >= d.w) continue;
          acc += double(x[((n * d.c + g * cpg + c) * d.h + ih) * d.w + iw]) *
                 double(w[((k * cpg + c) * d.r + r) * d.s + s]);
        }
    const double e = y[((n * o.k + k) * o.p + p) * o.q + q] - acc;
    diff += e * e;
    norm += acc * acc;
  }
  return std::sqrt(diff / norm);
}
}  // namespace

int main(int argc, char** argv) try {
  std::vector<Conv2dDesc> descs;
  for (int i = 1; i < argc; ++i) {
    int v[11] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1};
    std::sscanf(argv[i], "%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7],
                &v[8], &v[9], &v[10]);
    descs.push_back(Conv2dDesc{.n = v[0],
                               .c = v[1],
                               .h = v[2],
                               .w = v[3],
                               .k = v[4],
                               .r = v[5],
                               .s = v[6],
                               .stride_h = v[7],
                               .stride_w = v[7],
                               .pad_h = v[8],
                               .pad_w = v[8],
                               .dilation_h = v[9],
                               .dilation_w = v[9],
                               .groups = v[10]});
  }
  if (descs.empty()) descs.push_back(Conv2dDesc{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7});
  Runtime rt;
  auto& drv = CudaDriver::get();
  // Events belong to the current context: make the runtime's (primary) context current here.
  drv.cuCtxSetCurrent(tooling::runtime_device(rt).context);
  std::mt19937_64 rng(42);
  // POSITIVE=1: inputs in [0, 1) like KernelBench's torch.rand.
  std::uniform_real_distribution<float> dist(std::getenv("POSITIVE") ? 0.0f : -1.0f, 1.0f);
  for (const auto& base : descs) {
    std::vector<float> x(base.x_elements()), w(base.w_elements()), y(base.y_elements());
    for (auto& e : x) e = dist(rng);
    for (auto& e : w) e = dist(rng);
    DeviceBuffer dx(rt, x.size() * 4), dw(rt, w.size() * 4), dy(rt, y.size() * 4);
    dx.upload(x.data(), x.size() * 4);
    dw.upload(w.data(), w.size() * 4);
    struct V {
      Algorithm a;
      MathMode m;
    };
    for (const V v : {V{Algorithm::kDirect, MathMode::kStrictFp32}, V{Algorithm::kImplicitGemm, MathMode::kTF32},
                      V{Algorithm::kImplicitGemm, MathMode::kStrictFp32}, V{Algorithm::kIm2colGemm, MathMode::kTF32},
                      V{Algorithm::kIm2colGemm, MathMode::kStrictFp32}}) {
      Conv2dDesc d = base;
      d.math = v.m;
      if (v.a == Algorithm::kDirect && d.flops() > 5e10 && std::getenv("SKIP_DIRECT")) continue;
      const auto plan = rt.plan(d, PlanOptions{.algorithm = v.a});
      dy.fill_u32(0x7fc00000u);
      plan.run(dx.data(), dw.data(), nullptr, dy.data());
      dy.download(y.data(), y.size() * 4);
      const auto bad = std::count_if(y.begin(), y.end(), [](float f) { return !std::isfinite(f); });
      const double err = sampled_error(d, x, w, y, rng);
      CUevent a, b;
      drv.cuEventCreate(&a, 0);
      drv.cuEventCreate(&b, 0);
      for (int i = 0; i < 5; ++i) plan.run(dx.data(), dw.data(), nullptr, dy.data());
      std::vector<float> ms;
      for (int i = 0; i < 30; ++i) {
        drv.cuEventRecord(a, nullptr);
        plan.run(dx.data(), dw.data(), nullptr, dy.data());
        drv.cuEventRecord(b, nullptr);
        drv.cuEventSynchronize(b);
        float t = 0;
        drv.cuEventElapsedTime(&t, a, b);
        ms.push_back(t);
      }
      std::sort(ms.begin(), ms.end());
      const auto info = rt.inspect(d, std::nullopt, PlanOptions{.algorithm = v.a});
      fmt::print("{:<40} {:<14} {:<7} {:8.3f} ms {:6.1f} TFLOP/s err {:.2e} nonfinite {} regs {} spill {}\n",
                 d.to_string().substr(0, 40), to_string(v.a), to_string(v.m), ms[15], d.flops() / ms[15] / 1e9, err,
                 bad, info.resources.registers, info.resources.spill_store_bytes);
      drv.cuEventDestroy(a);
      drv.cuEventDestroy(b);
    }
  }
  return 0;
} catch (const Error& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 1;
}
