// Dynamic batch on a real GPU (issue 17): for every algorithm (direct, depthwise, implicit
// GEMM on wgmma (both layouts) and mma.sync, im2col + cuBLAS and its 1x1 GEMM), every
// data type and math mode and both layouts, one plan of a batch=dynamic descriptor with
// n = 256 runs batches 1, 3, 8, 17, 64 and 256 on fresh random data, each against
// float64 (every output up to 17 images, 8192 sampled outputs beyond), with exactly one
// compile for all of them; y is allocated and NaN-poisoned for 256 images, so a run that
// writes past its own batch's outputs fails too. NHWC wgmma and its split-K have their
// own test below (n = 64). Run it alone with --gtest_filter='DynamicBatchGpu*'.
#include <cuda_runtime.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <optional>
#include <random>
#include <thread>

#include "base/float16.hpp"
#include "convjit/convjit.hpp"
#include "support/gpu.hpp"
#include "support/gpu_conv.hpp"
#include "support/reference.hpp"
#include "support/temp_dir.hpp"

namespace convjit {
namespace {

constexpr int kMaxBatch = 256;
constexpr int kBatches[] = {1, 3, 8, 17, 64, 256};

struct Mode {
  DType dtype;
  MathMode math;
};
constexpr Mode kModes[] = {{DType::kFloat32, MathMode::kTF32},
                           {DType::kFloat32, MathMode::kStrictFp32},
                           {DType::kFloat16, MathMode::kTF32},
                           {DType::kBFloat16, MathMode::kTF32}};

using testing::tolerance;

struct Case {
  Conv2dDesc desc;  // dynamic, n = kMaxBatch
  Algorithm algorithm;
  const char* expect_prefix;  // the kernel family the plan must have
};

std::vector<Case> cases() {
  // k >= 32: wgmma on sm_90 in NCHW; in NHWC its 16 channels fill a 64-byte stage row in
  // f32 (the TMA wgmma kernel) and less than that in 16-bit (mma.sync; nhwc_prefers_wgmma).
  // NhwcWgmmaAndSplitKPlansRunBatches1To64 covers more NHWC wgmma.
  const Conv2dDesc dense{.n = kMaxBatch,
                         .c = 16,
                         .h = 10,
                         .w = 12,
                         .k = 40,
                         .r = 3,
                         .s = 3,
                         .pad_h = 1,
                         .pad_w = 1,
                         .bias = true,
                         .activation = Activation::kRelu,
                         .dynamic_batch = true};
  // 24 stages a patch: the persistent 3xTF32 wgmma launch.
  const Conv2dDesc deep{
      .n = kMaxBatch, .c = 64, .h = 9, .w = 10, .k = 32, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .dynamic_batch = true};
  const Conv2dDesc depthwise{.n = kMaxBatch,
                             .c = 24,
                             .h = 11,
                             .w = 13,
                             .k = 24,
                             .r = 3,
                             .s = 3,
                             .stride_h = 2,
                             .pad_h = 1,
                             .pad_w = 1,
                             .groups = 24,
                             .bias = true,
                             .dynamic_batch = true};
  const Conv2dDesc pointwise{.n = kMaxBatch, .c = 24, .h = 9, .w = 14, .k = 36, .bias = true, .dynamic_batch = true};
  // k < 32: on the TMA wgmma kernel where its map reads x, mma.sync elsewhere.
  Conv2dDesc narrow = dense;
  narrow.k = 24;
  // 8 channels: 16 bytes a pixel in 16-bit, less than a 32-byte stage row: mma.sync.
  Conv2dDesc shallow = dense;
  shallow.c = 8;
  std::vector<Case> out;
  for (const Mode& m : kModes) {
    for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
      const auto in = [&](Conv2dDesc d) {
        d.dtype = m.dtype;
        d.math = m.math;
        d.layout = layout;
        return d;
      };
      const bool nchw = layout == Layout::kNCHW;
      // NHWC: 16 and 24 channels fill a 64-byte stage row in f32, a 32-byte one in 16-bit.
      const char* nhwc_gemm = "conv2d_wgmma_";
      out.push_back({in(dense), Algorithm::kDirect, "conv2d_direct_"});
      out.push_back({in(depthwise), Algorithm::kDirect, "conv2d_depthwise_"});
      out.push_back({in(dense), Algorithm::kImplicitGemm, nchw ? "conv2d_wgmma_" : nhwc_gemm});
      if (!nchw) out.push_back({in(narrow), Algorithm::kImplicitGemm, nhwc_gemm});
      if (!nchw && m.dtype != DType::kFloat32) out.push_back({in(shallow), Algorithm::kImplicitGemm, "conv2d_igemm_"});
      out.push_back({in(dense), Algorithm::kIm2colGemm, "conv2d_im2col_"});
      out.push_back({in(pointwise), Algorithm::kIm2colGemm, "conv2d_im2col_"});
      // Pointwise in TF32 and 16-bit: the streaming kernel; strict fp32: 3xTF32 wgmma.
      const bool strict = m.dtype == DType::kFloat32 && m.math == MathMode::kStrictFp32;
      out.push_back({in(pointwise), Algorithm::kImplicitGemm,
                     !strict ? "conv2d_pointwise_"
                     : nchw  ? "conv2d_wgmma_"
                             : nhwc_gemm});
      if (m.dtype == DType::kFloat32 && m.math == MathMode::kStrictFp32 && nchw) {
        out.push_back({in(deep), Algorithm::kImplicitGemm, "conv2d_wgmma_"});
      }
    }
  }
  return out;
}

class DynamicBatchGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    CONVJIT_REQUIRE_GPU();
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    ASSERT_EQ(cudaFree(nullptr), cudaSuccess);
  }
  testing::TempDir dir_;
};

