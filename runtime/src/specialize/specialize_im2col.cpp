#include <fmt/format.h>

#include "specialize/prologue.hpp"
#include "specialize/specialized_source.hpp"
#include "specialize/templates.hpp"

namespace convjit {

namespace {
constexpr const char* kTemplate = "conv2d_im2col.cu";
constexpr int kBlockThreads = 256;
}  // namespace

SpecializedSource specialize_im2col(const Conv2dDesc& d) {
  const auto out = d.output_shape();
  SpecializedSource src;
  src.algorithm = "im2col_gemm";
  src.tile = is_pointwise_gemm(d) ? "1x1: cuBLAS GEMM straight on the input, batched over images"
                                  : "im2col chunks in a bounded workspace, cuBLAS GEMM per chunk and group";
  src.template_name = kTemplate;
  src.kernel_name = fmt::format("conv2d_im2col_{}_n{}c{}h{}w{}_k{}r{}s{}_u{}x{}_p{}x{}_d{}x{}_g{}_{}{}", to_string(d.layout),
                                d.n, d.c, d.h, d.w, d.k, d.r, d.s, d.stride_h, d.stride_w, d.pad_h, d.pad_w,
                                d.dilation_h, d.dilation_w, d.groups, d.bias ? "bias" : "nobias",
                                d.activation == Activation::kRelu ? "_relu" : "");
  src.text = Prologue(src.kernel_name)
                 .constant("kN", d.n)
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
                 .constant("kBlockThreads", kBlockThreads)
                 .finish(template_text(kTemplate));
  // The GEMM path launches these kernels itself with chunk-sized grids.
  src.geometry = {.grid_x = 0, .block_x = kBlockThreads};
  return src;
}

bool is_pointwise_gemm(const Conv2dDesc& d) {
  return d.r == 1 && d.s == 1 && d.stride_h == 1 && d.stride_w == 1 && d.pad_h == 0 && d.pad_w == 0;
}

}  // namespace convjit
