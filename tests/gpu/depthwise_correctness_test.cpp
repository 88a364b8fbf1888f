// The depthwise / narrow-group kernel (what Algorithm::kDirect runs for few channels a
// group) against the float64 CPU reference: random depthwise, depthwise-multiplier and
// small-group problems with sizes that divide none of its tiles, every data type.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "specialize/specialized_source.hpp"
#include "support/gpu.hpp"
#include "support/gpu_conv.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"
#include "support/workloads.hpp"

namespace convjit {
namespace {

// Odd sizes (W and H from 1), stride 1-3, padding 0-3, dilation 1-3, bias, ReLU.
Conv2dDesc random_depthwise_desc(std::mt19937_64& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  while (true) {
    Conv2dDesc d;
    const int mode = pick(0, 2);  // 0 depthwise, 1 depthwise multiplier, 2 small groups
    d.groups = pick(2, 9);
    const int c_per_group = mode == 2 ? pick(1, 4) : 1;
    const int k_per_group = mode == 0 ? 1 : pick(1, 8);
    d.c = d.groups * c_per_group;
    d.k = d.groups * k_per_group;
    d.n = pick(1, 3);
    d.h = pick(1, 37);
    d.w = pick(0, 4) == 0 ? 1 : pick(1, 70);
    d.r = pick(1, 5);
    d.s = pick(1, 7);
    d.stride_h = pick(1, 3);
    d.stride_w = pick(1, 3);
    d.pad_h = pick(0, 3);
    d.pad_w = pick(0, 3);
    d.dilation_h = pick(1, 3);
    d.dilation_w = pick(1, 3);
    d.bias = pick(0, 1) == 1;
    d.activation = pick(0, 1) == 1 ? Activation::kRelu : Activation::kNone;
    try {
      d.validate();
      return d;
    } catch (const Error&) {
      // the dilated filter overhangs the padded input: draw again
    }
  }
}

class DepthwiseCorrectness : public ::testing::Test {
 protected:
  void SetUp() override { CONVJIT_REQUIRE_GPU(); }
  testing::TempDir dir_;
};

void check_depthwise(Runtime& rt, const Conv2dDesc& d, std::mt19937_64& rng, bool positive = false,
                     std::size_t offset = 0) {
  SCOPED_TRACE(fmt::format("{} {} offset {}", d.to_string(), to_string(d.math), offset));
  ASSERT_FALSE(depthwise_unsupported_reason(d).has_value()) << *depthwise_unsupported_reason(d);
  const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kDirect});
  ASSERT_TRUE(plan.kernel_name().starts_with("conv2d_depthwise_")) << plan.kernel_name();
  const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kDirect, positive, offset);
  testing::expect_matches_reference(result, d);
}

TEST_F(DepthwiseCorrectness, RandomDepthwiseAndSmallGroupProblemsMatchFloat64InEveryDtype) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::mt19937_64 rng(20261127);
  for (int i = 0; i < 48; ++i) {
    Conv2dDesc d = random_depthwise_desc(rng);
    switch (i % 4) {
      case 0:
        d.math = MathMode::kStrictFp32;
        break;
      case 1:
        d.math = MathMode::kTF32;
        break;
      case 2:
        d.dtype = DType::kFloat16;
        break;
      case 3:
        d.dtype = DType::kBFloat16;
        break;
    }
    check_depthwise(rt, d, rng);
  }
}

TEST_F(DepthwiseCorrectness, KernelBenchDepthwiseProblemsScaledDownMatchFloat64InEveryDtype) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::mt19937_64 rng(20261128);
  int checked = 0;
  for (const auto& [name, full] : testing::kernelbench_2d_problems()) {
    for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      Conv2dDesc d = testing::scaled_down(full, 72);
      d.dtype = dtype;
      d.math = MathMode::kStrictFp32;
      if (depthwise_unsupported_reason(d)) break;  // a dense problem: not this kernel's
      SCOPED_TRACE(name);
      check_depthwise(rt, d, rng, /*positive=*/true);
      ++checked;
    }
  }
  EXPECT_GE(checked, 5 * 3);  // 82, 83, 84, 85 and 86's depthwise half
}

