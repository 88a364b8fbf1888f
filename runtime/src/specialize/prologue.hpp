#pragma once
// Builds the prologue that fixes a template's values. One literal printer per value
// type, so every template spells its constants the same way. They are enumerators
// (`enum : int { kN = 8 };`), not constexpr variables: NVRTC emits every namespace-scope
// variable as a device global, used or not, and the driver's module load pays for each
// (a wgmma kernel's 119: 0.5 ms of its 0.6; docs/perf.md, "Module load: the globals").
// The templates declare their own derived constants the same way.

#include <cstdint>
#include <string>
#include <string_view>

#include "convjit/algorithm.hpp"
#include "convjit/conv2d_desc.hpp"

namespace convjit {

// The part of every kernel name that identifies the problem, e.g.
// "n8c64h512w256_k128r5s7_u1x1_p0x0_d1x1_g1_nobias" (+ "_relu"); a dynamic-batch
// problem's starts "ndyn8" (any batch up to 8).
std::string problem_tag(const Conv2dDesc& desc);
// "" when `align` is `full`; else "_align" and each operand below full, e.g. "_alignw4y2",
// so that a kernel compiled for less-aligned pointers has a name of its own.
std::string alignment_tag(const AlignmentNeeds& align, const AlignmentNeeds& full);

class Prologue {
 public:
  explicit Prologue(std::string_view kernel_name);
  // `#define macro 1` ahead of the constants: for what a constant cannot switch, such as
  // whether an entry point exists at all or which parameters the kernels declare.
  Prologue& define(std::string_view macro);
  Prologue& constant(std::string_view name, int value);
  Prologue& constant(std::string_view name, bool value);
  Prologue& constant(std::string_view name, long long value);
  // The values every template reads: kN..kS, strides, padding, dilation, kGroups,
  // the output extents kP and kQ, kHasBias, kRelu, the element type kDType and the
  // memory layout kLayout; for a dynamic-batch problem, CONVJIT_DYNAMIC_BATCH (kN is then
  // the largest batch).
  Prologue& problem(const Conv2dDesc& desc);
  // kDType: 0 f32, 1 f16, 2 bf16, the type of x, w, bias and y.
  Prologue& dtype(DType dtype);
  // kLayout: 0 NCHW (x N,C,H,W; w K,C/g,R,S; y N,K,P,Q), 1 NHWC (x N,H,W,C; w K,R,S,C/g;
  // y N,P,Q,K).
  Prologue& layout(Layout layout);
  // kD, kT, kStrideD, kPadD, kDilationD, the output depth kZ, and kTransposed (part of
  // problem()).
  Prologue& depth(const Conv2dDesc& desc);
  // The prologue text followed by the template.
  std::string finish(std::string_view template_text) const;

 private:
  std::string head_;
  std::string constants_;
};

}  // namespace convjit
