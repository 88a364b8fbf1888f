// Issue 15 on a real GPU: 1-D, 3-D and transposed convolutions (1-D, 2-D and 3-D) against
// the float64 reference, in both layouts, every data type and math mode, through every
// algorithm that accepts them (why_unsupported decides, so a family that learns a new
// rank or the transposed map joins these tests by itself), and kAuto. Random descriptors
// with odd sizes, strides 1-3, padding, output_padding, dilation 1-3, groups, bias and
// ReLU; then the 23 KernelBench problems that are not 2-D forward, scaled down; then
// im2col's chunking of 3-D rows and its repacked transposed weights. Plans
// compile in parallel first; the problems are small enough for compute-sanitizer memcheck
// (`--gtest_filter='ConvNdCorrectness*'`).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <exception>
#include <mutex>
#include <thread>

#include "support/gpu.hpp"
#include "support/gpu_conv.hpp"
#include "support/random_desc.hpp"
#include "support/temp_dir.hpp"
#include "support/workloads.hpp"

namespace convjit {
namespace {

struct Mode {
  DType dtype;
  MathMode math;
};
constexpr Mode kModes[] = {{DType::kFloat32, MathMode::kTF32},  {DType::kFloat32, MathMode::kStrictFp32},
                           {DType::kFloat16, MathMode::kTF32},  {DType::kFloat16, MathMode::kStrictFp32},
                           {DType::kBFloat16, MathMode::kTF32}, {DType::kBFloat16, MathMode::kStrictFp32}};

using testing::random_nd_desc;

struct Case {
  Conv2dDesc desc;
  Algorithm algorithm;
  std::string label;
};

class ConvNdCorrectness : public ::testing::Test {
 protected:
  void SetUp() override { CONVJIT_REQUIRE_GPU(); }

  // Every algorithm that takes `d`, and kAuto.
  static void add_cases(std::vector<Case>& cases, const Conv2dDesc& d, const std::string& label) {
    for (Algorithm a : {Algorithm::kAuto, Algorithm::kDirect, Algorithm::kImplicitGemm, Algorithm::kIm2colGemm}) {
      if (!why_unsupported(d, a, "")) cases.push_back({d, a, label});
    }
  }

