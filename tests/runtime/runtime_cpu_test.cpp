// Everything the runtime does without a GPU: specialize, compile, cache, inspect.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "convjit/convjit.hpp"
#include "runtime/im2col_gemm.hpp"
#include "support/gpu.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"

namespace convjit {
namespace {

const std::vector<Conv2dDesc> kDescs = {
    Conv2dDesc{.n = 1, .c = 3, .h = 17, .w = 1, .k = 17, .r = 3, .s = 1, .pad_h = 1},
    Conv2dDesc{.n = 2, .c = 8, .h = 12, .w = 12, .k = 8, .r = 3, .s = 3, .groups = 8, .bias = true},
    Conv2dDesc{.n = 1, .c = 4, .h = 20, .w = 9, .k = 6, .r = 5, .s = 2, .stride_h = 2, .dilation_w = 3, .groups = 2},
};

RuntimeOptions options_in(const testing::TempDir& dir) { return RuntimeOptions{.cache_dir = dir.path() / "cache"}; }

std::vector<std::filesystem::path> entry_files(const std::filesystem::path& root) {
  std::vector<std::filesystem::path> out;
  if (!std::filesystem::exists(root)) return out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
    // Entries only: the cache also keeps a lock file (docs/cache.md).
    if (e.is_regular_file() && e.path().extension() == ".entry") out.push_back(e.path());
  }
  return out;
}

TEST(RuntimeCpu, PrewarmWithArchCompilesAndWritesEntriesWithoutGpu) {
  testing::TempDir dir;
  Runtime rt(options_in(dir));
  const auto result = rt.prewarm(kDescs, "sm_90");
  EXPECT_EQ(result.compiled, kDescs.size());
  EXPECT_EQ(result.already_cached, 0u);
  EXPECT_EQ(result.failed, 0u);
  const auto stats = rt.stats();
  EXPECT_EQ(stats.compiles, kDescs.size());
  EXPECT_EQ(stats.misses, kDescs.size());
  EXPECT_EQ(stats.disk_writes, kDescs.size());
  EXPECT_GT(stats.compile_ms, 0.0);
  EXPECT_EQ(entry_files(rt.cache_dir()).size(), kDescs.size());
}

TEST(RuntimeCpu, NewRuntimeOnWarmDiskCacheCompilesNothing) {
  testing::TempDir dir;
  Runtime(options_in(dir)).prewarm(kDescs, "sm_90");
  Runtime second(options_in(dir));
  const auto result = second.prewarm(kDescs, "sm_90");
  EXPECT_EQ(result.compiled, 0u);
  EXPECT_EQ(result.already_cached, kDescs.size());
  EXPECT_EQ(second.stats().compiles, 0u);
  EXPECT_EQ(second.stats().disk_hits, kDescs.size());
}

TEST(RuntimeCpu, SecondCallInOneProcessTouchesNeitherDiskNorCompiler) {
  testing::TempDir dir;
  Runtime rt(options_in(dir));
  rt.prewarm(kDescs, "sm_90");
  // With the directory gone, a disk access would miss and recompile.
  std::filesystem::remove_all(rt.cache_dir());
  const auto again = rt.prewarm(kDescs, "sm_90");
  EXPECT_EQ(again.already_cached, kDescs.size());
  EXPECT_EQ(rt.stats().compiles, kDescs.size());
  EXPECT_EQ(rt.stats().memory_hits, kDescs.size());
  EXPECT_FALSE(std::filesystem::exists(rt.cache_dir()));
}

class CorruptEntry : public ::testing::TestWithParam<const char*> {};

TEST_P(CorruptEntry, IsDetectedRebuiltAndCounted) {
  testing::TempDir dir;
  const Conv2dDesc d = kDescs[1];
  std::filesystem::path file;
  {
    Runtime rt(options_in(dir));
    file = rt.inspect(d, "sm_90").cache_path;
  }
  ASSERT_TRUE(std::filesystem::exists(file));
  const std::string how = GetParam();
  if (how == "flip") {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(file) / 2));
    const char c = static_cast<char>(f.peek());
    f.put(static_cast<char>(c ^ 0x20));
  } else if (how == "truncate") {
    std::filesystem::resize_file(file, std::filesystem::file_size(file) / 3);
  } else if (how == "empty") {
    std::filesystem::resize_file(file, 0);
  } else {
    std::ofstream(file, std::ios::binary | std::ios::trunc) << "\x89garbage\x00\xff not an entry";
  }
  Runtime rt(options_in(dir));
  const auto info = rt.inspect(d, "sm_90");
  EXPECT_EQ(rt.stats().corrupt_rebuilt, 1u);
  EXPECT_EQ(rt.stats().compiles, 1u);
  EXPECT_NE(info.ptx.find(".entry " + info.kernel_name), std::string::npos);
  // The rebuilt entry is good: a third process hits it.
  Runtime third(options_in(dir));
  third.inspect(d, "sm_90");
  EXPECT_EQ(third.stats().disk_hits, 1u);
  EXPECT_EQ(third.stats().compiles, 0u);
}
INSTANTIATE_TEST_SUITE_P(RuntimeCpu, CorruptEntry, ::testing::Values("flip", "truncate", "empty", "garbage"));

