// The NHWC wgmma kernel's TMA variant (CONVJIT_WGMMA_TMA=1, x through a TMA im2col map)
// against the float64 CPU reference, on Hopper. Run the probe first: one tile, one stage,
// one 128-byte channel chunk, where a wrong swizzle, box or barrier count shows at once
// and alone; then a tile of 3x3 taps with padding and a channel tail (zero fill), then
// random descriptors in every dtype and math mode, split-K, dynamic batch, and pointers the
// map cannot take (which must fall back to the cp.async kernel and still be right). Each
// test asserts by the kernel's name that the variant it meant ran.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <string>

#include "base/float16.hpp"
#include "support/gpu.hpp"
#include "support/gpu_conv.hpp"
#include "support/random_desc.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"

namespace convjit {
namespace {

using testing::chunk_channels;
using testing::Kind;
using testing::kKinds;

Conv2dDesc with_kind(Conv2dDesc d, const Kind& kind) {
  d.dtype = kind.dtype;
  d.math = kind.math;
  d.layout = Layout::kNHWC;
  return d;
}

class WgmmaTma : public ::testing::Test {
 protected:
  void SetUp() override {
    CONVJIT_REQUIRE_GPU();
    Runtime probe(options());
    if (probe.device_arch() != "sm_90") {
      GTEST_SKIP() << "TMA im2col and wgmma need an sm_90 GPU, this one is " << probe.device_arch();
    }
    tma_.emplace("CONVJIT_WGMMA_TMA", "1");
  }
  RuntimeOptions options() const { return RuntimeOptions{.cache_dir = dir_.path()}; }

  // Runs `d` through a kImplicitGemm plan on fresh random data against float64, after
  // checking that the plan's kernel is the TMA variant (or, with tma false, is not).
  void expect_correct(Runtime& rt, const Conv2dDesc& d, std::mt19937_64& rng, bool tma = true, bool positive = false,
                      std::size_t offset = 0) {
    SCOPED_TRACE(d.to_string());
    const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    EXPECT_TRUE(plan.kernel_name().starts_with("conv2d_wgmma_")) << plan.kernel_name();
    if (offset == 0) {
      EXPECT_EQ(plan.kernel_name().ends_with("_tma"), tma) << plan.kernel_name();
    }
    const auto result =
        testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm, positive, offset);
    testing::expect_matches_reference(result, d);
  }

  testing::TempDir dir_;
  std::optional<testing::ScopedEnv> tma_;
  // Pointwise problems in TF32 and 16-bit have their own kernel (PointwiseStream).
  testing::ScopedEnv pointwise_here_{"CONVJIT_POINTWISE_STREAM", "0"};
};

// FIRST: one tile (64 pixels of a 256- or 128-pixel tile: the rest of the box runs past the
// last image, out of bounds), one stage (1x1, one chunk: exactly 128 bytes a pixel), one
// channel block. All-positive data too, so that a swizzle that puts chunks in the wrong
// place cannot cancel out.
TEST_F(WgmmaTma, ProbeOneTileOneStageMatchesFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(90);
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d = with_kind({.n = 1, .c = chunk_channels(kind.dtype), .h = 8, .w = 8, .k = 64}, kind);
    expect_correct(rt, d, rng);
    expect_correct(rt, d, rng, /*tma=*/true, /*positive=*/true);
  }
}

// Still one tile: 3x3 taps with padding 1 (their boxes start in the padding: zero fill
// through the bounding box) over a chunk and a tail of 8 channels (the second chunk's box
// runs past C: zero fill in C), bias.
TEST_F(WgmmaTma, ProbeOneTileWithPaddedTapsAndAChannelTailMatchesFloat64) {
  Runtime rt(options());
  std::mt19937_64 rng(91);
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d = with_kind({.n = 1,
                                    .c = chunk_channels(kind.dtype) + 8,
                                    .h = 8,
                                    .w = 8,
                                    .k = 64,
                                    .r = 3,
                                    .s = 3,
                                    .pad_h = 1,
                                    .pad_w = 1,
                                    .bias = true},
                                   kind);
    expect_correct(rt, d, rng);
  }
}

