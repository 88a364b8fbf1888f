// Channels-last (NHWC) on a real GPU through the direct kernel, the depthwise kernel
// and im2col + cuBLAS (forced and as kAuto picks), against the float64 reference:
// random problems with odd channel counts, every stride 1-3, padding, dilation, groups,
// bias and ReLU, in every data type and math mode, with each pointer at an offset its
// dtype allows; 1x1 problems as a plain GEMM on x and strided 1x1 ones gathered; and
// im2col cut into image and row chunks by a small workspace. Plans compile in parallel
// first, so the suite stays well under a minute. Run it alone with
// `ctest -R NhwcDirectIm2col` (or --gtest_filter='NhwcDirectIm2col*').
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

struct Mode {
  DType dtype;
  MathMode math;
};
constexpr Mode kModes[] = {{DType::kFloat32, MathMode::kTF32},
                           {DType::kFloat32, MathMode::kStrictFp32},
                           {DType::kFloat16, MathMode::kTF32},
                           {DType::kBFloat16, MathMode::kStrictFp32}};

using testing::tolerance;

// Byte offsets from a 256-byte aligned allocation that the dtype allows.
std::vector<std::size_t> legal_offsets(DType dtype) {
  return dtype == DType::kFloat32 ? std::vector<std::size_t>{0, 4, 8, 12} : std::vector<std::size_t>{0, 2, 4, 6, 8};
}

struct Case {
  Conv2dDesc desc;
  Algorithm algorithm = Algorithm::kAuto;
  std::size_t offset = 0;            // bytes past the allocation, for x, w, bias and y alike
  std::string expect_kernel_prefix;  // empty: any
};