// Rows wider than one column tile (1024 outputs) and tall images: several tiles each way,
// halo rows shared between row tiles, 16-byte loads and stores.
TEST_F(DepthwiseCorrectness, WideAndTallImagesCrossEveryTileBoundary) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::mt19937_64 rng(20261129);
  const Conv2dDesc shapes[] = {
      Conv2dDesc{.n = 1,
                 .c = 3,
                 .h = 70,
                 .w = 2200,
                 .k = 3,
                 .r = 3,
                 .s = 3,
                 .pad_h = 1,
                 .pad_w = 1,
                 .groups = 3,
                 .bias = true},
      Conv2dDesc{.n = 2,
                 .c = 4,
                 .h = 300,
                 .w = 64,
                 .k = 8,
                 .r = 3,
                 .s = 5,
                 .stride_w = 2,
                 .pad_w = 2,
                 .groups = 4,
                 .activation = Activation::kRelu},
      Conv2dDesc{
          .n = 1, .c = 8, .h = 257, .w = 96, .k = 8, .r = 5, .s = 3, .stride_h = 2, .dilation_h = 2, .groups = 4},
  };
  for (Conv2dDesc d : shapes) {
    for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      d.dtype = dtype;
      check_depthwise(rt, d, rng);
    }
  }
}

// Many small planes (NCHW: several (image, group) planes a block, read and written as
// one run each; NHWC: the same problems by channel slabs): random plane sizes from 1x1,
// every geometry option, depthwise, multipliers and narrow groups, each dtype, and each
// tensor at offset 0, one element and 8 bytes, so a block's run of x or y starts at
// every alignment and the runs' tails are partial vectors.
Conv2dDesc random_small_plane_desc(std::mt19937_64& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  while (true) {
    Conv2dDesc d;
    const int mode = pick(0, 3);  // 0, 1 depthwise, 2 depthwise multiplier, 3 small groups
    const int c_per_group = mode == 3 ? pick(1, 4) : 1;
    const int k_per_group = mode == 2 ? pick(2, 4) : mode == 3 ? pick(1, 2) : 1;
    // Enough planes (n x groups) that the grid still fills the GPU with 2 to 11 a block.
    d.n = pick(1, 4);
    d.groups = pick(4300, 24000) / d.n + pick(0, 7);
    d.c = d.groups * c_per_group;
    d.k = d.groups * k_per_group;
    d.h = pick(1, 8);
    d.w = pick(1, 9);
    d.r = pick(1, 5);
    d.s = pick(1, 5);
    d.stride_h = pick(1, 2);
    d.stride_w = pick(1, 3);
    d.pad_h = pick(0, 2);
    d.pad_w = pick(0, 2);
    d.dilation_h = pick(1, 2);
    d.dilation_w = pick(1, 2);
    d.bias = pick(0, 1) == 1;
    d.activation = pick(0, 1) == 1 ? Activation::kRelu : Activation::kNone;
    try {
      d.validate();
      return d;
    } catch (const Error&) {
      // the dilated filter overhangs the padded input: draw again
    }
  }
}

TEST_F(DepthwiseCorrectness, ManySmallPlanesMatchFloat64InEveryDtypeLayoutAndOffset) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::mt19937_64 rng(20261130);
  int gathered = 0;
  for (int i = 0; i < 18; ++i) {
    Conv2dDesc d = random_small_plane_desc(rng);
    d.dtype = i % 3 == 0 ? DType::kFloat32 : i % 3 == 1 ? DType::kFloat16 : DType::kBFloat16;
    d.math = i % 2 == 0 ? MathMode::kStrictFp32 : MathMode::kTF32;
    for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
      d.layout = layout;
      const Specialization src = specialize_direct(d);
      if (layout == Layout::kNCHW && src.launch.tile.find("whole planes") != std::string::npos) ++gathered;
      for (const std::size_t offset : {std::size_t{0}, size_of(d.dtype), std::size_t{8}}) {
        check_depthwise(rt, d, rng, /*positive=*/false, offset);
      }
    }
  }
  EXPECT_GE(gathered, 15);  // the draws do reach the several-planes kernel
}