TEST(RuntimeCpu, PtxAndSourceWithArchNeedNoGpu) {
  testing::TempDir dir;
  Runtime rt(options_in(dir));
  const std::string source = rt.source(kDescs[0], "sm_90");
  EXPECT_NE(source.find("enum : int { kC = 3 };"), std::string::npos);
  const std::string ptx = rt.ptx(kDescs[0], "sm_90");
  EXPECT_NE(ptx.find(".target sm_90"), std::string::npos);
  const auto info = rt.inspect(kDescs[0], "sm_90");
  EXPECT_EQ(info.source, source) << "source() shows the kernel inspect() compiles";
  EXPECT_GT(info.cubin_bytes, 0u);
  EXPECT_EQ(info.arch, "sm_90");
  EXPECT_EQ(info.key_hash.size(), 64u);
  EXPECT_NE(info.options.find("--gpu-architecture=sm_90"), std::string::npos);
}

TEST(RuntimeCpu, SourceForAnArchIsTheKernelInspectCompilesForIt) {
  // Issue 13: source(desc) once specialized with no arch and showed the mma.sync kernel
  // where inspect(desc, "sm_90") compiled the wgmma one.
  testing::TempDir dir;
  Runtime rt(options_in(dir));
  const Conv2dDesc headline{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7};
  const std::string hopper = rt.source(headline, "sm_90");
  EXPECT_NE(hopper.find("#define CONVJIT_KERNEL_NAME conv2d_wgmma_tf32_"), std::string::npos);
  EXPECT_EQ(hopper, rt.inspect(headline, "sm_90").source);
  EXPECT_NE(rt.source(headline, "sm_80").find("#define CONVJIT_KERNEL_NAME conv2d_igemm_tf32_"), std::string::npos);
}

TEST(RuntimeCpu, InspectReportsResourcesAndWorkSplitWithoutGpu) {
  testing::TempDir dir;
  Runtime rt(options_in(dir));
  const auto info = rt.inspect(kDescs[2], "sm_90");
  EXPECT_EQ(info.algorithm, "direct");
  EXPECT_FALSE(info.tile.empty());
  EXPECT_GT(info.resources.registers, 0) << info.log;
  EXPECT_LE(info.resources.registers, 255);
  EXPECT_EQ(info.resources.spill_store_bytes, 0);
  EXPECT_GT(info.block_threads, 0u);
  EXPECT_GT(info.grid_blocks, 0u);
}

TEST(RuntimeCpu, InvalidDescriptorIsRejectedAndWritesNothing) {
  testing::TempDir dir;
  Runtime rt(options_in(dir));
  Conv2dDesc bad = kDescs[0];
  bad.groups = 2;  // does not divide c = 3
  const auto result = rt.prewarm(std::vector<Conv2dDesc>{bad}, "sm_90");
  EXPECT_EQ(result.failed, 1u);
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_NE(result.errors[0].find("Conv2dDesc.groups"), std::string::npos) << result.errors[0];
  try {
    rt.ptx(bad, "sm_90");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
  EXPECT_THROW(
      rt.conv2d(bad, reinterpret_cast<void*>(16), reinterpret_cast<void*>(16), nullptr, reinterpret_cast<void*>(16)),
      Error);
  EXPECT_TRUE(entry_files(rt.cache_dir()).empty());
  EXPECT_EQ(rt.stats().compiles, 0u);
}

TEST(RuntimeCpu, BadArchIsRejectedBeforeAnyWork) {
  testing::TempDir dir;
  Runtime rt(options_in(dir));
  try {
    rt.prewarm(kDescs, "volta");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("'volta'"), std::string::npos);
  }
  EXPECT_EQ(rt.stats().compiles, 0u);
}

