#pragma once
// GPU targets as convjit names them: "sm_90" (and "sm_90a", the arch-specific Hopper
// target the wgmma kernel compiles for).

#include <string>

namespace convjit {

// The compute capability of `arch` as a number (sm_90 -> 90). Throws kInvalidArgument
// for anything not of the form sm_XY[a], kUnsupported below sm_75 (NVRTC 13's oldest).
int parse_arch(const std::string& arch);

}  // namespace convjit
