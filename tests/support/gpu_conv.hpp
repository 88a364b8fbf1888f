#pragma once
// Runs one convolution on the GPU with fresh random inputs and a NaN-poisoned
// output, and returns its relative L2 error against the float64 reference. Data are
// in desc.dtype; for f16 and bf16 the reference reads the same 16-bit-rounded inputs
// (upcast), so the error measures the convolution and its one output rounding.

#include <cstring>
#include <random>

#include "base/float16.hpp"
#include "convjit/convjit.hpp"
#include "support/reference.hpp"

namespace convjit::testing {

inline constexpr std::uint32_t kNaNBits = 0x7fc00000u;  // float32 quiet NaN

struct GpuCheck {
  double rel_err = 0;
  std::size_t unwritten = 0;  // outputs still NaN after the run
};

// The bound each math mode promises (relative L2 against float64); 16-bit outputs carry
// their own rounding (2^-11 for f16, 2^-8 for bf16, relative), whatever the math mode.
inline double tolerance(const Conv2dDesc& d) {
  if (d.dtype != DType::kFloat32) return 1e-2;
  return d.math == MathMode::kStrictFp32 ? 1e-5 : 1e-3;
}

// use_plan: through Runtime::plan(desc, {algorithm}) instead of Runtime::conv2d.
// positive: inputs in (0, 1) like KernelBench's torch.rand, where rounding bias adds up.
inline GpuCheck check_on_gpu(Runtime& rt, const Conv2dDesc& d, std::mt19937_64& rng, bool use_plan = false,
                             Algorithm algorithm = Algorithm::kAuto, bool positive = false) {
  const DType t = d.dtype;
  const auto x = random_nonzero(static_cast<std::size_t>(d.x_elements()), rng, positive ? 0.0f : -1.0f, 1.0f, t);
  const auto w = random_nonzero(static_cast<std::size_t>(d.w_elements()), rng, positive ? 0.0f : -1.0f, 1.0f, t);
  const auto b = d.bias ? random_nonzero(static_cast<std::size_t>(d.k), rng, -1.0f, 1.0f, t) : std::vector<float>{};
  const std::size_t esz = size_of(t);
  const std::size_t y_bytes = static_cast<std::size_t>(d.y_elements()) * esz;
  // Rounded up to whole 32-bit words: the NaN poison is written 4 bytes at a time.
  DeviceBuffer dx(rt, x.size() * esz), dw(rt, w.size() * esz), dy(rt, (y_bytes + 3) / 4 * 4);
  DeviceBuffer db(rt, std::max<std::size_t>(b.size() * esz, 4));
  const auto x_bytes = to_storage(x_in_layout(d, x), t);
  const auto w_bytes = to_storage(w_in_layout(d, w), t);
  dx.upload(x_bytes.data(), x_bytes.size());
  dw.upload(w_bytes.data(), w_bytes.size());
  if (d.bias) {
    const auto b_bytes = to_storage(b, t);
    db.upload(b_bytes.data(), b_bytes.size());
  }
  dy.fill_u32(nan_fill_pattern(t));
  const void* bias_ptr = d.bias ? db.data() : nullptr;
  if (use_plan) {
    rt.plan(d, PlanOptions{.algorithm = algorithm}).run(dx.data(), dw.data(), bias_ptr, dy.data());
  } else {
    rt.conv2d(d, dx.data(), dw.data(), bias_ptr, dy.data());
  }
  std::vector<unsigned char> y_raw(y_bytes);
  dy.download(y_raw.data(), y_raw.size());  // synchronous: waits for the kernel
  const std::vector<float> y = y_from_layout(d, from_storage(y_raw, t));
  GpuCheck out;
  for (float v : y) out.unwritten += std::isnan(v) ? 1 : 0;
  out.rel_err = relative_l2(y, reference_conv2d(d, x, w, b));
  return out;
}

}  // namespace convjit::testing
