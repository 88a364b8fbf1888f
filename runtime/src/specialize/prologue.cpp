#include "specialize/prologue.hpp"

#include <fmt/format.h>

namespace convjit {

Prologue::Prologue(std::string_view kernel_name)
    : head_(fmt::format("// Specialized by convjit; the template follows the prologue.\n"
                        "#define CONVJIT_SPECIALIZED 1\n#define CONVJIT_KERNEL_NAME {}\n",
                        kernel_name)) {}

Prologue& Prologue::define(std::string_view macro) {
  fmt::format_to(std::back_inserter(head_), "#define {} 1\n", macro);
  return *this;
}

Prologue& Prologue::constant(std::string_view name, int value) {
  fmt::format_to(std::back_inserter(constants_), "enum : int {{ {} = {} }};\n", name, value);
  return *this;
}

Prologue& Prologue::constant(std::string_view name, long long value) {
  fmt::format_to(std::back_inserter(constants_), "enum : long long {{ {} = {} }};\n", name, value);
  return *this;
}

Prologue& Prologue::constant(std::string_view name, bool value) {
  fmt::format_to(std::back_inserter(constants_), "enum : bool {{ {} = {} }};\n", name, value ? "true" : "false");
  return *this;
}

Prologue& Prologue::problem(const Conv2dDesc& d) {
  const auto out = d.output_shape();
  // A macro, not a constant: it changes the kernels' parameter lists (convjit_device.cuh,
  // CONVJIT_BATCH_PARAM). kN stays the largest batch, which bounds the index widths.
  if (d.dynamic_batch) head_ += "#define CONVJIT_DYNAMIC_BATCH 1\n";
  return constant("kN", d.n)
      .constant("kC", d.c)
      .constant("kH", d.h)
      .constant("kW", d.w)
      .constant("kK", d.k)
      .constant("kR", d.r)
      .constant("kS", d.s)
      .constant("kStrideH", d.stride_h)
      .constant("kStrideW", d.stride_w)
      .constant("kPadH", d.pad_h)
      .constant("kPadW", d.pad_w)
      .constant("kDilationH", d.dilation_h)
      .constant("kDilationW", d.dilation_w)
      .constant("kGroups", d.groups)
      .constant("kP", static_cast<int>(out.p))
      .constant("kQ", static_cast<int>(out.q))
      .constant("kHasBias", d.bias)
      .constant("kRelu", d.activation == Activation::kRelu)
      .dtype(d.dtype)
      .layout(d.layout)
      .depth(d);
}

Prologue& Prologue::depth(const Conv2dDesc& d) {
  // 1 / 0 / false for a 2-D forward problem: the templates' depth loops and transposed
  // index maps fold away on them.
  return constant("kD", d.d)
      .constant("kT", d.t)
      .constant("kStrideD", d.stride_d)
      .constant("kPadD", d.pad_d)
      .constant("kDilationD", d.dilation_d)
      .constant("kZ", static_cast<int>(d.output_shape().z))
      .constant("kTransposed", d.transposed);
}

Prologue& Prologue::dtype(DType dtype) {
  // Spelled out here, not cast from the enum, so reordering DType cannot change kernels.
  int code = 0;
  switch (dtype) {
    case DType::kFloat32:
      code = 0;
      break;
    case DType::kFloat16:
      code = 1;
      break;
    case DType::kBFloat16:
      code = 2;
      break;
  }
  fmt::format_to(std::back_inserter(constants_), "enum : int {{ kDType = {} }};  // {} (0 f32, 1 f16, 2 bf16)\n", code,
                 to_string(dtype));
  return *this;
}

Prologue& Prologue::layout(Layout layout) {
  // Spelled out, as the dtype's code is.
  const int code = layout == Layout::kNHWC ? 1 : 0;
  fmt::format_to(std::back_inserter(constants_), "enum : int {{ kLayout = {} }};  // {} (0 nchw, 1 nhwc)\n", code,
                 to_string(layout));
  return *this;
}

std::string problem_tag(const Conv2dDesc& d) {
  std::string tag =
      fmt::format("n{}{}c{}h{}w{}_k{}r{}s{}_u{}x{}_p{}x{}_d{}x{}_g{}_{}{}", d.dynamic_batch ? "dyn" : "", d.n, d.c, d.h,
                  d.w, d.k, d.r, d.s, d.stride_h, d.stride_w, d.pad_h, d.pad_w, d.dilation_h, d.dilation_w, d.groups,
                  d.bias ? "bias" : "nobias", d.activation == Activation::kRelu ? "_relu" : "");
  // Only what a 2-D forward problem lacks is appended, so 2-D names stay as they were
  // (a 1-D problem is named as the 2-D one it runs as).
  if (d.d != 1 || d.t != 1 || d.stride_d != 1 || d.pad_d != 0 || d.dilation_d != 1) {
    fmt::format_to(std::back_inserter(tag), "_z{}t{}u{}p{}d{}", d.d, d.t, d.stride_d, d.pad_d, d.dilation_d);
  }
  if (d.transposed) {
    fmt::format_to(std::back_inserter(tag), "_tr{}x{}x{}", d.output_padding_d, d.output_padding_h, d.output_padding_w);
  }
  return tag;
}

std::string alignment_tag(const AlignmentNeeds& align, const AlignmentNeeds& full) {
  if (align == full) return {};
  std::string tag = "_align";
  auto add = [&](char name, unsigned have, unsigned all) {
    if (have < all) fmt::format_to(std::back_inserter(tag), "{}{}", name, have);
  };
  add('x', align.x, full.x);
  add('w', align.w, full.w);
  add('b', align.bias, full.bias);
  add('y', align.y, full.y);
  return tag;
}

std::string Prologue::finish(std::string_view template_text) const {
  // Sized once: the template is most of the text, and a warm start builds it before its key.
  constexpr std::string_view kOpen = "namespace spec {\n";
  constexpr std::string_view kClose = "}  // namespace spec\n#line 1\n";
  std::string text;
  text.reserve(head_.size() + kOpen.size() + constants_.size() + kClose.size() + template_text.size());
  text.append(head_).append(kOpen).append(constants_).append(kClose).append(template_text);
  return text;
}

}  // namespace convjit
