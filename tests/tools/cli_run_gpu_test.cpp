// `convjit run` on a GPU: the checks and timings it prints, and a prewarmed cache it reads.
#include <gtest/gtest.h>

#include "support/gpu.hpp"
#include "tools/cli_runner.hpp"

namespace convjit::testing {
namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST_F(CliTest, RunSmallProblemsOnGpuPassTheCheckAndPrintTime) {
  CONVJIT_REQUIRE_GPU();
  for (const char* shape : {kSmallA, kSmallB, "n2c16h20w18k32r3s5 stride=2,1 pad=1,2 dilation=1,2 math=strict"}) {
    const auto r = cli({"run", shape, "--iters", "5"});
    EXPECT_EQ(r.exit_code, 0) << shape << "\n" << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "non-finite 0")) << r.out;
    EXPECT_TRUE(contains(r.out, ": PASS")) << r.out;
    EXPECT_TRUE(contains(r.out, "ms median of 5")) << r.out;
  }
}

TEST_F(CliTest, RunSixteenBitProblemsOnGpuPassTheirToleranceWithEveryAlgorithm) {
  CONVJIT_REQUIRE_GPU();
  for (const char* shape : {"n2c16h20w18k32r3s5 stride=2,1 pad=1,2 dilation=1,2 bias=1 dtype=f16",
                            "n2c16h20w18k32r3s5 stride=2,1 pad=1,2 dilation=1,2 bias=1 dtype=bf16 act=relu"}) {
    for (const char* algorithm : {"direct", "implicit_gemm", "im2col_gemm"}) {
      const auto r = cli({"run", shape, "--iters", "3", "--algorithm", algorithm});
      EXPECT_EQ(r.exit_code, 0) << shape << " " << algorithm << "\n" << r.out << r.err;
      EXPECT_TRUE(contains(r.out, "non-finite 0")) << r.out;
      EXPECT_TRUE(contains(r.out, ": PASS")) << r.out;
    }
  }
}

TEST_F(CliTest, RunNhwcProblemsOnGpuPassTheCheckWithEveryAlgorithmThatReadsNhwc) {
  CONVJIT_REQUIRE_GPU();
  for (const char* shape : {"n2c16h20w18k32r3s5 stride=2,1 pad=1,2 dilation=1,2 bias=1 layout=nhwc math=strict",
                            "n2c24h9w11k40r1 stride=2 layout=nhwc dtype=f16",
                            "n2c16h15w20k16r3s3 pad=1 groups=16 bias=1 act=relu layout=nhwc dtype=bf16"}) {
    for (const char* algorithm : {"auto", "direct", "im2col_gemm"}) {
      const auto r = cli({"run", shape, "--iters", "3", "--algorithm", algorithm});
      EXPECT_EQ(r.exit_code, 0) << shape << " " << algorithm << "\n" << r.out << r.err;
      EXPECT_TRUE(contains(r.out, "layout=nhwc")) << r.out;
      EXPECT_TRUE(contains(r.out, "non-finite 0")) << r.out;
      EXPECT_TRUE(contains(r.out, ": PASS")) << r.out;
    }
  }
}

// Issue 15: the command's float64 check covers every rank and transposed problems too.
TEST_F(CliTest, RunOneThreeDimensionalAndTransposedProblemsOnGpuPassTheCheck) {
  CONVJIT_REQUIRE_GPU();
  for (const char* shape :
       {"n2c6w50k10s3 stride=2 pad=1 dilation=2 bias=1 math=strict", "n2c5d7h9w8k6t3r3s2 stride=2,1,1 pad=1 bias=1",
        "n2c6d5h6w7k8t3r3s3 stride=2 pad=1 groups=2 transposed=1 output_padding=1,0,1 math=strict",
        "n2c8h9w11k6r3s5 stride=3,2 pad=1,2 dilation=2,1 transposed=1 output_padding=1 layout=nhwc dtype=bf16",
        "n2c8w40k4s5 dilation=3 transposed=1 dtype=f16"}) {
    const auto r = cli({"run", shape, "--iters", "3"});
    EXPECT_EQ(r.exit_code, 0) << shape << "\n" << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "non-finite 0")) << r.out;
    EXPECT_TRUE(contains(r.out, ": PASS")) << r.out;
  }
}

TEST_F(CliTest, RunOnAPrewarmedCacheCompilesNothing) {
  CONVJIT_REQUIRE_GPU();
  ASSERT_EQ(cli({"prewarm", "--shape", kSmallA}).exit_code, 0);
  const auto r = cli({"run", kSmallA, "--iters", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "from the disk cache, no compile")) << r.out;
  EXPECT_TRUE(contains(r.out, "runtime   compiles 0 ")) << r.out;
}

}  // namespace
}  // namespace convjit::testing
