// NCHW through the NHWC mma.sync kernel (specialize_implicit_gemm_via_nhwc: x transposed
// into the workspace, the weights read in their K,C,R,S order, y stored NCHW by the kernel)
// against the float64 CPU reference, on sm_80 or newer. Each test asserts by the kernel's
// name that the route ran. The first one is one tile of a 3-channel stem, where a wrong
// transpose, weight order or NCHW store shows alone; then the networks' stems in every
// dtype and math mode, random problems (odd channel counts and extents, strides, padding,
// dilation, groups under the forced switch), and tensors at element offsets.
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

using testing::Kind;
using testing::kKinds;
using testing::of_kind;

class NchwViaNhwcMma : public ::testing::Test {
 protected:
  void SetUp() override {
    CONVJIT_REQUIRE_GPU();
    Runtime probe(options());
    const std::string arch = probe.device_arch();
    if (std::stoi(arch.substr(3)) < 80) {
      GTEST_SKIP() << "the route runs the mma.sync kernel, which needs sm_80 or newer, this GPU is " << arch;
    }
  }
  RuntimeOptions options() const { return RuntimeOptions{.cache_dir = dir_.path()}; }

  void expect_correct(Runtime& rt, const Conv2dDesc& d, std::mt19937_64& rng, bool positive = false,
                      std::size_t offset = 0) {
    SCOPED_TRACE(d.to_string());
    const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    EXPECT_TRUE(plan.kernel_name().starts_with("conv2d_igemm_")) << plan.kernel_name();
    EXPECT_TRUE(plan.kernel_name().ends_with("_via_nhwc")) << plan.kernel_name();
    const auto result =
        testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm, positive, offset);
    testing::expect_matches_reference(result, d);
  }

  testing::TempDir dir_;
};

// FIRST: one pixel tile of a 3-channel 3x3 stem with padding, all-positive data too, so a
// transposed index, a weight read in the wrong order or a store to the wrong plane cannot
// cancel out.
TEST_F(NchwViaNhwcMma, ProbeOneTileOfAThreeChannelStemMatchesFloat64InEveryDtypeAndMathMode) {
  testing::ScopedEnv unset("CONVJIT_NCHW_MMA_VIA_NHWC", nullptr);
  Runtime rt(options());
  std::mt19937_64 rng(9101);
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d =
        of_kind({.n = 1, .c = 3, .h = 9, .w = 11, .k = 24, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1}, kind);
    expect_correct(rt, d, rng);
    expect_correct(rt, d, rng, /*positive=*/true);
  }
}

// The networks' stems, smaller batches: ResNet's 7x7 stride 2, VGG's 3x3, EfficientNet's
// 3x3 stride 2 (forced: the rule leaves it on its NCHW kernel), the U-Net's 4-channel
// input, with bias and ReLU.
TEST_F(NchwViaNhwcMma, NetworkStemsMatchFloat64InEveryDtypeAndMathMode) {
  testing::ScopedEnv forced("CONVJIT_NCHW_MMA_VIA_NHWC", "1");
  Runtime rt(options());
  std::mt19937_64 rng(9102);
  const Conv2dDesc shapes[] = {
      {.n = 2,
       .c = 3,
       .h = 224,
       .w = 224,
       .k = 64,
       .r = 7,
       .s = 7,
       .stride_h = 2,
       .stride_w = 2,
       .pad_h = 3,
       .pad_w = 3,
       .bias = true,
       .activation = Activation::kRelu},
      {.n = 1, .c = 3, .h = 96, .w = 96, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      {.n = 2, .c = 3, .h = 97, .w = 95, .k = 32, .r = 3, .s = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1},
      {.n = 2, .c = 4, .h = 32, .w = 32, .k = 320, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
  };
  for (const Conv2dDesc& shape : shapes) {
    for (const Kind& kind : kKinds) expect_correct(rt, of_kind(shape, kind), rng);
  }
}

// Forced, so that groups and wider channel counts run it too: odd C (1 to 40) and K, odd
// extents, strides 1 to 3, padding, dilation, groups, bias and ReLU.
TEST_F(NchwViaNhwcMma, RandomProblemsMatchFloat64InEveryDtypeAndMathMode) {
  testing::ScopedEnv forced("CONVJIT_NCHW_MMA_VIA_NHWC", "1");
  Runtime rt(options());
  std::mt19937_64 rng(20261202);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  int done = 0;
  for (int draws = 0; done < 24 && draws < 400; ++draws) {
    Conv2dDesc d;
    d.groups = pick(0, 3) == 0 ? pick(2, 3) : 1;
    d.c = d.groups * pick(1, pick(0, 1) == 0 ? 7 : 40);
    d.k = d.groups * pick(1, 70);
    d.n = pick(1, 3);
    d.h = pick(1, 23);
    d.w = pick(1, 29);
    d.r = pick(1, 7);
    d.s = pick(1, 7);
    d.stride_h = pick(1, 3);
    d.stride_w = pick(1, 3);
    d.pad_h = pick(0, 3);
    d.pad_w = pick(0, 3);
    d.dilation_h = pick(1, 2);
    d.dilation_w = pick(1, 2);
    d.bias = pick(0, 1) == 1;
    d.activation = pick(0, 1) == 1 ? Activation::kRelu : Activation::kNone;
    d = of_kind(d, kKinds[done % 4]);
    try {
      d.validate();
    } catch (const Error&) {
      continue;  // the dilated filter overhangs the padded input: draw again
    }
    // The pointwise kernel takes some 1x1 problems first; the NHWC twin of a wide enough
    // problem runs on wgmma (the other route's): neither is this test's.
    const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    if (!plan.kernel_name().ends_with("_via_nhwc") || !plan.kernel_name().starts_with("conv2d_igemm_")) continue;
    expect_correct(rt, d, rng);
    ++done;
  }
  EXPECT_EQ(done, 24) << "too few random problems took the route";
}

// Every tensor at an element offset past a 16-byte boundary: the transpose reads x and the
// kernel reads w and writes y there an element at a time; x's copy stays aligned.
TEST_F(NchwViaNhwcMma, TensorsAtElementOffsetsMatchFloat64) {
  testing::ScopedEnv unset("CONVJIT_NCHW_MMA_VIA_NHWC", nullptr);
  Runtime rt(options());
  std::mt19937_64 rng(9103);
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d = of_kind({.n = 2,
                                  .c = 3,
                                  .h = 17,
                                  .w = 19,
                                  .k = 40,
                                  .r = 5,
                                  .s = 5,
                                  .stride_h = 2,
                                  .pad_h = 2,
                                  .pad_w = 2,
                                  .bias = true},
                                 kind);
    expect_correct(rt, d, rng, /*positive=*/false, /*offset=*/size_of(kind.dtype));
  }
}

}  // namespace
}  // namespace convjit
