// One Runtime, several CUDA contexts (issue 8): kernels compile once and load once per
// context, threads on different contexts run at once, a plan refuses another
// context's stream, and the null stream follows the current context.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <latch>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "driver/cuda_driver.hpp"
#include "driver/device_context.hpp"
#include "driver/stream_context.hpp"
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

struct Variant {
  Algorithm algorithm;  // kAuto: through Runtime::conv2d, which follows the stream
  MathMode math;
};
constexpr Variant kVariants[] = {
    {Algorithm::kDirect, MathMode::kStrictFp32},       {Algorithm::kImplicitGemm, MathMode::kTF32},
    {Algorithm::kImplicitGemm, MathMode::kStrictFp32}, {Algorithm::kIm2colGemm, MathMode::kTF32},
    {Algorithm::kIm2colGemm, MathMode::kStrictFp32},   {Algorithm::kAuto, MathMode::kTF32},
    {Algorithm::kAuto, MathMode::kStrictFp32},
};

// A context of the test's own (cuCtxCreate), current on no thread once made.
class OwnedContext {
 public:
  explicit OwnedContext(int ordinal) {
    CUdevice device = 0;
    CONVJIT_CU_CHECK(cuDeviceGet(&device, ordinal), "getting device {}", ordinal);
    CONVJIT_CU_CHECK(cuCtxCreate(&context_, 0, device), "creating a context on device {}", ordinal);
    // cuCtxCreate also pushed it here; every test names its context explicitly.
    CUcontext popped = nullptr;
    CudaDriver::get().cuCtxPopCurrent(&popped);
  }
  ~OwnedContext() { CudaDriver::get().cuCtxDestroy(context_); }
  OwnedContext(const OwnedContext&) = delete;
  OwnedContext& operator=(const OwnedContext&) = delete;
  CUcontext get() const { return context_; }

 private:
  CUcontext context_ = nullptr;
};

// A blocking stream of one context: it waits for the legacy stream, so the
// synchronous copies and memsets below are ordered before the convolution.
class ContextStream {
 public:
  explicit ContextStream(CUcontext context) : context_(context) {
    ScopedContext scope(context);
    CONVJIT_CU_CHECK(cuStreamCreate(&stream_, CU_STREAM_DEFAULT), "creating a stream");
  }
  ~ContextStream() {
    try {
      ScopedContext scope(context_);
      CudaDriver::get().cuStreamDestroy(stream_);
    } catch (...) {
    }
  }
  ContextStream(const ContextStream&) = delete;
  ContextStream& operator=(const ContextStream&) = delete;
  Stream get() const { return stream_; }
  CUcontext context() const { return context_; }

 private:
  CUcontext context_;
  CUstream stream_ = nullptr;
};

// Device memory allocated in one context and freed in it.
class ContextBuffer {
 public:
  ContextBuffer(CUcontext context, std::size_t bytes) : context_(context), bytes_(bytes) {
    ScopedContext scope(context);
    CONVJIT_CU_CHECK(cuMemAlloc(&ptr_, std::max<std::size_t>(bytes, 4)), "allocating {} bytes", bytes);
  }
  ~ContextBuffer() {
    try {
      ScopedContext scope(context_);
      CudaDriver::get().cuMemFree(ptr_);
    } catch (...) {
    }
  }
  ContextBuffer(const ContextBuffer&) = delete;
  ContextBuffer& operator=(const ContextBuffer&) = delete;
  void* data() const { return reinterpret_cast<void*>(ptr_); }
  void upload(const std::vector<float>& host) {
    ScopedContext scope(context_);
    CONVJIT_CU_CHECK(cuMemcpyHtoD(ptr_, host.data(), host.size() * 4), "uploading");
  }
  void poison() {
    ScopedContext scope(context_);
    CONVJIT_CU_CHECK(cuMemsetD32(ptr_, testing::kNaNBits, bytes_ / 4), "poisoning");
  }
  std::vector<float> download() const {
    std::vector<float> host(bytes_ / 4);
    ScopedContext scope(context_);
    CONVJIT_CU_CHECK(cuMemcpyDtoH(host.data(), ptr_, bytes_), "downloading");
    return host;
  }

