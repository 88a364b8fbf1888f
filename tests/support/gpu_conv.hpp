#pragma once
// Runs one convolution on the GPU with fresh random inputs and a NaN-poisoned
// output, and returns its relative L2 error against the float64 reference. Data are
// in desc.dtype; for f16 and bf16 the reference reads the same 16-bit-rounded inputs
// (upcast), so the error measures the convolution and its one output rounding.

#include <gtest/gtest.h>

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
  std::size_t outside = 0;    // bytes written before `offset` or in the 16 bytes past y
};

// The bound each math mode promises (relative L2 against float64); 16-bit outputs carry
// their own rounding (2^-11 for f16, 2^-8 for bf16, relative), whatever the math mode.
inline double tolerance(const Conv2dDesc& d) {
  if (d.dtype != DType::kFloat32) return 1e-2;
  return d.math == MathMode::kStrictFp32 ? 1e-5 : 1e-3;
}

// use_plan: through Runtime::plan(desc, {algorithm}) instead of Runtime::conv2d.
// positive: inputs in (0, 1) like KernelBench's torch.rand, where rounding bias adds up.
// offset: every tensor starts this many bytes (a multiple of the element size) past its
// allocation, so kernels see pointers of every alignment their dtype allows.
// stream: the run's; the buffers' copies are on the legacy stream, which waits for it
// and is waited for (a blocking stream, or CU_STREAM_PER_THREAD).
inline GpuCheck check_on_gpu(Runtime& rt, const Conv2dDesc& d, std::mt19937_64& rng, bool use_plan = false,
                             Algorithm algorithm = Algorithm::kAuto, bool positive = false, std::size_t offset = 0,
                             Stream stream = nullptr) {
  const DType t = d.dtype;
  const auto x = random_nonzero(static_cast<std::size_t>(d.x_elements()), rng, positive ? 0.0f : -1.0f, 1.0f, t);
  const auto w = random_nonzero(static_cast<std::size_t>(d.w_elements()), rng, positive ? 0.0f : -1.0f, 1.0f, t);
  const auto b = d.bias ? random_nonzero(static_cast<std::size_t>(d.k), rng, -1.0f, 1.0f, t) : std::vector<float>{};
  const std::size_t esz = size_of(t);
  const std::size_t y_bytes = static_cast<std::size_t>(d.y_elements()) * esz;
  // Rounded up to whole 32-bit words: the NaN poison is written 4 bytes at a time; 16
  // poisoned bytes past y catch a write past its end.
  const std::size_t y_span = (offset + y_bytes + 16 + 3) / 4 * 4;
  auto at_offset = [offset](std::vector<unsigned char> bytes) {
    bytes.insert(bytes.begin(), offset, 0);
    return bytes;
  };
  const auto x_bytes = at_offset(to_storage(x_in_layout(d, x), t));
  const auto w_bytes = at_offset(to_storage(w_in_layout(d, w), t));
  DeviceBuffer dx(rt, x_bytes.size()), dw(rt, w_bytes.size()), dy(rt, y_span);
  DeviceBuffer db(rt, std::max<std::size_t>(offset + b.size() * esz, 4));
  dx.upload(x_bytes.data(), x_bytes.size());
  dw.upload(w_bytes.data(), w_bytes.size());
  if (d.bias) {
    const auto b_bytes = at_offset(to_storage(b, t));
    db.upload(b_bytes.data(), b_bytes.size());
  }
  const std::uint32_t poison = nan_fill_pattern(t);
  dy.fill_u32(poison);
  auto past = [offset](const DeviceBuffer& buffer) { return static_cast<char*>(buffer.data()) + offset; };
  const void* bias_ptr = d.bias ? past(db) : nullptr;
  if (use_plan) {
    rt.plan(d, PlanOptions{.algorithm = algorithm}).run(past(dx), past(dw), bias_ptr, past(dy), stream);
  } else {
    rt.conv2d(d, past(dx), past(dw), bias_ptr, past(dy), stream);
  }
  std::vector<unsigned char> raw(y_span);
  dy.download(raw.data(), raw.size());  // synchronous: waits for the kernel
  GpuCheck out;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (i >= offset && i < offset + y_bytes) continue;
    out.outside += raw[i] != static_cast<unsigned char>(poison >> (8 * (i % 4))) ? 1 : 0;  // little-endian words
  }
  const std::vector<unsigned char> y_raw(raw.begin() + static_cast<std::ptrdiff_t>(offset),
                                         raw.begin() + static_cast<std::ptrdiff_t>(offset + y_bytes));
  const std::vector<float> y = y_from_layout(d, from_storage(y_raw, t));
  for (float v : y) out.unwritten += std::isnan(v) ? 1 : 0;
  out.rel_err = relative_l2(y, reference_conv2d(d, x, w, b));
  return out;
}

// The checks every GPU correctness test makes of one run: every output written, nothing
// written around y, the mode's error bound kept.
inline void expect_matches_reference(const GpuCheck& result, const Conv2dDesc& d) {
  EXPECT_EQ(result.unwritten, 0u);
  EXPECT_EQ(result.outside, 0u);
  EXPECT_LT(result.rel_err, tolerance(d));
}

}  // namespace convjit::testing
