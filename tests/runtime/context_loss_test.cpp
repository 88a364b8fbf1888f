// Driver errors on the launch path, injected by the fake driver: which ones blame the
// cache (an image the driver refuses: rebuilt once), which ones lose the context (sticky
// errors: remembered, every later call fails at once) and which ones are neither.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "support/fake_driver_test.hpp"

namespace convjit {
namespace {

using testing::expect_error;
using testing::Operands;

// Small problems (a compile each is about a second on a CPU): the first reaches the
// wgmma kernel on the fake's sm_90, the second the direct kernel.
const Conv2dDesc kWgmma{.n = 1, .c = 16, .h = 8, .w = 8, .k = 32, .r = 3, .s = 3, .bias = true};
const Conv2dDesc kDirect{.n = 1, .c = 3, .h = 8, .w = 8, .k = 4, .r = 3, .s = 3};
const Conv2dDesc kOther{.n = 1, .c = 4, .h = 6, .w = 6, .k = 8, .r = 3, .s = 3};

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

ino_t inode_of(const std::filesystem::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

class ContextLoss : public testing::FakeDriverTest {
 protected:
  // Compiles `desc` for sm_90 into the cache directory with a Runtime of its own, so that
  // the test's Runtime reads the entry from disk; returns the entry's path.
  std::filesystem::path prewarm(const Conv2dDesc& desc) {
    Runtime warm(options());
    const auto result = warm.prewarm(std::vector{desc}, "sm_90");
    EXPECT_EQ(result.compiled, 1u) << (result.errors.empty() ? "" : result.errors.front());
    return warm.inspect(desc, "sm_90").cache_path;
  }
};

TEST_F(ContextLoss, StickyErrorFromAModuleLoadNeverRewritesTheCacheEntryAndLosesTheContext) {
  const auto entry = prewarm(kWgmma);
  const std::string bytes = read_file(entry);
  ASSERT_FALSE(bytes.empty());
  Runtime rt(options());

  fake().fail_next("cuModuleLoadData", CUDA_ERROR_ILLEGAL_ADDRESS);
  expect_error(ErrorCode::kContextLost, [&] { rt.plan(kWgmma); }, {"CUDA_ERROR_ILLEGAL_ADDRESS"});
  EXPECT_EQ(read_file(entry), bytes);
  EXPECT_EQ(rt.stats().disk_hits, 1u);
  EXPECT_EQ(rt.stats().compiles, 0u);
  EXPECT_EQ(rt.stats().corrupt_rebuilt, 0u);
  EXPECT_EQ(rt.stats().disk_writes, 0u);
  EXPECT_EQ(fake().calls("cuModuleLoadData"), 1u);

  // Another problem in the same context: refused at once, naming the first error, with
  // no compile and no module load.
  expect_error(ErrorCode::kContextLost, [&] { rt.plan(kOther); }, {"unusable", "CUDA_ERROR_ILLEGAL_ADDRESS"});
  EXPECT_EQ(rt.stats().compiles, 0u);
  EXPECT_EQ(rt.stats().misses, 0u);
  EXPECT_EQ(fake().calls("cuModuleLoadData"), 1u);
  EXPECT_EQ(read_file(entry), bytes);
}

TEST_F(ContextLoss, ImageErrorRecompilesOnceRewritesTheEntryAndThePlanWorks) {
  const auto entry = prewarm(kWgmma);
  const ino_t before = inode_of(entry);
  Runtime rt(options());

  fake().fail_next("cuModuleLoadData", CUDA_ERROR_INVALID_IMAGE);
  const Conv2dPlan plan = rt.plan(kWgmma);
  const auto stats = rt.stats();
  EXPECT_EQ(stats.corrupt_rebuilt, 1u);
  EXPECT_EQ(stats.compiles, 1u);
  EXPECT_EQ(stats.disk_writes, 1u);
  EXPECT_NE(inode_of(entry), before) << "the entry was not replaced";
  EXPECT_EQ(fake().calls("cuModuleLoadData"), 2u);
  EXPECT_EQ(fake().module_loads(), 1u);
  EXPECT_EQ(fake().last_module_image(), rt.inspect(kWgmma, "sm_90").cubin);

  Operands ops(kWgmma);
  plan.run(ops.args());
  ASSERT_EQ(launch_count(), 2u);  // the weight pack, then the convolution
  EXPECT_EQ(fake().launches().back().function, plan.kernel_name());
}

TEST_F(ContextLoss, OtherModuleLoadFailuresNeitherBlameTheCacheNorLoseTheContext) {
  const auto entry = prewarm(kWgmma);
  const std::string bytes = read_file(entry);
  Runtime rt(options());

  fake().fail_next("cuModuleLoadData", CUDA_ERROR_OUT_OF_MEMORY);
  expect_error(ErrorCode::kDriver, [&] { rt.plan(kWgmma); }, {"CUDA_ERROR_OUT_OF_MEMORY"});
  EXPECT_EQ(read_file(entry), bytes);
  EXPECT_EQ(rt.stats().compiles, 0u);
  EXPECT_EQ(rt.stats().corrupt_rebuilt, 0u);

  // The context is fine: the next try loads the same entry and runs.
  const Conv2dPlan plan = rt.plan(kWgmma);
  EXPECT_EQ(rt.stats().compiles, 0u);
  Operands ops(kWgmma);
  plan.run(ops.args());
  EXPECT_EQ(launch_count(), 2u);
  EXPECT_EQ(read_file(entry), bytes);
}

TEST_F(ContextLoss, StickyErrorFromALaunchMakesEveryLaterRunAndPlanFailFast) {
  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(kDirect);
  const Conv2dPlan packing = rt.plan(kWgmma);
  Operands ops(kDirect);
  Operands wgmma_ops(kWgmma);
  const auto stats = rt.stats();
  const auto loads = fake().calls("cuModuleLoadData");
  const auto allocations = fake().calls("cuMemAlloc");

  fake().fail_next("cuLaunchKernel", CUDA_ERROR_MISALIGNED_ADDRESS);
  expect_error(ErrorCode::kContextLost, [&] { plan.run(ops.args()); }, {"CUDA_ERROR_MISALIGNED_ADDRESS"});
  EXPECT_EQ(fake().calls("cuLaunchKernel"), 1u);

  // Nothing reaches the driver any more: not the plan's next run, not another plan made
  // before, not a new problem (no compile, no load), not Runtime::conv2d.
  const auto lost = [&](auto call) {
    expect_error(ErrorCode::kContextLost, call, {"unusable", "CUDA_ERROR_MISALIGNED_ADDRESS"});
  };
  lost([&] { plan.run(ops.args()); });
  lost([&] { packing.run(wgmma_ops.args()); });
  lost([&] { packing.pack_weights(wgmma_ops.w.at(), wgmma_ops.y.at()); });
  lost([&] { packing.prepare(); });
  lost([&] { rt.conv2d(kDirect, ops.args()); });
  lost([&] { rt.plan(kOther); });
  lost([&] { rt.conv2d(kOther, ops.args()); });
  EXPECT_EQ(fake().calls("cuLaunchKernel"), 1u);
  EXPECT_EQ(launch_count(), 0u);
  EXPECT_EQ(fake().calls("cuModuleLoadData"), loads);
  EXPECT_EQ(fake().calls("cuMemAlloc"), allocations);
  EXPECT_EQ(rt.stats().compiles, stats.compiles);
}

TEST_F(ContextLoss, WorkspaceAllocationThatFailsLeavesThePlanUsable) {
  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(kWgmma);
  ASSERT_GT(plan.workspace_bytes(), 0u);
  Operands ops(kWgmma);
  fake().fail_next("cuMemAlloc", CUDA_ERROR_OUT_OF_MEMORY);
  expect_error(ErrorCode::kDriver, [&] { plan.run(ops.args()); }, {"CUDA_ERROR_OUT_OF_MEMORY"});
  EXPECT_EQ(launch_count(), 0u);

  // Memory freed elsewhere: the next run makes the workspace and launches.
  plan.run(ops.args());
  EXPECT_EQ(fake().allocations(), 1u);
  EXPECT_EQ(launch_count(), 2u);
}

TEST_F(ContextLoss, StickyErrorFromPrepareIsRememberedLikeOneFromARun) {
  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(kWgmma);
  ASSERT_GT(plan.workspace_bytes(), 0u);
  Operands ops(kWgmma);
  fake().fail_next("cuMemAlloc", CUDA_ERROR_ILLEGAL_ADDRESS);
  expect_error(ErrorCode::kContextLost, [&] { plan.prepare(); }, {"CUDA_ERROR_ILLEGAL_ADDRESS"});
  expect_error(ErrorCode::kContextLost, [&] { plan.run(ops.args()); }, {"unusable", "CUDA_ERROR_ILLEGAL_ADDRESS"});
  EXPECT_EQ(fake().calls("cuMemAlloc"), 1u);
  EXPECT_EQ(fake().calls("cuLaunchKernel"), 0u);
}

// Autotuning times the candidates with driver calls of its own (buffers, events); a
// sticky error there loses the context like one from a run. im2col stays out of the
// candidates (a workspace limit its columns cannot fit): cuBLAS cannot run on the fake.
TEST_F(ContextLoss, StickyErrorWhileAutotuningIsRemembered) {
  RuntimeOptions tuned = options();
  tuned.autotune = true;
  tuned.workspace_limit_bytes = 1;
  const Conv2dDesc desc{.n = 1, .c = 16, .h = 8, .w = 8, .k = 16, .r = 3, .s = 3};
  Runtime rt(tuned);
  Operands ops(desc);
  fake().fail_next("cuEventSynchronize", CUDA_ERROR_LAUNCH_FAILED);
  expect_error(ErrorCode::kContextLost, [&] { rt.conv2d(desc, ops.args()); }, {"CUDA_ERROR_LAUNCH_FAILED"});
  const auto compiles = rt.stats().compiles;
  const auto loads = fake().calls("cuModuleLoadData");
  expect_error(ErrorCode::kContextLost, [&] { rt.plan(kOther); }, {"unusable", "CUDA_ERROR_LAUNCH_FAILED"});
  EXPECT_EQ(rt.stats().compiles, compiles);
  EXPECT_EQ(fake().calls("cuModuleLoadData"), loads);
}

}  // namespace
}  // namespace convjit
