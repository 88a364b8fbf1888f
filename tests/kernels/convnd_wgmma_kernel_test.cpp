// 3-D convolutions on the wgmma kernels (issue 15): NCDHW problems, forward and stride-1
// transposed (through forward_twin with depth), take the route through the NHWC TMA
// kernel, which reads NDHWC x through a rank-5 im2col map (C, W, H, D, N; corners and
// traversal strides in all three spatial dimensions) and walks T x R x S taps a chunk;
// the route's transposes span D x H x W and Z x P x Q; the sources compile for sm_90a
// without spills; what the rank-5 map cannot read, and channels-last 3-D problems, keep
// their kernels with the reason said.
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

// KernelBench 61's kind, small (stride-1 transposed, 48 channels: one and a half chunks
// in f32), and a forward 3-D layer with depth padding and stride.
const Conv2dDesc kTransposed3d{
    .n = 2, .c = 48, .h = 8, .w = 10, .k = 48, .r = 3, .s = 3, .spatial_dims = 3, .d = 6, .t = 3, .transposed = true};
const Conv2dDesc kForward3d{.n = 2,
                            .c = 32,
                            .h = 9,
                            .w = 7,
                            .k = 40,
                            .r = 3,
                            .s = 3,
                            .pad_h = 1,
                            .pad_w = 1,
                            .bias = true,
                            .spatial_dims = 3,
                            .d = 7,
                            .t = 3,
                            .stride_d = 2,
                            .pad_d = 1};

TEST(ForwardTwin, ThreeDimensionalTransposedHasTheFlippedDepthPadding) {
  const auto f = forward_twin(kTransposed3d);
  ASSERT_TRUE(f.twin) << f.why_not;
  EXPECT_EQ(f.twin->pad_d, 2);
  EXPECT_EQ(f.twin->pad_h, 2);
  EXPECT_EQ(f.twin->output_shape(), kTransposed3d.output_shape());
  Conv2dDesc strided = kTransposed3d;
  strided.stride_d = 2;
  EXPECT_FALSE(forward_twin(strided).twin);
}

TEST(ConvNdWgmmaKernel, NcdhwProblemsTakeTheRouteThroughARankFiveMapAndCompileWithoutSpills) {
  ScopedEnv route("CONVJIT_NCHW_VIA_NHWC", "1");
  const Conv2dDesc cases[] = {with_dtype(kTransposed3d, DType::kFloat16), with_dtype(kForward3d, DType::kFloat32),
                              with_dtype(kForward3d, DType::kFloat32, MathMode::kStrictFp32),
                              with_dtype(kTransposed3d, DType::kBFloat16)};
  for (const Conv2dDesc& d : cases) {
    SCOPED_TRACE(d.to_string());
    ASSERT_FALSE(nchw_via_nhwc_unsupported_reason(d, "sm_90")) << *nchw_via_nhwc_unsupported_reason(d, "sm_90");
    const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
    const std::string& name = src.source.kernel_name;
    EXPECT_TRUE(name.starts_with("conv2d_wgmma_")) << name;
    EXPECT_TRUE(name.ends_with("_via_nhwc")) << name;
    EXPECT_NE(name.find("_z"), std::string::npos) << "the depth's tag";
    EXPECT_EQ(prologue_constant(src, "int", "kT"), "3");
    EXPECT_EQ(prologue_constant(src, "bool", "kATma"), "true");
    ASSERT_TRUE(src.launch.a_map.has_value());
    const Im2colTensorMap& m = *src.launch.a_map;
    EXPECT_EQ(m.rank, 5);
    EXPECT_EQ(m.dims[0], static_cast<std::uint64_t>(d.c));
    EXPECT_EQ(m.dims[1], static_cast<std::uint64_t>(d.w));
    EXPECT_EQ(m.dims[2], static_cast<std::uint64_t>(d.h));
    EXPECT_EQ(m.dims[3], static_cast<std::uint64_t>(d.d));
    EXPECT_EQ(m.dims[4], static_cast<std::uint64_t>(d.n));
    const auto e = static_cast<std::uint64_t>(size_of(d.dtype));
    EXPECT_EQ(m.strides[2], static_cast<std::uint64_t>(d.c) * d.w * d.h * e);
    EXPECT_EQ(m.strides[3], static_cast<std::uint64_t>(d.c) * d.w * d.h * d.d * e);
    const Conv2dDesc f = d.transposed ? *forward_twin(d).twin : d;
    EXPECT_EQ(m.lower[2], -f.pad_d);
    EXPECT_EQ(m.upper[2], f.pad_d - f.dilation_d * (f.t - 1));
    EXPECT_EQ(m.element_strides[3], static_cast<unsigned>(f.stride_d));
    EXPECT_EQ(m.element_strides[4], 1u);
    // x's transpose over D x H x W a channel; the kernel (or split-K's reduce pass) stores
    // NCDHW y itself.
    ASSERT_TRUE(src.launch.x_to_nhwc.has_value());
    EXPECT_GE(src.launch.x_to_nhwc->region_bytes, static_cast<std::uint64_t>(d.x_elements()) * e);

    const auto compiled = Nvrtc::compile(src.source.text, name + ".cu", Nvrtc::options_for(src.source.compile_arch));
    EXPECT_NE(compiled.ptx.find("cp.async.bulk.tensor.5d.shared::cluster.global.im2col"), std::string::npos);
    EXPECT_EQ(compiled.ptx.find("cp.async.bulk.tensor.4d.shared::cluster.global.im2col"), std::string::npos);
    for (const std::string& entry : {name, name + "_pack", name + "_x_to_nhwc"}) {
      EXPECT_NE(compiled.ptx.find(".entry " + entry + "("), std::string::npos) << entry;
      const auto usage = parse_ptxas_report(compiled.log, entry);
      EXPECT_EQ(usage.spill_store_bytes, 0) << entry << "\n" << compiled.log;
      EXPECT_EQ(usage.spill_load_bytes, 0) << entry << "\n" << compiled.log;
    }
  }
}

