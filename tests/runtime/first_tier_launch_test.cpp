// The first tier on the fake driver (RuntimeOptions::first_tier): which kernel each
// Runtime::conv2d call launches, what is compiled and when, and what the tier leaves
// alone (a cached kernel, a capture, bad arguments, a build that fails). The generic
// kernel's arithmetic is checked on a GPU (tests/gpu/first_tier_correctness_test.cpp).
#include <optional>
#include <string>

#include "support/fake_driver_test.hpp"

namespace convjit {
namespace {

using testing::expect_error;
using testing::FakeStream;
using testing::Operands;

// On the fake's sm_90 the specialized kernel is a wgmma one, compiled by NVRTC.
const Conv2dDesc kProblem{
    .n = 2, .c = 16, .h = 9, .w = 7, .k = 32, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};

bool is_generic(const testing::FakeLaunch& launch) { return launch.function.rfind("convjit_generic_", 0) == 0; }

class FirstTierLaunch : public testing::FakeDriverTest {
 protected:
  RuntimeOptions tier_options() const {
    RuntimeOptions o = options();
    o.first_tier = true;
    return o;
  }
};

TEST_F(FirstTierLaunch, AColdCallRunsTheGenericKernelWhileItsKernelCompilesThenTheCompiledOne) {
  Runtime rt(tier_options());
  Operands ops(kProblem);
  rt.conv2d(kProblem, ops.args());
  auto got = launches_since(0);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].function, "convjit_generic_f32_c64");
  // 2 x 9 x 7 output pixels in tiles of 64 rows, 32 filters in one 64-column tile.
  EXPECT_EQ(got[0].grid[0], 2u);
  EXPECT_EQ(got[0].block[0], 256u);
  EXPECT_EQ(rt.stats().first_tier_runs, 1u);

  rt.wait_for_compiles();
  CacheStats s = rt.stats();
  EXPECT_EQ(s.background_builds, 1u);
  EXPECT_EQ(s.compiles, 1u);
  EXPECT_EQ(s.background_failures, 0u);

  const std::size_t before = launch_count();
  rt.conv2d(kProblem, ops.args());
  got = launches_since(before);
  ASSERT_FALSE(got.empty());
  for (const auto& launch : got) EXPECT_FALSE(is_generic(launch)) << launch.function;
  s = rt.stats();
  EXPECT_EQ(s.first_tier_runs, 1u);
  EXPECT_EQ(s.compiles, 1u);
}

// On by default: a Runtime whose options leave it empty serves a cold call from the tier
// unless CONVJIT_FIRST_TIER is 0 (the test programs set it so for every other test:
// support/first_tier_off.cpp); an explicit option wins over the variable.
TEST_F(FirstTierLaunch, IsOnByDefaultAndOffWithTheVariableAtZeroOrTheOption) {
  Operands ops(kProblem);
  // A Runtime's first conv2d of the problem, on an empty cache of its own (`dir`), with
  // RuntimeOptions::first_tier as `option`: its counters right after the call.
  const auto first_call = [&](const char* dir, std::optional<bool> option) {
    RuntimeOptions o = options();
    o.cache_dir = o.cache_dir / dir;
    o.first_tier = option;
    Runtime rt(o);
    rt.conv2d(kProblem, ops.args());
    const CacheStats s = rt.stats();
    rt.wait_for_compiles();
    return s;
  };
  {
    testing::ScopedEnv unset("CONVJIT_FIRST_TIER", nullptr);
    EXPECT_EQ(first_call("default", std::nullopt).first_tier_runs, 1u);
  }
  {
    testing::ScopedEnv off("CONVJIT_FIRST_TIER", "0");
    const CacheStats s = first_call("off", std::nullopt);
    EXPECT_EQ(s.first_tier_runs, 0u);
    EXPECT_EQ(s.compiles, 1u);
    EXPECT_EQ(first_call("forced", true).first_tier_runs, 1u);
  }
  {
    testing::ScopedEnv on("CONVJIT_FIRST_TIER", "1");
    EXPECT_EQ(first_call("option_off", false).first_tier_runs, 0u);
  }
}

TEST_F(FirstTierLaunch, GroupsOfFewFiltersTakeTheNarrowTileAndSixteenBitDataItsOwnEntryPoint) {
  Runtime rt(tier_options());
  const Conv2dDesc depthwise{.n = 1,
                             .c = 8,
                             .h = 20,
                             .w = 20,
                             .k = 8,
                             .r = 3,
                             .s = 3,
                             .groups = 8,
                             .dtype = DType::kBFloat16,
                             .layout = Layout::kNHWC};
  Operands ops(depthwise);
  rt.conv2d(depthwise, ops.args(2, 2, 0, 2));  // pointers 2 bytes past 16-byte alignment: legal for bf16
  const auto got = launches_since(0);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].function, "convjit_generic_bf16_c16");
  // 18 x 18 pixels in tiles of 256 rows; one 16-column tile a group, 8 groups.
  EXPECT_EQ(got[0].grid[0], 2u * 8u);
}

TEST_F(FirstTierLaunch, ADynamicBatchRunSizesTheGenericGridForItsOwnBatch) {
  Runtime rt(tier_options());
  Conv2dDesc d = kProblem;
  d.n = 64;
  d.dynamic_batch = true;
  Operands ops(d);
  Conv2dArgs args = ops.args();
  args.n = 3;
  rt.conv2d(d, args);
  const auto got = launches_since(0);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].grid[0], 3u);  // 3 x 63 pixels in tiles of 64
}