// One batch through `plan`: inputs for `batch` images, y for kMaxBatch poisoned, checked.
void check_batch(const Conv2dPlan& plan, int batch, std::mt19937_64& rng) {
  const Conv2dDesc& dyn = plan.desc();
  Conv2dDesc d = dyn;  // the problem this run computes
  d.n = batch;
  d.dynamic_batch = false;
  const DType t = d.dtype;
  const auto x = testing::random_nonzero(static_cast<std::size_t>(d.x_elements()), rng, -1.0f, 1.0f, t);
  const auto w = testing::random_nonzero(static_cast<std::size_t>(d.w_elements()), rng, -1.0f, 1.0f, t);
  const auto b =
      d.bias ? testing::random_nonzero(static_cast<std::size_t>(d.k), rng, -1.0f, 1.0f, t) : std::vector<float>{};
  std::vector<void*> buffers;
  auto upload = [&](const std::vector<float>& values) -> void* {
    const auto bytes = to_storage(values, t);
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, bytes.size()), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), cudaSuccess);
    buffers.push_back(p);
    return p;
  };
  void* dx = upload(testing::x_in_layout(d, x));
  void* dw = upload(testing::w_in_layout(d, w));
  void* db = d.bias ? upload(b) : nullptr;
  const std::size_t y_bytes = static_cast<std::size_t>(d.y_elements()) * size_of(t);
  const std::size_t y_all = static_cast<std::size_t>(dyn.y_elements()) * size_of(t);
  void* dy = nullptr;
  ASSERT_EQ(cudaMalloc(&dy, y_all), cudaSuccess);
  buffers.push_back(dy);
  // All-ones bytes are a NaN in f32, f16 and bf16 alike.
  ASSERT_EQ(cudaMemset(dy, 0xff, y_all), cudaSuccess);
  plan.run(Conv2dArgs{.x = dx, .w = dw, .bias = db, .y = dy, .n = batch});
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<unsigned char> raw(y_all);
  ASSERT_EQ(cudaMemcpy(raw.data(), dy, raw.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  for (void* p : buffers) cudaFree(p);
  const auto past = std::find_if(raw.begin() + static_cast<std::ptrdiff_t>(y_bytes), raw.end(),
                                 [](unsigned char v) { return v != 0xff; });
  ASSERT_EQ(past, raw.end()) << "a write past the batch's outputs at byte " << (past - raw.begin());
  raw.resize(y_bytes);
  const std::vector<float> y = testing::y_from_layout(d, from_storage(raw, t));
  const auto unwritten = std::count_if(y.begin(), y.end(), [](float v) { return std::isnan(v); });
  ASSERT_EQ(unwritten, 0);
  const auto o = d.output_shape();
  if (batch <= 17) {
    EXPECT_LT(testing::relative_l2(y, testing::reference_conv2d(d, x, w, b)), tolerance(d));
    return;
  }
  // Sampled: every image's first and last output, then random ones.
  std::vector<float> got;
  std::vector<double> want;
  auto sample = [&](std::int64_t n, std::int64_t k, std::int64_t p, std::int64_t q) {
    got.push_back(y[static_cast<std::size_t>(((n * o.k + k) * o.p + p) * o.q + q)]);
    want.push_back(testing::reference_at(d, x, w, b, n, k, p, q));
  };
  for (std::int64_t n = 0; n < batch; ++n) {
    sample(n, 0, 0, 0);
    sample(n, o.k - 1, o.p - 1, o.q - 1);
  }
  std::uniform_int_distribution<std::int64_t> pick(0, d.y_elements() - 1);
  for (int i = 0; i < 8192; ++i) {
    std::int64_t e = pick(rng);
    const std::int64_t q = e % o.q;
    e /= o.q;
    const std::int64_t p = e % o.p;
    e /= o.p;
    sample(e / o.k, e % o.k, p, q);
  }
  EXPECT_LT(testing::relative_l2(got, want), tolerance(d));
}

TEST_F(DynamicBatchGpu, OnePlanRunsBatches1To256InEveryAlgorithmDtypeMathAndLayoutWithOneCompile) {
  const auto all = cases();
  std::vector<std::optional<Conv2dPlan>> plans(all.size());
  std::vector<std::string> errors(all.size());
  // One Runtime per case: its compile counter is then that plan's alone.
  std::vector<std::unique_ptr<Runtime>> runtimes;
  for (std::size_t i = 0; i < all.size(); ++i) {
    runtimes.push_back(
        std::make_unique<Runtime>(RuntimeOptions{.cache_dir = dir_.path() / std::to_string(i), .autotune = false}));
  }
  {
    std::atomic<std::size_t> next{0};
    std::vector<std::jthread> pool;
    const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        for (std::size_t i = next++; i < all.size(); i = next++) {
          try {
            plans[i] = runtimes[i]->plan(all[i].desc, PlanOptions{.algorithm = all[i].algorithm});
          } catch (const std::exception& e) {
            errors[i] = e.what();
          }
        }
      });
    }
  }
  std::mt19937_64 rng(17);
  for (std::size_t i = 0; i < all.size(); ++i) {
    const Case& c = all[i];
    SCOPED_TRACE(fmt::format("{} algorithm={}", c.desc.to_string(), to_string(c.algorithm)));
    ASSERT_TRUE(plans[i].has_value()) << errors[i];
    const Conv2dPlan& plan = *plans[i];
    EXPECT_TRUE(plan.kernel_name().starts_with(c.expect_prefix)) << plan.kernel_name();
    EXPECT_NE(plan.kernel_name().find("_ndyn256c"), std::string::npos) << plan.kernel_name();
    for (int batch : kBatches) {
      SCOPED_TRACE(fmt::format("batch {} ({})", batch, plan.kernel_name()));
      check_batch(plan, batch, rng);
    }
    EXPECT_EQ(runtimes[i]->stats().compiles, 1u) << "one compile serves every batch";
    EXPECT_EQ(runtimes[i]->stats().module_loads, 1u);
  }
}

