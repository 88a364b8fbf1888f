// Launch-path behaviour on a real GPU: caches across processes, hot calls, bad calls.
#include <cuda.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <latch>
#include <mutex>
#include <string>
#include <thread>

#include "support/gpu.hpp"
#include "support/gpu_conv.hpp"
#include "support/temp_dir.hpp"

namespace convjit {
namespace {

const Conv2dDesc kDesc{.n = 2,
                       .c = 3,
                       .h = 19,
                       .w = 23,
                       .k = 17,
                       .r = 3,
                       .s = 5,
                       .pad_h = 1,
                       .pad_w = 2,
                       .bias = true,
                       .math = MathMode::kStrictFp32};

class RuntimeGpu : public ::testing::Test {
 protected:
  void SetUp() override { CONVJIT_REQUIRE_GPU(); }
  RuntimeOptions options() const { return RuntimeOptions{.cache_dir = dir_.path()}; }
  testing::TempDir dir_;
};

TEST_F(RuntimeGpu, WarmDiskCacheLoadsCubinWithoutCompiling) {
  std::mt19937_64 rng(std::random_device{}());
  {
    Runtime first(options());
    EXPECT_LT(testing::check_on_gpu(first, kDesc, rng).rel_err, 1e-5);
    EXPECT_EQ(first.stats().compiles, 1u);
  }
  Runtime second(options());
  EXPECT_LT(testing::check_on_gpu(second, kDesc, rng).rel_err, 1e-5);
  EXPECT_EQ(second.stats().compiles, 0u);
  EXPECT_EQ(second.stats().disk_hits, 1u);
  EXPECT_EQ(second.stats().module_loads, 1u);
}

// A warm start reads and checks what loading the kernel uses, not the PTX or source: a
// damaged PTX costs it nothing, and the verified CUBIN computes the right result.
TEST_F(RuntimeGpu, WarmStartWithADamagedPtxRunsTheVerifiedCubinWithoutCompiling) {
  std::mt19937_64 rng(std::random_device{}());
  std::filesystem::path entry;
  {
    Runtime first(options());
    EXPECT_LT(testing::check_on_gpu(first, kDesc, rng).rel_err, 1e-5);
    entry = first.inspect(kDesc).cache_path;
  }
  std::string bytes;
  {
    std::ifstream in(entry, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::size_t ptx_header = bytes.find("\nptx ") + 1;
  ASSERT_NE(ptx_header, 0u);
  bytes[bytes.find('\n', ptx_header) + 1] ^= 0x01;
  std::ofstream(entry, std::ios::binary | std::ios::trunc) << bytes;
  Runtime second(options());
  EXPECT_LT(testing::check_on_gpu(second, kDesc, rng).rel_err, 1e-5);
  EXPECT_EQ(second.stats().compiles, 0u);
  EXPECT_EQ(second.stats().corrupt_rebuilt, 0u);
  EXPECT_EQ(second.stats().disk_hits, 1u);
  EXPECT_LT(second.stats().bytes_read, bytes.size()) << "the PTX and source were read";
}

TEST_F(RuntimeGpu, WarmStartOfAPackingKernelReportsItsStepsAndLoadsItsKernelsWithTheModule) {
  // The wgmma kernel (on Hopper; elsewhere whatever auto picks) read back from disk: the
  // plan loads the convolution and its pack kernel with the module, and the first
  // call's steps are counted.
  const Conv2dDesc desc{.n = 2, .c = 32, .h = 12, .w = 20, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  std::mt19937_64 rng(std::random_device{}());
  {
    Runtime first(options());
    EXPECT_LT(testing::check_on_gpu(first, desc, rng).rel_err, 1e-3);
  }
  Runtime second(options());
  const Conv2dPlan plan = second.plan(desc);
  const CacheStats s = second.stats();
  EXPECT_EQ(s.compiles, 0u);
  EXPECT_EQ(s.disk_hits, 1u);
  EXPECT_GT(s.key_ms, 0.0);
  EXPECT_GT(s.disk_read_ms, 0.0);
  EXPECT_GT(s.disk_verify_ms, 0.0);
  EXPECT_GT(s.module_load_ms, 0.0);
  EXPECT_GE(s.function_load_ms, 0.0);
  EXPECT_LT(testing::check_on_gpu(second, desc, rng).rel_err, 1e-3) << plan.kernel_name();
  EXPECT_EQ(second.stats().module_loads, 1u);
}

TEST_F(RuntimeGpu, EntryPrewarmedForTheDeviceArchIsUsedWithoutCompiling) {
  std::string arch;
  {
    Runtime cpu_side(options());
    arch = cpu_side.device_arch();
    EXPECT_EQ(cpu_side.prewarm(std::vector<Conv2dDesc>{kDesc}, arch).compiled, 1u);
  }
  std::mt19937_64 rng(std::random_device{}());
  Runtime rt(options());
  EXPECT_LT(testing::check_on_gpu(rt, kDesc, rng).rel_err, 1e-5);
  EXPECT_EQ(rt.stats().compiles, 0u);
}

TEST_F(RuntimeGpu, SecondCallIsAMemoryHit) {
  std::mt19937_64 rng(std::random_device{}());
  Runtime rt(options());
  testing::check_on_gpu(rt, kDesc, rng);
  testing::check_on_gpu(rt, kDesc, rng);
  EXPECT_EQ(rt.stats().compiles, 1u);
  EXPECT_EQ(rt.stats().module_loads, 1u);
  EXPECT_GE(rt.stats().memory_hits, 1u);
}

TEST_F(RuntimeGpu, NullOrMismatchedPointersLaunchNothing) {
  Runtime rt(options());
  DeviceBuffer x(rt, kDesc.x_elements() * 4), w(rt, kDesc.w_elements() * 4), y(rt, kDesc.y_elements() * 4),
      b(rt, kDesc.k * 4);
  y.fill_u32(testing::kNaNBits);
  auto expect_invalid = [&](auto&& call, const char* part) {
    try {
      call();
      ADD_FAILURE() << "accepted a call with " << part;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_invalid([&] { rt.conv2d(kDesc, nullptr, w.data(), b.data(), y.data()); }, "x is null");
  expect_invalid([&] { rt.conv2d(kDesc, x.data(), nullptr, b.data(), y.data()); }, "w is null");
  expect_invalid([&] { rt.conv2d(kDesc, x.data(), w.data(), b.data(), nullptr); }, "y is null");
  expect_invalid([&] { rt.conv2d(kDesc, x.data(), w.data(), nullptr, y.data()); }, "bias is null");
  Conv2dDesc no_bias = kDesc;
  no_bias.bias = false;
  expect_invalid([&] { rt.conv2d(no_bias, x.data(), w.data(), b.data(), y.data()); }, "bias pointer was given");
  std::vector<float> out(kDesc.y_elements());
  y.download(out.data(), out.size() * 4);
  for (float v : out) ASSERT_TRUE(std::isnan(v)) << "the output was written by a rejected call";
}

// Six threads, two problems, three calls each, all at once, on the null stream (one stream
// for every thread: a run's launches over the plan's workspace, x's transpose and the
// convolution reading it, must not interleave with another thread's) and on
// CU_STREAM_PER_THREAD (a stream a thread, whose runs overlap on the device: a workspace
// a thread). Each failed check names its thread, call, error and unwritten outputs.
TEST_F(RuntimeGpu, ManyThreadsCallingAtOnceAllGetCorrectResults) {
  for (const Stream stream : {Stream{nullptr}, reinterpret_cast<Stream>(CU_STREAM_PER_THREAD)}) {
    SCOPED_TRACE(stream == nullptr ? "the null stream" : "CU_STREAM_PER_THREAD");
    // A cache of its own for each stream, so each compiles its two kernels.
    RuntimeOptions own = options();
    own.cache_dir /= stream == nullptr ? "null" : "per-thread";
    Runtime rt(own);
    std::mutex failures_mutex;
    std::vector<std::string> failures;
    std::latch start(6);
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 rng(1234 + t);
        Conv2dDesc d = kDesc;
        d.k = 17 + (t % 2);  // two problems, three threads each
        start.arrive_and_wait();
        for (int i = 0; i < 3; ++i) {
          const auto r = testing::check_on_gpu(rt, d, rng, false, Algorithm::kAuto, false, 0, stream);
          if (!(r.rel_err < 1e-5) || r.unwritten != 0 || r.outside != 0) {
            std::lock_guard lock(failures_mutex);
            failures.push_back(
                fmt::format("thread {} call {} (k = {}): relative error {:.3g}, {} unwritten, {} outside", t, i, d.k,
                            r.rel_err, r.unwritten, r.outside));
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_TRUE(failures.empty()) << fmt::format("{}", fmt::join(failures, "\n"));
    EXPECT_EQ(rt.stats().compiles, 2u);
  }
}

}  // namespace
}  // namespace convjit

namespace convjit {
namespace {

// Issue 3: with autotuning on, the first process times the candidates and stores the
// choice; a second process (a second Runtime on the same cache) reuses it untimed.
TEST_F(RuntimeGpu, AutotuneChoiceIsStoredAndReusedWithoutTimingAgain) {
  const Conv2dDesc d{.n = 2, .c = 32, .h = 40, .w = 36, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  std::mt19937_64 rng(std::random_device{}());
  RuntimeOptions opts = options();
  opts.autotune = true;
  Algorithm first_choice;
  {
    Runtime first(opts);
    EXPECT_LT(testing::check_on_gpu(first, d, rng).rel_err, testing::tolerance(d));
    EXPECT_EQ(first.stats().autotune_runs, 1u);
    EXPECT_EQ(first.stats().autotune_reused, 0u);
    first_choice = first.plan(d).algorithm();
  }
  Runtime second(opts);
  EXPECT_LT(testing::check_on_gpu(second, d, rng).rel_err, testing::tolerance(d));
  EXPECT_EQ(second.stats().autotune_runs, 0u);
  EXPECT_EQ(second.stats().autotune_reused, 1u);
  EXPECT_EQ(second.plan(d).algorithm(), first_choice);
}

}  // namespace
}  // namespace convjit