TEST_F(FirstTierLaunch, AProblemWhoseGenericRunWouldOutlastItsCompileWaitsForTheCompile) {
  Runtime rt(tier_options());
  // The headline at 64 images: 2.3e12 multiply-adds, about half a second of the generic
  // kernel. A dynamic batch sizes the prediction by its largest batch, so a run of one
  // image (whose buffers the fake can hold) must wait too.
  const Conv2dDesc d{.n = 64, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7, .dynamic_batch = true};
  Conv2dDesc one = d;
  one.n = 1;
  one.dynamic_batch = false;
  Operands ops(one);
  Conv2dArgs args = ops.args();
  args.n = 1;
  rt.conv2d(d, args);
  for (const auto& launch : launches_since(0)) EXPECT_FALSE(is_generic(launch)) << launch.function;
  EXPECT_EQ(rt.stats().first_tier_runs, 0u);
  EXPECT_EQ(rt.stats().compiles, 1u);
}

TEST_F(FirstTierLaunch, AKernelAlreadyOnDiskIsLoadedNotStoodInFor) {
  Operands ops(kProblem);
  {
    Runtime warm(options());
    warm.conv2d(kProblem, ops.args());
  }
  fake().reset();
  Runtime rt(tier_options());
  rt.conv2d(kProblem, ops.args());
  for (const auto& launch : launches_since(0)) EXPECT_FALSE(is_generic(launch)) << launch.function;
  const CacheStats s = rt.stats();
  EXPECT_EQ(s.first_tier_runs, 0u);
  EXPECT_EQ(s.disk_hits, 1u);
  EXPECT_EQ(s.compiles, 0u);
}

TEST_F(FirstTierLaunch, ACapturingStreamGetsTheSpecializedKernelAndAValidCapture) {
  Runtime rt(tier_options());
  FakeStream stream;
  Operands ops(kProblem);
  fake().set_capturing(stream.get(), true);
  rt.conv2d(kProblem, ops.args(), stream);
  for (const auto& launch : launches_since(0)) {
    EXPECT_FALSE(is_generic(launch)) << launch.function;
    EXPECT_TRUE(launch.captured);
  }
  EXPECT_FALSE(fake().capture_invalidated(stream.get()));
  EXPECT_EQ(rt.stats().first_tier_runs, 0u);
  EXPECT_EQ(rt.stats().compiles, 1u);
}

TEST_F(FirstTierLaunch, BadArgumentsThrowAndNeitherLaunchNorCompile) {
  Runtime rt(tier_options());
  Operands ops(kProblem);
  Conv2dArgs no_x = ops.args();
  no_x.x = nullptr;
  expect_error(ErrorCode::kInvalidArgument, [&] { rt.conv2d(kProblem, no_x); }, {"x is null"});
  expect_error(ErrorCode::kInvalidArgument, [&] { rt.conv2d(kProblem, ops.args(1)); }, {"4-byte aligned"});
  Conv2dDesc bad = kProblem;
  bad.c = 15;
  bad.groups = 2;
  expect_error(ErrorCode::kInvalidArgument, [&] { rt.conv2d(bad, ops.args()); });
  rt.wait_for_compiles();
  EXPECT_EQ(launch_count(), 0u);
  const CacheStats s = rt.stats();
  EXPECT_EQ(s.compiles, 0u);
  EXPECT_EQ(s.background_builds, 0u);
  EXPECT_EQ(s.first_tier_runs, 0u);
}

TEST_F(FirstTierLaunch, ABuildThatFailsBehindTheTierIsReportedByTheNextCall) {
  Runtime rt(tier_options());
  // Another problem first, so that the generic kernel's module is loaded before every
  // module load fails: then only the background build's load can fail.
  Conv2dDesc first = kProblem;
  first.k = 8;
  Operands first_ops(first);
  rt.conv2d(first, first_ops.args());
  rt.wait_for_compiles();
  fake().fail_next("cuModuleLoadData", CUDA_ERROR_OUT_OF_MEMORY, -1);

  Operands ops(kProblem);
  const std::size_t before = launch_count();
  rt.conv2d(kProblem, ops.args());
  const auto got = launches_since(before);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(is_generic(got[0])) << got[0].function;
  rt.wait_for_compiles();
  EXPECT_EQ(rt.stats().background_failures, 1u);
  expect_error(ErrorCode::kDriver, [&] { rt.conv2d(kProblem, ops.args()); }, {"CUDA_ERROR_OUT_OF_MEMORY"});
  EXPECT_EQ(launch_count(), before + 1);
}

TEST_F(FirstTierLaunch, PlansAndTheTierOffCompileBeforeTheirFirstLaunch) {
  Operands ops(kProblem);
  {
    Runtime rt(tier_options());
    const Conv2dPlan plan = rt.plan(kProblem);
    plan.run(ops.args());
    EXPECT_EQ(rt.stats().first_tier_runs, 0u);
  }
  Runtime off(options());
  Conv2dDesc other = kProblem;
  other.k = 48;
  off.conv2d(other, ops.args());
  for (const auto& launch : launches_since(0)) EXPECT_FALSE(is_generic(launch)) << launch.function;
  EXPECT_EQ(off.stats().first_tier_runs, 0u);
}

TEST_F(FirstTierLaunch, ARuntimeGoneWhileItsBuildsRunJoinsThemAndLeavesNothingLoaded) {
  {
    Runtime rt(tier_options());
    for (int k : {8, 24, 40, 56, 72}) {
      Conv2dDesc d = kProblem;
      d.k = k;
      Operands ops(d);
      rt.conv2d(d, ops.args());
    }
    EXPECT_EQ(rt.stats().first_tier_runs, 5u);
  }
  EXPECT_EQ(fake().live_modules(), 0u);
  EXPECT_EQ(fake().destroyed_with_context(), 0u);
}

}  // namespace
}  // namespace convjit
