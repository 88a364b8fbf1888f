// Issue 12 on a real GPU: plans captured in CUDA graphs the way serving code and
// torch.cuda.graph capture them (a fresh non-blocking stream, global capture mode),
// pointers at every offset their dtype allows, and offsets no dtype allows refused
// without harming the context. The CUDA runtime stands in for the application here:
// it makes the streams and graphs, convjit only launches into them.
#include <cuda_runtime.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include "base/float16.hpp"
#include "convjit/convjit.hpp"
#include "support/gpu.hpp"
#include "support/gpu_conv.hpp"
#include "support/reference.hpp"
#include "support/temp_dir.hpp"

namespace convjit {
namespace {

#define CUDART_CHECK(call)                                                                     \
  do {                                                                                         \
    const cudaError_t convjit_err_ = (call);                                                   \
    ASSERT_EQ(convjit_err_, cudaSuccess) << #call << ": " << cudaGetErrorString(convjit_err_); \
  } while (0)

// Four shapes that reach every kernel family: a 3x3 (implicit GEMM: wgmma on Hopper,
// mma.sync when forced off it by alignment), a pointwise one (im2col's plain GEMM), a
// depthwise one (the direct algorithm's tiled kernel) and a deep 3x3 on a tiny image
// (in NHWC on Hopper, the wgmma kernel's split-K: two launches and partial sums in the
// workspace). Odd extents everywhere. Each in both layouts; a (layout, algorithm) pair
// this version cannot run is skipped (runs()), so the matrix grows as the kernels learn
// NHWC.
std::vector<Conv2dDesc> shapes(DType dtype, MathMode math) {
  Conv2dDesc conv{.n = 2, .c = 24, .h = 13, .w = 18, .k = 40, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};
  Conv2dDesc pointwise{.n = 3, .c = 20, .h = 9, .w = 14, .k = 36, .r = 1, .s = 1, .bias = false};
  Conv2dDesc depthwise{
      .n = 2, .c = 16, .h = 15, .w = 20, .k = 16, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 16, .bias = true};
  Conv2dDesc deep{.n = 1, .c = 256, .h = 6, .w = 5, .k = 40, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};
  std::vector<Conv2dDesc> out;
  for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    for (Conv2dDesc d : {conv, pointwise, depthwise, deep}) {
      d.dtype = dtype;
      d.math = math;
      d.layout = layout;
      out.push_back(d);
    }
  }
  return out;
}

bool runs(const Conv2dDesc& d, Algorithm algorithm) { return !why_unsupported(d, algorithm); }

struct Case {
  DType dtype;
  MathMode math;
};
constexpr Case kCases[] = {{DType::kFloat32, MathMode::kTF32},
                           {DType::kFloat32, MathMode::kStrictFp32},
                           {DType::kFloat16, MathMode::kTF32},
                           {DType::kBFloat16, MathMode::kTF32}};
constexpr Algorithm kAlgorithms[] = {Algorithm::kAuto, Algorithm::kDirect, Algorithm::kImplicitGemm,
                                     Algorithm::kIm2colGemm};

using testing::tolerance;

// One problem's tensors in device memory, each `offset` bytes past its own allocation,
// with fresh random non-zero data and its float64 reference.
class Tensors {
 public:
  Tensors(const Conv2dDesc& d, std::size_t offset, std::mt19937_64& rng) : desc_(d), offset_(offset) {
    x_ = testing::random_nonzero(d.x_elements(), rng, -1.0f, 1.0f, d.dtype);
    w_ = testing::random_nonzero(d.w_elements(), rng, -1.0f, 1.0f, d.dtype);
    if (d.bias) b_ = testing::random_nonzero(d.k, rng, -1.0f, 1.0f, d.dtype);
    x_dev_ = upload(testing::x_in_layout(d, x_));
    w_dev_ = upload(testing::w_in_layout(d, w_));
    b_dev_ = d.bias ? upload(b_) : nullptr;
    y_bytes_ = static_cast<std::size_t>(d.y_elements()) * size_of(d.dtype);
    y_base_ = allocate(y_bytes_);
  }
  ~Tensors() {
    for (void* p : bases_) cudaFree(p);
  }
  Tensors(const Tensors&) = delete;
  Tensors& operator=(const Tensors&) = delete;