int pick(std::mt19937_64& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

// 0 dense, 1 grouped, 2 depthwise (groups == c, multiplier 1 or 2), 3 1x1 stride 1
// (plain GEMM), 4 strided or padded 1x1 (gathered).
Conv2dDesc random_nhwc_desc(std::mt19937_64& rng, int kind) {
  while (true) {
    Conv2dDesc d{.layout = Layout::kNHWC};
    d.n = pick(rng, 1, 3);
    d.h = pick(rng, 1, 19);
    d.w = pick(rng, 1, 21);
    d.r = pick(rng, 1, 5);
    d.s = pick(rng, 1, 5);
    d.stride_h = pick(rng, 1, 3);
    d.stride_w = pick(rng, 1, 3);
    d.pad_h = pick(rng, 0, 2);
    d.pad_w = pick(rng, 0, 2);
    d.dilation_h = pick(rng, 1, 3);
    d.dilation_w = pick(rng, 1, 3);
    switch (kind) {
      case 0:
        d.c = pick(rng, 1, 37);
        d.k = pick(rng, 1, 41);
        break;
      case 1:
        d.groups = pick(rng, 2, 4);
        d.c = d.groups * pick(rng, 1, 9);
        d.k = d.groups * pick(rng, 1, 11);
        break;
      case 2:
        d.c = d.groups = pick(rng, 2, 40);
        d.k = d.c * pick(rng, 1, 2);
        break;
      case 3:
      case 4:
        d.groups = pick(rng, 1, 2);
        d.c = d.groups * pick(rng, 1, 19);
        d.k = d.groups * pick(rng, 1, 21);
        d.r = d.s = 1;
        d.dilation_h = d.dilation_w = 1;
        if (kind == 3) {
          d.stride_h = d.stride_w = 1;
          d.pad_h = d.pad_w = 0;
          d.h = pick(rng, 1, 30);
        } else if (d.stride_h == 1 && d.stride_w == 1 && d.pad_h == 0 && d.pad_w == 0) {
          d.stride_h = 2;
        }
        break;
    }
    d.bias = pick(rng, 0, 1) == 1;
    d.activation = pick(rng, 0, 1) == 1 ? Activation::kRelu : Activation::kNone;
    try {
      d.validate();
      return d;
    } catch (const Error&) {
      // the dilated filter overhangs the padded input: draw again
    }
  }
}

class NhwcDirectIm2col : public ::testing::Test {
 protected:
  void SetUp() override {
    CONVJIT_REQUIRE_GPU();
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    ASSERT_EQ(cudaFree(nullptr), cudaSuccess);  // the primary context, current on this thread
  }

  // Builds every case's plan on all cores (NVRTC compiles dominate), then runs each on
  // fresh random data and checks it.
  void check_all(Runtime& rt, const std::vector<Case>& cases, std::uint64_t seed) {
    std::vector<std::optional<Conv2dPlan>> plans(cases.size());
    std::vector<std::string> errors(cases.size());
    std::atomic<std::size_t> next{0};
    {
      std::vector<std::jthread> pool;
      const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
      for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&] {
          for (std::size_t i = next++; i < cases.size(); i = next++) {
            try {
              plans[i] = rt.plan(cases[i].desc, PlanOptions{.algorithm = cases[i].algorithm});
            } catch (const std::exception& e) {
              errors[i] = e.what();
            }
          }
        });
      }
    }
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      SCOPED_TRACE(fmt::format("{} algorithm={} offset={}", c.desc.to_string(), to_string(c.algorithm), c.offset));
      ASSERT_TRUE(plans[i].has_value()) << errors[i];
      if (!c.expect_kernel_prefix.empty()) {
        EXPECT_TRUE(plans[i]->kernel_name().starts_with(c.expect_kernel_prefix)) << plans[i]->kernel_name();
      }
      check_one(*plans[i], c, rng);
    }
  }

  static void check_one(const Conv2dPlan& plan, const Case& c, std::mt19937_64& rng) {
    const Conv2dDesc& d = c.desc;
    const DType t = d.dtype;
    // Logical order (x N,C,H,W; w K,C/g,R,S) for the reference, NHWC order on the device.
    const auto x = testing::random_nonzero(static_cast<std::size_t>(d.x_elements()), rng, -1.0f, 1.0f, t);
    const auto w = testing::random_nonzero(static_cast<std::size_t>(d.w_elements()), rng, -1.0f, 1.0f, t);
    const auto b =
        d.bias ? testing::random_nonzero(static_cast<std::size_t>(d.k), rng, -1.0f, 1.0f, t) : std::vector<float>{};
    const std::size_t y_bytes = static_cast<std::size_t>(d.y_elements()) * size_of(t);
    std::vector<void*> bases;
    auto upload = [&](const std::vector<float>& values) -> void* {
      const auto bytes = to_storage(values, t);
      void* base = nullptr;
      EXPECT_EQ(cudaMalloc(&base, bytes.size() + 16), cudaSuccess);
      bases.push_back(base);
      char* at = static_cast<char*>(base) + c.offset;
      EXPECT_EQ(cudaMemcpy(at, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), cudaSuccess);
      return at;
    };
    void* dx = upload(testing::x_in_layout(d, x));
    void* dw = upload(testing::w_in_layout(d, w));
    void* db = d.bias ? upload(b) : nullptr;
    void* y_base = nullptr;
    ASSERT_EQ(cudaMalloc(&y_base, y_bytes + 16), cudaSuccess);
    bases.push_back(y_base);
    char* dy = static_cast<char*>(y_base) + c.offset;
    // All-ones bytes are a NaN in f32, f16 and bf16 alike; the bytes around y too, to
    // catch a write past either end.
    ASSERT_EQ(cudaMemset(y_base, 0xff, y_bytes + 16), cudaSuccess);
    plan.run(dx, dw, db, dy);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<unsigned char> raw(y_bytes + 16);
    ASSERT_EQ(cudaMemcpy(raw.data(), y_base, raw.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (i < c.offset || i >= c.offset + y_bytes) {
        ASSERT_EQ(raw[i], 0xff) << "a write outside y at byte " << i;
      }
    }
    const std::vector<unsigned char> y_raw(raw.begin() + static_cast<std::ptrdiff_t>(c.offset),
                                           raw.begin() + static_cast<std::ptrdiff_t>(c.offset + y_bytes));
    const std::vector<float> y = testing::y_from_layout(d, from_storage(y_raw, t));
    const auto unwritten = std::count_if(y.begin(), y.end(), [](float v) { return std::isnan(v); });
    EXPECT_EQ(unwritten, 0) << plan.kernel_name();
    EXPECT_LT(testing::relative_l2(y, testing::reference_conv2d(d, x, w, b)), tolerance(d)) << plan.kernel_name();
    for (void* p : bases) cudaFree(p);
  }

  testing::TempDir dir_;
};

TEST_F(NhwcDirectIm2col, RandomProblemsMatchFloat64WithEveryAlgorithmDtypeMathAndOffset) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  std::mt19937_64 rng(20261130);
  std::vector<Case> cases;
  int serial = 0;
  for (int i = 0; i < 30; ++i) {
    for (const Mode& mode : kModes) {
      if ((i + static_cast<int>(&mode - kModes)) % 2 != 0) continue;  // each problem in two of the modes
      Conv2dDesc d = random_nhwc_desc(rng, i % 5);
      d.dtype = mode.dtype;
      d.math = mode.math;
      const auto offsets = legal_offsets(d.dtype);
      for (const Algorithm a : {Algorithm::kDirect, Algorithm::kIm2colGemm, Algorithm::kAuto}) {
        cases.push_back({d, a, offsets[static_cast<std::size_t>(serial++) % offsets.size()]});
      }
    }
  }
  check_all(rt, cases, 7);
}

