// convjit run on the CPU machine: refuses clearly without a GPU, and bad arguments before looking for one.
#include <gtest/gtest.h>

#include "support/gpu.hpp"
#include "tools/cli_runner.hpp"

namespace convjit::testing {
namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST_F(CliTest, RunWithoutGpuExitsThreeAndSaysItNeedsOne) {
  if (!gpu_unavailable_reason()) GTEST_SKIP() << "there is a GPU here";
  const auto r = cli({"run", kSmallA});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(contains(r.err, "convjit run needs a CUDA GPU and there is none here")) << r.err;
  EXPECT_TRUE(contains(r.err, "--arch sm_90")) << r.err;
}

TEST_F(CliTest, RunMalformedShapeExitsTwoBeforeLookingForAGpu) {
  const auto r = cli({"run", "n8c64h512w256k128r5s7 stride=", "--iters", "3"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "malformed shape at column 30: expected the value of 'stride'")) << r.err;
}

TEST_F(CliTest, RunBadIterationCountExitsTwo) {
  const auto r = cli({"run", kSmallA, "--iters", "many"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "option '--iters' expects a whole number >= 1, got 'many'")) << r.err;
}

}  // namespace
}  // namespace convjit::testing
