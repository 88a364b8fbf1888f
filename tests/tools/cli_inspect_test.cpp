// convjit inspect: source, PTX and resources without a GPU; SASS through the CUDA
// toolkit's disassembler when it is there, and a clear exit 3 when it is not.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "support/gpu.hpp"
#include "tools/cli_runner.hpp"

namespace convjit::testing {
namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST_F(CliTest, InspectResourcesShowsAlgorithmTileGeometryRegistersAndSpills) {
  const auto r = cli({"inspect", kSmallA, "--arch", "sm_90", "--resources"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const char* field :
       {"problem    n1c4h12w10k8r3s3 stride=1 pad=0", "kernel     ", "arch       sm_90", "algorithm  ", "tile       ",
        "launch     ", "registers  ", "shared     ", "spills     ", "cache      ", "(compiled now"}) {
    EXPECT_TRUE(contains(r.out, field)) << field << "\n" << r.out;
  }
}

TEST_F(CliTest, InspectDefaultsToResourcesAndSecondRunComesFromTheDiskCache) {
  ASSERT_EQ(cli({"inspect", kSmallA, "--arch", "sm_90"}).exit_code, 0);
  const auto r = cli({"inspect", kSmallA, "--arch", "sm_90"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "registers  ")) << r.out;
  EXPECT_TRUE(contains(r.out, "(from the disk cache)")) << r.out;
}

TEST_F(CliTest, InspectSourceAloneIsTheSpecializedCudaSource) {
  const auto r = cli({"inspect", kSmallA, "--arch", "sm_90", "--source"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "__global__")) << r.out.substr(0, 2000);
  EXPECT_FALSE(contains(r.out, "=====")) << "a single section has no header, so it can be piped to a file";
}

TEST_F(CliTest, InspectPtxAloneIsPtxForTheRequestedArch) {
  const auto r = cli({"inspect", kSmallA, "--arch", "sm_90", "--ptx"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("//"), 0u) << r.out.substr(0, 200);
  EXPECT_TRUE(contains(r.out, ".target sm_90")) << r.out.substr(0, 1000);
  EXPECT_TRUE(contains(r.out, ".entry ")) << r.out.substr(0, 1000);
}

TEST_F(CliTest, InspectSeveralSectionsGetsAHeaderEach) {
  const auto r = cli({"inspect", kSmallA, "--arch", "sm_90", "--source", "--ptx", "--resources"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "===== source of ")) << r.out.substr(0, 2000);
  EXPECT_TRUE(contains(r.out, "===== PTX of ")) << r.out.substr(0, 2000);
  EXPECT_LT(r.out.find("registers  "), r.out.find("===== source of "));
  EXPECT_LT(r.out.find("===== source of "), r.out.find("===== PTX of "));
}

TEST_F(CliTest, InspectBatchDynamicNamesTheProblemAndKernelAsDynamicWithItsOwnCacheEntry) {
  const std::string shape = std::string(kSmallA) + " batch=dynamic";
  const auto dynamic = cli({"inspect", shape, "--arch", "sm_90"});
  ASSERT_EQ(dynamic.exit_code, 0) << dynamic.out << dynamic.err;
  EXPECT_TRUE(contains(dynamic.out, "problem    n1c4h12w10k8r3s3 stride=1 pad=0")) << dynamic.out;
  EXPECT_TRUE(contains(dynamic.out, " batch=dynamic\n")) << dynamic.out;
  EXPECT_TRUE(contains(dynamic.out, "_ndyn1c4h12w10_")) << dynamic.out;
  EXPECT_TRUE(contains(dynamic.out, "(compiled now")) << dynamic.out;
  const auto fixed = cli({"inspect", kSmallA, "--arch", "sm_90"});
  ASSERT_EQ(fixed.exit_code, 0) << fixed.err;
  EXPECT_TRUE(contains(fixed.out, "(compiled now")) << "the static kernel is another entry\n" << fixed.out;
  EXPECT_FALSE(contains(fixed.out, "batch=dynamic")) << fixed.out;
}

TEST_F(CliTest, InspectNhwcShowsTheLayoutInTheProblemKernelAndSourceForEachAlgorithmThatReadsIt) {
  const std::string shape = std::string(kSmallA) + " layout=nhwc";
  for (const char* algorithm : {"auto", "direct", "im2col_gemm"}) {
    const auto r = cli({"inspect", shape, "--arch", "sm_90", "--algorithm", algorithm, "--resources", "--source"});
    ASSERT_EQ(r.exit_code, 0) << algorithm << "\n" << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "layout=nhwc")) << r.out.substr(0, 2000);
    EXPECT_TRUE(contains(r.out, "_nhwc_")) << r.out.substr(0, 2000);
    EXPECT_TRUE(contains(r.out, "enum : int { kLayout = 1 };")) << r.out.substr(0, 4000);
  }
  const auto depthwise = cli({"inspect", std::string(kSmallB) + " layout=nhwc", "--arch", "sm_80", "--ptx"});
  ASSERT_EQ(depthwise.exit_code, 0) << depthwise.err;
  EXPECT_TRUE(contains(depthwise.out, ".entry conv2d_depthwise_f32_nhwc_")) << depthwise.out.substr(0, 2000);
}

TEST_F(CliTest, InspectForcedAlgorithmIsTheOneShown) {
  const auto r = cli({"inspect", kSmallA, "--arch", "sm_90", "--algorithm", "direct"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "algorithm  direct")) << r.out;
  const auto bad = cli({"inspect", kSmallA, "--arch", "sm_90", "--algorithm", "winograd"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(contains(bad.err, "expects auto, direct, implicit_gemm or im2col_gemm, got 'winograd'")) << bad.err;
}

TEST_F(CliTest, InspectSassDisassemblesTheCubin) {
  if (!disassembler_available()) GTEST_SKIP() << "no nvdisasm on this machine";
  const auto r = cli({"inspect", kSmallA, "--arch", "sm_90", "--sass"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "EXIT")) << r.out.substr(0, 3000);
}

TEST_F(CliTest, InspectSassRunsTheDisassemblerFoundOnPathOnTheCubin) {
  // A stand-in nvdisasm first on PATH: the SASS section is its stdout, given the CUBIN as a file.
  const auto bin = dir_.path() / "bin";
  std::filesystem::create_directories(bin);
  const auto tool = bin / "nvdisasm";
  std::ofstream(tool) << "#!/bin/sh\necho \"stand-in sass: $1 $(wc -c < \"$2\") bytes\"\n";
  std::filesystem::permissions(tool, std::filesystem::perms::owner_exec, std::filesystem::perm_options::add);
  const auto r = cli({"inspect", kSmallA, "--arch", "sm_90", "--sass"},
                     {"PATH=" + bin.string() + ":/usr/bin:/bin", "CUDA_HOME", "CUDA_PATH"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "stand-in sass: --print-code ")) << r.out;
  EXPECT_TRUE(contains(r.out, " bytes")) << r.out;
}

TEST_F(CliTest, InspectSassWithoutDisassemblerExitsThreeAndSaysWhatIsMissing) {
  // PATH, CUDA_HOME and CUDA_PATH are ours to empty; /usr/local/cuda/bin is always searched.
  for (const char* tool : {"/usr/local/cuda/bin/nvdisasm", "/usr/local/cuda/bin/cuobjdump"}) {
    if (std::filesystem::exists(tool)) GTEST_SKIP() << tool << " is installed here";
  }
  const auto r = cli({"inspect", kSmallA, "--arch", "sm_90", "--sass"},
                     {"PATH=" + cache_dir().parent_path().string(), "CUDA_HOME", "CUDA_PATH"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(contains(r.err, "--sass needs nvdisasm or cuobjdump from the CUDA toolkit")) << r.err;
  EXPECT_TRUE(contains(r.err, "/usr/local/cuda/bin")) << r.err;
  EXPECT_TRUE(contains(r.err, "use --ptx")) << r.err;
}

TEST_F(CliTest, InspectMalformedShapeShowsColumnAndCaretAndExitsTwo) {
  const auto r = cli({"inspect", "n8c64h512w256k128r5s7 strid=1", "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "convjit inspect: malformed shape at column 23: unknown key 'strid'")) << r.err;
  EXPECT_TRUE(contains(r.err, "\n  n8c64h512w256k128r5s7 strid=1\n                        ^\n")) << r.err;
}

TEST_F(CliTest, InspectInvalidProblemNamesTheFieldAndExitsTwo) {
  const auto r = cli({"inspect", "c4h2k4r3", "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "Conv2dDesc.h: padded input height 2 + 2*0 is smaller than the dilated filter height 3"))
      << r.err;
}

TEST_F(CliTest, InspectWithoutArchOnAMachineWithoutGpuSaysToGiveArch) {
  if (!gpu_unavailable_reason()) GTEST_SKIP() << "there is a GPU here: its arch is the default";
  const auto r = cli({"inspect", kSmallA});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(contains(r.err, "convjit inspect: no GPU here to take the arch from")) << r.err;
  EXPECT_TRUE(contains(r.err, "--arch sm_90")) << r.err;
}

}  // namespace
}  // namespace convjit::testing