// groups == c: the depthwise kernel, with 16-byte channel vectors where c allows and
// the pointers are aligned, per element otherwise (odd c, any element offset).
TEST_F(NhwcDirectIm2col, DepthwiseMatchesFloat64WithVectorAndElementChannelRuns) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  const Conv2dDesc shapes[] = {
      {.n = 2, .c = 32, .h = 13, .w = 14, .k = 32, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 32, .bias = true},
      {.n = 1,
       .c = 40,
       .h = 9,
       .w = 17,
       .k = 80,
       .r = 5,
       .s = 5,
       .stride_h = 2,
       .stride_w = 2,
       .pad_h = 2,
       .pad_w = 2,
       .groups = 40,
       .activation = Activation::kRelu},
      {.n = 3, .c = 13, .h = 11, .w = 7, .k = 13, .r = 3, .s = 1, .stride_w = 3, .dilation_h = 2, .groups = 13},
      {.n = 1, .c = 264, .h = 7, .w = 7, .k = 264, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 264, .bias = true},
      {.n = 2, .c = 12, .h = 10, .w = 9, .k = 24, .r = 3, .s = 3, .pad_h = 1, .groups = 3},  // 4 in, 8 out a group
  };
  std::vector<Case> cases;
  for (const Mode& mode : kModes) {
    for (Conv2dDesc d : shapes) {
      d.layout = Layout::kNHWC;
      d.dtype = mode.dtype;
      d.math = mode.math;
      for (const std::size_t offset : {std::size_t{0}, size_of(d.dtype)}) {
        cases.push_back({d, Algorithm::kDirect, offset, "conv2d_depthwise_"});
      }
      cases.push_back({d, Algorithm::kAuto, 8, "conv2d_depthwise_"});
    }
  }
  check_all(rt, cases, 11);
}

// A 1x1, stride-1, unpadded NHWC convolution is one GEMM on x itself: no column matrix,
// so no workspace beyond cuBLAS's; groups are one GEMM each. Strided 1x1 gathers.
TEST_F(NhwcDirectIm2col, OneByOneIsAPlainGemmOnXAndStridedOneByOneIsGathered) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  const Conv2dDesc shapes[] = {
      {.n = 3, .c = 20, .h = 9, .w = 14, .k = 36},
      {.n = 2, .c = 7, .h = 5, .w = 11, .k = 9, .bias = true, .activation = Activation::kRelu},
      {.n = 2, .c = 30, .h = 6, .w = 7, .k = 18, .groups = 3, .bias = true},
      {.n = 1, .c = 64, .h = 14, .w = 14, .k = 128, .stride_h = 2, .stride_w = 2},
      {.n = 2, .c = 9, .h = 8, .w = 13, .k = 10, .stride_h = 3, .stride_w = 2, .pad_h = 1, .bias = true},
  };
  std::vector<Case> cases;
  for (const Mode& mode : kModes) {
    for (Conv2dDesc d : shapes) {
      d.layout = Layout::kNHWC;
      d.dtype = mode.dtype;
      d.math = mode.math;
      cases.push_back({d, Algorithm::kIm2colGemm, 0, "conv2d_im2col_"});
      cases.push_back({d, Algorithm::kIm2colGemm, legal_offsets(d.dtype).back()});
      cases.push_back({d, Algorithm::kAuto, size_of(d.dtype)});
    }
  }
  check_all(rt, cases, 13);
  Conv2dDesc plain = shapes[0];
  plain.layout = Layout::kNHWC;
  Conv2dDesc strided = shapes[3];
  strided.layout = Layout::kNHWC;
  const Conv2dPlan gemm = rt.plan(plain, PlanOptions{.algorithm = Algorithm::kIm2colGemm});
  const Conv2dPlan gather = rt.plan(strided, PlanOptions{.algorithm = Algorithm::kIm2colGemm});
  // Only cuBLAS's workspace (at most 32 MiB and its alignment) for the plain GEMM; the
  // gathered one holds its column matrix too.
  EXPECT_LE(gemm.workspace_bytes(), (std::uint64_t{32} << 20) + 512);
  const auto o = strided.output_shape();
  EXPECT_GE(gather.workspace_bytes(), static_cast<std::uint64_t>(o.n * o.p * o.q) * strided.c * 4);
}

// A workspace too small for the whole column matrix: chunks of whole images, and of
// rows within one image, each GEMM writing its own run of output pixels.
TEST_F(NhwcDirectIm2col, Im2colChunkedByImagesAndRowsMatchesFloat64) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path(), .workspace_limit_bytes = 64 << 10});
  const Conv2dDesc shapes[] = {
      // 9 KiB of f32 columns an image: six images a chunk, then the last one.
      {.n = 13, .c = 4, .h = 8, .w = 8, .k = 20, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      // 113 KiB an image: chunks of rows.
      {.n = 3, .c = 8, .h = 20, .w = 20, .k = 17, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
      // Groups: each group's columns gathered and multiplied in turn.
      {.n = 2, .c = 12, .h = 15, .w = 13, .k = 18, .r = 3, .s = 3, .stride_h = 2, .pad_w = 1, .groups = 3},
  };
  std::vector<Case> cases;
  for (const Mode& mode : kModes) {
    for (Conv2dDesc d : shapes) {
      d.layout = Layout::kNHWC;
      d.dtype = mode.dtype;
      d.math = mode.math;
      d.activation = Activation::kRelu;
      cases.push_back({d, Algorithm::kIm2colGemm, size_of(d.dtype), "conv2d_im2col_"});
    }
  }
  check_all(rt, cases, 17);
}

}  // namespace
}  // namespace convjit
