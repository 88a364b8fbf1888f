#pragma once
// The KernelBench 2D forward problems shipped in workloads/, scaled down so a
// float64 CPU reference stays quick; the structure (channels, filter, stride,
// padding, dilation, groups, bias) is kept exactly.

#include <string>
#include <vector>

#include "convjit/conv2d_desc.hpp"

namespace convjit::testing {

struct NamedDesc {
  std::string name;
  Conv2dDesc desc;
};

// The 2-D forward ones (what convjit ran before issue 15).
std::vector<NamedDesc> kernelbench_2d_problems();
// All of them: 1-D, 2-D and 3-D, forward and transposed.
std::vector<NamedDesc> kernelbench_problems();
// Same problem, batch 1 (2 where groups matter) and spatial size cut to at most `max_hw`
// (depth too), or to what its filter needs.
Conv2dDesc scaled_down(Conv2dDesc desc, int max_hw);

}  // namespace convjit::testing
