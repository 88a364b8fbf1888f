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
#include "support/random_desc.hpp"
#include "support/scoped_env.hpp"

namespace convjit {
namespace {

using testing::prologue_constant;
using testing::ScopedEnv;
using testing::with_dtype;

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
  const Case cases[] = {{with_dtype(kWide, DType::kFloat16), "1"},
                        {with_dtype(kGrouped, DType::kFloat32), "0"},
                        {with_dtype(kGrouped, DType::kFloat32, MathMode::kStrictFp32), "1"},
                        {with_dtype(kOneD, DType::kBFloat16), "0"}};
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
  const Conv2dDesc d = with_dtype(kGrouped, DType::kFloat16);
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
  Conv2dDesc strided = with_dtype(kWide, DType::kFloat16);
  strided.stride_h = 2;
  Conv2dDesc padded_out = with_dtype(kWide, DType::kFloat16);
  padded_out.dilation_w = 2;
  padded_out.output_padding_w = 1;
  Conv2dDesc cropped = with_dtype(kWide, DType::kFloat16);
  cropped.pad_h = 3;  // past the filter's reach of 2
  Conv2dDesc nhwc = with_dtype(kWide, DType::kFloat16);
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
  Conv2dDesc deep = with_dtype(kWide, DType::kFloat16);
  deep.spatial_dims = 3;
  deep.d = 5;
  deep.t = 3;
  EXPECT_TRUE(forward_twin(deep).twin);
  ASSERT_TRUE(wgmma_unsupported_reason(deep, "sm_90"));
  EXPECT_NE(wgmma_unsupported_reason(deep, "sm_90")->find("3-D"), std::string::npos);
  EXPECT_FALSE(nchw_via_nhwc_unsupported_reason(deep, "sm_90"));
  // Before Hopper: the mma.sync kernel's own transposed path.
  const Conv2dDesc d = with_dtype(kWide, DType::kFloat16);
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
      const Conv2dDesc d = with_dtype(p, dtype, math);
      SCOPED_TRACE(d.to_string());
      const Algorithm a = resolve_algorithm(d, Algorithm::kAuto, "sm_90");
      EXPECT_EQ(a, select_algorithm(*forward_twin(d).twin, "sm_90"));
      EXPECT_NO_THROW((void)specialize(d, a, "sm_90"));
    }
  }
}

}  // namespace
}  // namespace convjit

