// The streaming pointwise kernel (conv2d_pointwise.cu) against the float64 CPU reference:
// random 1x1 problems in both layouts and TF32, f16 and bf16 (odd channel counts from 1
// to the kernel's limit, channel blocks past one, pixel counts that divide no tile,
// batches that leave persistent blocks uneven, bias and ReLU), pointers at every offset
// their dtype allows, and every tile shape the tuning switch takes. Each test asserts by
// the plan's kernel name that the streaming kernel ran.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "support/gpu.hpp"
#include "support/gpu_conv.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"

namespace convjit {
namespace {

struct StreamKind {
  DType dtype;
  MathMode math;
};
constexpr StreamKind kStreamKinds[] = {
    {DType::kFloat32, MathMode::kTF32}, {DType::kFloat16, MathMode::kTF32}, {DType::kBFloat16, MathMode::kTF32}};

class PointwiseStream : public ::testing::Test {
 protected:
  void SetUp() override {
    CONVJIT_REQUIRE_GPU();
    Runtime probe(options());
    const std::string arch = probe.device_arch();
    if (std::stoi(arch.substr(3)) < 80) {
      GTEST_SKIP() << "the streaming pointwise kernel needs sm_80 or newer, this GPU is " << arch;
    }
  }
  RuntimeOptions options() const { return RuntimeOptions{.cache_dir = dir_.path()}; }

  static void expect_correct(Runtime& rt, const Conv2dDesc& d, std::mt19937_64& rng, std::size_t offset = 0,
                             bool positive = false) {
    SCOPED_TRACE(d.to_string());
    const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    EXPECT_TRUE(plan.kernel_name().starts_with("conv2d_pointwise_")) << plan.kernel_name();
    const auto result =
        testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm, positive, offset);
    testing::expect_matches_reference(result, d);
  }

  testing::TempDir dir_;
};

// 1 to the kernel's limit of input channels (128 in TF32, 256 in 16-bit), 1 to 300
// output channels (several channel blocks), images of 1 to 40 x 40 pixels.
Conv2dDesc random_pointwise(std::mt19937_64& rng, const StreamKind& kind, Layout layout) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Conv2dDesc d{.dtype = kind.dtype, .layout = layout, .math = kind.math};
  const int c_max = kind.dtype == DType::kFloat32 ? 128 : 256;
  d.c = pick(0, 2) == 0 ? pick(1, 17) : pick(1, c_max);
  d.k = pick(0, 2) == 0 ? pick(1, 40) : pick(1, 300);
  d.n = pick(1, 5);
  d.h = pick(1, 40);
  d.w = pick(1, 40);
  d.bias = pick(0, 1) == 1;
  d.activation = pick(0, 1) == 1 ? Activation::kRelu : Activation::kNone;
  return d;
}

TEST_F(PointwiseStream, RandomProblemsMatchFloat64InBothLayoutsAndEveryDtype) {
  Runtime rt(options());
  std::mt19937_64 rng(20261201);
  for (int i = 0; i < 36; ++i) {
    const Layout layout = i % 2 == 0 ? Layout::kNCHW : Layout::kNHWC;
    expect_correct(rt, random_pointwise(rng, kStreamKinds[(i / 2) % 3], layout), rng);
  }
}

// Element offsets 1 to 3 past a 16-byte boundary: every narrower copy and store width.
TEST_F(PointwiseStream, PointersAtEveryLegalOffsetMatchFloat64) {
  Runtime rt(options());
  std::mt19937_64 rng(7);
  for (const StreamKind& kind : kStreamKinds) {
    for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
      const Conv2dDesc d{.n = 3,
                         .c = 64,
                         .h = 13,
                         .w = 16,
                         .k = 96,
                         .bias = true,
                         .dtype = kind.dtype,
                         .layout = layout,
                         .math = kind.math};
      for (std::size_t elements = 0; elements < 4; ++elements) {
        expect_correct(rt, d, rng, elements * size_of(kind.dtype));
      }
    }
  }
}

// KernelBench 87's and networks row 36's channel counts on a smaller image, all-positive
// data (where TF32 rounding bias would add up), and a batch whose tiles leave the
// persistent blocks uneven.
TEST_F(PointwiseStream, NetworkChannelCountsWithAllPositiveDataStayInBounds) {
  Runtime rt(options());
  std::mt19937_64 rng(87);
  const Conv2dDesc shapes[] = {
      {.n = 3, .c = 64, .h = 96, .w = 100, .k = 128},
      {.n = 5, .c = 16, .h = 56, .w = 56, .k = 96},
      {.n = 2, .c = 128, .h = 28, .w = 28, .k = 512, .bias = true},
  };
  for (Conv2dDesc d : shapes) {
    for (const StreamKind& kind : kStreamKinds) {
      for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
        d.dtype = kind.dtype;
        d.math = kind.math;
        d.layout = layout;
        expect_correct(rt, d, rng, 0, /*positive=*/true);
      }
    }
  }
}

// The tuning switch's tile shapes: 16- and 32-channel warp tiles, 8 to 64 pixels a warp,
// one to eight warps each way, two to six stages.
TEST_F(PointwiseStream, EveryTuningTileShapeMatchesFloat64) {
  Runtime rt(options());
  std::mt19937_64 rng(3);
  const char* tiles[] = {"16,16,1,1,2", "32,32,4,2,4", "16,64,2,4,3", "32,16,2,1,6", "16,32,8,1,5"};
  for (const char* tile : tiles) {
    testing::ScopedEnv env("CONVJIT_POINTWISE_TILE", tile);
    for (const StreamKind& kind : kStreamKinds) {
      for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
        Conv2dDesc d{.n = 2, .c = 40, .h = 11, .w = 17, .k = 72, .bias = true, .activation = Activation::kRelu};
        d.dtype = kind.dtype;
        d.math = kind.math;
        d.layout = layout;
        SCOPED_TRACE(tile);
        expect_correct(rt, d, rng);
      }
    }
  }
}

}  // namespace
}  // namespace convjit
