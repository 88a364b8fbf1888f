// The streaming pointwise kernel (conv2d_pointwise.cu), without a GPU: which problems it
// takes, that the implicit GEMM runs them on it, that its specializations compile under
// NVRTC without spilling in every dtype and layout with copies and stores as wide as the
// pointers allow, and that its switches refuse what they cannot take.
#include <gtest/gtest.h>

#include <string>

#include "compile/nvrtc.hpp"
#include "compile/ptxas_report.hpp"
#include "convjit/error.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/specialized_source.hpp"
#include "support/prologue_constant.hpp"
#include "support/scoped_env.hpp"

namespace convjit {
namespace {

using testing::prologue_constant;

constexpr DType kDTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

Conv2dDesc pointwise(int n, int c, int hw, int k, DType dtype = DType::kFloat32, Layout layout = Layout::kNCHW) {
  return Conv2dDesc{.n = n, .c = c, .h = hw, .w = hw, .k = k, .dtype = dtype, .layout = layout};
}

int constant(const Specialization& src, const char* name) { return std::stoi(prologue_constant(src, "int", name)); }

TEST(PointwiseKernel, TakesPointwiseProblemsInTf32And16BitUpToItsChannelLimit) {
  for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    for (const DType dtype : kDTypes) {
      const int limit = dtype == DType::kFloat32 ? 128 : 256;
      EXPECT_FALSE(pointwise_unsupported_reason(pointwise(16, 64, 64, 128, dtype, layout), "sm_90"));
      EXPECT_FALSE(pointwise_unsupported_reason(pointwise(1, 1, 1, 1, dtype, layout), "sm_80"));
      EXPECT_FALSE(pointwise_unsupported_reason(pointwise(2, limit, 7, 999, dtype, layout), ""));
      EXPECT_TRUE(pointwise_unsupported_reason(pointwise(2, limit + 1, 7, 64, dtype, layout), "sm_90"));
      EXPECT_TRUE(pointwise_unsupported_reason(pointwise(2, 64, 7, 64, dtype, layout), "sm_75"));
      Conv2dDesc d = pointwise(2, 64, 9, 64, dtype, layout);
      d.stride_h = 2;
      EXPECT_TRUE(pointwise_unsupported_reason(d, "sm_90"));
      d = pointwise(2, 64, 9, 64, dtype, layout);
      d.pad_w = 1;
      EXPECT_TRUE(pointwise_unsupported_reason(d, "sm_90"));
      d = pointwise(2, 64, 9, 64, dtype, layout);
      d.r = d.s = 3;
      EXPECT_TRUE(pointwise_unsupported_reason(d, "sm_90"));
      d = pointwise(2, 64, 9, 64, dtype, layout);
      d.groups = 2;
      EXPECT_TRUE(pointwise_unsupported_reason(d, "sm_90"));
    }
    Conv2dDesc strict = pointwise(2, 64, 9, 64, DType::kFloat32, layout);
    strict.math = MathMode::kStrictFp32;
    EXPECT_TRUE(pointwise_unsupported_reason(strict, "sm_90"));
    Conv2dDesc transposed = pointwise(2, 64, 9, 64, DType::kFloat32, layout);
    transposed.transposed = true;
    EXPECT_TRUE(pointwise_unsupported_reason(transposed, "sm_90"));
  }
}

TEST(PointwiseKernel, ImplicitGemmRunsPointwiseProblemsOnItUnlessSwitchedOff) {
  const Conv2dDesc d = pointwise(16, 64, 1024, 128);
  EXPECT_EQ(specialize(d, Algorithm::kImplicitGemm, "sm_90").source.template_name, "conv2d_pointwise.cu");
  {
    testing::ScopedEnv off("CONVJIT_POINTWISE_STREAM", "0");
    EXPECT_TRUE(pointwise_unsupported_reason(d, "sm_90"));
    EXPECT_NE(specialize(d, Algorithm::kImplicitGemm, "sm_90").source.template_name, "conv2d_pointwise.cu");
    EXPECT_FALSE(pointwise_stream_preferred(d, "sm_90"));
  }
  {
    testing::ScopedEnv forced("CONVJIT_POINTWISE_STREAM", "1");
    EXPECT_TRUE(pointwise_stream_preferred(d, "sm_90"));
    EXPECT_EQ(select_algorithm(d, "sm_90"), Algorithm::kImplicitGemm);
  }
  {
    testing::ScopedEnv bad("CONVJIT_POINTWISE_STREAM", "yes");
    EXPECT_THROW(pointwise_unsupported_reason(d, "sm_90"), Error);
  }
}

// The default choice, from the H200 measurements against cuBLAS (docs/perf.md): one
// block of at most 96 filters, x of at most 128 channels in 16-bit and 32 in TF32.
TEST(PointwiseKernel, AutoTakesItForFewFiltersAndInTf32ForFewInputChannels) {
  for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    const Conv2dDesc row36 = pointwise(32, 16, 112, 96, DType::kFloat32, layout);
    const Conv2dDesc row35 = pointwise(32, 32, 112, 16, DType::kFloat32, layout);
    const Conv2dDesc row2 = pointwise(16, 64, 56, 64, DType::kFloat32, layout);
    const Conv2dDesc kb87 = pointwise(16, 64, 1024, 128, DType::kFloat16, layout);
    Conv2dDesc row2_16bit = row2;
    row2_16bit.dtype = DType::kBFloat16;
    const Conv2dDesc row5 = pointwise(16, 256, 56, 64, DType::kFloat16, layout);
    for (const Conv2dDesc& d : {row36, row35, row2_16bit}) {
      EXPECT_TRUE(pointwise_stream_preferred(d, "sm_90")) << d.to_string();
      EXPECT_EQ(select_algorithm(d, "sm_90"), Algorithm::kImplicitGemm) << d.to_string();
    }
    for (const Conv2dDesc& d : {row2, row5, kb87, pointwise(16, 64, 56, 256, DType::kFloat16, layout)}) {
      EXPECT_FALSE(pointwise_stream_preferred(d, "sm_90")) << d.to_string();
      EXPECT_EQ(select_algorithm(d, "sm_90"), Algorithm::kIm2colGemm) << d.to_string();
    }
    Conv2dDesc strict = row36;
    strict.math = MathMode::kStrictFp32;
    EXPECT_FALSE(pointwise_stream_preferred(strict, "sm_90"));
  }
}

