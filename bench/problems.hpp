#pragma once
// The problems a benchmark runs: KernelBench workloads that convjit can express,
// filtered by id, plus shapes from the command line.

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convjit/conv2d_desc.hpp"

namespace convjit::bench {

struct BenchProblem {
  std::string id;     // "56"; "86.dw" / "86.pw" for the halves of a separable conv; "s1" for --shape
  std::string group;  // the problem as KernelBench counts it: both halves of 86 are group "86"
  std::string name;   // KernelBench's name, or the shape text
  Conv2dDesc desc;    // math and dtype are set per run
};

struct SkippedProblem {
  std::string id;
  std::string reason;
};

struct ProblemSelection {
  std::vector<BenchProblem> problems;
  std::vector<SkippedProblem> skipped;  // not 2D forward convolutions, or filtered out by --ids
};

// Either "n,c,h,w,k,r,s[,stride,pad,dilation,groups]" or the one-line form of the
// convjit command ("n8c64h512w256k128r5s7 pad=1 groups=8"). Throws Error(kInvalidArgument)
// naming the field; the result is validated.
Conv2dDesc parse_bench_shape(std::string_view text);

// The default workload file: the project's, found at its build-time path, else under
// the working directory. Empty when neither exists.
std::optional<std::filesystem::path> default_workload_file();

struct SelectionRequest {
  std::optional<std::filesystem::path> workloads;  // empty: no workload file
  std::vector<std::string> ids;                    // empty: every problem; "86" selects both halves
  std::vector<std::string> shapes;                 // --shape texts
  double batch_scale = 1.0;                        // n = max(1, round(n * scale))
};

// Throws Error(kInvalidArgument) for an id that is in no workload and for a bad shape.
ProblemSelection select_problems(const SelectionRequest& request);

// The descriptor as a short line without the per-run fields (math, dtype, layout), e.g.
// "n8c64h512w256k128r5s7" or "n256c3h224w224k96r11s11 stride=4 pad=2 bias=1".
std::string problem_text(const Conv2dDesc& desc);

}  // namespace convjit::bench