 private:
  CUcontext context_;
  CUdeviceptr ptr_ = 0;
  std::size_t bytes_;
};

// Inputs, weights, bias and a NaN-poisoned output in `context`, for one problem.
struct Problem {
  Problem(CUcontext context, const Conv2dDesc& d, std::mt19937_64& rng)
      : desc(d),
        x(testing::random_nonzero(static_cast<std::size_t>(d.x_elements()), rng)),
        w(testing::random_nonzero(static_cast<std::size_t>(d.w_elements()), rng)),
        b(testing::random_nonzero(static_cast<std::size_t>(d.k), rng)),
        dx(context, x.size() * 4),
        dw(context, w.size() * 4),
        db(context, b.size() * 4),
        dy(context, static_cast<std::size_t>(d.y_elements()) * 4) {
    dx.upload(x);
    dw.upload(w);
    db.upload(b);
    dy.poison();
  }
  const void* bias() const { return desc.bias ? db.data() : nullptr; }
  // Waits for `stream` (the null stream: the context's legacy stream) and compares.
  testing::GpuCheck check(CUcontext context, Stream stream) const {
    {
      ScopedContext scope(context);
      CONVJIT_CU_CHECK(cuStreamSynchronize(stream), "waiting for the convolution");
    }
    const auto y = dy.download();
    testing::GpuCheck out;
    for (float v : y) out.unwritten += std::isnan(v) ? 1 : 0;
    out.rel_err = testing::relative_l2(y, testing::reference_conv2d(desc, x, w, desc.bias ? b : std::vector<float>{}));
    return out;
  }

  Conv2dDesc desc;
  std::vector<float> x, w, b;
  ContextBuffer dx, dw, db, dy;
};

// Runs every variant on `stream` through `rt`; returns one line per wrong result.
std::vector<std::string> run_variants(Runtime& rt, const ContextStream& stream, const std::string& who,
                                      std::uint64_t seed, int rounds) {
  std::vector<std::string> failures;
  std::mt19937_64 rng(seed);
  for (int round = 0; round < rounds; ++round) {
    for (const auto& v : kVariants) {
      Conv2dDesc d = kDesc;
      d.math = v.math;
      const std::string what = fmt::format("{} {}/{} round {}", who, to_string(v.algorithm), to_string(v.math), round);
      try {
        Problem p(stream.context(), d, rng);
        if (v.algorithm == Algorithm::kAuto) {
          rt.conv2d(d, p.dx.data(), p.dw.data(), p.bias(), p.dy.data(), stream.get());
        } else {
          const Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = v.algorithm, .stream = stream.get()});
          plan.run(p.dx.data(), p.dw.data(), p.bias(), p.dy.data(), stream.get());
        }
        const auto r = p.check(stream.context(), stream.get());
        if (r.unwritten != 0 || !(r.rel_err < testing::tolerance(d))) {
          failures.push_back(fmt::format("{}: rel err {:.3g} (bound {:g}), {} outputs unwritten", what, r.rel_err,
                                         testing::tolerance(d), r.unwritten));
        }
      } catch (const std::exception& e) {
        failures.push_back(fmt::format("{}: {}", what, e.what()));
      }
    }
  }
  return failures;
}

// Distinct kernels the variants need on one arch (kAuto resolves to one of the others or not).
std::size_t kernels_needed(Runtime& rt, Stream stream) {
  std::set<std::pair<Algorithm, MathMode>> kernels;
  for (const auto& v : kVariants) {
    Conv2dDesc d = kDesc;
    d.math = v.math;
    kernels.emplace(rt.plan(d, PlanOptions{.algorithm = v.algorithm, .stream = stream}).algorithm(), v.math);
  }
  return kernels.size();
}

