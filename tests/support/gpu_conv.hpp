#pragma once
// Runs one convolution on the GPU with fresh random inputs and a NaN-poisoned
// output, and returns its relative L2 error against the float64 reference.

#include <cstring>
#include <random>

#include "convjit/convjit.hpp"
#include "support/reference.hpp"

namespace convjit::testing {

inline constexpr std::uint32_t kNaNBits = 0x7fc00000u;

struct GpuCheck {
  double rel_err = 0;
  std::size_t unwritten = 0;  // outputs still NaN after the run
};

// The bound each math mode promises (relative L2 against float64).
inline double tolerance(const Conv2dDesc& d) { return d.math == MathMode::kStrictFp32 ? 1e-5 : 1e-3; }

// use_plan: through Runtime::plan(desc, {algorithm}) instead of Runtime::conv2d.
// positive: inputs in (0, 1) like KernelBench's torch.rand, where rounding bias adds up.
inline GpuCheck check_on_gpu(Runtime& rt, const Conv2dDesc& d, std::mt19937_64& rng, bool use_plan = false,
                             Algorithm algorithm = Algorithm::kAuto, bool positive = false) {
  const auto x = random_nonzero(static_cast<std::size_t>(d.x_elements()), rng, positive ? 0.0f : -1.0f);
  const auto w = random_nonzero(static_cast<std::size_t>(d.w_elements()), rng, positive ? 0.0f : -1.0f);
  const auto b = d.bias ? random_nonzero(static_cast<std::size_t>(d.k), rng) : std::vector<float>{};
  DeviceBuffer dx(rt, x.size() * 4), dw(rt, w.size() * 4), dy(rt, static_cast<std::size_t>(d.y_elements()) * 4);
  DeviceBuffer db(rt, std::max<std::size_t>(b.size(), 1) * 4);
  dx.upload(x.data(), x.size() * 4);
  dw.upload(w.data(), w.size() * 4);
  if (d.bias) db.upload(b.data(), b.size() * 4);
  dy.fill_u32(kNaNBits);
  const void* bias_ptr = d.bias ? db.data() : nullptr;
  if (use_plan) {
    rt.plan(d, PlanOptions{.algorithm = algorithm}).run(dx.data(), dw.data(), bias_ptr, dy.data());
  } else {
    rt.conv2d(d, dx.data(), dw.data(), bias_ptr, dy.data());
  }
  std::vector<float> y(static_cast<std::size_t>(d.y_elements()));
  dy.download(y.data(), y.size() * 4);  // synchronous: waits for the kernel
  GpuCheck out;
  for (float v : y) out.unwritten += std::isnan(v) ? 1 : 0;
  out.rel_err = relative_l2(y, reference_conv2d(d, x, w, b));
  return out;
}

}  // namespace convjit::testing
