#pragma once
// Reads registers, shared memory, stack and spills out of ptxas's verbose log.

#include <string_view>

#include "convjit/kernel_info.hpp"

namespace convjit {

// The figures for `kernel_name` (the log may describe several functions).
ResourceUsage parse_ptxas_report(std::string_view log, std::string_view kernel_name);

}  // namespace convjit
