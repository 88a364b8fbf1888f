#pragma once
// conv_bench --dynamic-batch: the cost of one kernel for every batch (issue 17). For each
// problem, math mode, layout and batch B, the plan specialized for n = B against a
// batch=dynamic plan with n = B (the kernel's own cost) and the one batch=dynamic plan for
// at most --max-batch images, each run at B: checked against float64, then timed the
// same way as every other conv_bench row.

#include <optional>
#include <string>
#include <vector>

#include "conv_runner.hpp"

namespace convjit::bench {

struct DynamicBatchConfig {
  std::vector<Conv2dDesc> problems;  // layout, dtype and math are set per row
  std::vector<BenchMath> maths;
  std::vector<Layout> layouts;
  std::vector<int> batches;
  int max_batch = 256;  // the dynamic plan's n
  Algorithm algorithm = Algorithm::kAuto;
  TimingPlan timing;
  std::uint64_t seed = 1234;
  int sample_pixels = 4096;
  std::optional<std::string> json;
  std::string command;
};

// The acceptance problems: the headline (KernelBench 56) and a ResNet 3x3 layer.
std::vector<Conv2dDesc> dynamic_batch_default_problems();

// Prints the table (and writes JSON when asked); returns 0 when every row passed its check.
int run_dynamic_batch_bench(Runtime& runtime, const DynamicBatchConfig& config);

}  // namespace convjit::bench
