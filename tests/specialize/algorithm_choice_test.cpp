// kAuto's heuristic on the shapes whose choice the networks set measured (docs/perf.md,
// "Networks set in both layouts"): shallow NHWC problems to tensor cores, few output
// channels over a deep reduction to tensor cores, non-overlapping patches to a GEMM.
#include <gtest/gtest.h>

#include "specialize/algorithm.hpp"
#include "support/scoped_env.hpp"

namespace convjit {
namespace {

Conv2dDesc with(Conv2dDesc d, Layout layout, DType dtype, MathMode math) {
  d.layout = layout;
  d.dtype = dtype;
  d.math = math;
  return d;
}

constexpr DType kDTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};
constexpr MathMode kMaths[] = {MathMode::kTF32, MathMode::kStrictFp32};

TEST(AlgorithmChoice, ShallowDenseNhwcProblemsRunOnTensorCoresNotTheDirectKernel) {
  const Conv2dDesc rgb{.n = 8, .c = 3, .h = 224, .w = 224, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  const Conv2dDesc stem{.n = 32, .c = 3, .h = 224, .w = 224, .k = 32, .r = 3, .s = 3, .stride_h = 2, .stride_w = 2};
  for (const char* arch : {"sm_80", "sm_90"}) {
    for (const DType dtype : kDTypes) {
      for (const MathMode math : kMaths) {
        SCOPED_TRACE(::testing::Message() << arch << " " << to_string(dtype) << " " << to_string(math));
        EXPECT_EQ(select_algorithm(with(rgb, Layout::kNHWC, dtype, math), arch), Algorithm::kImplicitGemm);
        EXPECT_EQ(select_algorithm(with(stem, Layout::kNHWC, dtype, math), arch), Algorithm::kImplicitGemm);
        // NCHW: x's transpose and the NHWC mma.sync kernel; without that route the NCHW
        // gather reads 3-channel planes pixel by pixel, and the direct kernel stays.
        EXPECT_EQ(select_algorithm(with(rgb, Layout::kNCHW, dtype, math), arch), Algorithm::kImplicitGemm);
        // A strided stem's x is too large next to its outputs for the transpose to pay.
        EXPECT_EQ(select_algorithm(with(stem, Layout::kNCHW, dtype, math), arch), Algorithm::kDirect);
        testing::ScopedEnv no_route("CONVJIT_NCHW_MMA_VIA_NHWC", "0");
        EXPECT_EQ(select_algorithm(with(rgb, Layout::kNCHW, dtype, math), arch), Algorithm::kDirect);
      }
    }
  }
  // Before sm_80 there are no tensor-core kernels to prefer.
  EXPECT_EQ(select_algorithm(with(rgb, Layout::kNHWC, DType::kFloat32, MathMode::kTF32), "sm_75"), Algorithm::kDirect);
}

TEST(AlgorithmChoice, NhwcTakesWgmmaWhereChannelsFillAChunkAndTheTmaMapReadsX) {
  // 8 x 56 x 56 pixels x 256 channels: 392 x 2 tiles fill the machine.
  const Conv2dDesc large{.n = 8, .c = 256, .h = 56, .w = 56, .k = 256, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  // Fewer channels than one 128-byte chunk: 3 (f32 chunk 32, 16-bit chunk 64).
  const Conv2dDesc rgb{.n = 1, .c = 3, .h = 16, .w = 16, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  for (const DType dtype : kDTypes) {
    for (const MathMode math : kMaths) {
      SCOPED_TRACE(::testing::Message() << to_string(dtype) << " " << to_string(math));
      const Conv2dDesc d = with(large, Layout::kNHWC, dtype, math);
      EXPECT_TRUE(nhwc_prefers_wgmma(d, "sm_90"));
      EXPECT_EQ(implicit_gemm_model(d, "sm_90").layout, Layout::kNHWC);
      EXPECT_FALSE(nhwc_prefers_wgmma(with(rgb, Layout::kNHWC, dtype, math), "sm_90"));
      // x 4 bytes past a 16-byte boundary: no map, so the cp.async rule below decides.
      const bool strict = dtype == DType::kFloat32 && math == MathMode::kStrictFp32;
      EXPECT_EQ(nhwc_prefers_wgmma(d, "sm_90", AlignmentNeeds{4, 16, 16, 16}), strict);
    }
  }
}

TEST(AlgorithmChoice, HalfAChunkOfChannelsGoesToTheTmaKernelInSixtyFourByteRowsWithOneGroup) {
  // KernelBench 62's shape: 32 f16 channels fill half of a 128-byte chunk (16 f32 ones do),
  // which the TMA kernel stages as 64-byte rows; with those off (CONVJIT_WGMMA_ROW64=0),
  // only the partial-chunk switch sends it there.
  const Conv2dDesc half{.n = 8, .c = 32, .h = 512, .w = 512, .k = 64, .r = 5, .s = 9};
  for (const DType dtype : kDTypes) {
    Conv2dDesc d = with(half, Layout::kNHWC, dtype, MathMode::kTF32);
    if (dtype == DType::kFloat32) d.c = 16;
    SCOPED_TRACE(d.to_string());
    EXPECT_TRUE(nhwc_prefers_wgmma(d, "sm_90"));
    EXPECT_EQ(wgmma_stage_channels(d), d.c);
    {
      testing::ScopedEnv rows128("CONVJIT_WGMMA_ROW64", "0");
      EXPECT_FALSE(nhwc_prefers_wgmma(d, "sm_90"));
      testing::ScopedEnv partial("CONVJIT_WGMMA_PARTIAL_CHUNKS", "1");
      EXPECT_TRUE(nhwc_prefers_wgmma(d, "sm_90"));
    }
    testing::ScopedEnv partial("CONVJIT_WGMMA_PARTIAL_CHUNKS", "1");
    // A quarter of a chunk takes 32-byte rows (CONVJIT_WGMMA_ROW32=0: mma.sync); an
    // eighth, two groups (the map's fill stops at C, not at a group's end), or an x the map
    // cannot take: mma.sync still.
    Conv2dDesc quarter = d;
    quarter.c /= 2;
    EXPECT_TRUE(nhwc_prefers_wgmma(quarter, "sm_90"));
    EXPECT_EQ(wgmma_stage_channels(quarter), quarter.c);
    {
      testing::ScopedEnv rows64("CONVJIT_WGMMA_ROW32", "0");
      EXPECT_FALSE(nhwc_prefers_wgmma(quarter, "sm_90"));
    }
    Conv2dDesc eighth = d;
    eighth.c /= 4;
    EXPECT_FALSE(nhwc_prefers_wgmma(eighth, "sm_90"));
    Conv2dDesc grouped = d;
    grouped.c *= 2;
    grouped.k *= 2;
    grouped.groups = 2;
    EXPECT_FALSE(nhwc_prefers_wgmma(grouped, "sm_90"));
    EXPECT_FALSE(nhwc_prefers_wgmma(d, "sm_90", AlignmentNeeds{4, 16, 16, 16}));
  }
}

TEST(AlgorithmChoice, WithCpAsyncCopiesNhwcTakesWgmmaWhereTheGridLeavesSmsIdleOrInStrictMath) {
  testing::ScopedEnv cp_async("CONVJIT_WGMMA_TMA", "0");
  // 8 x 8 pixels, 2560 channels: 1 tile of 128 pixels x 10 of 128 channels, far under the
  // 132 SMs, so split-K wgmma in every mode and dtype.
  const Conv2dDesc small_deep{.n = 2, .c = 2560, .h = 8, .w = 8, .k = 1280, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  // 8 x 56 x 56 pixels x 256 channels: 392 x 2 tiles fill the machine.
  const Conv2dDesc large{.n = 8, .c = 256, .h = 56, .w = 56, .k = 256, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  // Fewer channels than one 128-byte chunk: 3, 16 (f32 chunk 32, 16-bit chunk 64).
  const Conv2dDesc rgb{.n = 1, .c = 3, .h = 16, .w = 16, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  for (const DType dtype : kDTypes) {
    for (const MathMode math : kMaths) {
      SCOPED_TRACE(::testing::Message() << to_string(dtype) << " " << to_string(math));
      const bool strict = dtype == DType::kFloat32 && math == MathMode::kStrictFp32;
      EXPECT_TRUE(nhwc_prefers_wgmma(with(small_deep, Layout::kNHWC, dtype, math), "sm_90"));
      EXPECT_EQ(nhwc_prefers_wgmma(with(large, Layout::kNHWC, dtype, math), "sm_90"), strict);
      EXPECT_FALSE(nhwc_prefers_wgmma(with(rgb, Layout::kNHWC, dtype, math), "sm_90"));
      // kAuto's model of the implicit GEMM follows the kernel that runs: wgmma as it runs,
      // mma.sync through the NCHW stand-in.
      EXPECT_EQ(implicit_gemm_model(with(small_deep, Layout::kNHWC, dtype, math), "sm_90").layout, Layout::kNHWC);
      EXPECT_EQ(implicit_gemm_model(with(large, Layout::kNHWC, dtype, math), "sm_90").layout,
                strict ? Layout::kNHWC : Layout::kNCHW);
      // NCHW has its own rule: 16-bit problems of few channels and a short reduction (3 x 9
      // here) take mma.sync, the rest wgmma.
      EXPECT_EQ(nhwc_prefers_wgmma(with(rgb, Layout::kNCHW, dtype, math), "sm_90"), dtype == DType::kFloat32);
    }
  }
  // One chunk a tap (32 f32 channels) in strict math on a full grid: mma.sync.
  Conv2dDesc one_chunk = with(large, Layout::kNHWC, DType::kFloat32, MathMode::kStrictFp32);
  one_chunk.c = 32;
  EXPECT_FALSE(nhwc_prefers_wgmma(one_chunk, "sm_90"));
}

TEST(AlgorithmChoice, FewOutputChannelsOverADeepReductionRunOnTensorCoresInBothLayouts) {
  const Conv2dDesc out{.n = 2, .c = 320, .h = 64, .w = 64, .k = 4, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    for (const DType dtype : kDTypes) {
      EXPECT_EQ(select_algorithm(with(out, layout, dtype, MathMode::kTF32), "sm_90"), Algorithm::kImplicitGemm);
    }
  }
  // Depthwise problems are not dense: they stay on the direct kernel.
  const Conv2dDesc dw{
      .n = 32, .c = 240, .h = 28, .w = 28, .k = 240, .r = 5, .s = 5, .pad_h = 2, .pad_w = 2, .groups = 240};
  for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    EXPECT_EQ(select_algorithm(with(dw, layout, DType::kFloat16, MathMode::kTF32), "sm_90"), Algorithm::kDirect);
  }
}

TEST(AlgorithmChoice, NonOverlappingPatchesRunAsAGemmExceptInStrictMath) {
  const Conv2dDesc patch{
      .n = 32, .c = 3, .h = 224, .w = 224, .k = 768, .r = 16, .s = 16, .stride_h = 16, .stride_w = 16};
  for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    for (const DType dtype : kDTypes) {
      EXPECT_EQ(select_algorithm(with(patch, layout, dtype, MathMode::kTF32), "sm_90"), Algorithm::kIm2colGemm);
    }
    EXPECT_EQ(select_algorithm(with(patch, layout, DType::kFloat32, MathMode::kStrictFp32), "sm_90"),
              Algorithm::kImplicitGemm);
  }
  // Overlapping windows (stride below the filter) are not patches.
  Conv2dDesc overlap = patch;
  overlap.stride_h = overlap.stride_w = 8;
  EXPECT_EQ(select_algorithm(overlap, "sm_90"), Algorithm::kImplicitGemm);
}

// Strided transposed problems (no implicit GEMM yet): im2col's columns hold every tap of
// every output, stride_d * stride_h * stride_w times the useful ones, for every group.
// With few outputs a group the columns are barely reused and the direct kernel's gather
// wins (KernelBench 72 and 73, 8 a group: docs/perf.md). With many, the GEMM pays for its
// zeros on tensor cores.
TEST(AlgorithmChoice, StridedTransposedGoesToIm2colOnlyWhereItsColumnsAreReused) {
  const Conv2dDesc kb72{.n = 8,
                        .c = 32,
                        .h = 24,
                        .w = 48,
                        .k = 32,
                        .r = 5,
                        .s = 7,
                        .stride_h = 2,
                        .stride_w = 2,
                        .pad_h = 2,
                        .pad_w = 3,
                        .groups = 4,
                        .spatial_dims = 3,
                        .d = 12,
                        .t = 3,
                        .stride_d = 2,
                        .pad_d = 1,
                        .transposed = true,
                        .output_padding_d = 1,
                        .output_padding_h = 1,
                        .output_padding_w = 1};
  const Conv2dDesc kb73{.n = 4,
                        .c = 32,
                        .h = 64,
                        .w = 128,
                        .k = 32,
                        .r = 3,
                        .s = 3,
                        .stride_h = 2,
                        .stride_w = 2,
                        .pad_h = 1,
                        .pad_w = 1,
                        .groups = 4,
                        .spatial_dims = 3,
                        .d = 32,
                        .t = 3,
                        .stride_d = 2,
                        .pad_d = 1,
                        .transposed = true};
  for (const DType dtype : kDTypes) {
    for (const MathMode math : kMaths) {
      SCOPED_TRACE(::testing::Message() << to_string(dtype) << " " << to_string(math));
      for (const Conv2dDesc& d : {kb72, kb73}) {
        const Conv2dDesc m = with(d, Layout::kNCHW, dtype, math);
        EXPECT_EQ(select_algorithm(m, "sm_90"), Algorithm::kDirect) << m.to_string();
        // The model agrees with the measurement by a wide margin, not a hair.
        EXPECT_LT(3.0 * predicted_direct_ms(m, "sm_90"), predicted_im2col_ms(m, "sm_90")) << m.to_string();
      }
    }
  }
  // The same geometry with 512 outputs a group: tensor-core GEMMs reuse each column 512
  // times, which pays for its zeros; strict fp32 would run the GEMM on the FMA units, the
  // direct kernel's own.
  Conv2dDesc wide = kb72;
  wide.groups = 1;
  wide.k = 512;
  EXPECT_EQ(select_algorithm(with(wide, Layout::kNCHW, DType::kFloat32, MathMode::kTF32), "sm_90"),
            Algorithm::kIm2colGemm);
  EXPECT_EQ(select_algorithm(with(wide, Layout::kNCHW, DType::kFloat16, MathMode::kTF32), "sm_90"),
            Algorithm::kIm2colGemm);
  EXPECT_EQ(select_algorithm(with(wide, Layout::kNCHW, DType::kFloat32, MathMode::kStrictFp32), "sm_90"),
            Algorithm::kDirect);
  // The columns of every group count: four groups cost four times one of them alone.
  Conv2dDesc one_group = kb72;
  one_group.groups = 1;
  one_group.c = one_group.k = 8;
  EXPECT_NEAR(predicted_im2col_ms(kb72, "sm_90") - 0.01, 4.0 * (predicted_im2col_ms(one_group, "sm_90") - 0.01),
              1e-6 * predicted_im2col_ms(kb72, "sm_90"));
}

}  // namespace
}  // namespace convjit

namespace convjit {
namespace {

// Strict 1x1 problems in NCHW: the NCHW wgmma kernel ran 0.8-4.1x over its model where its
// patches span several rows (narrow images) and 0.86x where a patch is one row (docs/perf.md,
// "Strict pointwise layers in NCHW"). So ResNet's 64-to-256 expansion at 56x56 (measured
// 0.116 ms there, 0.058 on im2col, 0.047 through the route) leaves the NCHW kernel for the
// route, while
// KernelBench 87 and 86's pointwise half (1024- and 512-wide, one-row patches: 5.74 and 1.45
// ms, ahead of im2col) keep it. TF32 pointwise problems go to cuBLAS as before.
TEST(AlgorithmChoice, StrictPointwiseNchwLeavesTheNchwKernelOnlyWhereItsPatchesSpanSeveralRows) {
  const auto strict = [](Conv2dDesc d) {
    d.math = MathMode::kStrictFp32;
    return d;
  };
  const Conv2dDesc narrow = strict({.n = 16, .c = 64, .h = 56, .w = 56, .k = 256});
  EXPECT_TRUE(nchw_takes_route(narrow, "sm_90"));
  EXPECT_GT(predicted_nchw_wgmma_copy_ms(narrow, "sm_90"), 2 * predicted_nchw_via_nhwc_ms(narrow, "sm_90"));
  for (const Conv2dDesc& wide : {strict({.n = 16, .c = 64, .h = 1024, .w = 1024, .k = 128}),
                                 strict({.n = 16, .c = 64, .h = 512, .w = 512, .k = 128})}) {
    SCOPED_TRACE(wide.to_string());
    EXPECT_EQ(resolve_algorithm(wide, Algorithm::kAuto, "sm_90"), Algorithm::kImplicitGemm);
    EXPECT_FALSE(nchw_takes_route(wide, "sm_90"));
  }
  Conv2dDesc tf32 = narrow;
  tf32.math = MathMode::kTF32;
  EXPECT_EQ(resolve_algorithm(tf32, Algorithm::kAuto, "sm_90"), Algorithm::kIm2colGemm);
}

// Strict 1x1 problems, strided or not, where the route's model (scaled by what it measured
// on them, 0.83x) beats cuBLAS's FMA GEMM: ResNet's projections (64 to 256 at 56x56, 256 to
// 128 at 56x56) and its strided downsamples (1024 to 2048 at 14x14, stride 2) take the
// route (measured 0.047 / 0.078 / 0.065 ms against im2col's 0.058 / 0.096 / 0.121); a
// narrow expansion (64 to 64) keeps im2col (0.020 against 0.024). In TF32 every one of
// them stays on cuBLAS.
TEST(AlgorithmChoice, StrictPointwiseAndStridedPointwiseNchwTakeTheRouteWhereItsModelBeatsCublas) {
  const auto strict = [](Conv2dDesc d) {
    d.math = MathMode::kStrictFp32;
    return d;
  };
  for (const Conv2dDesc& d :
       {strict({.n = 16, .c = 64, .h = 56, .w = 56, .k = 256}), strict({.n = 16, .c = 256, .h = 56, .w = 56, .k = 128}),
        strict({.n = 16, .c = 1024, .h = 14, .w = 14, .k = 2048, .stride_h = 2, .stride_w = 2})}) {
    SCOPED_TRACE(d.to_string());
    EXPECT_EQ(resolve_algorithm(d, Algorithm::kAuto, "sm_90"), Algorithm::kImplicitGemm);
    EXPECT_TRUE(nchw_takes_route(d, "sm_90"));
    EXPECT_LT(predicted_nchw_via_nhwc_ms(d, "sm_90"), predicted_im2col_ms(d, "sm_90"));
    Conv2dDesc tf32 = d;
    tf32.math = MathMode::kTF32;
    EXPECT_EQ(resolve_algorithm(tf32, Algorithm::kAuto, "sm_90"), Algorithm::kIm2colGemm);
  }
  EXPECT_EQ(resolve_algorithm(strict({.n = 16, .c = 64, .h = 56, .w = 56, .k = 64}), Algorithm::kAuto, "sm_90"),
            Algorithm::kIm2colGemm);
}

}  // namespace
}  // namespace convjit