TEST(PointwiseKernel, SpecializationsCompileWithoutSpillsAndCopyAsWideAsThePointersAllow) {
  // KernelBench 87, networks rows 36 and 4 (256 output channels: two channel blocks), an
  // odd problem, the largest input channel counts.
  for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    for (const DType dtype : kDTypes) {
      const int limit = dtype == DType::kFloat32 ? 128 : 256;
      const Conv2dDesc problems[] = {pointwise(16, 64, 1024, 128, dtype, layout),
                                     pointwise(32, 16, 112, 96, dtype, layout),
                                     pointwise(16, 64, 56, 256, dtype, layout),
                                     Conv2dDesc{.n = 3,
                                                .c = 21,
                                                .h = 5,
                                                .w = 7,
                                                .k = 35,
                                                .bias = true,
                                                .activation = Activation::kRelu,
                                                .dtype = dtype,
                                                .layout = layout},
                                     pointwise(2, limit, 14, 64, dtype, layout)};
      for (const Conv2dDesc& d : problems) {
        SCOPED_TRACE(d.to_string());
        const Specialization src = specialize_pointwise(d);
        const auto e = static_cast<unsigned>(size_of(dtype));
        const std::int64_t x_run = layout == Layout::kNHWC ? d.c : std::int64_t{d.h} * d.w;
        const std::int64_t y_run = layout == Layout::kNHWC ? d.k : std::int64_t{d.h} * d.w;
        const unsigned x_vec = static_cast<unsigned>(constant(src, "kXVecBytes"));
        const unsigned y_vec = static_cast<unsigned>(constant(src, "kYVecBytes"));
        EXPECT_EQ(x_vec, copy_width(x_run, 16, e));
        EXPECT_EQ(y_vec, copy_width(y_run, 16, e));
        EXPECT_EQ(src.launch.needs, (AlignmentNeeds{x_vec, e, e, y_vec}));
        EXPECT_TRUE(src.launch.geometry.persistent);
        EXPECT_EQ(static_cast<int>(src.launch.geometry.shared_bytes), constant(src, "kSharedBytes"));
        EXPECT_LE(src.launch.geometry.shared_bytes, 200u * 1024);
        const int bm = constant(src, "kBM");
        EXPECT_LE(bm, 128);
        EXPECT_EQ(src.launch.geometry.grid_y, static_cast<unsigned>((d.k + bm - 1) / bm));
        const auto compiled = Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for("sm_90"));
        EXPECT_NE(compiled.ptx.find(x_vec == 16  ? "cp.async.cg.shared.global"
                                    : x_vec >= 4 ? "cp.async.ca.shared.global"
                                                 : "ld.global.nc"),
                  std::string::npos);
        const ResourceUsage usage = parse_ptxas_report(compiled.log, src.source.kernel_name);
        EXPECT_EQ(usage.spill_store_bytes, 0) << compiled.log;
        EXPECT_EQ(usage.spill_load_bytes, 0) << compiled.log;
        // An unaligned x and y: the variant for one element's alignment compiles too.
        const AlignmentNeeds element{e, e, e, e};
        const Specialization narrow = specialize_pointwise(d, element);
        EXPECT_EQ(narrow.launch.needs, element);
        EXPECT_NE(narrow.source.kernel_name, src.source.kernel_name);
        EXPECT_NO_THROW(Nvrtc::compile(narrow.source.text, narrow.source.template_name, Nvrtc::options_for("sm_80")));
      }
    }
  }
}

TEST(PointwiseKernel, TileSwitchTakesTuningShapesAndRefusesWhatTheKernelCannotRun) {
  const Conv2dDesc d = pointwise(2, 40, 11, 72);
  {
    testing::ScopedEnv tile("CONVJIT_POINTWISE_TILE", "16,64,2,4,3");
    const Specialization src = specialize_pointwise(d);
    EXPECT_EQ(constant(src, "kBM"), 32);
    EXPECT_EQ(constant(src, "kBN"), 256);
    EXPECT_EQ(constant(src, "kStages"), 3);
    EXPECT_EQ(src.launch.geometry.block_x, 256u);
  }
  for (const char* bad : {"24,32,1,1,3", "32,12,1,1,3", "32,32,0,1,3", "32,32,1,1,1", "32,32,8,4,3", "32,32"}) {
    testing::ScopedEnv tile("CONVJIT_POINTWISE_TILE", bad);
    EXPECT_THROW(specialize_pointwise(d), Error) << bad;
  }
  // 128 TF32 channels fit 16-channel warp tiles only.
  testing::ScopedEnv wide("CONVJIT_POINTWISE_TILE", "32,32,1,1,3");
  EXPECT_THROW(specialize_pointwise(pointwise(2, 128, 11, 72)), Error);
}

}  // namespace
}  // namespace convjit
