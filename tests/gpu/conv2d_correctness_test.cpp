// The direct kernel against a float64 CPU reference: random shapes and KernelBench's 2D set.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "support/gpu.hpp"
#include "support/gpu_conv.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"
#include "support/workloads.hpp"

namespace convjit {
namespace {

// Every (algorithm, math mode) pair a problem is checked in.
struct Variant {
  Algorithm algorithm;
  MathMode math;
};
constexpr Variant kVariants[] = {
    {Algorithm::kDirect, MathMode::kStrictFp32},       {Algorithm::kImplicitGemm, MathMode::kTF32},
    {Algorithm::kImplicitGemm, MathMode::kStrictFp32}, {Algorithm::kIm2colGemm, MathMode::kTF32},
    {Algorithm::kIm2colGemm, MathMode::kStrictFp32},
};

void check_all_variants(Runtime& rt, Conv2dDesc d, std::mt19937_64& rng) {
  for (const auto& v : kVariants) {
    d.math = v.math;
    SCOPED_TRACE(fmt::format("{} / {}", to_string(v.algorithm), to_string(v.math)));
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, v.algorithm);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, testing::tolerance(d));
  }
}

// A valid random problem: mixed strides, paddings, dilations, groups (depthwise
// included), bias or not, and sizes that divide nothing (C=3, K=17, W=1, ...).
Conv2dDesc random_desc(std::mt19937_64& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  while (true) {
    Conv2dDesc d;
    const int mode = pick(0, 3);  // 0 dense, 1 grouped, 2 depthwise, 3 depthwise multiplier
    d.groups = mode == 0 ? 1 : pick(2, 6);
    const int c_per_group = mode >= 2 ? 1 : pick(1, mode == 0 ? 19 : 5);
    const int k_per_group = mode == 2 ? 1 : pick(1, mode == 0 ? 21 : 9);
    d.c = d.groups * c_per_group;
    d.k = d.groups * k_per_group;
    d.n = pick(1, 3);
    d.h = pick(1, 23);
    d.w = pick(1, 23);
    d.r = pick(1, 5);
    d.s = pick(1, 7);
    d.stride_h = pick(1, 3);
    d.stride_w = pick(1, 3);
    d.pad_h = pick(0, 3);
    d.pad_w = pick(0, 3);
    d.dilation_h = pick(1, 3);
    d.dilation_w = pick(1, 3);
    d.bias = pick(0, 1) == 1;
    try {
      d.validate();
      return d;
    } catch (const Error&) {
      // shapes whose dilated filter overhangs the padded input: draw again
    }
  }
}

class Conv2dCorrectness : public ::testing::Test {
 protected:
  void SetUp() override { CONVJIT_REQUIRE_GPU(); }
  testing::TempDir dir_;
};

// Seventy descriptors in seven parts of ten (the hand-picked edge cases in the first), so
// that the suite's shards share their compiles evenly.
class Conv2dRandomDescriptors : public Conv2dCorrectness, public ::testing::WithParamInterface<int> {};

TEST_P(Conv2dRandomDescriptors, TenOfSeventyMatchFloat64Reference) {
  const std::uint64_t seed = std::random_device{}();
  std::mt19937_64 rng(seed);
  RecordProperty("seed", std::to_string(seed));
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::vector<Conv2dDesc> descs = {
      Conv2dDesc{.n = 1, .c = 3, .h = 11, .w = 1, .k = 17, .r = 3, .s = 1, .pad_h = 1, .bias = true},
      Conv2dDesc{.n = 2, .c = 16, .h = 9, .w = 13, .k = 16, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 16},
      Conv2dDesc{.n = 1, .c = 8, .h = 7, .w = 7, .k = 24, .r = 3, .s = 3, .groups = 8, .bias = true},
      Conv2dDesc{.n = 3, .c = 5, .h = 1, .w = 1, .k = 7, .r = 1, .s = 1},
      Conv2dDesc{.n = 1,
                 .c = 3,
                 .h = 31,
                 .w = 29,
                 .k = 17,
                 .r = 7,
                 .s = 5,
                 .stride_h = 3,
                 .stride_w = 2,
                 .pad_h = 3,
                 .pad_w = 2,
                 .dilation_h = 2,
                 .dilation_w = 3},
  };
  if (GetParam() != 0) descs.clear();
  while (descs.size() < 10) descs.push_back(random_desc(rng));
  for (std::size_t i = 0; i < descs.size(); ++i) {
    Conv2dDesc d = descs[i];
    if (i % 3 == 1) d.activation = Activation::kRelu;
    SCOPED_TRACE(d.to_string() + " seed=" + std::to_string(seed));
    check_all_variants(rt, d, rng);
  }
}

