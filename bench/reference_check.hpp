#pragma once
// Random inputs, the float64 reference on a sample of outputs, and the check of a
// device output against it (every output is scanned for NaN/Inf, sampled ones compared).

#include <cuda.h>

#include <cstdint>
#include <vector>

#include "convjit/conv2d_desc.hpp"
#include "tooling/tooling.hpp"

namespace convjit::bench {

// One problem's inputs on the host, as floats. For f16/bf16 runs they hold the values
// after rounding to that type, so the reference sees exactly what the GPU reads.
struct HostInputs {
  std::vector<float> x;
  std::vector<float> w;
  std::vector<float> bias;  // empty unless desc.bias
};

// x uniform in [-1, 1) (or (0, 1) with `positive`, like torch.rand), w and bias in
// [-1, 1); never exactly zero, which would hide unwritten or skipped terms. The same
// seed gives the same data whatever the number of threads.
HostInputs random_inputs(const Conv2dDesc& desc, std::uint64_t seed, bool positive);

// `in` rounded to `dtype` (identity for f32).
HostInputs rounded_to(const HostInputs& in, DType dtype);
// The device image of `values` in `dtype`: 4 or 2 bytes per element.
std::vector<unsigned char> encode(const std::vector<float>& values, DType dtype);

// The outputs checked, in increasing flat index in desc.layout (the inputs are read in
// it too: x and w as desc.layout stores them), and their float64 values.
class ReferenceSample {
 public:
  // Every output pixel when there are at most `pixels` of them (n*p*q), else `pixels`
  // distinct random ones, each with all k channels. Uses every core.
  ReferenceSample(const Conv2dDesc& desc, const HostInputs& in, int pixels, std::uint64_t seed);

  const std::vector<std::int64_t>& indices() const noexcept { return indices_; }
  const std::vector<double>& values() const noexcept { return values_; }
  bool full() const noexcept { return full_; }

 private:
  std::vector<std::int64_t> indices_;
  std::vector<double> values_;
  bool full_ = false;
};

struct CheckResult {
  double rel_l2 = 0;           // ||y - ref|| / ||ref|| over the sampled outputs; +inf if any output is not finite
  double max_abs = 0;          // largest |y - ref| among them
  std::int64_t nonfinite = 0;  // NaN/Inf among ALL outputs (the output is poisoned with NaN first)
  std::int64_t checked = 0;    // outputs compared with the reference
  bool full = false;
};

// Copies y (`count` elements of `dtype`) back in chunks; the current context must own it.
CheckResult check_device_output(CUdeviceptr y, DType dtype, std::int64_t count, const ReferenceSample& ref);

}  // namespace convjit::bench