  Conv2dArgs args() const { return Conv2dArgs{.x = x_dev_, .w = w_dev_, .bias = b_dev_, .y = y()}; }
  void* y() const { return static_cast<char*>(y_base_) + offset_; }
  // All-ones bytes are a NaN in f32, f16 and bf16 alike.
  void poison_y(cudaStream_t stream) const { cudaMemsetAsync(y_base_, 0xff, offset_ + y_bytes_, stream); }
  std::vector<unsigned char> y_bytes() const {
    std::vector<unsigned char> out(y_bytes_);
    EXPECT_EQ(cudaMemcpy(out.data(), y(), y_bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
  double error() const {
    const auto y = testing::y_from_layout(desc_, from_storage(y_bytes(), desc_.dtype));
    return testing::relative_l2(y, testing::reference_conv2d(desc_, x_, w_, b_));
  }

 private:
  void* allocate(std::size_t bytes) {
    void* base = nullptr;
    EXPECT_EQ(cudaMalloc(&base, bytes + 16), cudaSuccess);
    bases_.push_back(base);
    return base;
  }
  void* upload(const std::vector<float>& values) {
    const auto bytes = to_storage(values, desc_.dtype);
    char* at = static_cast<char*>(allocate(bytes.size())) + offset_;
    EXPECT_EQ(cudaMemcpy(at, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), cudaSuccess);
    return at;
  }

  Conv2dDesc desc_;
  std::size_t offset_;
  std::vector<float> x_, w_, b_;
  std::vector<void*> bases_;
  void* x_dev_ = nullptr;
  void* w_dev_ = nullptr;
  void* b_dev_ = nullptr;
  void* y_base_ = nullptr;
  std::size_t y_bytes_ = 0;
};

class LaunchSafety : public ::testing::Test {
 protected:
  void SetUp() override {
    CONVJIT_REQUIRE_GPU();
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    ASSERT_EQ(cudaFree(nullptr), cudaSuccess);  // the primary context, current on this thread
  }
  RuntimeOptions options() const { return RuntimeOptions{.cache_dir = dir_.path()}; }
  testing::TempDir dir_;
};

// Captures `run` on `stream` in global mode (torch.cuda.graph's default) and returns the
// executable graph; fails the test if the capture was invalidated.
cudaGraphExec_t capture(cudaStream_t stream, const std::function<void()>& run) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  EXPECT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  run();
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  EXPECT_EQ(end, cudaSuccess) << "the capture was invalidated: " << cudaGetErrorString(end);
  if (end != cudaSuccess) return nullptr;
  EXPECT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  cudaGraphDestroy(graph);
  return exec;
}

TEST_F(LaunchSafety, WarmedUpPlansReplayedFromGraphsMatchTheEagerRunBitForBit) {
  Runtime rt(options());
  std::mt19937_64 rng(std::random_device{}());
  cudaStream_t stream = nullptr;
  CUDART_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (const Case& c : kCases) {
    for (const Conv2dDesc& d : shapes(c.dtype, c.math)) {
      for (Algorithm algorithm : kAlgorithms) {
        if (!runs(d, algorithm)) continue;
        SCOPED_TRACE(fmt::format("{} {}", d.to_string(), to_string(algorithm)));
        Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = algorithm, .stream = reinterpret_cast<Stream>(stream)});
        Tensors t(d, 0, rng);
        t.poison_y(stream);
        plan.run(t.args(), reinterpret_cast<Stream>(stream));  // the warm-up
        CUDART_CHECK(cudaStreamSynchronize(stream));
        EXPECT_LT(t.error(), tolerance(d)) << plan.kernel_name();
        const auto eager = t.y_bytes();
        cudaGraphExec_t exec = capture(stream, [&] { plan.run(t.args(), reinterpret_cast<Stream>(stream)); });
        ASSERT_NE(exec, nullptr);
        for (int replay = 0; replay < 3; ++replay) {
          t.poison_y(stream);
          CUDART_CHECK(cudaGraphLaunch(exec, stream));
          CUDART_CHECK(cudaStreamSynchronize(stream));
          EXPECT_EQ(t.y_bytes(), eager) << "replay " << replay << " of " << plan.kernel_name();
        }
        cudaGraphExecDestroy(exec);
      }
    }
  }
  cudaStreamDestroy(stream);
}

TEST_F(LaunchSafety, FirstUseInsideACaptureCompilesLoadsAndReplaysCorrectly) {
  std::mt19937_64 rng(std::random_device{}());
  cudaStream_t stream = nullptr;
  CUDART_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (const Case& c : kCases) {
    for (const Conv2dDesc& d : shapes(c.dtype, c.math)) {
      if (!runs(d, Algorithm::kAuto)) continue;
      SCOPED_TRACE(d.to_string());
      Runtime rt(options());  // nothing loaded yet: the first use happens inside the capture
      Tensors t(d, 0, rng);
      cudaGraphExec_t exec = capture(stream, [&] {
        try {
          rt.conv2d(d, t.args(), reinterpret_cast<Stream>(stream));
        } catch (const Error& e) {
          ADD_FAILURE() << "first use inside a capture threw: " << e.what();
        }
      });
      ASSERT_NE(exec, nullptr);
      t.poison_y(stream);
      CUDART_CHECK(cudaGraphLaunch(exec, stream));
      CUDART_CHECK(cudaStreamSynchronize(stream));
      EXPECT_LT(t.error(), tolerance(d));
      cudaGraphExecDestroy(exec);
    }
  }
  cudaStreamDestroy(stream);
}

// A pointwise GEMM's first run inside a capture cannot time cuBLASLt's candidates (timing
// waits for the stream): it records the heuristic's first entry and leaves the choice to the
// first eager run, after which a new capture replays that choice bit for bit.
TEST_F(LaunchSafety, PointwiseGemmFirstRunInsideACaptureReplaysCorrectlyAndTimesOnTheFirstEagerRun) {
  std::mt19937_64 rng(std::random_device{}());
  cudaStream_t stream = nullptr;
  CUDART_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (const Case& c : kCases) {
    for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
      Conv2dDesc d{
          .n = 3, .c = 48, .h = 9, .w = 14, .k = 80, .bias = true, .dtype = c.dtype, .layout = layout, .math = c.math};
      SCOPED_TRACE(d.to_string());
      Runtime rt(options());
      Conv2dPlan plan =
          rt.plan(d, PlanOptions{.algorithm = Algorithm::kIm2colGemm, .stream = reinterpret_cast<Stream>(stream)});
      Tensors t(d, 0, rng);
      cudaGraphExec_t exec = capture(stream, [&] { plan.run(t.args(), reinterpret_cast<Stream>(stream)); });
      ASSERT_NE(exec, nullptr);
      t.poison_y(stream);
      CUDART_CHECK(cudaGraphLaunch(exec, stream));
      CUDART_CHECK(cudaStreamSynchronize(stream));
      EXPECT_LT(t.error(), tolerance(d));
      cudaGraphExecDestroy(exec);
      t.poison_y(stream);
      plan.run(t.args(), reinterpret_cast<Stream>(stream));  // times the candidates
      CUDART_CHECK(cudaStreamSynchronize(stream));
      EXPECT_LT(t.error(), tolerance(d));
      const auto eager = t.y_bytes();
      exec = capture(stream, [&] { plan.run(t.args(), reinterpret_cast<Stream>(stream)); });
      ASSERT_NE(exec, nullptr);
      t.poison_y(stream);
      CUDART_CHECK(cudaGraphLaunch(exec, stream));
      CUDART_CHECK(cudaStreamSynchronize(stream));
      EXPECT_EQ(t.y_bytes(), eager);
      cudaGraphExecDestroy(exec);
    }
  }
  cudaStreamDestroy(stream);
}