// The weights' tiled map (TF32 and 16-bit; 3xTF32 packs): boxes of kBN filters that run
// past K (zero fill), past a group's filters into the next group's (products never
// stored), and a channel chunk past C (zero fill), with bias.
TEST_F(WgmmaTma, WeightMapProbeBoxesPastKPastAGroupAndPastCMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(92);
  for (const Kind& kind : kKinds) {
    const int chunk = chunk_channels(kind.dtype);
    const Conv2dDesc shapes[] = {
        {.n = 1, .c = chunk + 8, .h = 8, .w = 8, .k = 70, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
        {.n = 2, .c = 2 * chunk, .h = 7, .w = 9, .k = 80, .r = 3, .s = 2, .pad_h = 1, .groups = 2, .bias = true},
        {.n = 1, .c = 3 * chunk, .h = 6, .w = 6, .k = 200, .r = 1, .s = 1, .bias = true},
    };
    for (const Conv2dDesc& shape : shapes) {
      const Conv2dDesc d = with_kind(shape, kind);
      expect_correct(rt, d, rng);
      expect_correct(rt, d, rng, /*tma=*/true, /*positive=*/true);
    }
  }
}

// n16 and n32 tiles (a group's filters 16 or fewer, 32 or fewer): exactly 16 and 32 filters,
// filter tails inside the tile (9, 24), several tiles and stages, all-positive data too (a
// B layout read at the wrong filter cannot cancel out), and 3xTF32's packed planes; then
// two groups of 32 filters (groups of fewer stay on mma.sync).
TEST_F(WgmmaTma, NarrowTilesOfSixteenAndThirtyTwoFiltersMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(96);
  for (const Kind& kind : kKinds) {
    const int chunk = chunk_channels(kind.dtype);
    for (const int k : {16, 9, 32, 24}) {
      const Conv2dDesc d = with_kind(
          {.n = 2, .c = chunk + 8, .h = 11, .w = 13, .k = k, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
          kind);
      expect_correct(rt, d, rng);
      expect_correct(rt, d, rng, /*tma=*/true, /*positive=*/true);
    }
    const Conv2dDesc grouped = with_kind({.n = 3,
                                          .c = 2 * chunk,
                                          .h = 9,
                                          .w = 30,
                                          .k = 64,
                                          .r = 3,
                                          .s = 5,
                                          .pad_w = 2,
                                          .groups = 2,
                                          .activation = Activation::kRelu},
                                         kind);
    expect_correct(rt, grouped, rng);
    expect_correct(rt, grouped, rng, /*tma=*/true, /*positive=*/true);
  }
}

// CONVJIT_WGMMA_TAPS_PER_STAGE: several taps' boxes and weights a stage. 64-byte rows (32
// 16-bit or 16 f32 channels: three taps of 3x5 fit), with padding, a filter tail inside an
// n16/n32 tile, a second chunk, dilation, bias and ReLU, all-positive data too; the
// weights packed (3xTF32, 16-bit) or through their map, whichever the kind takes.
TEST_F(WgmmaTma, SeveralTapsAStageWithTheDevelopmentSwitchMatchFloat64InEveryDtypeAndMathMode) {
  testing::ScopedEnv several("CONVJIT_WGMMA_TAPS_PER_STAGE", "3");
  Runtime rt(options());
  std::mt19937_64 rng(97);
  for (const Kind& kind : kKinds) {
    const int half = chunk_channels(kind.dtype) / 2;
    const Conv2dDesc shapes[] = {
        {.n = 2, .c = half, .h = 13, .w = 21, .k = 16, .r = 3, .s = 5, .pad_h = 1, .pad_w = 2, .bias = true},
        {.n = 1,
         .c = half,
         .h = 17,
         .w = 19,
         .k = 24,
         .r = 3,
         .s = 3,
         .pad_h = 2,
         .pad_w = 2,
         .dilation_h = 2,
         .dilation_w = 2,
         .activation = Activation::kRelu},
        {.n = 2, .c = 2 * half + half, .h = 9, .w = 11, .k = 40, .r = 1, .s = 3, .pad_w = 1, .bias = true},
    };
    for (const Conv2dDesc& shape : shapes) {
      const Conv2dDesc d = with_kind(shape, kind);
      expect_correct(rt, d, rng);
      expect_correct(rt, d, rng, /*tma=*/true, /*positive=*/true);
    }
  }
}

// TF32 weights through the map are rounded to nearest in shared memory, as the pack
// rounded them: on all-positive data the tensor cores' truncation would leave a bias of
// about 3e-4 of the result (2^-11 a product), rounding about 1e-5 at this reduction length.
// A stays on the rounding register path here (128 filters would read it through descriptors,
// truncated: the next test).
TEST_F(WgmmaTma, Tf32WeightsThroughTheMapAreRoundedToNearestNotTruncated) {
  testing::ScopedEnv registers("CONVJIT_WGMMA_A_SMEM", "16");
  Runtime rt(options());
  std::mt19937_64 rng(93);
  const Conv2dDesc d = with_kind({.n = 1, .c = 256, .h = 8, .w = 8, .k = 128, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
                                 Kind{DType::kFloat32, MathMode::kTF32});
  const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
  ASSERT_TRUE(plan.kernel_name().ends_with("_tma")) << plan.kernel_name();
  EXPECT_EQ(plan.packed_weight_bytes(), 0u) << "w through its map";
  const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm, /*positive=*/true);
  EXPECT_EQ(result.unwritten, 0u);
  EXPECT_LT(result.rel_err, 5e-5);
}

// TF32 tiles of 128 filters over 128-byte pixel rows read A through descriptors, which the
// tensor cores truncate to TF32: on all-positive data (the worst case, every product's
// error one way) the result's bias is about 2^-12 of it, inside TF32's 1e-3 with room, and
// the weights (the pack's or the map's) still rounded, so under what truncating both gave.
TEST_F(WgmmaTma, TruncatedTf32ActivationsStayInsideTheTf32BoundOnAllPositiveData) {
  Runtime rt(options());
  std::mt19937_64 rng(94);
  const Conv2dDesc shapes[] = {
      {.n = 1, .c = 256, .h = 8, .w = 8, .k = 128, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},  // w by its map
      {.n = 4, .c = 64, .h = 60, .w = 70, .k = 128, .r = 3, .s = 3, .bias = true},           // w packed
  };
  for (const Conv2dDesc& shape : shapes) {
    const Conv2dDesc d = with_kind(shape, Kind{DType::kFloat32, MathMode::kTF32});
    SCOPED_TRACE(d.to_string());
    const auto info = rt.inspect(d, std::nullopt, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    ASSERT_NE(info.tile.find("wgmma reads it from shared memory"), std::string::npos) << info.tile;
    const auto result =
        testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm, /*positive=*/true);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, 5e-4);
    EXPECT_GT(result.rel_err, 5e-5) << "A is truncated on this path, not rounded";
  }
}

// Problems the map can take (a pixel's channels a multiple of 16 bytes; groups of whole
// chunks), drawn like WgmmaNhwc's: sizes that divide no tile, strides 1 to 3, padding,
// dilation, bias and ReLU, several tiles and images per problem.
Conv2dDesc random_tma_desc(std::mt19937_64& rng, DType dtype) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int chunk = chunk_channels(dtype);
  while (true) {
    Conv2dDesc d{.dtype = dtype, .layout = Layout::kNHWC};
    d.groups = pick(0, 3) == 0 ? 2 : 1;
    const int c_per_group = d.groups > 1 ? chunk * pick(1, 2) : 8 * pick(chunk / 8, 200 / 8);
    d.c = d.groups * c_per_group;
    d.k = d.groups * pick(32, 150);
    if (!testing::draw_geometry(rng, d)) continue;
    if (d.flops() <= 4e8) return d;
  }
}

