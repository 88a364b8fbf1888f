// The first tier's generic kernel (kernel_sources/conv_generic.cu) on a real GPU against
// the float64 reference: random problems of every rank and direction (1-D, 2-D, 3-D,
// transposed), both layouts, groups and depthwise, every dtype and math mode, pointers at
// every offset their dtype allows; a dynamic batch; and the switch from the generic
// kernel to the compiled one. Small enough for compute-sanitizer memcheck
// (`--gtest_filter='FirstTier*'`).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "support/gpu.hpp"
#include "support/gpu_conv.hpp"
#include "support/random_desc.hpp"
#include "support/temp_dir.hpp"

namespace convjit {
namespace {

using testing::kKinds;

class FirstTier : public ::testing::Test {
 protected:
  void SetUp() override { CONVJIT_REQUIRE_GPU(); }
  // In memory only, so that every new problem's first call is the first tier's.
  RuntimeOptions tier() const {
    return RuntimeOptions{.cache_dir = dir_.path(), .disk_cache = false, .autotune = false, .first_tier = true};
  }
  // One conv2d that must be served by the generic kernel, checked against float64.
  static void expect_generic_correct(Runtime& rt, const Conv2dDesc& d, std::mt19937_64& rng, std::size_t offset) {
    SCOPED_TRACE(fmt::format("{} offset {}", d.to_string(), offset));
    const std::uint64_t before = rt.stats().first_tier_runs;
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/false, Algorithm::kAuto,
                                              /*positive=*/false, offset);
    EXPECT_EQ(rt.stats().first_tier_runs, before + 1) << "not served by the first tier";
    testing::expect_matches_reference(result, d);
  }

  testing::TempDir dir_;
};

TEST_F(FirstTier, RandomProblemsOfEveryRankAndDirectionMatchFloat64InEveryDtypeAndMode) {
  Runtime rt(tier());
  std::mt19937_64 rng(1701);
  for (int kind = 0; kind <= 5; ++kind) {
    for (int i = 0; i < 4; ++i) {
      Conv2dDesc d = testing::random_nd_desc(rng, kind);
      for (const testing::Kind& m : kKinds) {
        d.dtype = m.dtype;
        d.math = m.math;
        // Offsets of one element or none: every alignment the dtype allows comes up.
        expect_generic_correct(rt, d, rng, (i % 2) * size_of(d.dtype));
      }
    }
  }
}

TEST_F(FirstTier, DepthwiseWideGroupsAndDeepReductionsMatchFloat64) {
  Runtime rt(tier());
  std::mt19937_64 rng(1702);
  const Conv2dDesc shapes[] = {
      // depthwise, both layouts: one filter a group, the 16-column tile
      {.n = 2, .c = 24, .h = 17, .w = 19, .k = 24, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 24, .bias = true},
      {.n = 1,
       .c = 32,
       .h = 15,
       .w = 13,
       .k = 64,
       .r = 5,
       .s = 5,
       .stride_h = 2,
       .stride_w = 2,
       .pad_h = 2,
       .pad_w = 2,
       .groups = 32,
       .layout = Layout::kNHWC},
      // more filters than one 64-column tile, a reduction of many 16-step stages, ragged everywhere
      {.n = 3,
       .c = 67,
       .h = 11,
       .w = 9,
       .k = 131,
       .r = 3,
       .s = 2,
       .pad_h = 1,
       .dilation_w = 2,
       .activation = Activation::kRelu},
      {.n = 2, .c = 96, .h = 7, .w = 7, .k = 80, .r = 1, .s = 1, .groups = 2, .bias = true, .layout = Layout::kNHWC},
  };
  for (const Conv2dDesc& shape : shapes) {
    for (const testing::Kind& m : kKinds) {
      Conv2dDesc d = shape;
      d.dtype = m.dtype;
      d.math = m.math;
      expect_generic_correct(rt, d, rng, 0);
    }
  }
}

TEST_F(FirstTier, ADynamicBatchRunsEveryBatchUpToItsBound) {
  Runtime rt(tier());
  std::mt19937_64 rng(1703);
  const Conv2dDesc d{
      .n = 5, .c = 12, .h = 10, .w = 11, .k = 20, .r = 3, .s = 3, .pad_h = 1, .bias = true, .dynamic_batch = true};
  // The checker runs the descriptor's own batch; a run of fewer images is the same kernel
  // with a smaller grid, which the fake-driver test counts.
  expect_generic_correct(rt, d, rng, 0);
}

TEST_F(FirstTier, TheCompiledKernelTakesOverOnceBuiltAndBothMatchFloat64) {
  Runtime rt(tier());
  std::mt19937_64 rng(1704);
  const Conv2dDesc d{.n = 2,
                     .c = 32,
                     .h = 20,
                     .w = 18,
                     .k = 64,
                     .r = 3,
                     .s = 3,
                     .pad_h = 1,
                     .pad_w = 1,
                     .bias = true,
                     .math = MathMode::kStrictFp32};
  expect_generic_correct(rt, d, rng, 0);
  rt.wait_for_compiles();
  CacheStats s = rt.stats();
  EXPECT_EQ(s.background_builds, 1u);
  EXPECT_EQ(s.background_failures, 0u);
  const auto result = testing::check_on_gpu(rt, d, rng);
  testing::expect_matches_reference(result, d);
  s = rt.stats();
  EXPECT_EQ(s.first_tier_runs, 1u);
  EXPECT_EQ(s.compiles, 1u);
}

}  // namespace
}  // namespace convjit