// Unset, the model takes the route for these (the NCDHW kernel has no wgmma copy to
// weigh it against), and kAuto runs them on the implicit GEMM.
TEST(ConvNdWgmmaKernel, AutoRunsKernelBenchsThreeDimensionalTransposedProblemsThroughTheRoute) {
  ScopedEnv unset("CONVJIT_NCHW_VIA_NHWC", nullptr);
  const Conv2dDesc problems[] = {{.n = 8,
                                  .c = 48,
                                  .h = 64,
                                  .w = 64,
                                  .k = 48,
                                  .r = 3,
                                  .s = 3,
                                  .spatial_dims = 3,
                                  .d = 64,
                                  .t = 3,
                                  .transposed = true},
                                 {.n = 16,
                                  .c = 32,
                                  .h = 64,
                                  .w = 64,
                                  .k = 64,
                                  .r = 5,
                                  .s = 5,
                                  .spatial_dims = 3,
                                  .d = 64,
                                  .t = 3,
                                  .transposed = true},
                                 {.n = 8,
                                  .c = 48,
                                  .h = 96,
                                  .w = 96,
                                  .k = 24,
                                  .r = 3,
                                  .s = 3,
                                  .spatial_dims = 3,
                                  .d = 96,
                                  .t = 3,
                                  .transposed = true},
                                 {.n = 16,
                                  .c = 32,
                                  .h = 32,
                                  .w = 64,
                                  .k = 16,
                                  .r = 5,
                                  .s = 7,
                                  .spatial_dims = 3,
                                  .d = 16,
                                  .t = 3,
                                  .transposed = true}};
  for (const Conv2dDesc& p : problems) {
    for (const DType dtype : {DType::kFloat32, DType::kFloat16}) {
      const Conv2dDesc d = with_dtype(p, dtype);
      SCOPED_TRACE(d.to_string());
      EXPECT_EQ(resolve_algorithm(d, Algorithm::kAuto, "sm_90"), Algorithm::kImplicitGemm);
      EXPECT_TRUE(nchw_takes_route(d, "sm_90"));
      EXPECT_TRUE(specialize(d, Algorithm::kImplicitGemm, "sm_90").source.kernel_name.ends_with("_via_nhwc"));
    }
  }
}

