// 3-D NCDHW convolutions, forward and stride-1 transposed, through the route's NHWC TMA
// wgmma kernel (a rank-5 im2col map over NDHWC x; CONVJIT_NCHW_VIA_NHWC=1), against the
// float64 CPU reference, on Hopper. Each check asserts by the kernel's name that the
// route ran. Run the probe first: one tile, all-positive data too, where a wrong depth
// offset or corner shows alone.
#include <gtest/gtest.h>

#include <optional>
#include <random>
#include <string>

#include "support/gpu.hpp"
#include "support/gpu_conv.hpp"
#include "support/random_desc.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"

namespace convjit {
namespace {

using testing::Kind;
using testing::kKinds;

Conv2dDesc with_kind(Conv2dDesc d, const Kind& kind) {
  d.dtype = kind.dtype;
  d.math = kind.math;
  d.layout = Layout::kNCHW;
  d.spatial_dims = 3;
  return d;
}

class ConvNdWgmma : public ::testing::Test {
 protected:
  void SetUp() override {
    CONVJIT_REQUIRE_GPU();
    Runtime probe(options());
    if (probe.device_arch() != "sm_90") {
      GTEST_SKIP() << "the route's TMA kernel needs an sm_90 GPU, this one is " << probe.device_arch();
    }
  }
  RuntimeOptions options() const { return RuntimeOptions{.cache_dir = dir_.path()}; }

  void expect_correct(Runtime& rt, const Conv2dDesc& d, std::mt19937_64& rng, bool positive = false) {
    SCOPED_TRACE(d.to_string());
    const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    EXPECT_TRUE(plan.kernel_name().ends_with("_via_nhwc")) << plan.kernel_name();
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm, positive);
    testing::expect_matches_reference(result, d);
  }

  testing::TempDir dir_;
  testing::ScopedEnv route_{"CONVJIT_NCHW_VIA_NHWC", "1"};
};

// FIRST: one tile (2 x 4 x 8 outputs), 32 channels, 3x3x3 taps with padding in every
// dimension, forward and transposed, all-positive data too.
TEST_F(ConvNdWgmma, ProbeOneTileMatchesFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(15301);
  for (const Kind& kind : kKinds) {
    for (const bool transposed : {false, true}) {
      Conv2dDesc d = with_kind({.n = 1, .c = 32, .h = 4, .w = 8, .k = 64, .r = 3, .s = 3, .d = 2, .t = 3}, kind);
      d.transposed = transposed;
      d.pad_d = d.pad_h = d.pad_w = 1;  // transposed: twin padding 1 too, output the input's size
      expect_correct(rt, d, rng);
      expect_correct(rt, d, rng, /*positive=*/true);
    }
  }
}

// KernelBench 77's kind, small: a 3-D transposed problem with stride 2 and dilation 2,
// whose one receiving phase runs as a dense 3-D convolution after the bias fill.
TEST_F(ConvNdWgmma, ASingleReceivingPhaseOfA3dStridedTransposedProblemMatchesFloat64InEveryMode) {
  Runtime rt(options());
  std::mt19937_64 rng(15303);
  for (const Kind& kind : kKinds) {
    Conv2dDesc d = with_kind({.n = 2,
                              .c = 32,
                              .h = 6,
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
                              .d = 4,
                              .t = 3,
                              .stride_d = 2,
                              .pad_d = 1,
                              .dilation_d = 2},
                             kind);
    d.transposed = true;
    expect_correct(rt, d, rng);
  }
}

// Problems the route takes: C a multiple of 16 bytes, odd spatial extents, filters of 1
// to 3 taps in depth, padding up to the filter's reach, depth stride 1 or 2 (forward),
// dilation, groups (whole chunks), 33 or more output channels a group, bias and ReLU;
// stride-1 transposed ones too.
Conv2dDesc random_3d(std::mt19937_64& rng, const Kind& kind) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  while (true) {
    Conv2dDesc d = with_kind({}, kind);
    d.transposed = pick(0, 1) == 1;
    d.groups = pick(0, 3) == 0 ? 2 : 1;
    const int c_per_group = testing::draw_map_channels(rng, kind.dtype, d.groups, 96, 1);
    d.c = d.groups * c_per_group;
    d.k = d.groups * (2 * pick(16, 40) + 1);
    d.n = pick(1, 2);
    d.d = pick(1, 6);
    d.h = 2 * pick(1, 5) + 1;
    d.w = 2 * pick(1, 6) + 1;
    d.t = pick(1, 3);
    d.r = pick(1, 3);
    d.s = pick(1, 3);
    d.dilation_d = pick(1, 2);
    d.dilation_w = pick(1, 2);
    d.pad_d = pick(0, d.dilation_d * (d.t - 1));
    d.pad_h = pick(0, d.r - 1);
    d.pad_w = pick(0, d.dilation_w * (d.s - 1));
    if (!d.transposed) d.stride_d = pick(1, 2);
    d.bias = pick(0, 1) == 1;
    d.activation = pick(0, 1) == 1 ? Activation::kRelu : Activation::kNone;
    if (d.t == 1 && d.d == 1 && d.pad_d == 0) continue;  // that is a 2-D problem
    try {
      d.validate();
    } catch (const Error&) {
      continue;
    }
    if (d.flops() <= 1e8) return d;
  }
}

TEST_F(ConvNdWgmma, RandomThreeDimensionalProblemsMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(15302);
  for (int i = 0; i < 24; ++i) {
    const Kind& kind = kKinds[i % 4];
    expect_correct(rt, random_3d(rng, kind), rng);
  }
}

}  // namespace
}  // namespace convjit