TEST_F(LaunchSafety, AutotuningInsideACaptureThrowsTheDocumentedErrorAndTheCaptureStaysValid) {
  RuntimeOptions opts = options();
  opts.autotune = true;
  Runtime rt(opts);
  std::mt19937_64 rng(std::random_device{}());
  cudaStream_t stream = nullptr;
  CUDART_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const Conv2dDesc d = shapes(DType::kFloat32, MathMode::kTF32).front();
  Tensors t(d, 0, rng);
  cudaGraphExec_t exec = capture(stream, [&] {
    try {
      rt.conv2d(d, t.args(), reinterpret_cast<Stream>(stream));
      ADD_FAILURE() << "autotuning inside a capture did not throw";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
      EXPECT_NE(std::string(e.what()).find("capture"), std::string::npos) << e.what();
    }
  });
  ASSERT_NE(exec, nullptr);  // the capture is still valid (and empty)
  cudaGraphExecDestroy(exec);
  // After warming up outside the capture, the same call captures.
  rt.conv2d(d, t.args(), reinterpret_cast<Stream>(stream));
  CUDART_CHECK(cudaStreamSynchronize(stream));
  exec = capture(stream, [&] { rt.conv2d(d, t.args(), reinterpret_cast<Stream>(stream)); });
  ASSERT_NE(exec, nullptr);
  t.poison_y(stream);
  CUDART_CHECK(cudaGraphLaunch(exec, stream));
  CUDART_CHECK(cudaStreamSynchronize(stream));
  EXPECT_LT(t.error(), tolerance(d));
  cudaGraphExecDestroy(exec);
  cudaStreamDestroy(stream);
}