namespace convjit {
namespace {

// KernelBench 79's kind, small (1-D, stride 2, dilation 2, pad 1), and a 2-D one with
// stride 3, dilation 3 and a bias: one receiving phase each.
const Conv2dDesc kPhase1d{.n = 2,
                          .c = 32,
                          .w = 64,
                          .k = 64,
                          .s = 3,
                          .stride_w = 2,
                          .pad_w = 1,
                          .dilation_w = 2,
                          .spatial_dims = 1,
                          .transposed = true};
const Conv2dDesc kPhase2d{.n = 1,
                          .c = 64,
                          .h = 7,
                          .w = 9,
                          .k = 48,
                          .r = 3,
                          .s = 3,
                          .stride_h = 3,
                          .stride_w = 3,
                          .pad_h = 2,
                          .pad_w = 2,
                          .dilation_h = 3,
                          .dilation_w = 3,
                          .bias = true,
                          .transposed = true};

TEST(ForwardTwin, ADilationThatIsAMultipleOfTheStrideLeavesOnePhaseWhoseGridIsTheTwinsOutput) {
  const auto f1 = forward_twin(kPhase1d);
  ASSERT_TRUE(f1.twin) << f1.why_not;
  EXPECT_TRUE(f1.phased());
  EXPECT_EQ(f1.out_stride_w, 2);
  EXPECT_EQ(f1.phase_w, 1);  // -pad mod stride
  EXPECT_EQ(f1.twin->stride_w, 1);
  EXPECT_EQ(f1.twin->dilation_w, 1);
  EXPECT_EQ(f1.twin->pad_w, 1);  // (kernel - 1) m - (phase + pad) / stride = 2 - 1
  const auto full = kPhase1d.output_shape();
  EXPECT_EQ(f1.twin->output_shape().q, (full.q - f1.phase_w + 1) / 2);
  const auto f2 = forward_twin(kPhase2d);
  ASSERT_TRUE(f2.twin) << f2.why_not;
  EXPECT_EQ(f2.phase_h, 1);
  EXPECT_EQ(f2.out_stride_h, 3);
  EXPECT_EQ(f2.twin->dilation_h, 1);
  // A dilation that is no multiple of the stride fills several phases; output_padding
  // pads one side of the twin.
  Conv2dDesc several = kPhase2d;
  several.dilation_h = several.dilation_w = 2;
  several.h = several.w = 9;
  EXPECT_FALSE(forward_twin(several).twin);
  EXPECT_NE(forward_twin(several).why_not.find("several output phases"), std::string::npos);
  Conv2dDesc padded = kPhase1d;
  padded.output_padding_w = 1;
  EXPECT_FALSE(forward_twin(padded).twin);
  // Stride 1 is the plain twin, no phase.
  EXPECT_FALSE(forward_twin(kWide).phased());
}

TEST(TransposedWgmmaKernel, APhaseRunsThroughTheRouteAfterABiasFillAndCompilesWithoutSpills) {
  ScopedEnv route("CONVJIT_NCHW_VIA_NHWC", "1");
  for (const Conv2dDesc& d : {with_dtype(kPhase1d, DType::kFloat16), with_dtype(kPhase2d, DType::kFloat32),
                              with_dtype(kPhase2d, DType::kFloat32, MathMode::kStrictFp32)}) {
    SCOPED_TRACE(d.to_string());
    const auto why = wgmma_unsupported_reason(d, "sm_90");
    ASSERT_TRUE(why) << "no NCHW kernel stores a phase";
    EXPECT_NE(why->find("route"), std::string::npos) << *why;
    ASSERT_FALSE(nchw_via_nhwc_unsupported_reason(d, "sm_90")) << *nchw_via_nhwc_unsupported_reason(d, "sm_90");
    ASSERT_FALSE(why_unsupported(d, Algorithm::kImplicitGemm, "sm_90"));
    const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
    const std::string& name = src.source.kernel_name;
    EXPECT_TRUE(name.ends_with("_via_nhwc")) << name;
    EXPECT_NE(src.source.text.find("#define CONVJIT_WGMMA_Y_PHASE 1"), std::string::npos);
    // Stored by the kernel or, split (the small 2-D one), by the reduce pass: never through y's transpose.
    EXPECT_EQ(src.source.text.find("#define CONVJIT_WGMMA_Y_NCHW 1") != std::string::npos,
              !src.launch.split_reduce.has_value());
    const auto f = forward_twin(d);
    EXPECT_EQ(prologue_constant(src, "int", "kYStrideW"), std::to_string(f.out_stride_w));
    EXPECT_EQ(prologue_constant(src, "int", "kYPhaseW"), std::to_string(f.phase_w));
    EXPECT_EQ(prologue_constant(src, "int", "kYFullQ"), std::to_string(d.output_shape().q));
    ASSERT_TRUE(src.launch.y_fill.has_value());
    EXPECT_EQ(src.launch.y_fill->kernel_name, name + "_fill");
    const auto compiled = Nvrtc::compile(src.source.text, name + ".cu", Nvrtc::options_for(src.source.compile_arch));
    EXPECT_EQ(compiled.ptx.find(".entry " + name + "_reduce(") != std::string::npos,
              src.launch.split_reduce.has_value());
    for (const std::string& entry : {name, name + "_pack", name + "_x_to_nhwc", name + "_fill"}) {
      EXPECT_NE(compiled.ptx.find(".entry " + entry + "("), std::string::npos) << entry;
      const auto usage = parse_ptxas_report(compiled.log, entry);
      EXPECT_EQ(usage.spill_store_bytes, 0) << entry << "\n" << compiled.log;
    }
  }
  // Off, the route cannot take it, and nothing else runs a phase on the implicit GEMM.
  ScopedEnv off("CONVJIT_NCHW_VIA_NHWC", "0");
  EXPECT_TRUE(why_unsupported(with_dtype(kPhase1d, DType::kFloat16), Algorithm::kImplicitGemm, "sm_90"));
  EXPECT_NE(select_algorithm(with_dtype(kPhase1d, DType::kFloat16), "sm_90"), Algorithm::kImplicitGemm);
}

}  // namespace
}  // namespace convjit