  // Compiles every plan on a few threads first, then checks each case in turn.
  void run_cases(const std::vector<Case>& cases, std::uint64_t seed) {
    Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
    std::atomic<std::size_t> next{0};
    std::mutex failure_mutex;
    std::string failure;
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i) {
      threads.emplace_back([&] {
        for (std::size_t j = next++; j < cases.size(); j = next++) {
          try {
            (void)rt.plan(cases[j].desc, PlanOptions{.algorithm = cases[j].algorithm});
          } catch (const std::exception& e) {
            const std::lock_guard lock(failure_mutex);
            failure += fmt::format("{}: {}\n", cases[j].desc.to_string(), e.what());
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    ASSERT_TRUE(failure.empty()) << failure;
    std::mt19937_64 rng(seed);
    for (const auto& c : cases) {
      SCOPED_TRACE(fmt::format("{} [{}] algorithm {}", c.desc.to_string(), c.label, to_string(c.algorithm)));
      const auto result = testing::check_on_gpu(rt, c.desc, rng, /*use_plan=*/true, c.algorithm);
      EXPECT_EQ(result.unwritten, 0u);
      EXPECT_LT(result.rel_err, testing::tolerance(c.desc));
    }
  }

  testing::TempDir dir_;
};

TEST_F(ConvNdCorrectness, RandomOneDimensionalProblemsMatchFloat64InEveryDtypeModeAndAlgorithm) {
  std::mt19937_64 rng(1501);
  std::vector<Case> cases;
  for (int i = 0; i < 6; ++i) {
    Conv2dDesc d = random_nd_desc(rng, 0);
    for (const Mode& m : kModes) {
      d.dtype = m.dtype;
      d.math = m.math;
      add_cases(cases, d, "1-D");
    }
  }
  run_cases(cases, 15011);
}

TEST_F(ConvNdCorrectness, RandomThreeDimensionalProblemsMatchFloat64InEveryDtypeModeAndAlgorithm) {
  std::mt19937_64 rng(1502);
  std::vector<Case> cases;
  for (int i = 0; i < 6; ++i) {
    Conv2dDesc d = random_nd_desc(rng, 1);
    for (const Mode& m : kModes) {
      d.dtype = m.dtype;
      d.math = m.math;
      add_cases(cases, d, "3-D");
    }
  }
  run_cases(cases, 15021);
}

TEST_F(ConvNdCorrectness, RandomTransposedProblemsOfEveryRankMatchFloat64InEveryDtypeModeAndAlgorithm) {
  std::mt19937_64 rng(1503);
  std::vector<Case> cases;
  for (int kind : {2, 3, 4}) {
    for (int i = 0; i < 4; ++i) {
      Conv2dDesc d = random_nd_desc(rng, kind);
      for (const Mode& m : kModes) {
        d.dtype = m.dtype;
        d.math = m.math;
        add_cases(cases, d, fmt::format("transposed {}-D", d.spatial_dims));
      }
    }
  }
  run_cases(cases, 15031);
}

// Every stride, padding, output_padding and dilation of a transposed dimension that
// PyTorch allows, small, so that each phase of a strided map (which outputs a tap reaches)
// is covered, including outputs that no tap reaches (bias only).
TEST_F(ConvNdCorrectness, TransposedEveryStridePaddingOutputPaddingAndDilationMatchesFloat64) {
  std::vector<Case> cases;
  for (int stride = 1; stride <= 3; ++stride) {
    for (int dilation = 1; dilation <= 3; ++dilation) {
      for (int pad = 0; pad <= 2; ++pad) {
        for (int output_padding = 0; output_padding < std::max(stride, dilation); ++output_padding) {
          Conv2dDesc d{.n = 2,
                       .c = 3,
                       .w = 7,
                       .k = 5,
                       .s = 3,
                       .stride_w = stride,
                       .pad_w = pad,
                       .dilation_w = dilation,
                       .bias = true,
                       .spatial_dims = 1,
                       .transposed = true,
                       .output_padding_w = output_padding};
          if (d.output_shape().q < 1) continue;
          for (const Mode& m : {kModes[1], kModes[3]}) {
            d.dtype = m.dtype;
            d.math = m.math;
            add_cases(cases, d, "transposed sweep");
          }
        }
      }
    }
  }
  run_cases(cases, 15041);
}

// The direct kernel's blocks each take one phase of a strided transposed output (o mod
// stride): phase grids of several blocks, phases a row or column short of the first
// (extents that the stride does not divide), phases that no tap reaches (stride above
// the filter's reach: bias only), strides that differ between dimensions, groups, both
// layouts, 2-D and 3-D, every dtype and math mode.
TEST_F(ConvNdCorrectness, StridedTransposedPhasesOnTheDirectKernelMatchFloat64) {
  std::vector<Case> cases;
  const Conv2dDesc problems[] = {
      {.n = 2,
       .c = 6,
       .h = 23,
       .w = 29,
       .k = 10,
       .r = 3,
       .s = 5,
       .stride_h = 2,
       .stride_w = 3,
       .pad_h = 1,
       .pad_w = 2,
       .dilation_h = 2,
       .groups = 2,
       .bias = true,
       .transposed = true,
       .output_padding_w = 1},
      {.n = 1,
       .c = 5,
       .h = 13,
       .w = 17,
       .k = 7,
       .r = 3,
       .s = 3,
       .stride_h = 5,
       .stride_w = 5,
       .pad_h = 1,
       .pad_w = 1,
       .dilation_h = 2,
       .dilation_w = 2,
       .bias = true,
       .activation = Activation::kRelu,
       .transposed = true},
      {.n = 2,
       .c = 8,
       .h = 7,
       .w = 11,
       .k = 8,
       .r = 3,
       .s = 5,
       .stride_h = 2,
       .stride_w = 3,
       .pad_h = 1,
       .pad_w = 2,
       .groups = 4,
       .bias = true,
       .spatial_dims = 3,
       .d = 5,
       .t = 3,
       .stride_d = 2,
       .pad_d = 1,
       .transposed = true,
       .output_padding_d = 1},
  };
  for (Conv2dDesc d : problems) {
    for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
      d.layout = layout;
      for (const Mode& m : kModes) {
        d.dtype = m.dtype;
        d.math = m.math;
        d.validate();
        cases.push_back({d, Algorithm::kDirect, "phases"});
      }
    }
  }
  run_cases(cases, 15061);
}

TEST_F(ConvNdCorrectness, KernelBenchOneThreeDimensionalAndTransposedProblemsScaledDownMatchFloat64) {
  std::vector<Case> cases;
  for (const auto& [name, full] : testing::kernelbench_problems()) {
    if (full.spatial_dims == 2 && !full.transposed) continue;
    Conv2dDesc d = testing::scaled_down(full, full.spatial_dims == 3 ? 9 : full.spatial_dims == 2 ? 17 : 67);
    d.n = std::min(d.n, 2);
    for (const Mode& m : kModes) {
      d.dtype = m.dtype;
      d.math = m.math;
      add_cases(cases, d, name);
    }
  }
  EXPECT_GE(cases.size(), 23u * std::size(kModes));
  run_cases(cases, 15051);
}

// Stride-1 transposed NCHW problems on the implicit GEMM (mma.sync: flipped, swapped
// filter read in place; on Hopper the wgmma kernels take those with a forward twin, the
// first one here, and transposed_wgmma_correctness_test.cpp covers them): tiles of every channel size the tile choice
// has (up to 128 output channels, more than one block of pixels), padding from none to past the filter's reach (a
// negative forward padding), dilation, output_padding, groups, 1-D and 2-D, every dtype and math mode.
TEST_F(ConvNdCorrectness, StrideOneTransposedOnTheImplicitGemmMatchesFloat64) {
  std::vector<Case> cases;
  const Conv2dDesc shapes[] = {
      {.n = 2, .c = 40, .h = 13, .w = 17, .k = 136, .r = 3, .s = 3, .bias = true, .transposed = true},
      {.n = 1,
       .c = 24,
       .h = 9,
       .w = 21,
       .k = 72,
       .r = 3,
       .s = 5,
       .pad_h = 1,
       .pad_w = 4,
       .dilation_w = 2,
       .groups = 2,
       .bias = true,
       .activation = Activation::kRelu,
       .transposed = true,
       .output_padding_w = 1},
      {.n = 3, .c = 16, .h = 6, .w = 7, .k = 20, .r = 2, .s = 3, .pad_h = 2, .pad_w = 3, .transposed = true},
      {.n = 2,
       .c = 33,
       .w = 301,
       .k = 48,
       .s = 5,
       .pad_w = 2,
       .dilation_w = 3,
       .spatial_dims = 1,
       .transposed = true,
       .output_padding_w = 2},
      {.n = 2,
       .c = 12,
       .h = 11,
       .w = 10,
       .k = 8,
       .r = 4,
       .s = 4,
       .pad_h = 1,
       .pad_w = 2,
       .dilation_h = 2,
       .transposed = true,
       .output_padding_h = 1},
  };
  for (Conv2dDesc d : shapes) {
    for (const Mode& m : kModes) {
      d.dtype = m.dtype;
      d.math = m.math;
      ASSERT_FALSE(why_unsupported(d, Algorithm::kImplicitGemm, "")) << d.to_string();
      cases.push_back({d, Algorithm::kImplicitGemm, "transposed implicit GEMM"});
    }
  }
  run_cases(cases, 15071);
}

// 3-D on the mma.sync implicit GEMM (NCDHW depth gather), forward and stride-1
// transposed: tiles of every channel size (up to more than 128 output channels), depth
// padding, dilation and stride, output_padding in depth, groups, a window that the
// padding crops past the filter's reach, every dtype and math mode.
TEST_F(ConvNdCorrectness, ThreeDimensionalOnTheImplicitGemmMatchesFloat64) {
  std::vector<Case> cases;
  const Conv2dDesc shapes[] = {
      {.n = 2,
       .c = 20,
       .h = 9,
       .w = 11,
       .k = 136,
       .r = 3,
       .s = 3,
       .pad_h = 1,
       .pad_w = 1,
       .bias = true,
       .spatial_dims = 3,
       .d = 7,
       .t = 3,
       .pad_d = 1},
      {.n = 1,
       .c = 12,
       .h = 10,
       .w = 9,
       .k = 40,
       .r = 3,
       .s = 2,
       .stride_h = 2,
       .dilation_w = 2,
       .groups = 2,
       .activation = Activation::kRelu,
       .spatial_dims = 3,
       .d = 9,
       .t = 2,
       .stride_d = 2,
       .pad_d = 2,
       .dilation_d = 3},
      {.n = 2, .c = 3, .h = 12, .w = 13, .k = 64, .r = 3, .s = 3, .spatial_dims = 3, .d = 5, .t = 3},
      {.n = 2,
       .c = 16,
       .h = 6,
       .w = 7,
       .k = 72,
       .r = 3,
       .s = 3,
       .pad_h = 1,
       .bias = true,
       .spatial_dims = 3,
       .d = 5,
       .t = 3,
       .dilation_d = 2,
       .transposed = true,
       .output_padding_d = 1},
      {.n = 1,
       .c = 24,
       .h = 5,
       .w = 6,
       .k = 24,
       .r = 2,
       .s = 3,
       .pad_w = 3,
       .groups = 3,
       .spatial_dims = 3,
       .d = 4,
       .t = 2,
       .pad_d = 2,
       .transposed = true},
  };
  for (Conv2dDesc d : shapes) {
    for (const Mode& m : kModes) {
      d.dtype = m.dtype;
      d.math = m.math;
      ASSERT_FALSE(why_unsupported(d, Algorithm::kImplicitGemm, "")) << d.to_string();
      cases.push_back({d, Algorithm::kImplicitGemm, "3-D implicit GEMM"});
    }
  }
  run_cases(cases, 15081);
}

// im2col + cuBLAS on 3-D and transposed problems under workspace limits that cut the
// columns into chunks of output rows spanning several depths (and one whole image a
// chunk), in both layouts, with the transposed weights repacked into the same workspace:
// every chunk boundary and the packed copy's place must agree with the kernels'.
TEST_F(ConvNdCorrectness, Im2colChunksOfDepthRowsAndRepackedTransposedWeightsMatchFloat64) {
  std::mt19937_64 rng(1506);
  const Conv2dDesc shapes[] = {
      {.n = 2,
       .c = 6,
       .h = 7,
       .w = 9,
       .k = 10,
       .r = 3,
       .s = 2,
       .pad_h = 1,
       .bias = true,
       .spatial_dims = 3,
       .d = 5,
       .t = 3,
       .stride_d = 1,
       .pad_d = 1},
      {.n = 2,
       .c = 8,
       .h = 5,
       .w = 6,
       .k = 12,
       .r = 3,
       .s = 3,
       .stride_h = 2,
       .stride_w = 2,
       .pad_h = 1,
       .pad_w = 1,
       .groups = 2,
       .bias = true,
       .activation = Activation::kRelu,
       .spatial_dims = 3,
       .d = 4,
       .t = 2,
       .stride_d = 2,
       .transposed = true,
       .output_padding_h = 1},
      {.n = 3,
       .c = 16,
       .h = 11,
       .w = 13,
       .k = 24,
       .r = 4,
       .s = 4,
       .stride_h = 2,
       .stride_w = 2,
       .pad_h = 1,
       .pad_w = 1,
       .bias = true,
       .transposed = true},
  };
  // 64 KiB: the third shape's output row of columns (26 KiB) must fit beside the
  // repacked weights and cuBLAS's share; the first two still cut into several chunks.
  for (const std::uint64_t limit : {std::uint64_t{64} << 10, std::uint64_t{256} << 20}) {
    Runtime rt(RuntimeOptions{.cache_dir = dir_.path(), .workspace_limit_bytes = limit});
    for (Conv2dDesc d : shapes) {
      for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
        for (const Mode& m : kModes) {
          d.layout = layout;
          d.dtype = m.dtype;
          d.math = m.math;
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

}  // namespace
}  // namespace convjit
