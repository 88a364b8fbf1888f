// The direct kernel against a float64 CPU reference: random shapes and KernelBench's 2D set.
#include <gtest/gtest.h>

#include "support/gpu.hpp"
#include "support/gpu_conv.hpp"
#include "support/temp_dir.hpp"
#include "support/workloads.hpp"

namespace convjit {
namespace {

constexpr double kStrictFp32Tolerance = 1e-5;

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

TEST_F(Conv2dCorrectness, SeventyRandomDescriptorsMatchFloat64Reference) {
  const std::uint64_t seed = std::random_device{}();
  std::mt19937_64 rng(seed);
  RecordProperty("seed", std::to_string(seed));
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::vector<Conv2dDesc> descs = {
      Conv2dDesc{.n = 1, .c = 3, .h = 11, .w = 1, .k = 17, .r = 3, .s = 1, .pad_h = 1, .bias = true},
      Conv2dDesc{.n = 2, .c = 16, .h = 9, .w = 13, .k = 16, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 16},
      Conv2dDesc{.n = 1, .c = 8, .h = 7, .w = 7, .k = 24, .r = 3, .s = 3, .groups = 8, .bias = true},
      Conv2dDesc{.n = 3, .c = 5, .h = 1, .w = 1, .k = 7, .r = 1, .s = 1},
      Conv2dDesc{.n = 1, .c = 3, .h = 31, .w = 29, .k = 17, .r = 7, .s = 5, .stride_h = 3, .stride_w = 2, .pad_h = 3,
                 .pad_w = 2, .dilation_h = 2, .dilation_w = 3},
  };
  while (descs.size() < 70) descs.push_back(random_desc(rng));
  for (const auto& d : descs) {
    SCOPED_TRACE(d.to_string() + " seed=" + std::to_string(seed));
    const auto result = testing::check_on_gpu(rt, d, rng);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, kStrictFp32Tolerance);
  }
}

TEST_F(Conv2dCorrectness, KernelBench2dForwardProblemsScaledDownMatchReference) {
  std::mt19937_64 rng(std::random_device{}());
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  const auto problems = testing::kernelbench_2d_problems();
  ASSERT_GE(problems.size(), 12u);  // 50, 55, 56, 62, 63, 80, 82..85, 87 and 86 as two convs
  for (const auto& [name, full] : problems) {
    const Conv2dDesc d = testing::scaled_down(full, 40);
    SCOPED_TRACE(name + ": " + d.to_string());
    const auto result = testing::check_on_gpu(rt, d, rng);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, kStrictFp32Tolerance);
  }
}

TEST_F(Conv2dCorrectness, PlanRunMatchesReference) {
  std::mt19937_64 rng(std::random_device{}());
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  const Conv2dDesc d{.n = 2, .c = 6, .h = 15, .w = 10, .k = 10, .r = 3, .s = 2, .stride_w = 2, .pad_h = 1,
                     .groups = 2, .bias = true};
  for (int i = 0; i < 3; ++i) {
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, kStrictFp32Tolerance);
  }
}

}  // namespace
}  // namespace convjit
