// Stride-1 transposed NCHW convolutions on the wgmma kernels, as the forward convolution
// of the flipped, channel-swapped filter (forward_twin; the pack reads w flipped,
// CONVJIT_WGMMA_W_TRANSPOSED), against the float64 CPU reference, on Hopper: through the
// NHWC TMA kernel between two transposes (CONVJIT_NCHW_VIA_NHWC=1) and on the NCHW
// kernel (=0). Each check asserts by the kernel's name that a wgmma kernel of the
// transposed problem ran. Run the probe first: one tile, all-positive data too, where a
// wrong flip or channel swap shows alone.
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

Conv2dDesc with_kind(Conv2dDesc d, const Kind& kind) {
  d.dtype = kind.dtype;
  d.math = kind.math;
  d.layout = Layout::kNCHW;
  d.transposed = true;
  return d;
}

class TransposedOnWgmma : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    CONVJIT_REQUIRE_GPU();
    Runtime probe(options());
    if (probe.device_arch() != "sm_90") {
      GTEST_SKIP() << "the wgmma kernels need an sm_90 GPU, this one is " << probe.device_arch();
    }
    route_.emplace("CONVJIT_NCHW_VIA_NHWC", via() ? "1" : "0");
  }
  bool via() const { return GetParam(); }
  RuntimeOptions options() const { return RuntimeOptions{.cache_dir = dir_.path()}; }

  void expect_correct(Runtime& rt, const Conv2dDesc& d, std::mt19937_64& rng, bool positive = false,
                      std::size_t offset = 0) {
    SCOPED_TRACE(d.to_string());
    const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    EXPECT_TRUE(plan.kernel_name().starts_with("conv2d_wgmma_")) << plan.kernel_name();
    // The name carries the transposed problem's tag, never its twin's.
    EXPECT_NE(plan.kernel_name().find("_tr0x0x0"), std::string::npos) << plan.kernel_name();
    EXPECT_EQ(plan.kernel_name().ends_with("_via_nhwc"), via()) << plan.kernel_name();
    const auto result =
        testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm, positive, offset);
    testing::expect_matches_reference(result, d);
  }

  testing::TempDir dir_;
  std::optional<testing::ScopedEnv> route_;
  // Pointwise problems in TF32 and 16-bit have their own kernel (PointwiseStream).
  testing::ScopedEnv pointwise_here_{"CONVJIT_POINTWISE_STREAM", "0"};
};

// FIRST: one tile, one chunk of channels, 3x3 taps (twin padding 1 and, with pad 0, the
// filter's whole reach), 64 output channels, all-positive data too.
TEST_P(TransposedOnWgmma, ProbeOneTileMatchesFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(15201);
  for (const Kind& kind : kKinds) {
    for (const int pad : {1, 0}) {
      const Conv2dDesc d = with_kind({.n = 1,
                                      .c = chunk_channels(kind.dtype),
                                      .h = 8,
                                      .w = 8,
                                      .k = 64,
                                      .r = 3,
                                      .s = 3,
                                      .pad_h = pad,
                                      .pad_w = pad},
                                     kind);
      expect_correct(rt, d, rng);
      expect_correct(rt, d, rng, /*positive=*/true);
    }
  }
}

// Problems both wgmma kernels take: C a multiple of 16 bytes and, with two groups, whole
// chunks a group; even input widths (the NCHW kernel copies 16-bit rows in pixel pairs);
// odd heights and output channel counts, filters up to 5 wide, padding from none to the
// filter's reach, dilation, bias and ReLU, several images, and 1-D problems.
Conv2dDesc random_desc(std::mt19937_64& rng, DType dtype) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  while (true) {
    Conv2dDesc d{.dtype = dtype, .transposed = true};
    d.groups = pick(0, 3) == 0 ? 2 : 1;
    const int c_per_group = testing::draw_map_channels(rng, dtype, d.groups, 160, 2);
    d.c = d.groups * c_per_group;
    d.k = d.groups * (2 * pick(16, 60) + 1);
    d.n = pick(1, 3);
    d.w = 2 * pick(2, 12);
    d.s = pick(1, 5);
    d.dilation_w = pick(1, 2);
    d.pad_w = pick(0, d.dilation_w * (d.s - 1));
    if (pick(0, 3) == 0) {
      d.spatial_dims = 1;
    } else {
      d.h = 2 * pick(0, 10) + 1;
      d.r = pick(1, 5);
      d.dilation_h = pick(1, 2);
      d.pad_h = pick(0, d.dilation_h * (d.r - 1));
    }
    d.bias = pick(0, 1) == 1;
    d.activation = pick(0, 1) == 1 ? Activation::kRelu : Activation::kNone;
    try {
      d.validate();
    } catch (const Error&) {
      continue;
    }
    if (d.flops() <= 4e8) return d;
  }
}

TEST_P(TransposedOnWgmma, RandomStrideOneProblemsMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(via() ? 15202 : 15203);
  for (int i = 0; i < 20; ++i) {
    const Kind& kind = kKinds[i % 4];
    expect_correct(rt, with_kind(random_desc(rng, kind.dtype), kind), rng);
  }
}

