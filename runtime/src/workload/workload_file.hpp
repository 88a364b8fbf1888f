#pragma once
// Problems from a workload file (the KernelBench format: {"problems": [{...}]}).
// Problems convjit cannot run yet are listed with the reason, never fatal.

#include <filesystem>
#include <string>
#include <vector>

#include "convjit/conv2d_desc.hpp"

namespace convjit {

struct WorkloadProblem {
  std::string id;  // "56", or "86.dw" / "86.pw" for the two halves of a separable conv
  std::string name;
  std::vector<Conv2dDesc> descs;  // empty when skipped
  std::string skipped;            // why it was skipped, empty when supported
};

// Throws Error(kInvalidArgument) naming "<origin>:<line>:<column>" for malformed JSON
// (a member name given twice included), a field of the wrong type or out of range
// (every size from 1 to INT_MAX, padding from 0), and a problem Conv2dDesc::validate()
// rejects; the problem's index and the field follow.
std::vector<WorkloadProblem> parse_workloads(std::string_view text, std::string_view origin);
std::vector<WorkloadProblem> load_workloads(const std::filesystem::path& file);

}  // namespace convjit