// Runs `body` on threads started together, one per stream, and gathers their failures.
std::vector<std::string> run_at_once(Runtime& rt, const std::vector<const ContextStream*>& streams,
                                     const std::vector<std::string>& names) {
  std::latch start(static_cast<std::ptrdiff_t>(streams.size()));
  std::mutex mutex;
  std::vector<std::string> failures;
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < streams.size(); ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();  // both cold: first compiles and loads race
      auto mine = run_variants(rt, *streams[i], names[i], 1000 + i, 3);
      std::lock_guard lock(mutex);
      failures.insert(failures.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  return failures;
}

std::string joined(const std::vector<std::string>& lines) { return fmt::format("{}", fmt::join(lines, "\n")); }

class MultiContext : public ::testing::Test {
 protected:
  void SetUp() override { CONVJIT_REQUIRE_GPU(); }
  // Autotuning off whatever the environment says: the counts below assume no timing runs.
  RuntimeOptions options() const { return RuntimeOptions{.cache_dir = dir_.path(), .autotune = false}; }
  testing::TempDir dir_;
};

template <typename Call>
void expect_invalid_argument(Call&& call, const std::vector<std::string>& parts) {
  try {
    call();
    ADD_FAILURE() << "the call was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST_F(MultiContext, TwoContextsOnOneDeviceCompileEachKernelOnceLoadItInBothAndComputeCorrectlyAtOnce) {
  // Declared before the Runtime: its modules are unloaded before the contexts go.
  DeviceContext primary(0);
  OwnedContext second(0);
  ContextStream on_primary(primary.context());
  ContextStream on_second(second.get());
  Runtime rt(options());

  const auto failures = run_at_once(rt, {&on_primary, &on_second}, {"primary context", "created context"});
  EXPECT_TRUE(failures.empty()) << joined(failures);

  const std::size_t kernels = kernels_needed(rt, on_primary.get());
  EXPECT_EQ(kernels_needed(rt, on_second.get()), kernels);
  const CacheStats stats = rt.stats();
  EXPECT_EQ(stats.compiles, kernels);
  EXPECT_EQ(stats.module_loads, 2 * kernels) << "one load per kernel per context";
  EXPECT_EQ(rt.plan(kDesc, PlanOptions{.stream = on_second.get()}).device(), 0);
}

TEST_F(MultiContext, PlanForOneContextRejectsAStreamOfAnotherAndLaunchesNothing) {
  DeviceContext primary(0);
  OwnedContext second(0);
  ContextStream on_primary(primary.context());
  ContextStream on_second(second.get());
  Runtime rt(options());
  const std::string primary_id = fmt::format("(id {})", context_id(primary.context()));
  const std::string second_id = fmt::format("(id {})", context_id(second.get()));

  for (Algorithm algorithm : {Algorithm::kDirect, Algorithm::kImplicitGemm, Algorithm::kIm2colGemm}) {
    SCOPED_TRACE(std::string(to_string(algorithm)));
    const Conv2dPlan plan = rt.plan(kDesc, PlanOptions{.algorithm = algorithm, .stream = on_primary.get()});
    EXPECT_EQ(plan.device(), 0);
    std::mt19937_64 rng(7);
    Problem p(second.get(), kDesc, rng);  // the stream's context, as a caller would have it
    expect_invalid_argument([&] { plan.run(p.dx.data(), p.dw.data(), p.bias(), p.dy.data(), on_second.get()); },
                            {"bound to", "device 0", primary_id, second_id, "nothing was launched"});
    {
      // The null stream with the other context current is that context's stream too.
      ScopedContext current(second.get());
      expect_invalid_argument([&] { plan.run(p.dx.data(), p.dw.data(), p.bias(), p.dy.data(), nullptr); },
                              {"bound to", primary_id, second_id});
    }
    const auto r = p.check(second.get(), on_second.get());
    EXPECT_EQ(r.unwritten, static_cast<std::size_t>(kDesc.y_elements())) << "a rejected run wrote the output";
  }
  // Binding by device and by a stream of another context at once is a contradiction.
  expect_invalid_argument([&] { rt.plan(kDesc, PlanOptions{.stream = on_second.get(), .device = 0}); },
                          {"PlanOptions", second_id});
}

TEST_F(MultiContext, NullStreamRunsInTheCurrentContextElseOnTheDefaultDevice) {
  OwnedContext second(0);
  Runtime rt(options());
  std::vector<std::string> failures;
  // A fresh thread has no current context: the Runtime's default device (primary context).
  std::thread([&] {
    std::mt19937_64 rng(11);
    const auto r = testing::check_on_gpu(rt, kDesc, rng);  // DeviceBuffer + conv2d(..., nullptr)
    if (r.unwritten != 0 || !(r.rel_err < 1e-5)) failures.push_back(fmt::format("default device: {}", r.rel_err));
    if (rt.plan(kDesc).device() != 0) failures.push_back("a plan made with no context current is not on device 0");
  }).join();
  EXPECT_TRUE(failures.empty()) << joined(failures);
  EXPECT_EQ(rt.stats().compiles, 1u);
  EXPECT_EQ(rt.stats().module_loads, 1u);

  // With the created context current, the null stream is that context's: a second load.
  std::thread([&] {
    ScopedContext current(second.get());
    std::mt19937_64 rng(12);
    Problem p(second.get(), kDesc, rng);
    rt.conv2d(kDesc, p.dx.data(), p.dw.data(), p.bias(), p.dy.data(), nullptr);
    const auto r = p.check(second.get(), nullptr);
    if (r.unwritten != 0 || !(r.rel_err < 1e-5)) failures.push_back(fmt::format("current context: {}", r.rel_err));
  }).join();
  EXPECT_TRUE(failures.empty()) << joined(failures);
  EXPECT_EQ(rt.stats().compiles, 1u);
  EXPECT_EQ(rt.stats().module_loads, 2u);
}

TEST_F(MultiContext, PlanOptionsDeviceBindsItsPrimaryContext) {
  DeviceContext primary(0);
  ContextStream on_primary(primary.context());
  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(kDesc, PlanOptions{.device = 0});
  EXPECT_EQ(plan.device(), 0);
  std::mt19937_64 rng(13);
  Problem p(primary.context(), kDesc, rng);
  plan.run(p.dx.data(), p.dw.data(), p.bias(), p.dy.data(), on_primary.get());
  const auto r = p.check(primary.context(), on_primary.get());
  EXPECT_EQ(r.unwritten, 0u);
  EXPECT_LT(r.rel_err, 1e-5);
  int count = 0;
  CONVJIT_CU_CHECK(cuDeviceGetCount(&count), "counting devices");
  expect_invalid_argument([&] { rt.plan(kDesc, PlanOptions{.device = count}); }, {"PlanOptions.device"});
}

TEST_F(MultiContext, TwoGpusRunAtOnceThroughOneRuntimeWithOneEntryPerArch) {
  int count = 0;
  CONVJIT_CU_CHECK(cuDeviceGetCount(&count), "counting devices");
  if (count < 2) GTEST_SKIP() << "needs two GPUs, this machine has " << count;
  DeviceContext first(0);
  DeviceContext second(1);
  ContextStream on_first(first.context());
  ContextStream on_second(second.context());
  Runtime rt(options());

  const auto failures = run_at_once(rt, {&on_first, &on_second}, {"device 0", "device 1"});
  EXPECT_TRUE(failures.empty()) << joined(failures);

  const std::size_t kernels = kernels_needed(rt, on_first.get());
  const std::size_t archs = first.arch() == second.arch() ? 1 : 2;
  EXPECT_EQ(rt.stats().compiles, kernels * archs) << first.arch() << " and " << second.arch();
  EXPECT_EQ(rt.stats().module_loads, 2 * kernels);
  EXPECT_EQ(rt.plan(kDesc, PlanOptions{.stream = on_second.get()}).device(), 1);
}

}  // namespace
}  // namespace convjit