TEST(RuntimeCpu, ThreadsAskingForOneKernelAtOnceCompileItOnce) {
  testing::TempDir dir;
  Runtime rt(options_in(dir));
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) threads.emplace_back([&] { rt.prewarm(kDescs, "sm_90"); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(rt.stats().compiles, kDescs.size());
  EXPECT_EQ(rt.stats().memory_hits, 7 * kDescs.size());
}

TEST(RuntimeCpu, LaunchWithoutGpuThrowsClearErrorAndCompilesNothing) {
  if (!testing::gpu_unavailable_reason()) GTEST_SKIP() << "a GPU is present; this test is for machines without one";
  testing::TempDir dir;
  Runtime rt(options_in(dir));
  try {
    rt.conv2d(kDescs[0], reinterpret_cast<void*>(16), reinterpret_cast<void*>(16), nullptr,
              reinterpret_cast<void*>(16));
    FAIL();
  } catch (const Error& e) {
    EXPECT_TRUE(e.code() == ErrorCode::kNoDriver || e.code() == ErrorCode::kNoDevice) << e.what();
    EXPECT_NE(std::string(e.what()).find("libcuda.so.1"), std::string::npos) << e.what();
  }
  EXPECT_EQ(rt.stats().compiles, 0u);
}

TEST(RuntimeCpu, DiskCacheOffKeepsKernelsInMemoryOnly) {
  testing::TempDir dir;
  RuntimeOptions options = options_in(dir);
  options.disk_cache = false;
  Runtime rt(options);
  rt.prewarm(kDescs, "sm_90");
  EXPECT_EQ(rt.stats().disk_writes, 0u);
  EXPECT_FALSE(std::filesystem::exists(rt.cache_dir()));
}

TEST(RuntimeCpu, CacheDirectoryComesFromTheEnvironmentInOrder) {
  testing::ScopedEnv cache("CONVJIT_CACHE_DIR", "/tmp/a");
  testing::ScopedEnv xdg("XDG_CACHE_HOME", "/tmp/b");
  testing::ScopedEnv home("HOME", "/tmp/c");
  EXPECT_EQ(default_cache_dir(), std::filesystem::path("/tmp/a"));
  ::unsetenv("CONVJIT_CACHE_DIR");
  EXPECT_EQ(default_cache_dir(), std::filesystem::path("/tmp/b/convjit"));
  ::unsetenv("XDG_CACHE_HOME");
  EXPECT_EQ(default_cache_dir(), std::filesystem::path("/tmp/c/.cache/convjit"));
}

}  // namespace
}  // namespace convjit

namespace convjit {
namespace {

// Hopper gets wgmma (sm_90a), Ampere the mma.sync kernel; neither spills.
TEST(RuntimeCpu, HeadlineImplicitGemmCompilesWithoutSpillsInBothMathModes) {
  testing::TempDir dir;
  Runtime rt(options_in(dir));
  Conv2dDesc d{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7};
  for (const char* arch : {"sm_90", "sm_80"}) {
    for (MathMode math : {MathMode::kTF32, MathMode::kStrictFp32}) {
      d.math = math;
      const auto info = rt.inspect(d, arch);
      SCOPED_TRACE(info.kernel_name);
      EXPECT_EQ(info.algorithm, "implicit_gemm");
      EXPECT_EQ(info.resources.spill_store_bytes, 0) << info.log;
      EXPECT_EQ(info.resources.stack_bytes, 0) << info.log;
      EXPECT_LE(info.resources.registers, 255);
      EXPECT_GT(info.dynamic_shared_bytes, 48u * 1024);
      const char* instruction = std::string_view(arch) == "sm_90"
                                    ? "wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32"
                                    : "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32";
      EXPECT_NE(info.ptx.find(instruction), std::string::npos);
      std::printf("%s: %d registers, %u B dynamic smem, tile %s\n", info.kernel_name.c_str(), info.resources.registers,
                  info.dynamic_shared_bytes, info.tile.c_str());
    }
  }
}

TEST(RuntimeCpu, EveryAlgorithmCompilesForTheHeadlineWithoutGpu) {
  testing::TempDir dir;
  Runtime rt(options_in(dir));
  Conv2dDesc d{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7};
  for (Activation act : {Activation::kNone, Activation::kRelu}) {
    d.activation = act;
    for (Algorithm a : {Algorithm::kDirect, Algorithm::kImplicitGemm, Algorithm::kIm2colGemm}) {
      const auto info = rt.inspect(d, "sm_90", PlanOptions{.algorithm = a});
      EXPECT_EQ(info.algorithm, to_string(a));
      EXPECT_GT(info.cubin_bytes, 0u);
      // The name the launcher looks up is the one the module defines.
      const std::string entry = info.kernel_name + (a == Algorithm::kIm2colGemm ? "_im2col" : "");
      EXPECT_NE(info.ptx.find(".entry " + entry + "("), std::string::npos) << entry;
      EXPECT_EQ(info.kernel_name.ends_with("_relu"), act == Activation::kRelu) << info.kernel_name;
    }
  }
}

}  // namespace
}  // namespace convjit

