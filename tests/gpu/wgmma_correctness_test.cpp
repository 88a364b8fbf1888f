// The Hopper wgmma kernel against the float64 CPU reference: random problems it takes
// (32+ output channels a group) with sizes that divide none of its tiles.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "support/gpu.hpp"
#include "support/gpu_conv.hpp"
#include "support/random_desc.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"

namespace convjit {
namespace {

// Odd channel counts (C from 1, K over one and two 128-channel blocks), every geometry
// option, images smaller and larger than a patch.
Conv2dDesc random_wgmma_desc(std::mt19937_64& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  while (true) {
    Conv2dDesc d;
    d.groups = pick(0, 3) == 0 ? pick(2, 3) : 1;
    d.c = d.groups * pick(1, 37);
    d.k = d.groups * pick(32, 150);
    if (testing::draw_geometry(rng, d, {.n = 2, .h = 40, .w = 70, .r = 5, .s = 7, .stride = 2, .pad = 3})) return d;
  }
}

class WgmmaCorrectness : public ::testing::Test {
 protected:
  void SetUp() override {
    CONVJIT_REQUIRE_GPU();
    Runtime probe(RuntimeOptions{.cache_dir = dir_.path()});
    if (probe.device_arch() != "sm_90")
      GTEST_SKIP() << "the wgmma kernel needs an sm_90 GPU, this one is " << probe.device_arch();
  }
  testing::TempDir dir_;
  // These tests are the NCHW kernel's: the route through the NHWC kernel has its own.
  testing::ScopedEnv nchw_kernel_{"CONVJIT_NCHW_VIA_NHWC", "0"};
  // Narrow 16-bit stems with short reductions default to mma.sync; the kernel still takes the
  // longer ones, so these tests hold every narrow problem on it.
  testing::ScopedEnv narrow_on_wgmma_{"CONVJIT_NCHW_NARROW_MMA", "0"};
  // Stems of fewer than 16 channels default to the NHWC mma.sync kernel (NchwViaNhwcMma).
  testing::ScopedEnv stems_on_wgmma_{"CONVJIT_NCHW_MMA_VIA_NHWC", "0"};
  // Pointwise problems in TF32 and 16-bit have their own kernel (PointwiseStream).
  testing::ScopedEnv pointwise_here_{"CONVJIT_POINTWISE_STREAM", "0"};
};

TEST_F(WgmmaCorrectness, RandomProblemsMatchFloat64InTf32AndStrictMode) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::mt19937_64 rng(20261125);
  for (int i = 0; i < 24; ++i) {
    Conv2dDesc d = random_wgmma_desc(rng);
    for (MathMode math : {MathMode::kTF32, MathMode::kStrictFp32}) {
      d.math = math;
      SCOPED_TRACE(d.to_string());
      const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
      ASSERT_TRUE(plan.kernel_name().starts_with("conv2d_wgmma_")) << plan.kernel_name();
      EXPECT_GT(plan.workspace_bytes(), 0u);  // the packed weights
      const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm);
      EXPECT_EQ(result.unwritten, 0u);
      EXPECT_LT(result.rel_err, testing::tolerance(d));
    }
  }
}

TEST_F(WgmmaCorrectness, RandomSixteenBitProblemsMatchFloat64OnRoundedInputs) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::mt19937_64 rng(20261126);
  for (int i = 0; i < 16; ++i) {
    Conv2dDesc d = random_wgmma_desc(rng);
    d.w += d.w % 2;  // 16-bit rows are copied in pixel pairs; odd widths go to mma.sync
    d.dtype = i % 2 == 0 ? DType::kFloat16 : DType::kBFloat16;
    SCOPED_TRACE(d.to_string());
    const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    ASSERT_TRUE(plan.kernel_name().starts_with("conv2d_wgmma_")) << plan.kernel_name();
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, testing::tolerance(d));
  }
}

TEST_F(WgmmaCorrectness, HeadlineShapeOnSmallImagesAndAllPositiveDataStaysInBounds) {
  // The headline's channels and filter; all-positive inputs are where rounding bias adds up.
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::mt19937_64 rng(7);
  const std::pair<DType, MathMode> kinds[] = {{DType::kFloat32, MathMode::kTF32},
                                              {DType::kFloat32, MathMode::kStrictFp32},
                                              {DType::kFloat16, MathMode::kTF32},
                                              {DType::kBFloat16, MathMode::kTF32}};
  for (const auto& [dtype, math] : kinds) {
    const Conv2dDesc d{.n = 2, .c = 64, .h = 40, .w = 300, .k = 128, .r = 5, .s = 7, .dtype = dtype, .math = math};
    SCOPED_TRACE(d.to_string());
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm,
                                              /*positive=*/true);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, testing::tolerance(d));
  }
}

TEST_F(WgmmaCorrectness, EveryCallRepacksItsOwnWeights) {
  // One cached plan, new weights each call: stale packed weights would fail the check.
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::mt19937_64 rng(11);
  const Conv2dDesc d{.n = 1, .c = 16, .h = 20, .w = 40, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  for (int i = 0; i < 3; ++i) {
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/false);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, testing::tolerance(d));
  }
}

}  // namespace
}  // namespace convjit
