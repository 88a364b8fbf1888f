#pragma once
// Problems from the command line: KernelBench-style JSON workload files, text files
// with one shape per line, and shapes given with --shape.

#include <filesystem>
#include <string>
#include <vector>

#include "convjit/conv2d_desc.hpp"

namespace convjit::cli {

struct Problem {
  std::string label;  // where it came from: "shapes.txt:3 c3h32k8r3", "#56 conv_standard_2D_...", "c3h32k8r3"
  Conv2dDesc desc;
};

struct SkippedProblem {
  std::string label;
  std::string reason;  // e.g. "3D convolution is not supported (2D only)"
};

struct ProblemList {
  std::vector<Problem> problems;
  std::vector<SkippedProblem> skipped;  // in a workload file but not a 2D forward conv
};

// A file ending in .json, or starting with '{', is a workload file; anything else is
// a shape list ('#' comments). Malformed input throws Error(kInvalidArgument) naming
// file:line:column (or the problem's index) and what was expected.
void load_problem_file(const std::filesystem::path& file, ProblemList& into);

}  // namespace convjit::cli
