#pragma once
// The float64 CPU reference `convjit run` checks the GPU against: every output when
// the problem is small, else a sample of output pixels with all their channels.

#include <cstdint>
#include <vector>

#include "convjit/conv2d_desc.hpp"

namespace convjit::cli {

struct CheckResult {
  double rel_l2 = 0;         // ||y - ref|| / ||ref|| over the checked outputs
  double max_abs = 0;        // largest |y - ref| among them
  std::int64_t checked = 0;  // outputs compared
  bool full = false;         // every output, not a sample
};

// Data as floats in desc.layout (for f16/bf16: the rounded values the GPU read, and its
// output upcast); `bias` empty unless desc.bias. Uses every core.
CheckResult check_against_reference(const Conv2dDesc& desc, const std::vector<float>& x, const std::vector<float>& w,
                                    const std::vector<float>& bias, const std::vector<float>& y, std::uint64_t seed);

}  // namespace convjit::cli
