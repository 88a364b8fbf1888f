#pragma once
// How a problem is computed, and what a kernel needs of the pointers it is given.

#include <optional>
#include <string>
#include <string_view>

#include "convjit/conv2d_desc.hpp"

namespace convjit {

// How a problem is computed. kAuto picks per problem (see docs/perf.md).
enum class Algorithm {
  kAuto,
  kDirect,        // one thread per output pixel and channel block, FMA units; every problem
  kImplicitGemm,  // tensor cores (TF32 / 3xTF32), input gathered from NCHW on the fly
  kIm2colGemm,    // im2col into a bounded workspace + cuBLAS GEMM (1x1: GEMM only)
};
std::string_view to_string(Algorithm algorithm) noexcept;

// Why this version cannot run `desc` with `algorithm` (kAuto: with any algorithm) for
// `arch` ("sm_90"; empty: any arch the runtime targets), or nothing when it can. No GPU
// needed. Throws Error(kInvalidArgument) for a descriptor validate() rejects.
std::optional<std::string> why_unsupported(const Conv2dDesc& desc, Algorithm algorithm = Algorithm::kAuto,
                                           std::string_view arch = {});

// The alignment, in bytes, each operand's pointer needs for a plan's fastest kernel.
// Less-aligned pointers (down to the element size) run a variant compiled for them.
struct AlignmentNeeds {
  unsigned x = 4;
  unsigned w = 4;
  unsigned bias = 4;
  unsigned y = 4;
  bool operator==(const AlignmentNeeds&) const = default;
};

}  // namespace convjit