TEST_F(WgmmaTma, RandomProblemsMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(20261201);
  for (int i = 0; i < 24; ++i) {
    const Kind& kind = kKinds[i % 4];
    expect_correct(rt, with_kind(random_tma_desc(rng, kind.dtype), kind), rng);
  }
}

// The row halo (kRowHalo, on wherever the template takes it): first one output row, one
// tile, where tap s reads the copied row s pixels in (a wrong shift or descriptor base
// offset shows at once), on the register path (64 filters in TF32) and the descriptor path
// (128); then rows of a tile and a fraction, padding, dilation along W, a stride along H,
// channel and filter tails; then random stride-1 descriptors. Each asserts the halo ran.
class WgmmaTmaRowHalo : public WgmmaTma {
 protected:
  void expect_halo_correct(Runtime& rt, const Conv2dDesc& d, std::mt19937_64& rng) {
    const auto info = rt.inspect(d, std::nullopt, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    // 3xTF32's stages of two 128-filter weight planes (32 KB) may not fit the (ring - 1) S + 1
    // deep that the ring's wait needs (wide filters): the halo is not expected there.
    const bool fits =
        !(info.tile.find("3xTF32") != std::string::npos && info.tile.find("x 128 channels") != std::string::npos);
    if (fits) {
      EXPECT_NE(info.tile.find("row tiles"), std::string::npos) << d.to_string() << ": " << info.tile;
    }
    expect_correct(rt, d, rng);
    expect_correct(rt, d, rng, /*tma=*/true, /*positive=*/true);
  }
  testing::ScopedEnv halo_{"CONVJIT_WGMMA_ROW_HALO", "1"};
};

// 128 bytes of channels: a stage's pixel row.
int row_channels(DType dtype) { return dtype == DType::kFloat32 ? 32 : 64; }

TEST_F(WgmmaTmaRowHalo, ProbeOneRowEveryTapShiftMatchesFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(2212);
  for (const Kind& kind : kKinds) {
    const int c = row_channels(kind.dtype);
    const Conv2dDesc shapes[] = {
        {.n = 1, .c = c, .h = 1, .w = 40, .k = 128, .r = 1, .s = 5},
        {.n = 1, .c = c, .h = 1, .w = 40, .k = 64, .r = 1, .s = 5},
        {.n = 1, .c = c, .h = 3, .w = 20, .k = 128, .r = 3, .s = 3, .pad_w = 1, .bias = true},
    };
    for (const Conv2dDesc& shape : shapes) expect_halo_correct(rt, with_kind(shape, kind), rng);
  }
}

TEST_F(WgmmaTmaRowHalo, RowTailsPaddingDilationStrideAndChannelTailsMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(2213);
  for (const Kind& kind : kKinds) {
    const int c = row_channels(kind.dtype);
    const Conv2dDesc shapes[] = {
        {.n = 2, .c = 2 * c + c / 2, .h = 6, .w = 300, .k = 200, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
        {.n = 1,
         .c = c,
         .h = 9,
         .w = 150,
         .k = 96,
         .r = 3,
         .s = 5,
         .stride_h = 2,
         .pad_h = 1,
         .pad_w = 4,
         .dilation_w = 2,
         .activation = Activation::kRelu},
        {.n = 3, .c = c, .h = 5, .w = 64, .k = 64, .r = 2, .s = 2},
    };
    for (const Conv2dDesc& shape : shapes) expect_halo_correct(rt, with_kind(shape, kind), rng);
    // TF32's 256-pixel tiles of 128 filters stage their outputs in four passes that alternate
    // between two buffers (a pass written while TMA still reads the one before).
    if (kind.dtype == DType::kFloat32 && kind.math == MathMode::kTF32) {
      const auto info =
          rt.inspect(with_kind(shapes[0], kind), std::nullopt, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
      EXPECT_NE(info.tile.find("(4 passes in 2 buffers)"), std::string::npos) << info.tile;
    }
  }
}

TEST_F(WgmmaTmaRowHalo, RandomStrideOneProblemsMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(20261202);
  int ran = 0;
  for (int i = 0; i < 400 && ran < 16; ++i) {
    const Kind& kind = kKinds[ran % 4];
    Conv2dDesc d = with_kind(random_tma_desc(rng, kind.dtype), kind);
    d.groups = 1;
    d.c = std::max(d.c, row_channels(kind.dtype));
    d.k = std::max(d.k / 2, 16);
    if (d.stride_w != 1 || d.s == 1) continue;
    try {
      d.validate();
    } catch (const Error&) {
      continue;
    }
    const auto info = rt.inspect(d, std::nullopt, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    if (info.tile.find("row tiles") == std::string::npos) continue;  // 3xTF32 stages that do not fit
    expect_halo_correct(rt, d, rng);
    ++ran;
  }
  EXPECT_EQ(ran, 16) << "too few random problems took the row halo";
}

TEST_F(WgmmaTma, NetworkShapesWithAllPositiveDataAndSplitReductionsMatchFloat64) {
  // Many tiles over a mid-size 3x3 (tiles that start mid-row and mid-image), a strided
  // 3x3 with ReLU, and deep channels on small images (split-K: every slice's producer
  // starts at its own tap and chunk).
  Runtime rt(options());
  std::mt19937_64 rng(1201);
  const Conv2dDesc shapes[] = {
      {.n = 2, .c = 64, .h = 28, .w = 28, .k = 192, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      {.n = 2,
       .c = 96,
       .h = 15,
       .w = 17,
       .k = 64,
       .r = 3,
       .s = 3,
       .stride_h = 2,
       .stride_w = 2,
       .pad_h = 1,
       .pad_w = 1,
       .activation = Activation::kRelu},
      {.n = 1, .c = 512, .h = 7, .w = 7, .k = 256, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      {.n = 2, .c = 256, .h = 5, .w = 5, .k = 130, .r = 3, .s = 3, .bias = true},
  };
  for (const Conv2dDesc& shape : shapes) {
    for (const Kind& kind : kKinds) expect_correct(rt, with_kind(shape, kind), rng, /*tma=*/true, /*positive=*/true);
  }
}

TEST_F(WgmmaTma, DynamicBatchRunsEncodeTheirOwnBatch) {
  // The map's N is the run's batch: the last tile's box runs past it into zeros, not into
  // the images of the largest batch (whose memory the run did not give).
  Runtime rt(options());
  std::mt19937_64 rng(1202);
  for (const Kind& kind : kKinds) {
    Conv2dDesc d = with_kind({.n = 4, .c = 64, .h = 9, .w = 11, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1}, kind);
    d.dynamic_batch = true;
    const Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    EXPECT_TRUE(plan.kernel_name().ends_with("_tma")) << plan.kernel_name();
    Conv2dDesc run = d;
    run.n = 3;
    run.dynamic_batch = false;
    SCOPED_TRACE(run.to_string());
    const auto x = testing::random_nonzero(static_cast<std::size_t>(run.x_elements()), rng, -1.0f, 1.0f, d.dtype);
    const auto w = testing::random_nonzero(static_cast<std::size_t>(run.w_elements()), rng, -1.0f, 1.0f, d.dtype);
    auto upload = [&](const std::vector<float>& values) {
      const auto bytes = to_storage(values, d.dtype);
      DeviceBuffer buffer(rt, bytes.size());
      buffer.upload(bytes.data(), bytes.size());
      return buffer;
    };
    const DeviceBuffer dx = upload(testing::x_in_layout(run, x));
    const DeviceBuffer dw = upload(testing::w_in_layout(run, w));
    DeviceBuffer dy(rt, static_cast<std::size_t>(run.y_elements()) * size_of(d.dtype));
    dy.fill_u32(nan_fill_pattern(d.dtype));
    plan.run(Conv2dArgs{.x = dx.data(), .w = dw.data(), .y = dy.data(), .n = 3});
    std::vector<unsigned char> raw(dy.size());
    dy.download(raw.data(), raw.size());
    const std::vector<float> y = testing::y_from_layout(run, from_storage(raw, d.dtype));
    EXPECT_EQ(std::count_if(y.begin(), y.end(), [](float v) { return std::isnan(v); }), 0);
    EXPECT_LT(testing::relative_l2(y, testing::reference_conv2d(run, x, w, {})), testing::tolerance(run));
  }
}

TEST_F(WgmmaTma, HalfChunksWithTheDevelopmentSwitchMatchFloat64InEveryDtypeAndMathMode) {
  // CONVJIT_WGMMA_PARTIAL_CHUNKS: one group of half a 128-byte chunk of channels (32 f16,
  // 16 f32), the map zero-filling the rest; KernelBench 62 and 80's filters and padding
  // (80's dilation too) on small images.
  testing::ScopedEnv partial("CONVJIT_WGMMA_PARTIAL_CHUNKS", "1");
  Runtime rt(options());
  std::mt19937_64 rng(1204);
  const Conv2dDesc shapes[] = {
      {.n = 2, .c = 32, .h = 19, .w = 23, .k = 64, .r = 5, .s = 9, .bias = true},
      {.n = 1,
       .c = 32,
       .h = 21,
       .w = 30,
       .k = 72,
       .r = 5,
       .s = 9,
       .pad_h = 2,
       .pad_w = 4,
       .dilation_h = 2,
       .dilation_w = 3,
       .activation = Activation::kRelu},
      {.n = 2,
       .c = 32,
       .h = 17,
       .w = 16,
       .k = 128,
       .r = 3,
       .s = 3,
       .stride_h = 2,
       .stride_w = 2,
       .pad_h = 1,
       .pad_w = 1},
  };
  for (const Conv2dDesc& shape : shapes) {
    for (const Kind& kind : kKinds) {
      Conv2dDesc d = with_kind(shape, kind);
      d.c = chunk_channels(kind.dtype) / 2;
      expect_correct(rt, d, rng);
      expect_correct(rt, d, rng, /*tma=*/true, /*positive=*/true);
    }
  }
}

// A few output channels (1 to 31: a U-Net's 4-channel output layer) run on the TMA kernel
// with most of the 64-channel tile's columns empty, split-K filling the machine: odd C
// past a chunk, padding, bias and ReLU; the epilogue must write exactly K channels.
TEST_F(WgmmaTma, FewOutputChannelsMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(93);
  for (const Kind& kind : kKinds) {
    for (const int k : {1, 4, 7, 31}) {
      const int c = chunk_channels(kind.dtype) * (k % 3 + 1) + 8 * (k % 2);
      expect_correct(rt,
                     with_kind({.n = 2,
                                .c = c,
                                .h = 13,
                                .w = 17,
                                .k = k,
                                .r = 3,
                                .s = 3,
                                .pad_h = 1,
                                .pad_w = 1,
                                .bias = true,
                                .activation = k == 7 ? Activation::kRelu : Activation::kNone},
                               kind),
                     rng);
    }
  }
}

// 64-byte stage rows and TMA's 64-byte swizzle for groups whose channels fill 64 but not 128
// bytes. FIRST the probe: one tile, one stage, exactly 64 bytes a pixel, all-positive data
// too (a wrong swizzle cannot cancel out); then padded 3x3 taps over a channel tail, and
// KernelBench 62/63-like shapes scaled down (5x9 filters on 32 f16 channels, 16 f32 ones).
TEST_F(WgmmaTma, Row64ProbeOneTileOneStageMatchesFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(94);
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d = with_kind({.n = 1, .c = chunk_channels(kind.dtype) / 2, .h = 8, .w = 8, .k = 64}, kind);
    expect_correct(rt, d, rng);
    expect_correct(rt, d, rng, /*tma=*/true, /*positive=*/true);
  }
}

TEST_F(WgmmaTma, Row64TapsTailsAndKernelBenchLikeShapesMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(95);
  for (const Kind& kind : kKinds) {
    const int half = chunk_channels(kind.dtype) / 2;
    expect_correct(rt,
                   with_kind({.n = 2,
                              .c = half + 8,
                              .h = 11,
                              .w = 13,
                              .k = 70,
                              .r = 3,
                              .s = 3,
                              .pad_h = 1,
                              .pad_w = 1,
                              .bias = true,
                              .activation = Activation::kRelu},
                             kind),
                   rng);
    expect_correct(rt, with_kind({.n = 2, .c = half, .h = 40, .w = 48, .k = 64, .r = 5, .s = 9}, kind), rng);
    expect_correct(rt,
                   with_kind({.n = 1,
                              .c = half,
                              .h = 30,
                              .w = 36,
                              .k = 64,
                              .r = 5,
                              .s = 9,
                              .pad_h = 2,
                              .pad_w = 4,
                              .dilation_h = 2,
                              .dilation_w = 3},
                             kind),
                   rng);
  }
}

// 32-byte stage rows and TMA's 32-byte swizzle for channels that fill 32 but not 64 bytes
// (16-31 halves, 8-15 floats), one k step a tap. FIRST the probe: one tile, one stage of
// one tap (a 1x1 filter), exactly 32 bytes a pixel, all-positive data too; then a two-row
// channel tail over padded 3x3 taps, KernelBench 63-like shapes scaled down (three taps a
// stage by default), 5x9 filters (five taps a stage), dilation, and one tap a stage.
TEST_F(WgmmaTma, Row32ProbeOneTileOneStageMatchesFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(96);
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d = with_kind({.n = 1, .c = chunk_channels(kind.dtype) / 4, .h = 8, .w = 8, .k = 64}, kind);
    expect_correct(rt, d, rng);
    expect_correct(rt, d, rng, /*tma=*/true, /*positive=*/true);
  }
}

TEST_F(WgmmaTma, Row32TapsTailsAndKernelBenchLikeShapesMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(97);
  for (const Kind& kind : kKinds) {
    const int quarter = chunk_channels(kind.dtype) / 4;
    expect_correct(rt,
                   with_kind({.n = 2,
                              .c = quarter * 3 / 2,
                              .h = 11,
                              .w = 13,
                              .k = 70,
                              .r = 3,
                              .s = 3,
                              .pad_h = 1,
                              .pad_w = 1,
                              .bias = true,
                              .activation = Activation::kRelu},
                             kind),
                   rng);
    expect_correct(rt, with_kind({.n = 2, .c = quarter, .h = 40, .w = 48, .k = 128, .r = 3, .s = 3}, kind), rng);
    expect_correct(rt, with_kind({.n = 2, .c = quarter, .h = 40, .w = 48, .k = 64, .r = 5, .s = 9}, kind), rng);
    expect_correct(rt,
                   with_kind({.n = 1,
                              .c = quarter,
                              .h = 30,
                              .w = 36,
                              .k = 40,
                              .r = 5,
                              .s = 9,
                              .pad_h = 2,
                              .pad_w = 4,
                              .dilation_h = 2,
                              .dilation_w = 3},
                             kind),
                   rng);
    testing::ScopedEnv one_tap("CONVJIT_WGMMA_TAPS_PER_STAGE", "1");
    expect_correct(
        rt, with_kind({.n = 3, .c = quarter, .h = 21, .w = 17, .k = 96, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1}, kind),
        rng);
  }
}

// 16-bit outputs four channels a store (two lanes' pairs joined by a shuffle; f32 problems
// run beside them on their pair stores): a last k block past the group's channels (68 of
// 128), bias and ReLU, a last tile past the last pixel (whose lanes still shuffle), two
// channel blocks; then every pointer two elements past a 16-byte boundary, where 16-bit y
// keeps the pair stores (and x runs the cp.async variant); then a grid of more tiles than
// SMs.
TEST_F(WgmmaTma, QuadStoresWithChannelAndPixelTailsMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(98);
  for (const Kind& kind : kKinds) {
    for (const int k : {68, 200}) {
      const Conv2dDesc d = with_kind({.n = 3,
                                      .c = 64,
                                      .h = 13,
                                      .w = 11,
                                      .k = k,
                                      .r = 3,
                                      .s = 3,
                                      .pad_h = 1,
                                      .pad_w = 1,
                                      .bias = true,
                                      .activation = Activation::kRelu},
                                     kind);
      expect_correct(rt, d, rng);
      expect_correct(rt, d, rng, /*tma=*/true, /*positive=*/false, /*offset=*/2 * size_of(kind.dtype));
    }
    // More tiles than SMs (f32 grids this small split their reduction and store partial
    // sums instead): the stores after stream-K's fix-up, or of whole tiles.
    expect_correct(rt,
                   with_kind({.n = 4,
                              .c = 32,
                              .h = 97,
                              .w = 91,
                              .k = 68,
                              .r = 3,
                              .s = 3,
                              .pad_h = 1,
                              .pad_w = 1,
                              .bias = true,
                              .activation = Activation::kRelu},
                             kind),
                   rng);
  }
}

// n160 tiles (groups of 136-160, 257-320 or 385-480 filters, one product a k step: the
// 3xTF32 rows run beside them on n128): 320 filters over a channel tail and a last tile
// past the last pixel, with bias and ReLU, then at a two-element offset; 150 filters (one
// block, ten past the group, pair stores); two groups of 300 (a box running into the next
// group's filters); a grid of more blocks than SMs.
TEST_F(WgmmaTma, N160TilesWithFilterPixelAndChannelTailsMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(160);
  for (const Kind& kind : kKinds) {
    const Conv2dDesc tails = with_kind({.n = 3,
                                        .c = chunk_channels(kind.dtype) + 8,
                                        .h = 13,
                                        .w = 11,
                                        .k = 320,
                                        .r = 3,
                                        .s = 3,
                                        .pad_h = 1,
                                        .pad_w = 1,
                                        .bias = true,
                                        .activation = Activation::kRelu},
                                       kind);
    expect_correct(rt, tails, rng);
    expect_correct(rt, tails, rng, /*tma=*/true, /*positive=*/false, /*offset=*/2 * size_of(kind.dtype));
    expect_correct(rt, with_kind({.n = 2, .c = 40, .h = 9, .w = 10, .k = 150, .bias = true}, kind), rng);
    expect_correct(
        rt,
        with_kind({.n = 2, .c = 128, .h = 7, .w = 9, .k = 600, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 2},
                  kind),
        rng);
    expect_correct(
        rt, with_kind({.n = 4, .c = 32, .h = 60, .w = 70, .k = 320, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1}, kind),
        rng);
  }
}

// Persistent grids (more tiles than SMs, each block walking tiles blockIdx.x, + gridDim.x,
// ...) with channel tails, bias and ReLU: 16-bit 64-byte rows take stages of three taps
// there; and the few-pixel layers' tiles of one m64 block a warpgroup (128 pixels). Each
// asserts by the tile that the variant meant ran.
TEST_F(WgmmaTma, PersistentGridsAndHalfTilesMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(4);
  const auto expect_tile = [&](const Conv2dDesc& d, std::initializer_list<const char*> parts) {
    SCOPED_TRACE(d.to_string());
    const auto info = rt.inspect(d, std::nullopt, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    for (const char* part : parts) EXPECT_NE(info.tile.find(part), std::string::npos) << info.tile;
    expect_correct(rt, d, rng);
  };
  for (const Kind& kind : kKinds) {
    const bool sixteen = kind.dtype != DType::kFloat32;
    const Conv2dDesc wide = with_kind(
        {.n = 8, .c = 40, .h = 100, .w = 110, .k = 64, .r = 3, .s = 3, .bias = true, .activation = Activation::kRelu},
        kind);
    if (sixteen) {
      expect_tile(wide, {"persistent blocks", "of 3 taps"});
    } else if (kind.math == MathMode::kTF32) {
      expect_tile(wide, {"persistent blocks"});
    } else {
      expect_tile(wide, {});  // 3xTF32: stream-K takes the grid's idle last wave
    }
    expect_tile(
        with_kind({.n = 2, .c = 72, .h = 8, .w = 8, .k = 120, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
                  kind),
        {"1x128 pixels", "1 m64 blocks"});
  }
}

// A through shared-memory descriptors (16-bit by default, TF32 on the development switch):
// 128-, 64- (three taps a stage, persistent) and 32-byte rows, a channel tail inside a row,
// n160 tiles, split-K, a strided dilated grouped problem, pixel tails; all-positive data
// too, where a descriptor that reads the wrong swizzle or m64 block cannot cancel out.
TEST_F(WgmmaTma, ADescriptorsMatchFloat64InEveryRowWidthAndTileInSixteenBitAndTf32OnTheSwitch) {
  Runtime rt(options());
  std::mt19937_64 rng(1812);
  const Conv2dDesc shapes[] = {
      {.n = 2, .c = 64, .h = 30, .w = 37, .k = 128, .r = 3, .s = 3, .bias = true},
      {.n = 8, .c = 40, .h = 100, .w = 110, .k = 64, .r = 3, .s = 3, .bias = true, .activation = Activation::kRelu},
      {.n = 2, .c = 16, .h = 40, .w = 33, .k = 48, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
      {.n = 2, .c = 72, .h = 17, .w = 19, .k = 120, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      {.n = 1, .c = 96, .h = 20, .w = 20, .k = 320, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
      {.n = 1, .c = 512, .h = 8, .w = 8, .k = 256, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      {.n = 2,
       .c = 256,
       .h = 13,
       .w = 15,
       .k = 130,
       .r = 3,
       .s = 2,
       .stride_h = 2,
       .pad_h = 1,
       .dilation_w = 2,
       .groups = 2,
       .bias = true},
  };
  for (const Conv2dDesc& shape : shapes) {
    for (const Kind& kind : kKinds) {
      if (kind.math == MathMode::kStrictFp32) continue;
      std::optional<testing::ScopedEnv> tf32;
      if (kind.dtype == DType::kFloat32) tf32.emplace("CONVJIT_WGMMA_A_SMEM", "tf32");
      const Conv2dDesc d = with_kind(shape, kind);
      SCOPED_TRACE(d.to_string());
      const auto info = rt.inspect(d, std::nullopt, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
      EXPECT_NE(info.tile.find("wgmma reads it from shared memory"), std::string::npos) << info.tile;
      expect_correct(rt, d, rng);
      expect_correct(rt, d, rng, /*tma=*/true, /*positive=*/true);
    }
  }
}

// Outputs through y's map (kYMap, the default where the tile rule takes it): boxes of 128 bytes
// of channels stored by TMA, which must drop the pixels past the run's last (a partial last
// tile; y is allocated to the byte, so a box written past it would fault) and the channels
// past K (72 and 40 filters: a box half past K); persistent grids whose blocks rewrite the
// boxes tile after tile; bias and ReLU; all-positive data too.
TEST_F(WgmmaTma, OutputsThroughTheYMapMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(1813);
  const Conv2dDesc shapes[] = {
      {.n = 8, .c = 40, .h = 100, .w = 110, .k = 64, .r = 3, .s = 3, .bias = true, .activation = Activation::kRelu},
      {.n = 3, .c = 64, .h = 61, .w = 67, .k = 72, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      {.n = 2, .c = 32, .h = 90, .w = 70, .k = 40, .r = 1, .s = 1, .bias = true},
      {.n = 4, .c = 16, .h = 120, .w = 90, .k = 128, .r = 3, .s = 3},
      // f32 128-filter tiles, whose whole boxes would cost a stage: staged in passes.
      {.n = 2, .c = 32, .h = 37, .w = 41, .k = 128, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
  };
  int with_map = 0;
  int in_passes = 0;
  for (const Conv2dDesc& shape : shapes) {
    for (const Kind& kind : kKinds) {
      const Conv2dDesc d = with_kind(shape, kind);
      SCOPED_TRACE(d.to_string());
      const auto info = rt.inspect(d, std::nullopt, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
      with_map += info.tile.find("y by TMA from staged boxes") != std::string::npos ? 1 : 0;
      in_passes += info.tile.find(" passes") != std::string::npos ? 1 : 0;
      expect_correct(rt, d, rng);
      expect_correct(rt, d, rng, /*tma=*/true, /*positive=*/true);
    }
  }
  // Every 16-bit tile here, and the f32 ones of few stages that keep their stages beside the boxes.
  EXPECT_GE(with_map, 12) << "most of these tiles store through y's map";
  EXPECT_GE(in_passes, 2) << "the last shape's TF32 and 3xTF32 tiles stage their boxes in passes";
  // 16-bit boxes in two passes too (the switch), on a partial last tile; a new runtime, whose
  // plans are made under the switch.
  testing::ScopedEnv passes("CONVJIT_WGMMA_Y_PASSES", "2");
  Runtime two(options());
  for (const Kind& kind : kKinds) {
    if (kind.dtype == DType::kFloat32) continue;
    const Conv2dDesc d = with_kind(shapes[1], kind);
    SCOPED_TRACE(d.to_string());
    const auto info = two.inspect(d, std::nullopt, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    EXPECT_NE(info.tile.find("(2 passes)"), std::string::npos) << info.tile;
    expect_correct(two, d, rng);
  }
}

TEST_F(WgmmaTma, PointersTheMapCannotTakeFallBackToCpAsyncAndStayCorrect) {
  // x 4 bytes past a 16-byte boundary (f32) or 8 (16-bit): the map's address must be
  // 16-byte aligned, so the plan runs its cp.async variant for that alignment.
  Runtime rt(options());
  std::mt19937_64 rng(1203);
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d =
        with_kind({.n = 2, .c = 64, .h = 9, .w = 11, .k = 80, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1}, kind);
    expect_correct(rt, d, rng);
    expect_correct(rt, d, rng, /*tma=*/false, /*positive=*/false, /*offset=*/kind.dtype == DType::kFloat32 ? 4 : 8);
  }
}

// Stream-K (CONVJIT_WGMMA_STREAM_K=1, so 16-bit too): grids with an idle last wave, whole
// waves of whole items first, the rest shared stage by stage, split items finished by the
// last block to arrive. The probe: 100 groups of one item each (one tile, one k block) on
// 112-132 blocks, no whole wave, so nearly every item is split between two blocks; then
// a dense 1x1 with channel and filter tails, every dtype and mode: in TF32 80 items of 7
// stages on 70 blocks (70 whole items, then 10 split seven ways, one stage a block), in
// 3xTF32 160 on 132 (132 whole, 28 split up to seven ways), in 16-bit 80 of 4 stages on
// 40 (40 whole, then 40 whole again, no split); all-positive data too.
TEST_F(WgmmaTma, StreamKProbeItemsSplitBetweenBlocksMatchFloat64InEveryDtypeAndMathMode) {
  testing::ScopedEnv stream_k("CONVJIT_WGMMA_STREAM_K", "1");
  Runtime rt(options());
  std::mt19937_64 rng(96);
  const Conv2dDesc grouped{.n = 1,
                           .c = 6400,
                           .h = 16,
                           .w = 16,
                           .k = 3200,
                           .r = 3,
                           .s = 3,
                           .pad_h = 1,
                           .pad_w = 1,
                           .groups = 100,
                           .bias = true};
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d = with_kind(grouped, kind);
    const KernelInfo info = rt.inspect(d, std::nullopt, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    EXPECT_NE(info.tile.find("stream-K"), std::string::npos) << info.tile;
    expect_correct(rt, d, rng);
    expect_correct(rt, d, rng, /*tma=*/true, /*positive=*/true);
  }
}

TEST_F(WgmmaTma, StreamKItemsSplitThreeWaysWithChannelAndFilterTailsMatchFloat64InEveryDtypeAndMathMode) {
  testing::ScopedEnv stream_k("CONVJIT_WGMMA_STREAM_K", "1");
  Runtime rt(options());
  std::mt19937_64 rng(97);
  const Conv2dDesc dense{.n = 1, .c = 200, .h = 20, .w = 23, .k = 5100, .bias = true, .activation = Activation::kRelu};
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d = with_kind(dense, kind);
    const KernelInfo info = rt.inspect(d, std::nullopt, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    EXPECT_NE(info.tile.find("stream-K"), std::string::npos) << info.tile;
    expect_correct(rt, d, rng);
  }
}

}  // namespace
}  // namespace convjit
