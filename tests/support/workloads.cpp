#include "support/workloads.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "workload/workload_file.hpp"

namespace convjit::testing {

std::vector<NamedDesc> kernelbench_2d_problems() {
  std::vector<NamedDesc> out;
  for (auto& p : kernelbench_problems()) {
    if (p.desc.spatial_dims == 2 && !p.desc.transposed) out.push_back(std::move(p));
  }
  return out;
}

std::vector<NamedDesc> kernelbench_problems() {
  std::vector<NamedDesc> out;
  for (const auto& problem : load_workloads(CONVJIT_WORKLOADS_FILE)) {
    for (std::size_t i = 0; i < problem.descs.size(); ++i) {
      out.push_back({fmt::format("kb{}{}", problem.id, problem.descs.size() > 1 ? (i == 0 ? "dw" : "pw") : ""),
                     problem.descs[i]});
    }
  }
  return out;
}

Conv2dDesc scaled_down(Conv2dDesc d, int max_hw) {
  d.n = std::min(d.n, 2);
  d.h = std::min(d.h, std::max(max_hw, d.dilation_h * (d.r - 1) + 1 - 2 * d.pad_h + 3));
  d.w = std::min(d.w, std::max(max_hw, d.dilation_w * (d.s - 1) + 1 - 2 * d.pad_w + 3));
  d.d = std::min(d.d, std::max(max_hw, d.dilation_d * (d.t - 1) + 1 - 2 * d.pad_d + 3));
  return d;
}

}  // namespace convjit::testing
