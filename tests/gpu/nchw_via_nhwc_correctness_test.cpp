// NCHW through the NHWC TMA wgmma kernel (CONVJIT_NCHW_VIA_NHWC=1: x transposed into the
// workspace, the NHWC kernel on it with weights packed from their NCHW order, y stored
// NCHW by the kernel or split-K's reduce pass) against the float64 CPU reference, on Hopper. Each test asserts
// by the kernel's name that the route ran. Run the first one first: one tile, where a
// wrong transpose or weight order shows alone; then random problems in every dtype and
// math mode, split-K, and tensors at element offsets (the route reads x and writes y an
// element at a time, so it runs there too).
#include <fmt/format.h>
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

using testing::chunk_channels;
using testing::Kind;
using testing::kKinds;
using testing::of_kind;

class NchwViaNhwc : public ::testing::Test {
 protected:
  void SetUp() override {
    CONVJIT_REQUIRE_GPU();
    Runtime probe(options());
    if (probe.device_arch() != "sm_90") {
      GTEST_SKIP() << "the route runs the TMA wgmma kernel, which needs an sm_90 GPU, this one is "
                   << probe.device_arch();
    }
    route_.emplace("CONVJIT_NCHW_VIA_NHWC", "1");
    tma_.emplace("CONVJIT_WGMMA_TMA", "1");
  }
  RuntimeOptions options() const { return RuntimeOptions{.cache_dir = dir_.path()}; }

  // Runs NCHW `d` through a kImplicitGemm plan on fresh random data against float64, after
  // checking that the plan's kernel is the route's.
  void expect_correct(Runtime& rt, const Conv2dDesc& d, std::mt19937_64& rng, bool positive = false,
                      std::size_t offset = 0) {
    SCOPED_TRACE(d.to_string());
    const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    EXPECT_TRUE(plan.kernel_name().starts_with("conv2d_wgmma_")) << plan.kernel_name();
    EXPECT_TRUE(plan.kernel_name().ends_with("_via_nhwc")) << plan.kernel_name();
    const auto result =
        testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm, positive, offset);
    testing::expect_matches_reference(result, d);
  }

  testing::TempDir dir_;
  std::optional<testing::ScopedEnv> route_;
  std::optional<testing::ScopedEnv> tma_;
  // Pointwise problems in TF32 and 16-bit have their own kernel (PointwiseStream).
  testing::ScopedEnv pointwise_here_{"CONVJIT_POINTWISE_STREAM", "0"};
};

// FIRST: one tile, one 128-byte chunk of channels, 3x3 taps with padding, output
// channels in one block; all-positive data too, so that a transposed index or a wrong
// weight order cannot cancel out.
TEST_F(NchwViaNhwc, ProbeOneTileMatchesFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(9001);
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d = of_kind(
        {.n = 1, .c = chunk_channels(kind.dtype), .h = 8, .w = 9, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
        kind);
    expect_correct(rt, d, rng);
    expect_correct(rt, d, rng, /*positive=*/true);
  }
}

// Problems the route takes: C a multiple of 16 bytes, at least one 128-byte chunk a group
// (whole chunks with two groups); odd H, W and K, strides 1 to 3, padding, dilation, bias
// and ReLU, several images and tiles.
Conv2dDesc random_route_desc(std::mt19937_64& rng, DType dtype) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  while (true) {
    Conv2dDesc d{.dtype = dtype};
    d.groups = pick(0, 3) == 0 ? 2 : 1;
    const int c_per_group = testing::draw_map_channels(rng, dtype, d.groups, 200, 2);
    d.c = d.groups * c_per_group;
    d.k = d.groups * (2 * pick(16, 75) + 1);
    d.n = pick(1, 3);
    d.h = 2 * pick(0, 10) + 1;
    d.w = 2 * pick(0, 12) + 1;
    d.r = pick(1, 5);
    d.s = pick(1, 5);
    d.stride_h = pick(1, 3);
    d.stride_w = pick(1, 3);
    d.pad_h = pick(0, 2);
    d.pad_w = pick(0, 2);
    d.dilation_h = pick(1, 2);
    d.dilation_w = pick(1, 2);
    d.bias = pick(0, 1) == 1;
    d.activation = pick(0, 1) == 1 ? Activation::kRelu : Activation::kNone;
    try {
      d.validate();
    } catch (const Error&) {
      continue;  // the dilated filter overhangs the padded input: draw again
    }
    if (d.flops() <= 4e8) return d;
  }
}

TEST_F(NchwViaNhwc, RandomProblemsMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(20261130);
  for (int i = 0; i < 24; ++i) {
    const Kind& kind = kKinds[i % 4];
    expect_correct(rt, of_kind(random_route_desc(rng, kind.dtype), kind), rng);
  }
}

// Deep channels on small images: the NHWC kernel splits the reduction, and its reduce
// pass stores the caller's NCHW y through 32 x 32 tiles; the VGG layer of the measured
// gap, many tiles over several images.
TEST_F(NchwViaNhwc, SplitKDeepChannelsAndAVggLayerMatchFloat64) {
  Runtime rt(options());
  std::mt19937_64 rng(9002);
  const Conv2dDesc shapes[] = {
      {.n = 2, .c = 512, .h = 7, .w = 7, .k = 256, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      {.n = 1, .c = 256, .h = 5, .w = 5, .k = 130, .r = 3, .s = 3, .bias = true},
      {.n = 2, .c = 512, .h = 28, .w = 28, .k = 512, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
  };
  for (const Conv2dDesc& shape : shapes) {
    for (const Kind& kind : kKinds) expect_correct(rt, of_kind(shape, kind), rng, /*positive=*/true);
  }
}

// The U-Net's 4-channel output layer's shape, smaller: 4 output channels on the TMA
// kernel, split-K, the reduce pass storing 4 NCHW channels.
TEST_F(NchwViaNhwc, FourOutputChannelsMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(9004);
  for (const Kind& kind : kKinds) {
    expect_correct(
        rt,
        of_kind({.n = 2, .c = 320, .h = 16, .w = 16, .k = 4, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
                kind),
        rng);
  }
}

// Every tensor at an element offset past a 16-byte boundary: x's transpose reads x and
// the NCHW stores write y there, x's workspace copy stays aligned for the map.
TEST_F(NchwViaNhwc, TensorsAtElementOffsetsMatchFloat64) {
  Runtime rt(options());
  std::mt19937_64 rng(9003);
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d = of_kind(
        {.n = 2, .c = 64, .h = 9, .w = 11, .k = 80, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true}, kind);
    expect_correct(rt, d, rng, /*positive=*/false, /*offset=*/size_of(kind.dtype));
  }
}

}  // namespace
}  // namespace convjit