// KernelBench 71's shape, smaller (wide rows, 32 channels in and out), a deep 1-D problem
// (KernelBench 64's kind, two blocks of output channels) and 65's 3x7 filter. Small
// enough that the full float64 reference (every output) stays a few seconds a check.
TEST_P(TransposedOnWgmma, KernelBenchShapesSmallerMatchFloat64) {
  Runtime rt(options());
  std::mt19937_64 rng(15204);
  const Conv2dDesc shapes[] = {
      {.n = 2, .c = 32, .h = 24, .w = 64, .k = 32, .r = 3, .s = 3},
      {.n = 2, .c = 128, .w = 192, .k = 160, .s = 3, .bias = true, .spatial_dims = 1},
      {.n = 1, .c = 64, .h = 10, .w = 24, .k = 64, .r = 3, .s = 7, .pad_h = 1, .pad_w = 3},
  };
  for (const Conv2dDesc& shape : shapes) {
    for (const Kind& kind : kKinds) expect_correct(rt, with_kind(shape, kind), rng, /*positive=*/true);
  }
}

// Every tensor at an element offset past a 16-byte boundary: the route's transposes copy
// elements, and the pack reads w one element at a time. (The NCHW kernel copies 16-bit x
// in 4-byte pixel pairs, so it needs x 4-byte aligned: route only.)
TEST_P(TransposedOnWgmma, TensorsAtElementOffsetsMatchFloat64) {
  if (!via()) GTEST_SKIP() << "the NCHW kernel's 16-bit pixel pairs need x 4-byte aligned; the route takes any offset";
  Runtime rt(options());
  std::mt19937_64 rng(15205);
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d = with_kind(
        {.n = 2, .c = 64, .h = 9, .w = 12, .k = 80, .r = 3, .s = 3, .pad_h = 1, .pad_w = 2, .bias = true}, kind);
    expect_correct(rt, d, rng, /*positive=*/false, /*offset=*/size_of(kind.dtype));
  }
}

INSTANTIATE_TEST_SUITE_P(RouteAndNchwKernel, TransposedOnWgmma, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("ThroughNhwc") : std::string("NchwKernel");
                         });

}  // namespace
}  // namespace convjit

namespace convjit {
namespace {

// Strided transposed problems whose dilation is a multiple of the stride (one receiving
// phase: KernelBench 77 and 79's kind) through the route: the bias fill, then the phase's
// forward twin storing every s-th output (or its reduce pass, split). Random 1-D and 2-D
// problems, strides 2 and 3, every dtype and math mode, against float64; the kernel's
// name says the route ran. Draws the route cannot take are drawn again.
TEST(TransposedPhaseOnWgmma, RandomSinglePhaseProblemsMatchFloat64InEveryDtypeAndMathMode) {
  CONVJIT_REQUIRE_GPU();
  testing::TempDir dir;
  Runtime rt(RuntimeOptions{.cache_dir = dir.path()});
  if (rt.device_arch() != "sm_90") GTEST_SKIP() << "the route needs an sm_90 GPU, this one is " << rt.device_arch();
  testing::ScopedEnv route("CONVJIT_NCHW_VIA_NHWC", "1");
  testing::ScopedEnv pointwise_here("CONVJIT_POINTWISE_STREAM", "0");
  std::mt19937_64 rng(15401);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  int checked = 0;
  for (int attempt = 0; attempt < 400 && checked < 16; ++attempt) {
    const Kind& kind = kKinds[checked % 4];
    Conv2dDesc d = with_kind({}, kind);
    const int chunk = chunk_channels(kind.dtype);
    const int channels[] = {chunk / 2, chunk, 2 * chunk};  // 64-byte, 128-byte rows, two chunks
    d.c = channels[pick(0, 2)];
    d.k = 2 * pick(16, 40) + 1;
    d.n = pick(1, 2);
    d.stride_w = pick(2, 3);
    d.dilation_w = d.stride_w * pick(1, 2);
    d.s = pick(2, 3);
    d.pad_w = pick(0, d.dilation_w * (d.s - 1));
    d.w = pick(20, 60);
    if (pick(0, 2) == 0) {
      d.spatial_dims = 1;
    } else {
      d.stride_h = pick(1, 3);
      d.dilation_h = d.stride_h * pick(1, 2);
      d.r = pick(1, 3);
      d.pad_h = pick(0, d.dilation_h * (d.r - 1));
      d.h = pick(5, 15);
    }
    d.bias = pick(0, 1) == 1;
    d.activation = pick(0, 1) == 1 ? Activation::kRelu : Activation::kNone;
    try {
      d.validate();
      const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
      ASSERT_TRUE(plan.kernel_name().ends_with("_via_nhwc")) << plan.kernel_name();
    } catch (const Error&) {
      continue;  // not one phase, or padding the twin cannot take: draw again
    }
    SCOPED_TRACE(d.to_string());
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm);
    testing::expect_matches_reference(result, d);
    ++checked;
  }
  EXPECT_EQ(checked, 16) << "too few draws the route takes";
}

}  // namespace
}  // namespace convjit
