#include <fmt/format.h>

#include "specialize/prologue.hpp"
#include "specialize/specialized_source.hpp"
#include "specialize/templates.hpp"

namespace convjit {

namespace {
constexpr const char* kTemplate = "conv2d_im2col.cu";
constexpr int kBlockThreads = 256;
}  // namespace

Specialization specialize_im2col(const Conv2dDesc& d) {
  Specialization src;
  src.launch.algorithm = "im2col_gemm";
  src.launch.tile = is_pointwise_gemm(d) ? "1x1: cuBLAS GEMM straight on the input, batched over images"
                                         : "im2col chunks in a bounded workspace, cuBLAS GEMM per chunk and group";
  src.source.template_name = kTemplate;
  src.source.kernel_name =
      fmt::format("conv2d_im2col_{}_{}_{}", to_string(d.dtype), to_string(d.layout), problem_tag(d));
  src.source.text = Prologue(src.source.kernel_name)
                        .problem(d)
                        .constant("kBlockThreads", kBlockThreads)
                        .finish(template_text(kTemplate));
  // The GEMM path launches these kernels itself with chunk-sized grids.
  src.launch.geometry = {.grid_x = 0, .block_x = kBlockThreads};
  return src;
}

bool is_pointwise_gemm(const Conv2dDesc& d) {
  // A depth dimension or a transposed problem gathers its columns (and, transposed,
  // packs its weights) even when 1x1: the GEMM straight on x reads H * W planes of w as
  // stored.
  return !d.transposed && d.d == 1 && d.t == 1 && d.r == 1 && d.s == 1 && d.stride_h == 1 && d.stride_w == 1 &&
         d.pad_h == 0 && d.pad_w == 0;
}

}  // namespace convjit
