#pragma once
// Which algorithms can compute a problem, which one runs by default, and the
// kernel source each one needs.

#include <optional>
#include <string>

#include "convjit/runtime.hpp"
#include "specialize/specialized_source.hpp"

namespace convjit {

// Empty when `algorithm` can compute `desc`; otherwise why not. `desc` is validated.
std::optional<std::string> unsupported_reason(const Conv2dDesc& desc, Algorithm algorithm);

// The heuristic choice for kAuto on `arch` (empty: no GPU named); never returns kAuto.
Algorithm select_algorithm(const Conv2dDesc& desc, const std::string& arch = {});

// kAuto → the heuristic's choice; a forced algorithm that cannot run `desc` throws kUnsupported.
Algorithm resolve_algorithm(const Conv2dDesc& desc, Algorithm requested, const std::string& arch = {});

// The kernel for a resolved, kernel-based algorithm on `arch` ("sm_90"; empty: the
// portable kernel, as for a GPU not named), for pointers aligned as `align` says.
SpecializedSource specialize(const Conv2dDesc& desc, Algorithm algorithm, const std::string& arch = {},
                             const AlignmentNeeds& align = kFullAlignment);

}  // namespace convjit
