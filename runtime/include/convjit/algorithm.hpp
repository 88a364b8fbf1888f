#pragma once
// How a problem is computed, and what a kernel needs of the pointers it is given.

#include <string_view>

namespace convjit {

// How a problem is computed. kAuto picks per problem (see docs/perf.md).
enum class Algorithm {
  kAuto,
  kDirect,        // one thread per output pixel and channel block, FMA units; every problem
  kImplicitGemm,  // tensor cores (TF32 / 3xTF32), input gathered from NCHW on the fly
  kIm2colGemm,    // im2col into a bounded workspace + cuBLAS GEMM (1x1: GEMM only)
};
std::string_view to_string(Algorithm algorithm) noexcept;

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