INSTANTIATE_TEST_SUITE_P(SevenParts, Conv2dRandomDescriptors, ::testing::Range(0, 7));

TEST_F(Conv2dCorrectness, KernelBench2dForwardProblemsScaledDownMatchReference) {
  std::mt19937_64 rng(std::random_device{}());
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  const auto problems = testing::kernelbench_2d_problems();
  ASSERT_GE(problems.size(), 12u);  // 50, 55, 56, 62, 63, 80, 82..85, 87 and 86 as two convs
  for (const auto& [name, full] : problems) {
    const Conv2dDesc d = testing::scaled_down(full, 40);
    SCOPED_TRACE(name + ": " + d.to_string());
    check_all_variants(rt, d, rng);
  }
}

// All-positive data (torch.rand, as KernelBench feeds) turns any one-sided rounding
// into a bias that grows with the reduction; TF32 must round to nearest to stay in bounds.
TEST_F(Conv2dCorrectness, AllPositiveInputsStayWithinEachModesBound) {
  std::mt19937_64 rng(std::random_device{}());
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  Conv2dDesc d{.n = 2, .c = 64, .h = 24, .w = 20, .k = 128, .r = 5, .s = 7};
  for (const auto& v : kVariants) {
    d.math = v.math;
    SCOPED_TRACE(fmt::format("{} / {}", to_string(v.algorithm), to_string(v.math)));
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, v.algorithm, /*positive=*/true);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, testing::tolerance(d) / 2) << "half the bound, to catch a bias early";
  }
}

// A problem whose column matrix (3 x 72 x 784 floats) is far over a 64 KiB limit:
// the plan chunks by output rows, holds at most the limit, and is still right.
TEST_F(Conv2dCorrectness, Im2colGemmKeepsItsWorkspaceUnderTheLimitAndStaysCorrect) {
  std::mt19937_64 rng(std::random_device{}());
  constexpr std::uint64_t kLimit = 64 * 1024;
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path(), .workspace_limit_bytes = kLimit});
  Conv2dDesc d{
      .n = 3, .c = 8, .h = 30, .w = 30, .k = 16, .r = 3, .s = 3, .bias = true, .activation = Activation::kRelu};
  for (MathMode math : {MathMode::kTF32, MathMode::kStrictFp32}) {
    d.math = math;
    const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kIm2colGemm});
    EXPECT_GT(plan.workspace_bytes(), 0u);
    EXPECT_LE(plan.workspace_bytes(), kLimit);
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kIm2colGemm);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, testing::tolerance(d));
  }
}

// Small NCHW images (under kMergeBelowPixels output pixels) run one GEMM over a chunk's
// images and scatter its output into NCHW with the bias and activation: every dtype and
// math mode, groups, and a limit small enough to cut the batch into several chunks.
TEST_F(Conv2dCorrectness, Im2colGemmMergesSmallImagesIntoOneGemmPerChunkAndStaysCorrect) {
  std::mt19937_64 rng(std::random_device{}());
  const Conv2dDesc shapes[] = {
      {.n = 7,
       .c = 12,
       .h = 9,
       .w = 7,
       .k = 20,
       .r = 3,
       .s = 3,
       .pad_h = 1,
       .groups = 2,
       .bias = true,
       .activation = Activation::kRelu},
      {.n = 5, .c = 33, .h = 8, .w = 8, .k = 17, .r = 3, .s = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1},
      {.n = 3, .c = 16, .h = 14, .w = 14, .k = 40, .r = 1, .s = 1, .stride_h = 2, .stride_w = 2, .bias = true},
  };
  for (const std::uint64_t limit : {std::uint64_t{48} << 10, std::uint64_t{256} << 20}) {
    Runtime rt(RuntimeOptions{.cache_dir = dir_.path(), .workspace_limit_bytes = limit});
    for (Conv2dDesc d : shapes) {
      for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        for (const MathMode math : {MathMode::kTF32, MathMode::kStrictFp32}) {
          if (dtype != DType::kFloat32 && math == MathMode::kStrictFp32) continue;
          d.dtype = dtype;
          d.math = math;
          SCOPED_TRACE(fmt::format("{} limit {}", d.to_string(), limit));
          const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kIm2colGemm});
          EXPECT_LE(plan.workspace_bytes(), limit);
          const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kIm2colGemm);
          EXPECT_EQ(result.unwritten, 0u);
          EXPECT_LT(result.rel_err, testing::tolerance(d));
        }
      }
    }
  }
}