// The NHWC wgmma kernel with a dynamic batch: tiles of kBM pixels run on across images,
// so a run's last tile ends inside an image (batches 1, 3, 17); and where the grid leaves
// SMs idle it splits the reduction, its partial sums kept in the workspace at the stride
// of the descriptor's n, which a run of any batch fills a prefix of before the reduce
// pass (which takes the batch too) writes y. One plan each of n = 64 runs batches 1, 3,
// 8, 17 and 64, every data type and math mode.
TEST_F(DynamicBatchGpu, NhwcWgmmaAndSplitKPlansRunBatches1To64) {
  constexpr int kMax = 64;
  // 4 x 5 pixels an image (20, no multiple of a tile's 128 or 256) over one or two
  // 128-byte channel chunks: few enough tiles for 64 images that NHWC goes to wgmma
  // (nhwc_prefers_wgmma), few enough stages (4 taps) that it is not split.
  const Conv2dDesc wide{.n = kMax,
                        .c = 64,
                        .h = 5,
                        .w = 6,
                        .k = 72,
                        .r = 2,
                        .s = 2,
                        .bias = true,
                        .activation = Activation::kRelu,
                        .layout = Layout::kNHWC,
                        .dynamic_batch = true};
  // 4 x 4 pixels over 512 channels: a few tiles for 64 images, so the 9 x 16 or more
  // stages of a tile are cut into slices.
  const Conv2dDesc deep{.n = kMax,
                        .c = 512,
                        .h = 4,
                        .w = 4,
                        .k = 128,
                        .r = 3,
                        .s = 3,
                        .pad_h = 1,
                        .pad_w = 1,
                        .bias = true,
                        .activation = Activation::kRelu,
                        .layout = Layout::kNHWC,
                        .dynamic_batch = true};
  std::mt19937_64 rng(3);
  for (const Mode& m : kModes) {
    for (const bool split : {false, true}) {
      Conv2dDesc d = split ? deep : wide;
      d.dtype = m.dtype;
      d.math = m.math;
      SCOPED_TRACE(fmt::format("{} split-K {}", d.to_string(), split));
      Runtime rt(RuntimeOptions{.cache_dir = dir_.path() / fmt::format("{}_{}_{}", to_string(m.dtype),
                                                                       to_string(m.math), split ? "split" : "whole"),
                                .autotune = false});
      const Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
      ASSERT_TRUE(plan.kernel_name().starts_with("conv2d_wgmma_")) << plan.kernel_name();
      ASSERT_NE(plan.kernel_name().find("_ndyn64c"), std::string::npos) << plan.kernel_name();
      // Partial sums past the packed weights only where split, as whole slices of the
      // descriptor's n images.
      const std::uint64_t partial = plan.workspace_bytes() - plan.packed_weight_bytes();
      const auto o = d.output_shape();
      const std::uint64_t slice = std::uint64_t{kMax} * o.p * o.q * o.k * sizeof(float);
      if (split) {
        ASSERT_GT(partial, 0u) << "not split: " << plan.kernel_name();
        EXPECT_EQ(partial % slice, 0u) << partial << " bytes of partial sums, slices of " << slice;
        EXPECT_GT(partial / slice, 1u);
      } else {
        EXPECT_EQ(partial, 0u) << plan.kernel_name();
      }
      for (int batch : {1, 3, 8, 17, 64}) {
        SCOPED_TRACE(fmt::format("batch {} ({})", batch, plan.kernel_name()));
        check_batch(plan, batch, rng);
      }
      EXPECT_EQ(rt.stats().compiles, 1u) << "one compile serves every batch";
    }
  }
}

// kAuto and autotuning choose from the descriptor's n; the run's batch never changes the
// plan's kernel, and a batch past n is refused before any launch.
TEST_F(DynamicBatchGpu, AutoPlansServeEverySmallerBatchAndRefuseALargerOne) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path(), .autotune = false});
  const Conv2dDesc resnet{
      .n = 64, .c = 256, .h = 14, .w = 14, .k = 256, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .dynamic_batch = true};
  const Conv2dPlan plan = rt.plan(resnet);
  std::mt19937_64 rng(64);
  for (int batch : {1, 8, 64}) {
    SCOPED_TRACE(fmt::format("batch {}", batch));
    check_batch(plan, batch, rng);
  }
  EXPECT_EQ(rt.stats().compiles, 1u);
  try {
    plan.run(Conv2dArgs{.x = reinterpret_cast<void*>(256),
                        .w = reinterpret_cast<void*>(256),
                        .y = reinterpret_cast<void*>(256),
                        .n = 65});
    ADD_FAILURE() << "batch 65 of a plan for at most 64 was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find("Conv2dArgs.n"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace convjit