// What the rank-5 map cannot read keeps the NCDHW kernels, the reason said: corners past
// [-16, 15], a dilated reach past 31, 12-byte pixels (a 3-channel stem); a channels-last
// 3-D problem keeps im2col (the mma.sync kernels' channels-last copies are 2-D); before
// Hopper, no route.
TEST(ConvNdWgmmaKernel, WhatTheRankFiveMapCannotReadKeepsItsKernelsWithTheReason) {
  Conv2dDesc wide_pad = with_dtype(kForward3d, DType::kFloat16);
  wide_pad.h = 40;
  wide_pad.pad_h = 17;
  Conv2dDesc far_reach = with_dtype(kForward3d, DType::kFloat16);
  far_reach.w = 80;
  far_reach.s = 5;
  far_reach.dilation_w = 9;  // reach 36
  Conv2dDesc stem = with_dtype(kForward3d, DType::kFloat32);
  stem.c = 3;
  struct Case {
    Conv2dDesc desc;
    const char* why;
  };
  for (const Case& c : {Case{wide_pad, "[-16, 15]"}, Case{far_reach, "go up to 31"}, Case{stem, "multiple of 16"}}) {
    SCOPED_TRACE(c.desc.to_string());
    const auto why = nchw_via_nhwc_unsupported_reason(c.desc, "sm_90");
    ASSERT_TRUE(why);
    EXPECT_NE(why->find(c.why), std::string::npos) << *why;
    EXPECT_FALSE(specialize(c.desc, Algorithm::kImplicitGemm, "sm_90").source.kernel_name.ends_with("_via_nhwc"));
  }
  Conv2dDesc cl = with_dtype(kForward3d, DType::kFloat16);
  cl.layout = Layout::kNHWC;
  EXPECT_TRUE(why_unsupported(cl, Algorithm::kImplicitGemm, "sm_90"));
  EXPECT_EQ(select_algorithm(cl, "sm_90"), Algorithm::kIm2colGemm);
  EXPECT_TRUE(nchw_via_nhwc_unsupported_reason(with_dtype(kForward3d, DType::kFloat16), "sm_80"));
  // The NCDHW problem itself is no wgmma kernel's: only its NDHWC twin, through the route.
  ASSERT_TRUE(wgmma_unsupported_reason(with_dtype(kForward3d, DType::kFloat16), "sm_90"));
  EXPECT_NE(wgmma_unsupported_reason(with_dtype(kForward3d, DType::kFloat16), "sm_90")->find("route"),
            std::string::npos);
}

}  // namespace
}  // namespace convjit

namespace convjit {
namespace {

// KernelBench 77's kind, small: 3-D, stride 2, dilation 2, pad 1: one receiving phase,
// (1, 1, 1), through the route with the bias fill; compiles for sm_90a without spills.
TEST(ConvNdWgmmaKernel, AThreeDimensionalSinglePhaseTransposedProblemRunsThroughTheRouteWithAFill) {
  ScopedEnv route("CONVJIT_NCHW_VIA_NHWC", "1");
  const Conv2dDesc d = with_dtype({.n = 2,
                                   .c = 32,
                                   .h = 8,
                                   .w = 8,
                                   .k = 64,
                                   .r = 3,
                                   .s = 3,
                                   .stride_h = 2,
                                   .stride_w = 2,
                                   .pad_h = 1,
                                   .pad_w = 1,
                                   .dilation_h = 2,
                                   .dilation_w = 2,
                                   .bias = true,
                                   .spatial_dims = 3,
                                   .d = 4,
                                   .t = 3,
                                   .stride_d = 2,
                                   .pad_d = 1,
                                   .dilation_d = 2,
                                   .transposed = true},
                                  DType::kFloat16);
  const auto f = forward_twin(d);
  ASSERT_TRUE(f.twin) << f.why_not;
  EXPECT_TRUE(f.phased());
  EXPECT_EQ(f.phase_d, 1);
  EXPECT_EQ(f.out_stride_d, 2);
  EXPECT_EQ(f.twin->stride_d, 1);
  EXPECT_EQ(f.twin->dilation_d, 1);
  EXPECT_EQ(f.twin->output_shape().z, (d.output_shape().z - 1 + 1) / 2);
  const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
  const std::string& name = src.source.kernel_name;
  EXPECT_TRUE(name.ends_with("_via_nhwc")) << name;
  EXPECT_EQ(prologue_constant(src, "int", "kYStrideD"), "2");
  EXPECT_EQ(prologue_constant(src, "int", "kYFullZ"), std::to_string(d.output_shape().z));
  ASSERT_TRUE(src.launch.y_fill.has_value());
  ASSERT_TRUE(src.launch.a_map.has_value());
  EXPECT_EQ(src.launch.a_map->rank, 5);
  const auto compiled = Nvrtc::compile(src.source.text, name + ".cu", Nvrtc::options_for(src.source.compile_arch));
  for (const std::string& entry : {name, name + "_fill", name + "_x_to_nhwc"}) {
    EXPECT_NE(compiled.ptx.find(".entry " + entry + "("), std::string::npos) << entry;
    EXPECT_EQ(parse_ptxas_report(compiled.log, entry).spill_store_bytes, 0) << entry << "\n" << compiled.log;
  }
}

}  // namespace
}  // namespace convjit