// f16 and bf16 through every algorithm: x, w, bias and y in the 16-bit type, fp32
// accumulation, against float64 on the same rounded inputs.
constexpr DType k16BitTypes[] = {DType::kFloat16, DType::kBFloat16};
constexpr Algorithm kAllAlgorithms[] = {Algorithm::kDirect, Algorithm::kImplicitGemm, Algorithm::kIm2colGemm};

void check_16bit(Runtime& rt, Conv2dDesc d, std::mt19937_64& rng, bool positive = false) {
  for (const DType dtype : k16BitTypes) {
    d.dtype = dtype;
    for (const Algorithm algorithm : kAllAlgorithms) {
      SCOPED_TRACE(fmt::format("{} / {}", to_string(dtype), to_string(algorithm)));
      const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, algorithm, positive);
      EXPECT_EQ(result.unwritten, 0u);
      EXPECT_LT(result.rel_err, testing::tolerance(d));
    }
  }
}

// Shapes for every tile of the 16-bit implicit GEMM (16, 32, 64 and 128 channels, two
// channel tiles with a tail), reductions that are and are not whole 16-byte rows,
// padding (border and interior pixels), pair and single output stores, a 1x1 GEMM, a
// reduction gathered without the table.
std::vector<Conv2dDesc> sixteen_bit_shapes() {
  return {
      Conv2dDesc{.n = 1, .c = 3, .h = 11, .w = 1, .k = 17, .r = 3, .s = 1, .pad_h = 1, .bias = true},
      Conv2dDesc{.n = 2, .c = 16, .h = 9, .w = 13, .k = 16, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 16},
      Conv2dDesc{.n = 1,
                 .c = 3,
                 .h = 31,
                 .w = 29,
                 .k = 17,
                 .r = 7,
                 .s = 5,
                 .stride_h = 3,
                 .stride_w = 2,
                 .pad_h = 3,
                 .pad_w = 2,
                 .dilation_h = 2,
                 .dilation_w = 3},
      Conv2dDesc{.n = 3, .c = 5, .h = 13, .w = 11, .k = 100, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      Conv2dDesc{
          .n = 2, .c = 40, .h = 15, .w = 17, .k = 48, .r = 3, .s = 3, .stride_w = 2, .pad_h = 2, .dilation_h = 2},
      Conv2dDesc{.n = 2, .c = 24, .h = 16, .w = 12, .k = 130, .r = 3, .s = 5, .pad_w = 2, .bias = true},
      Conv2dDesc{.n = 2, .c = 32, .h = 10, .w = 9, .k = 144, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 2},
      Conv2dDesc{.n = 3, .c = 64, .h = 7, .w = 9, .k = 48, .r = 1, .s = 1, .bias = true},
      Conv2dDesc{.n = 1, .c = 8, .h = 7, .w = 7, .k = 24, .r = 3, .s = 3, .groups = 8, .bias = true},
      // C*R*S = 9216: past the implicit GEMM's compile-time gather table.
      Conv2dDesc{.n = 1, .c = 1024, .h = 6, .w = 7, .k = 32, .r = 3, .s = 3, .pad_h = 1},
  };
}

TEST_F(Conv2dCorrectness, SixteenBitRandomDescriptorsMatchFloat64OnRoundedInputs) {
  const std::uint64_t seed = std::random_device{}();
  std::mt19937_64 rng(seed);
  RecordProperty("seed", std::to_string(seed));
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::vector<Conv2dDesc> descs = sixteen_bit_shapes();
  while (descs.size() < 40) descs.push_back(random_desc(rng));
  for (std::size_t i = 0; i < descs.size(); ++i) {
    Conv2dDesc d = descs[i];
    if (i % 3 == 1) d.activation = Activation::kRelu;
    SCOPED_TRACE(d.to_string() + " seed=" + std::to_string(seed));
    check_16bit(rt, d, rng);
  }
}

TEST_F(Conv2dCorrectness, SixteenBitKernelBenchProblemsScaledDownMatchReference) {
  std::mt19937_64 rng(std::random_device{}());
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  for (const auto& [name, full] : testing::kernelbench_2d_problems()) {
    const Conv2dDesc d = testing::scaled_down(full, 40);
    SCOPED_TRACE(name + ": " + d.to_string());
    check_16bit(rt, d, rng);
  }
}

// A long reduction (C*R*S = 2240, 70 k tiles) of all-positive data: a rounding bias or a
// lost k tile would show far above the output rounding.
TEST_F(Conv2dCorrectness, SixteenBitLongReductionOfPositiveDataStaysWithinBound) {
  std::mt19937_64 rng(std::random_device{}());
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  for (const int pad : {0, 2}) {
    const Conv2dDesc d{.n = 2,
                       .c = 64,
                       .h = 24,
                       .w = 20,
                       .k = 128,
                       .r = 5,
                       .s = 7,
                       .pad_h = pad,
                       .pad_w = pad,
                       .bias = true,
                       .activation = Activation::kRelu};
    SCOPED_TRACE(d.to_string());
    check_16bit(rt, d, rng, /*positive=*/true);
  }
}

// 16-bit NCHW problems with fewer than 16 channels a group on the mma.sync kernel (by
// default those with a reduction of at most 64; CONVJIT_NCHW_NARROW_MMA=1 sends every one
// there, as here): the networks' 3- and 4-channel stems (scaled down), odd sizes, stride,
// dilation, groups, bias and ReLU, against float64; the kernel's name says which ran.
TEST_F(Conv2dCorrectness, SixteenBitNarrowNchwStemsRunOnMmaSyncAndMatchFloat64) {
  std::mt19937_64 rng(1615);
  testing::ScopedEnv every("CONVJIT_NCHW_NARROW_MMA", "1");
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  const Conv2dDesc stems[] = {
      Conv2dDesc{.n = 2,
                 .c = 3,
                 .h = 45,
                 .w = 37,
                 .k = 64,
                 .r = 7,
                 .s = 7,
                 .stride_h = 2,
                 .stride_w = 2,
                 .pad_h = 3,
                 .pad_w = 3},
      Conv2dDesc{.n = 2, .c = 4, .h = 19, .w = 21, .k = 320, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      Conv2dDesc{.n = 3,
                 .c = 15,
                 .h = 13,
                 .w = 11,
                 .k = 40,
                 .r = 3,
                 .s = 5,
                 .pad_h = 2,
                 .pad_w = 4,
                 .dilation_h = 2,
                 .dilation_w = 2,
                 .bias = true,
                 .activation = Activation::kRelu},
      Conv2dDesc{.n = 2, .c = 8, .h = 12, .w = 14, .k = 24, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 2},
  };
  for (Conv2dDesc d : stems) {
    for (const DType dtype : k16BitTypes) {
      d.dtype = dtype;
      SCOPED_TRACE(d.to_string());
      const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
      EXPECT_TRUE(plan.kernel_name().starts_with("conv2d_igemm_")) << plan.kernel_name();
      const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm);
      EXPECT_EQ(result.unwritten, 0u);
      EXPECT_LT(result.rel_err, testing::tolerance(d));
    }
  }
}

// The pointwise GEMMs through cuBLASLt (the timing switch CONVJIT_CUBLASLT_ALGO): every
// entry of its heuristic's list, both layouts, groups, every dtype and mode, tensors at an
// element's offset (the alignment the list is asked for).
// The pointwise GEMMs through cuBLASLt: by default the fastest of the heuristic's first
// entries, timed on the first run (unset), each listed entry (CONVJIT_CUBLASLT_ALGO), and
// cublasGemmEx (CONVJIT_CUBLASLT_TUNE=0).
TEST_F(Conv2dCorrectness, PointwiseGemmsThroughCublasLtMatchFloat64TimedAndAtEveryListedAlgorithm) {
  std::mt19937_64 rng(1617);
  const std::pair<const char*, const char*> settings[] = {{nullptr, nullptr}, {"0", nullptr}, {"1", nullptr},
                                                          {"3", nullptr},     {"7", nullptr}, {nullptr, "0"}};
  for (const auto& [algo, tune] : settings) {
    testing::ScopedEnv pick("CONVJIT_CUBLASLT_ALGO", algo);
    testing::ScopedEnv timed("CONVJIT_CUBLASLT_TUNE", tune);
    Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
    for (Conv2dDesc d : {Conv2dDesc{.n = 3, .c = 16, .h = 23, .w = 29, .k = 96, .r = 1, .s = 1, .bias = true},
                         Conv2dDesc{.n = 2, .c = 64, .h = 17, .w = 19, .k = 40, .r = 1, .s = 1, .groups = 2}}) {
      for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
        for (const auto& [dtype, math] :
             {std::pair{DType::kFloat32, MathMode::kStrictFp32}, std::pair{DType::kFloat32, MathMode::kTF32},
              std::pair{DType::kFloat16, MathMode::kTF32}, std::pair{DType::kBFloat16, MathMode::kTF32}}) {
          d.layout = layout;
          d.dtype = dtype;
          d.math = math;
          for (const std::size_t offset : {std::size_t{0}, size_of(dtype)}) {
            SCOPED_TRACE(fmt::format("{} algorithm {} tune {} offset {}", d.to_string(), algo ? algo : "timed",
                                     tune ? tune : "on", offset));
            const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kIm2colGemm,
                                                      /*positive=*/false, offset);
            EXPECT_EQ(result.unwritten, 0u);
            EXPECT_LT(result.rel_err, testing::tolerance(d));
          }
        }
      }
    }
  }
}

