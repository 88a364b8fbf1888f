// Stride-1 transposed NCHW convolutions on the wgmma kernels (issue 15): forward_twin's
// problem (same output, padding dilation x (kernel - 1) - pad), the twin specialized with
// the pack reading w flipped (CONVJIT_WGMMA_W_TRANSPOSED) under the transposed problem's
// own name, through the route and on the NCHW kernel, compiling for sm_90a without
// spills; the problems with no twin keep the kernels they had, with the reason said; and
// kAuto chooses for them as for their twin.
#include <gtest/gtest.h>

#include <string>

#include "compile/nvrtc.hpp"
#include "compile/ptxas_report.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/specialized_source.hpp"
#include "support/prologue_constant.hpp"
#include "support/scoped_env.hpp"

namespace convjit {
namespace {

using testing::prologue_constant;
using testing::ScopedEnv;

Conv2dDesc kind(Conv2dDesc d, DType dtype, MathMode math = MathMode::kTF32) {
  d.dtype = dtype;
  d.math = math;
  return d;
}

// KernelBench 71's kind (32 channels, wide rows), a grouped dilated one, and a 1-D one.
const Conv2dDesc kWide{.n = 2, .c = 32, .h = 24, .w = 64, .k = 32, .r = 3, .s = 3, .transposed = true};
const Conv2dDesc kGrouped{.n = 2,
                          .c = 128,
                          .h = 9,
                          .w = 14,
                          .k = 98,
                          .r = 3,
                          .s = 5,
                          .pad_h = 2,
                          .pad_w = 1,
                          .dilation_h = 2,
                          .groups = 2,
                          .bias = true,
                          .activation = Activation::kRelu,
                          .transposed = true};
const Conv2dDesc kOneD{.n = 4, .c = 128, .w = 4096, .k = 128, .s = 3, .spatial_dims = 1, .transposed = true};

TEST(ForwardTwin, HasTheTransposedOutputAndTheFlippedPadding) {
  for (const Conv2dDesc& d : {kWide, kGrouped, kOneD}) {
    SCOPED_TRACE(d.to_string());
    const auto f = forward_twin(d);
    ASSERT_TRUE(f.twin) << f.why_not;
    EXPECT_FALSE(f.twin->transposed);
    EXPECT_EQ(f.twin->output_shape(), d.output_shape());
    EXPECT_EQ(f.twin->pad_h, d.dilation_h * (d.r - 1) - d.pad_h);
    EXPECT_EQ(f.twin->pad_w, d.dilation_w * (d.s - 1) - d.pad_w);
    EXPECT_EQ(f.twin->c, d.c);
    EXPECT_EQ(f.twin->k, d.k);
    EXPECT_NO_THROW(f.twin->validate());
  }
  EXPECT_FALSE(forward_twin(Conv2dDesc{.n = 1, .c = 8, .h = 4, .w = 4, .k = 8}).twin) << "a forward problem";
}

// Compiled once each: f16 through the route, TF32 and 3xTF32 on the NCHW kernel, bf16 1-D.
TEST(TransposedWgmmaKernel, TwinKernelsReadWFlippedUnderTheTransposedNameAndCompileWithoutSpills) {
  struct Case {
    Conv2dDesc desc;
    const char* route;
  };
  const Case cases[] = {{kind(kWide, DType::kFloat16), "1"},
                        {kind(kGrouped, DType::kFloat32), "0"},
                        {kind(kGrouped, DType::kFloat32, MathMode::kStrictFp32), "1"},
                        {kind(kOneD, DType::kBFloat16), "0"}};
  for (const Case& c : cases) {
    ScopedEnv route("CONVJIT_NCHW_VIA_NHWC", c.route);
    const Conv2dDesc& d = c.desc;
    ASSERT_FALSE(wgmma_unsupported_reason(d, "sm_90")) << *wgmma_unsupported_reason(d, "sm_90");
    const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
    const std::string& name = src.source.kernel_name;
    SCOPED_TRACE(name);
    EXPECT_TRUE(name.starts_with("conv2d_wgmma_")) << name;
    EXPECT_NE(name.find("_tr0x0x0"), std::string::npos) << "the transposed problem's tag";
    EXPECT_EQ(name.ends_with("_via_nhwc"), std::string(c.route) == "1");
    EXPECT_NE(src.source.text.find("#define CONVJIT_WGMMA_W_TRANSPOSED 1"), std::string::npos);
    EXPECT_NE(src.launch.tile.find("transposed: the forward convolution of the flipped filter"), std::string::npos)
        << src.launch.tile;
    // The kernel computes the twin: forward, its padding flipped.
    const auto twin = *forward_twin(d).twin;
    EXPECT_EQ(prologue_constant(src, "bool", "kTransposed"), "false");
    EXPECT_EQ(prologue_constant(src, "int", "kPadH"), std::to_string(twin.pad_h));
    EXPECT_EQ(prologue_constant(src, "int", "kPadW"), std::to_string(twin.pad_w));
    EXPECT_EQ(prologue_constant(src, "bool", "kBMap"), "false");
    EXPECT_EQ(prologue_constant(src, "bool", "kWeightsKcrs"), "true");
    ASSERT_TRUE(src.launch.weight_pack.has_value());
    EXPECT_EQ(src.launch.weight_pack->kernel_name, name + "_pack");

    const auto compiled = Nvrtc::compile(src.source.text, name + ".cu", Nvrtc::options_for(src.source.compile_arch));
    for (const std::string& entry : {name, name + "_pack"}) {
      EXPECT_NE(compiled.ptx.find(".entry " + entry + "("), std::string::npos) << entry;
      const auto usage = parse_ptxas_report(compiled.log, entry);
      EXPECT_EQ(usage.spill_store_bytes, 0) << entry << "\n" << compiled.log;
      EXPECT_EQ(usage.spill_load_bytes, 0) << entry << "\n" << compiled.log;
    }
  }
}

// The same fields as a forward problem, and the transposed problem's own twin: three
// different kernels (names and sources), so no cache entry serves the wrong one.
TEST(TransposedWgmmaKernel, TransposedTwinAndForwardProblemsGetDifferentKernels) {
  ScopedEnv route("CONVJIT_NCHW_VIA_NHWC", "0");
  const Conv2dDesc d = kind(kGrouped, DType::kFloat16);
  Conv2dDesc same_fields = d;
  same_fields.transposed = false;
  const Conv2dDesc twin = *forward_twin(d).twin;
  const auto a = specialize(d, Algorithm::kImplicitGemm, "sm_90");
  const auto b = specialize(same_fields, Algorithm::kImplicitGemm, "sm_90");
  const auto c = specialize(twin, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_NE(a.source.kernel_name, b.source.kernel_name);
  EXPECT_NE(a.source.kernel_name, c.source.kernel_name);
  EXPECT_NE(a.source.text, c.source.text);
  EXPECT_EQ(c.source.text.find("#define CONVJIT_WGMMA_W_TRANSPOSED"), std::string::npos);
}

// No forward twin: strided, output_padding, padding past the filter's reach, channels
// last; and archs before Hopper. Each keeps its kernel, with the reason. A 3-D one has a
// twin, which no NCDHW wgmma kernel reads: it takes the route (convnd_wgmma_kernel_test).
TEST(TransposedWgmmaKernel, ProblemsWithNoTwinKeepTheirKernelsWithTheReasonSaid) {
  Conv2dDesc strided = kind(kWide, DType::kFloat16);
  strided.stride_h = 2;
  Conv2dDesc padded_out = kind(kWide, DType::kFloat16);
  padded_out.dilation_w = 2;
  padded_out.output_padding_w = 1;
  Conv2dDesc cropped = kind(kWide, DType::kFloat16);
  cropped.pad_h = 3;  // past the filter's reach of 2
  Conv2dDesc nhwc = kind(kWide, DType::kFloat16);
  nhwc.layout = Layout::kNHWC;
  struct Case {
    Conv2dDesc desc;
    const char* why;
  };
  for (const Case& c : {Case{strided, "strided"}, Case{padded_out, "output_padding"}, Case{cropped, "reach"},
                        Case{nhwc, "channels-last"}}) {
    SCOPED_TRACE(c.desc.to_string());
    const auto why = wgmma_unsupported_reason(c.desc, "sm_90");
    ASSERT_TRUE(why);
    EXPECT_NE(why->find(c.why), std::string::npos) << *why;
    EXPECT_FALSE(forward_twin(c.desc).twin);
    EXPECT_TRUE(nchw_via_nhwc_unsupported_reason(c.desc, "sm_90"));
    EXPECT_FALSE(wgmma_work(c.desc));
  }
  Conv2dDesc deep = kind(kWide, DType::kFloat16);
  deep.spatial_dims = 3;
  deep.d = 5;
  deep.t = 3;
  EXPECT_TRUE(forward_twin(deep).twin);
  ASSERT_TRUE(wgmma_unsupported_reason(deep, "sm_90"));
  EXPECT_NE(wgmma_unsupported_reason(deep, "sm_90")->find("3-D"), std::string::npos);
  EXPECT_FALSE(nchw_via_nhwc_unsupported_reason(deep, "sm_90"));
  // Before Hopper: the mma.sync kernel's own transposed path.
  const Conv2dDesc d = kind(kWide, DType::kFloat16);
  const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_80");
  EXPECT_TRUE(src.source.kernel_name.starts_with("conv2d_igemm_")) << src.source.kernel_name;
  EXPECT_NE(src.source.text.find("CONVJIT_IGEMM_PACK_TRANSPOSED"), std::string::npos);
}

// kAuto on sm_90 chooses for a problem with a twin as for the twin, and the choice runs:
// the KernelBench stride-1 transposed problems in every mode.
TEST(TransposedWgmmaKernel, AutoChoosesAsForTheTwin) {
  const Conv2dDesc problems[] = {
      {.n = 8, .c = 64, .h = 1024, .w = 1024, .k = 64, .r = 3, .s = 3, .transposed = true},
      {.n = 64, .c = 64, .h = 128, .w = 256, .k = 128, .r = 3, .s = 5, .transposed = true},
      {.n = 8, .c = 32, .h = 512, .w = 1024, .k = 32, .r = 3, .s = 7, .pad_h = 1, .pad_w = 3, .transposed = true},
      {.n = 64, .c = 128, .w = 65536, .k = 128, .s = 3, .spatial_dims = 1, .transposed = true}};
  for (const Conv2dDesc& p : problems) {
    for (const auto& [dtype, math] :
         {std::pair{DType::kFloat32, MathMode::kTF32}, std::pair{DType::kFloat32, MathMode::kStrictFp32},
          std::pair{DType::kFloat16, MathMode::kTF32}}) {
      const Conv2dDesc d = kind(p, dtype, math);
      SCOPED_TRACE(d.to_string());
      const Algorithm a = resolve_algorithm(d, Algorithm::kAuto, "sm_90");
      EXPECT_EQ(a, select_algorithm(*forward_twin(d).twin, "sm_90"));
      EXPECT_NO_THROW((void)specialize(d, a, "sm_90"));
    }
  }
}

}  // namespace
}  // namespace convjit