namespace convjit {
namespace {

// The headline's full column matrix is 8 x 2240 x 127000 floats (about 9 GB); the
// chunking must keep the workspace under the limit however large the problem.
TEST(Im2colChunking, HeadlineWorkspaceStaysUnderTheLimit) {
  const Conv2dDesc d{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7};
  for (std::uint64_t limit : {std::uint64_t{256} << 20, std::uint64_t{16} << 20, std::uint64_t{3} << 20}) {
    const auto chunks = plan_im2col_chunks(d, limit);
    EXPECT_FALSE(chunks.pointwise);
    EXPECT_LE(chunks.workspace_bytes, limit);
    EXPECT_GT(chunks.workspace_bytes, 0u);
    EXPECT_EQ(chunks.images_per_chunk, 1);
    EXPECT_GE(chunks.rows_per_chunk, 1);
  }
}

TEST(Im2colChunking, WholeImagesAreBatchedWhenTheyFit) {
  const Conv2dDesc d{.n = 16, .c = 3, .h = 34, .w = 34, .k = 8, .r = 3, .s = 3};
  const auto chunks = plan_im2col_chunks(d, std::uint64_t{1} << 20);  // one image: 27 x 1024 floats
  EXPECT_FALSE(chunks.merged_images);
  EXPECT_EQ(chunks.rows_per_chunk, 32);
  EXPECT_EQ(chunks.images_per_chunk, 9);
  EXPECT_LE(chunks.workspace_bytes, std::uint64_t{1} << 20);
}

// Under kMergeBelowPixels output pixels an NCHW chunk is one GEMM over its images: the
// workspace holds each image's columns and its scratch output, under the limit.
TEST(Im2colChunking, SmallNchwImagesMergeAndChargeTheirScratchOutput) {
  const Conv2dDesc d{.n = 16, .c = 3, .h = 32, .w = 32, .k = 8, .r = 3, .s = 3};
  const std::uint64_t limit = std::uint64_t{1} << 20;
  const auto chunks = plan_im2col_chunks(d, limit);  // one image: 27 x 900 columns, 8 x 900 outputs
  EXPECT_TRUE(chunks.merged_images);
  EXPECT_EQ(chunks.rows_per_chunk, 30);
  EXPECT_EQ(chunks.images_per_chunk, 8);  // 1 MiB / (4 * (27 + 8) * 900 + 16)
  EXPECT_EQ(chunks.column_bytes, 8u * 27 * 900 * 4);
  EXPECT_EQ(chunks.workspace_bytes, 8u * 27 * 900 * 4 + 8u * 8 * 900 * 4);
  EXPECT_LE(chunks.workspace_bytes, limit);
  // NHWC already runs one GEMM over a chunk's pixels; one image has nothing to merge.
  Conv2dDesc nhwc = d;
  nhwc.layout = Layout::kNHWC;
  EXPECT_FALSE(plan_im2col_chunks(nhwc, limit).merged_images);
  Conv2dDesc single = d;
  single.n = 1;
  EXPECT_FALSE(plan_im2col_chunks(single, limit).merged_images);
}

TEST(Im2colChunking, PointwiseNeedsNoWorkspace) {
  const Conv2dDesc d{.n = 16, .c = 64, .h = 64, .w = 64, .k = 128};
  const auto chunks = plan_im2col_chunks(d, 1);
  EXPECT_TRUE(chunks.pointwise);
  EXPECT_EQ(chunks.workspace_bytes, 0u);
}

TEST(Im2colChunking, LimitBelowOneOutputRowIsRejectedWithTheNumbers) {
  const Conv2dDesc d{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7};
  try {
    plan_im2col_chunks(d, 1000);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("over the 1000 bytes the workspace limit leaves for columns"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace convjit