// The effnet-b0 depthwise layers (batches that keep the NCHW small planes several a
// block) and odd channel counts around them: whole and partial channel slabs (NHWC), runs
// that end in a partial vector (NCHW), each dtype and layout, aligned and one element off.
TEST_F(DepthwiseCorrectness, NetworkDepthwiseLayersAndOddChannelCountsMatchFloat64) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::mt19937_64 rng(20261201);
  auto dw = [](int n, int c, int hw, int rs, int stride) {
    return Conv2dDesc{.n = n,
                      .c = c,
                      .h = hw,
                      .w = hw,
                      .k = c,
                      .r = rs,
                      .s = rs,
                      .stride_h = stride,
                      .stride_w = stride,
                      .pad_h = rs / 2,
                      .pad_w = rs / 2,
                      .groups = c};
  };
  const Conv2dDesc shapes[] = {dw(32, 1152, 7, 5, 1), dw(31, 1151, 7, 5, 1), dw(16, 480, 14, 3, 1),
                               dw(9, 477, 14, 3, 1),  dw(20, 240, 28, 5, 1), dw(2, 144, 56, 5, 2),
                               dw(2, 96, 112, 3, 2),  dw(2, 32, 112, 3, 1),  dw(9, 1000, 5, 3, 2)};
  for (Conv2dDesc d : shapes) {
    for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
        d.dtype = dtype;
        d.layout = layout;
        d.bias = dtype != DType::kFloat16;
        for (const std::size_t offset : {std::size_t{0}, size_of(dtype)}) check_depthwise(rt, d, rng, false, offset);
      }
    }
  }
}

// NHWC pure depthwise problems stage their input tile in shared memory, in one to four
// passes of asynchronous copies: random problems (odd channel counts, sizes that divide no
// tile, stride, padding and dilation up to 3) under every pass count, three column widths
// and a tile past 48 KiB, each dtype, aligned (the staged tile) and one element off (the
// direct loads in the same kernel).
TEST_F(DepthwiseCorrectness, StagedNhwcTilesOfEveryPassCountMatchFloat64) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::mt19937_64 rng(20261215);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  int staged = 0;
  const std::pair<const char*, const char*> shapes[] = {
      {"2,1,8", nullptr}, {"1,2,8", nullptr}, {"1,3,4", nullptr}, {"2,4,2", nullptr}, {"4,1,8", "100"}};
  for (const auto& [tile, budget_kb] : shapes) {
    testing::ScopedEnv shape("CONVJIT_DEPTHWISE_NHWC_TILE", tile);
    testing::ScopedEnv budget("CONVJIT_DEPTHWISE_STAGE_KB", budget_kb);  // 100: past 48 KiB of dynamic memory
    for (int i = 0; i < 6; ++i) {
      Conv2dDesc d = random_depthwise_desc(rng);
      d.groups = d.c = d.k = pick(1, 40) * 4 + pick(0, 1) * 2;  // whole 8-byte vectors, some 16-byte ones
      d.h = std::max(d.h, pick(8, 40));
      d.w = std::max(d.w, pick(8, 70));
      d.layout = Layout::kNHWC;
      d.dtype = i % 3 == 0 ? DType::kFloat32 : i % 3 == 1 ? DType::kFloat16 : DType::kBFloat16;
      try {
        d.validate();
      } catch (const Error&) {
        continue;  // the dilated filter overhangs the padded input
      }
      if (specialize_direct(d).launch.tile.find("input tile") != std::string::npos) ++staged;
      for (const std::size_t offset : {std::size_t{0}, size_of(d.dtype)}) check_depthwise(rt, d, rng, false, offset);
    }
  }
  EXPECT_GE(staged, 10);
}

// Problems whose two-row staged grid runs 20 waves or more take three rows a thread in up
// to 100 KiB of dynamic shared memory by default (KernelBench 82's layer at batch 4 and 8):
// every output against float64, aligned and one element off (the direct loads).
TEST_F(DepthwiseCorrectness, LargeNhwcProblemsTakeTheTallStagedTileAndMatchFloat64) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::mt19937_64 rng(82);
  for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    Conv2dDesc d{.n = dtype == DType::kFloat32 ? 4 : 8,
                 .c = 64,
                 .h = 512,
                 .w = 512,
                 .k = 64,
                 .r = 3,
                 .s = 3,
                 .pad_h = 1,
                 .pad_w = 1,
                 .groups = 64,
                 .bias = true,
                 .dtype = dtype,
                 .layout = Layout::kNHWC};
    const auto src = specialize_direct(d);
    EXPECT_NE(src.source.text.find("enum : int { kRowsPerThread = 3 };"), std::string::npos) << src.launch.tile;
    EXPECT_GT(src.launch.geometry.shared_bytes, 48u * 1024) << src.launch.tile;
    for (const std::size_t offset : {std::size_t{0}, size_of(d.dtype)}) check_depthwise(rt, d, rng, false, offset);
  }
}

}  // namespace
}  // namespace convjit
