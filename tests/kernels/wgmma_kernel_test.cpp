#include <gtest/gtest.h>

#include "compile/nvrtc.hpp"
#include "compile/ptxas_report.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/specialized_source.hpp"
#include "support/workloads.hpp"

namespace convjit {
namespace {

const Conv2dDesc kHeadline{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7};

std::string constant(const Specialization& src, const std::string& name) {
  const std::string needle = "constexpr int " + name + " = ";
  const auto at = src.source.text.find(needle);
  if (at == std::string::npos) return "<absent>";
  return src.source.text.substr(at + needle.size(), src.source.text.find(';', at) - at - needle.size());
}

TEST(WgmmaKernel, HopperImplicitGemmCompilesToWgmmaAndBulkCopiesWithoutSpills) {
  for (MathMode math : {MathMode::kTF32, MathMode::kStrictFp32}) {
    Conv2dDesc d = kHeadline;
    d.math = math;
    const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
    SCOPED_TRACE(src.source.kernel_name);
    EXPECT_EQ(src.source.template_name, "conv2d_implicit_gemm_wgmma.cu");
    EXPECT_EQ(src.source.compile_arch, "sm_90a");
    ASSERT_TRUE(src.launch.weight_pack.has_value());
    EXPECT_EQ(src.launch.weight_pack->kernel_name, src.source.kernel_name + "_pack");
    const auto out =
        Nvrtc::compile(src.source.text, src.source.kernel_name + ".cu", Nvrtc::options_for(src.source.compile_arch));
    EXPECT_NE(out.ptx.find("wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32"), std::string::npos);
    EXPECT_NE(out.ptx.find("cp.async.bulk.shared::cluster.global"), std::string::npos);
    EXPECT_NE(out.ptx.find(".entry " + src.launch.weight_pack->kernel_name), std::string::npos);
    const auto usage = parse_ptxas_report(out.log, src.source.kernel_name);
    EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
    EXPECT_EQ(usage.spill_load_bytes, 0) << out.log;
    // ptxas says so when it has to serialize wgmma (e.g. accumulators touched between them).
    EXPECT_EQ(out.log.find("wgmma.mma_async instructions are serialized"), std::string::npos) << out.log;
  }
}

TEST(WgmmaKernel, StrictMathSplitsIntoThreeTf32ProductsWithPartialSums) {
  Conv2dDesc d = kHeadline;
  d.math = MathMode::kStrictFp32;
  const auto strict = specialize(d, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_EQ(constant(strict, "kSplit"), "3");
  EXPECT_EQ(constant(strict, "kMB"), "1");  // room for the partial accumulators
  const auto tf32 = specialize(kHeadline, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_EQ(constant(tf32, "kSplit"), "1");
  EXPECT_EQ(constant(tf32, "kMB"), "2");
  // Two weight planes (big, small) for 3xTF32.
  EXPECT_EQ(strict.launch.weight_pack->packed_bytes, 2 * tf32.launch.weight_pack->packed_bytes);
}

TEST(WgmmaKernel, OtherArchitecturesAndUnnamedTargetsKeepMmaSync) {
  for (const char* arch : {"sm_80", "sm_89", "sm_100", ""}) {
    const auto src = specialize(kHeadline, Algorithm::kImplicitGemm, arch);
    EXPECT_EQ(src.source.template_name, "conv2d_implicit_gemm_mma.cu") << arch;
    EXPECT_TRUE(src.source.compile_arch.empty()) << arch;
    EXPECT_FALSE(src.launch.weight_pack.has_value()) << arch;
  }
}

TEST(WgmmaKernel, ReasonsNameWhatRulesTheKernelOut) {
  EXPECT_FALSE(wgmma_unsupported_reason(kHeadline, "sm_90"));
  EXPECT_NE(wgmma_unsupported_reason(kHeadline, "sm_80")->find("sm_90"), std::string::npos);
  Conv2dDesc narrow = kHeadline;
  narrow.k = 16;
  EXPECT_NE(wgmma_unsupported_reason(narrow, "sm_90")->find("output channels"), std::string::npos);
  EXPECT_EQ(specialize(narrow, Algorithm::kImplicitGemm, "sm_90").source.template_name, "conv2d_implicit_gemm_mma.cu");
}

// Problems whose patches are a few stages long (few input channels, short filters) hand
// their stores to store warps; long ones keep every producer warp copying.
TEST(WgmmaKernel, OnlyShortPatchesStageTheirOutputsForStoreWarps) {
  const Conv2dDesc short_patches{.n = 16, .c = 16, .h = 1024, .w = 1024, .k = 128, .r = 3, .s = 3};
  const auto staged = specialize(short_patches, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_NE(staged.source.text.find("constexpr bool kStoreWarps = true;"), std::string::npos);
  EXPECT_TRUE(staged.launch.geometry.persistent);
  const auto direct = specialize(kHeadline, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_NE(direct.source.text.find("constexpr bool kStoreWarps = false;"), std::string::npos);
  const auto out = Nvrtc::compile(staged.source.text, staged.source.kernel_name + ".cu",
                                  Nvrtc::options_for(staged.source.compile_arch));
  EXPECT_EQ(parse_ptxas_report(out.log, staged.source.kernel_name).spill_store_bytes, 0) << out.log;
}

// The patch and the pipeline come from the problem's constants, the same rule for every
// shape: the patch holds exactly the block's pixels, rows of whole 8-pixel fragments,
// and the stages fit the 227 KiB a block may use.
TEST(WgmmaKernel, EveryKernelBenchProblemGetsAConsistentTileThatFitsSharedMemory) {
  int checked = 0;
  for (const auto& problem : testing::kernelbench_2d_problems()) {
    for (MathMode math : {MathMode::kTF32, MathMode::kStrictFp32}) {
      Conv2dDesc d = problem.desc;
      d.math = math;
      if (wgmma_unsupported_reason(d, "sm_90")) continue;
      const auto src = specialize_wgmma(d);
      SCOPED_TRACE(src.source.kernel_name);
      const int bp = std::stoi(constant(src, "kBP"));
      const int bq = std::stoi(constant(src, "kBQ"));
      const int mb = std::stoi(constant(src, "kMB"));
      EXPECT_EQ(bp * bq, 2 * mb * 64);
      EXPECT_EQ(bq % 8, 0);
      EXPECT_GE(std::stoi(constant(src, "kStages")), 2);
      EXPECT_LE(src.launch.geometry.shared_bytes, 227u * 1024);
      EXPECT_EQ(src.launch.geometry.block_x, 384u);
      ++checked;
    }
  }
  EXPECT_GT(checked, 10);
}

}  // namespace
}  // namespace convjit