TEST_F(LaunchSafety, CallerWorkspacesAndPackedWeightsCaptureAndMatchTheEagerRun) {
  Runtime rt(options());
  std::mt19937_64 rng(std::random_device{}());
  cudaStream_t stream = nullptr;
  CUDART_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (const Case& c : kCases) {
    for (const Conv2dDesc& d : shapes(c.dtype, c.math)) {
      for (Algorithm algorithm : kAlgorithms) {
        if (!runs(d, algorithm)) continue;
        SCOPED_TRACE(fmt::format("{} {}", d.to_string(), to_string(algorithm)));
        Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = algorithm});
        Tensors t(d, 0, rng);
        void* workspace = nullptr;
        void* packed = nullptr;
        CUDART_CHECK(cudaMalloc(&workspace, std::max<std::uint64_t>(plan.workspace_bytes(), 16)));
        CUDART_CHECK(cudaMalloc(&packed, std::max<std::uint64_t>(plan.packed_weight_bytes(), 16)));
        Conv2dArgs args = t.args();
        args.workspace = workspace;
        args.workspace_bytes = plan.workspace_bytes();
        t.poison_y(stream);
        plan.run(args, reinterpret_cast<Stream>(stream));
        CUDART_CHECK(cudaStreamSynchronize(stream));
        EXPECT_LT(t.error(), tolerance(d));
        const auto eager = t.y_bytes();
        if (plan.packed_weight_bytes() > 0) {
          plan.pack_weights(args.w, packed, reinterpret_cast<Stream>(stream));
          args.packed_w = packed;
          args.w = nullptr;  // the packed copy is all the run reads
        }
        cudaGraphExec_t exec = capture(stream, [&] { plan.run(args, reinterpret_cast<Stream>(stream)); });
        ASSERT_NE(exec, nullptr);
        t.poison_y(stream);
        CUDART_CHECK(cudaGraphLaunch(exec, stream));
        CUDART_CHECK(cudaStreamSynchronize(stream));
        EXPECT_EQ(t.y_bytes(), eager) << plan.kernel_name();
        cudaGraphExecDestroy(exec);
        cudaFree(workspace);
        cudaFree(packed);
      }
    }
  }
  cudaStreamDestroy(stream);
}

TEST_F(LaunchSafety, PointersAtEveryLegalOffsetComputeCorrectlyWithEveryAlgorithm) {
  Runtime rt(options());
  std::mt19937_64 rng(std::random_device{}());
  for (const Case& c : kCases) {
    for (std::size_t offset : {0, 2, 4, 8, 12}) {
      if (offset % size_of(c.dtype) != 0) continue;
      for (const Conv2dDesc& d : shapes(c.dtype, c.math)) {
        for (Algorithm algorithm : kAlgorithms) {
          if (!runs(d, algorithm)) continue;
          SCOPED_TRACE(fmt::format("{} {} offset {}", d.to_string(), to_string(algorithm), offset));
          Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = algorithm});
          Tensors t(d, offset, rng);
          t.poison_y(nullptr);
          plan.run(t.args());
          CUDART_CHECK(cudaDeviceSynchronize());
          EXPECT_LT(t.error(), tolerance(d)) << plan.kernel_name();
        }
      }
    }
  }
}

TEST_F(LaunchSafety, AnOffsetNoDtypeAllowsIsRefusedBeforeLaunchAndTheContextStaysUsable) {
  Runtime rt(options());
  std::mt19937_64 rng(std::random_device{}());
  for (const Conv2dDesc& d : shapes(DType::kFloat32, MathMode::kTF32)) {
    for (Algorithm algorithm : kAlgorithms) {
      if (!runs(d, algorithm)) continue;
      SCOPED_TRACE(fmt::format("{} {}", d.to_string(), to_string(algorithm)));
      Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = algorithm});
      Tensors bad(d, 2, rng);  // f32 two bytes past: a caller's bug, never a legal tensor
      bad.poison_y(nullptr);
      CUDART_CHECK(cudaDeviceSynchronize());
      const auto before = bad.y_bytes();
      try {
        plan.run(bad.args());
        ADD_FAILURE() << "an f32 pointer 2 bytes past its allocation was accepted";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
      }
      CUDART_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(bad.y_bytes(), before) << "something was launched";
      Tensors good(d, 4, rng);
      good.poison_y(nullptr);
      plan.run(good.args());
      CUDART_CHECK(cudaDeviceSynchronize());  // the context is still usable
      EXPECT_LT(good.error(), tolerance(d));
    }
  }
  // A host pointer is refused the same way.
  const Conv2dDesc d = shapes(DType::kFloat32, MathMode::kTF32).front();
  Tensors t(d, 0, rng);
  std::vector<float> host(d.x_elements(), 1.0f);
  Conv2dArgs args = t.args();
  args.x = host.data();
  try {
    rt.conv2d(d, args);
    ADD_FAILURE() << "a host pointer was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
  }
  CUDART_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace convjit