// The chunked im2col path in 16 bits: workspace under the limit, results right.
TEST_F(Conv2dCorrectness, SixteenBitIm2colGemmKeepsItsWorkspaceUnderTheLimitAndStaysCorrect) {
  std::mt19937_64 rng(std::random_device{}());
  constexpr std::uint64_t kLimit = 32 * 1024;
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path(), .workspace_limit_bytes = kLimit});
  Conv2dDesc d{
      .n = 3, .c = 8, .h = 30, .w = 30, .k = 16, .r = 3, .s = 3, .bias = true, .activation = Activation::kRelu};
  for (const DType dtype : k16BitTypes) {
    d.dtype = dtype;
    const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kIm2colGemm});
    EXPECT_GT(plan.workspace_bytes(), 0u);
    EXPECT_LE(plan.workspace_bytes(), kLimit);
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kIm2colGemm);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, testing::tolerance(d));
  }
}

// kAuto and Runtime::conv2d (no plan) take 16-bit data too.
TEST_F(Conv2dCorrectness, SixteenBitConv2dWithAutomaticChoiceMatchesReference) {
  std::mt19937_64 rng(std::random_device{}());
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  for (Conv2dDesc d : sixteen_bit_shapes()) {
    for (const DType dtype : k16BitTypes) {
      d.dtype = dtype;
      SCOPED_TRACE(d.to_string());
      const auto result = testing::check_on_gpu(rt, d, rng);
      EXPECT_EQ(result.unwritten, 0u);
      EXPECT_LT(result.rel_err, testing::tolerance(d));
    }
  }
}

TEST_F(Conv2dCorrectness, PlanRunMatchesReference) {
  std::mt19937_64 rng(std::random_device{}());
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  const Conv2dDesc d{.n = 2,
                     .c = 6,
                     .h = 15,
                     .w = 10,
                     .k = 10,
                     .r = 3,
                     .s = 2,
                     .stride_w = 2,
                     .pad_h = 1,
                     .groups = 2,
                     .bias = true,
                     .math = MathMode::kStrictFp32};
  for (int i = 0; i < 3; ++i) {
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, testing::tolerance(d));
  }
}

}  // namespace
}  // namespace convjit
