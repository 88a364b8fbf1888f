// The implicit-GEMM algorithm on channels-last (NHWC) tensors against the float64 CPU
// reference: random problems in every dtype and math mode (odd channel counts, groups,
// sizes that divide no tile, strides 1 to 3, padding, dilation, bias and ReLU), pointers
// at every offset their dtype allows, and the weight-packing API. On Hopper the wgmma
// kernel takes the NHWC problems wgmma_unsupported_reason lets it (32+ output channels a
// group, channel runs it can copy in 4-byte pieces), mma.sync the rest: the WgmmaNhwc
// tests draw problems the wgmma kernel takes and assert it ran by the kernel's name.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "base/float16.hpp"
#include "support/gpu.hpp"
#include "support/gpu_conv.hpp"
#include "support/random_desc.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"

namespace convjit {
namespace {

using testing::Kind;
using testing::kKinds;
using testing::of_kind;

// Channel counts per group from 1 (odd ones included, so that every copy width down to a
// single element is drawn) to past one 128-channel tile; 1 to 3 groups.
Conv2dDesc random_nhwc_desc(std::mt19937_64& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  while (true) {
    Conv2dDesc d{.layout = Layout::kNHWC};
    d.groups = pick(0, 2) == 0 ? pick(2, 3) : 1;
    d.c = d.groups * (pick(0, 1) == 0 ? pick(1, 13) : 8 * pick(1, 10));
    d.k = d.groups * (pick(0, 1) == 0 ? pick(1, 41) : pick(60, 150));
    if (testing::draw_geometry(rng, d, {.h = 24, .w = 30})) return d;
  }
}

void expect_mma_nhwc(const std::string& kernel_name) {
  EXPECT_TRUE(kernel_name.starts_with("conv2d_igemm_")) << kernel_name;
  EXPECT_NE(kernel_name.find("_nhwc_"), std::string::npos) << kernel_name;
}

// Either tensor-core kernel of the implicit-GEMM algorithm, reading NHWC.
void expect_nhwc_implicit_gemm(const std::string& kernel_name) {
  EXPECT_TRUE(kernel_name.starts_with("conv2d_igemm_") || kernel_name.starts_with("conv2d_wgmma_")) << kernel_name;
  EXPECT_NE(kernel_name.find("_nhwc_"), std::string::npos) << kernel_name;
}

class NhwcImplicitGemm : public ::testing::Test {
 protected:
  void SetUp() override {
    CONVJIT_REQUIRE_GPU();
    Runtime probe(RuntimeOptions{.cache_dir = dir_.path()});
    const std::string arch = probe.device_arch();
    if (std::stoi(arch.substr(3)) < 80) {
      GTEST_SKIP() << "the tensor-core kernels need sm_80 or newer, this GPU is " << arch;
    }
  }
  RuntimeOptions options() const { return RuntimeOptions{.cache_dir = dir_.path()}; }
  testing::TempDir dir_;
  // These tests hold the cp.async kernels (mma.sync and wgmma) to float64; the wgmma
  // kernel's TMA variant, the default where its map reads x, has its own (WgmmaTma).
  testing::ScopedEnv cp_async_{"CONVJIT_WGMMA_TMA", "0"};
  // Pointwise problems in TF32 and 16-bit have their own kernel (PointwiseStream).
  testing::ScopedEnv pointwise_here_{"CONVJIT_POINTWISE_STREAM", "0"};
};

TEST_F(NhwcImplicitGemm, RandomProblemsMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(20261214);
  for (int i = 0; i < 16; ++i) {
    // Each problem in one kind, the kinds in turn: every kind meets every kind of shape
    // over the run without compiling each shape four times.
    const Conv2dDesc d = of_kind(random_nhwc_desc(rng), kKinds[i % 4]);
    SCOPED_TRACE(d.to_string());
    const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    expect_nhwc_implicit_gemm(plan.kernel_name());
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, testing::tolerance(d));
  }
}

TEST_F(NhwcImplicitGemm, NetworkShapesWithAllPositiveDataStayInBounds) {
  // Deep channels on small images (16-byte copies of both operands, channel-pair stores),
  // a strided 3x3 and a strided 1x1; all-positive inputs are where rounding bias adds up.
  Runtime rt(options());
  std::mt19937_64 rng(14);
  const Conv2dDesc shapes[] = {
      {.n = 2, .c = 256, .h = 14, .w = 14, .k = 256, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      {.n = 1,
       .c = 128,
       .h = 29,
       .w = 29,
       .k = 192,
       .r = 3,
       .s = 3,
       .stride_h = 2,
       .stride_w = 2,
       .pad_h = 1,
       .pad_w = 1},
      {.n = 3, .c = 64, .h = 15, .w = 15, .k = 96, .stride_h = 2, .stride_w = 2, .activation = Activation::kRelu},
  };
  for (int i = 0; i < 3; ++i) {
    for (const Kind& kind : kKinds) {
      Conv2dDesc d = of_kind(shapes[i], kind);
      d.layout = Layout::kNHWC;
      SCOPED_TRACE(d.to_string());
      const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm,
                                                /*positive=*/true);
      EXPECT_EQ(result.unwritten, 0u);
      EXPECT_LT(result.rel_err, testing::tolerance(d));
    }
  }
}

// One problem's NHWC tensors on the device, each `offset` bytes past its allocation.
struct OffsetRun {
  std::vector<float> x, w, b;  // logical order (NCHW), for the reference
  double rel_err = 0;
  std::size_t unwritten = 0;
  std::string kernel;
};

OffsetRun run_at_offset(Runtime& rt, const Conv2dPlan& plan, const Conv2dDesc& d, std::size_t offset,
                        std::mt19937_64& rng) {
  OffsetRun out;
  const DType t = d.dtype;
  out.x = testing::random_nonzero(static_cast<std::size_t>(d.x_elements()), rng, -1.0f, 1.0f, t);
  out.w = testing::random_nonzero(static_cast<std::size_t>(d.w_elements()), rng, -1.0f, 1.0f, t);
  if (d.bias) out.b = testing::random_nonzero(static_cast<std::size_t>(d.k), rng, -1.0f, 1.0f, t);
  // Every buffer holds `offset` bytes before its tensor and ends on a 32-bit word.
  auto place = [&](const std::vector<unsigned char>& bytes) {
    std::vector<unsigned char> host((offset + bytes.size() + 3) / 4 * 4, 0);
    std::copy(bytes.begin(), bytes.end(), host.begin() + static_cast<std::ptrdiff_t>(offset));
    DeviceBuffer buffer(rt, host.size());
    buffer.upload(host.data(), host.size());
    return buffer;
  };
  const DeviceBuffer dx = place(to_storage(testing::x_in_layout(d, out.x), t));
  const DeviceBuffer dw = place(to_storage(testing::w_in_layout(d, out.w), t));
  const DeviceBuffer db = place(d.bias ? to_storage(out.b, t) : std::vector<unsigned char>(4));
  const std::size_t y_bytes = static_cast<std::size_t>(d.y_elements()) * size_of(t);
  DeviceBuffer dy(rt, (offset + y_bytes + 3) / 4 * 4);
  dy.fill_u32(nan_fill_pattern(t));
  auto at = [&](const DeviceBuffer& buffer) { return static_cast<char*>(buffer.data()) + offset; };
  plan.run(Conv2dArgs{.x = at(dx), .w = at(dw), .bias = d.bias ? at(db) : nullptr, .y = at(dy)});
  std::vector<unsigned char> raw(dy.size());
  dy.download(raw.data(), raw.size());  // synchronous: waits for the kernel
  const std::vector<unsigned char> y_raw(raw.begin() + static_cast<std::ptrdiff_t>(offset),
                                         raw.begin() + static_cast<std::ptrdiff_t>(offset + y_bytes));
  const std::vector<float> y = testing::y_from_layout(d, from_storage(y_raw, t));
  for (float v : y) out.unwritten += std::isnan(v) ? 1 : 0;
  out.rel_err = testing::relative_l2(y, testing::reference_conv2d(d, out.x, out.w, out.b));
  return out;
}

// `plan` run with x, w, bias and y each at every byte offset from 0 to 12 that the dtype
// allows, against float64.
void expect_correct_at_every_offset(Runtime& rt, const Conv2dPlan& plan, const Conv2dDesc& d, std::mt19937_64& rng) {
  for (const std::size_t offset : {0u, 2u, 4u, 8u, 12u}) {
    if (offset % size_of(d.dtype) != 0) continue;
    SCOPED_TRACE(fmt::format("{} offset {}", d.to_string(), offset));
    const OffsetRun r = run_at_offset(rt, plan, d, offset, rng);
    EXPECT_EQ(r.unwritten, 0u);
    EXPECT_LT(r.rel_err, testing::tolerance(d));
  }
}

TEST_F(NhwcImplicitGemm, PointersAtEveryOffsetTheDtypeAllowsGiveCorrectResults) {
  // Channel counts a multiple of 8, so the plan's own kernel copies 16 bytes at a time
  // and stores channel pairs: each smaller offset needs a narrower variant, and gets one.
  // 20 output channels a group: the mma.sync kernel on every arch.
  Runtime rt(options());
  std::mt19937_64 rng(1214);
  const Conv2dDesc base{.n = 2,
                        .c = 128,
                        .h = 9,
                        .w = 11,
                        .k = 40,
                        .r = 3,
                        .s = 3,
                        .pad_h = 1,
                        .pad_w = 1,
                        .groups = 2,
                        .bias = true,
                        .layout = Layout::kNHWC};
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d = of_kind(base, kind);
    const Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    expect_mma_nhwc(plan.kernel_name());
    EXPECT_EQ(plan.alignment().x, 16u) << plan.kernel_name();
    expect_correct_at_every_offset(rt, plan, d, rng);
  }
}

TEST_F(NhwcImplicitGemm, PackWeightsIsRefusedAndTheWeightsAreReadAsStored) {
  // The mma.sync kernel reads w as PyTorch stores a channels-last weight (K,R,S,C/groups):
  // there is nothing to pack, pack_weights says so with nothing launched, and the plan
  // still runs correctly afterwards. 24 output channels: the mma.sync kernel on every arch.
  Runtime rt(options());
  std::mt19937_64 rng(99);
  const Conv2dDesc d{
      .n = 1, .c = 32, .h = 10, .w = 12, .k = 24, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .layout = Layout::kNHWC};
  const Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
  expect_mma_nhwc(plan.kernel_name());
  EXPECT_EQ(plan.packed_weight_bytes(), 0u);
  DeviceBuffer w(rt, static_cast<std::size_t>(d.w_elements()) * 4), packed(rt, 1024);
  try {
    plan.pack_weights(w.data(), packed.data());
    ADD_FAILURE() << "pack_weights accepted a kernel that reads the weights as they are";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
  }
  const OffsetRun r = run_at_offset(rt, plan, d, 0, rng);
  EXPECT_EQ(r.unwritten, 0u);
  EXPECT_LT(r.rel_err, testing::tolerance(d));
}

// ---- the wgmma kernel on NHWC (Hopper) ----

class WgmmaNhwc : public NhwcImplicitGemm {
 protected:
  void SetUp() override {
    NhwcImplicitGemm::SetUp();
    if (IsSkipped()) return;
    Runtime probe(options());
    if (probe.device_arch() != "sm_90") {
      GTEST_SKIP() << "the wgmma kernel needs an sm_90 GPU, this one is " << probe.device_arch();
    }
  }
};

// Problems the wgmma kernel takes (32 to 150 output channels a group; 16-bit channel
// runs of even length, so 4-byte pieces at least): channel counts odd, of one to several
// 128-byte chunks, 1 to 3 groups, sizes that divide no tile, every stride, padding and
// dilation. Small enough for the float64 reference and compute-sanitizer.
Conv2dDesc random_wgmma_nhwc_desc(std::mt19937_64& rng, DType dtype) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  while (true) {
    Conv2dDesc d{.dtype = dtype, .layout = Layout::kNHWC};
    d.groups = pick(0, 3) == 0 ? pick(2, 3) : 1;
    // At least one 128-byte chunk a group: fewer go to mma.sync (nhwc_prefers_wgmma).
    int c_per_group = pick(0, 1) == 0 ? pick(64, 100) : pick(101, 200);
    if (dtype != DType::kFloat32) c_per_group += c_per_group % 2;
    d.c = d.groups * c_per_group;
    d.k = d.groups * pick(32, 150);
    if (!testing::draw_geometry(rng, d)) continue;
    if (d.flops() <= 4e8) return d;
  }
}

void expect_wgmma_nhwc(const std::string& kernel_name) {
  EXPECT_TRUE(kernel_name.starts_with("conv2d_wgmma_")) << kernel_name;
  EXPECT_NE(kernel_name.find("_nhwc_"), std::string::npos) << kernel_name;
}

TEST_F(WgmmaNhwc, RandomProblemsRunOnWgmmaAndMatchFloat64InEveryDtypeAndMathMode) {
  Runtime rt(options());
  std::mt19937_64 rng(20261130);
  for (int i = 0; i < 24; ++i) {
    const Kind& kind = kKinds[i % 4];
    const Conv2dDesc d = of_kind(random_wgmma_nhwc_desc(rng, kind.dtype), kind);
    SCOPED_TRACE(d.to_string());
    const auto plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    expect_wgmma_nhwc(plan.kernel_name());
    EXPECT_GT(plan.packed_weight_bytes(), 0u);
    const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm);
    EXPECT_EQ(result.unwritten, 0u);
    EXPECT_LT(result.rel_err, testing::tolerance(d));
  }
}

TEST_F(WgmmaNhwc, NetworkShapesWithAllPositiveDataStayInBounds) {
  // A mid-size 3x3 over several tiles and channel blocks, deep channels on a 7x7 image (one
  // tile: the grid cannot fill the machine) and a strided 3x3 with ReLU; all-positive
  // inputs are where rounding bias adds up.
  Runtime rt(options());
  std::mt19937_64 rng(1130);
  const Conv2dDesc shapes[] = {
      {.n = 2, .c = 64, .h = 28, .w = 28, .k = 192, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      {.n = 1, .c = 512, .h = 7, .w = 7, .k = 256, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      {.n = 2,
       .c = 96,
       .h = 15,
       .w = 17,
       .k = 64,
       .r = 3,
       .s = 3,
       .stride_h = 2,
       .stride_w = 2,
       .pad_h = 1,
       .pad_w = 1,
       .activation = Activation::kRelu},
  };
  for (const Conv2dDesc& shape : shapes) {
    for (const Kind& kind : kKinds) {
      Conv2dDesc d = of_kind(shape, kind);
      d.layout = Layout::kNHWC;
      SCOPED_TRACE(d.to_string());
      expect_wgmma_nhwc(rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm}).kernel_name());
      const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm,
                                                /*positive=*/true);
      EXPECT_EQ(result.unwritten, 0u);
      EXPECT_LT(result.rel_err, testing::tolerance(d));
    }
  }
}

TEST_F(WgmmaNhwc, PointersAtEveryOffsetTheDtypeAllowsGiveCorrectResults) {
  // 64 channels a group (256 or 128 bytes): the plan's kernel copies 16-byte pieces and
  // stores channel pairs (16-bit: runs of four); offsets of 4, 8 and 12 bytes get 4- or
  // 8-byte pieces and single or pair stores, 16-bit offsets of 2 the mma.sync kernel (x in
  // pieces of one element).
  Runtime rt(options());
  std::mt19937_64 rng(3011);
  const Conv2dDesc base{.n = 2,
                        .c = 128,
                        .h = 9,
                        .w = 11,
                        .k = 80,
                        .r = 3,
                        .s = 3,
                        .pad_h = 1,
                        .pad_w = 1,
                        .groups = 2,
                        .bias = true,
                        .layout = Layout::kNHWC};
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d = of_kind(base, kind);
    const Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    expect_wgmma_nhwc(plan.kernel_name());
    EXPECT_EQ(plan.alignment().x, 16u) << plan.kernel_name();
    // A pair of floats, or four 16-bit channels: 8 bytes either way.
    EXPECT_EQ(plan.alignment().y, 8u) << plan.kernel_name();
    expect_correct_at_every_offset(rt, plan, d, rng);
  }
}

TEST_F(WgmmaNhwc, SplitReductionsMatchFloat64InEveryDtypeAndMathMode) {
  // Deep channels on small images: the grid cannot fill the machine, so the reduction is
  // split into slices whose partial sums sit in the workspace past the packed weights;
  // channel tails, two channel blocks, groups and a stride, and bias and ReLU applied
  // once, after the slices are added.
  Runtime rt(options());
  std::mt19937_64 rng(1403);
  const Conv2dDesc shapes[] = {
      {.n = 1,
       .c = 300,
       .h = 9,
       .w = 7,
       .k = 96,
       .r = 3,
       .s = 3,
       .pad_h = 1,
       .pad_w = 1,
       .bias = true,
       .activation = Activation::kRelu},
      {.n = 2, .c = 256, .h = 5, .w = 5, .k = 130, .r = 3, .s = 3, .bias = true},
      {.n = 1, .c = 400, .h = 6, .w = 6, .k = 128, .r = 2, .s = 2, .stride_h = 2, .stride_w = 2, .groups = 2},
  };
  for (const Conv2dDesc& shape : shapes) {
    for (const Kind& kind : kKinds) {
      Conv2dDesc d = of_kind(shape, kind);
      d.layout = Layout::kNHWC;
      SCOPED_TRACE(d.to_string());
      const Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
      expect_wgmma_nhwc(plan.kernel_name());
      EXPECT_GT(plan.workspace_bytes(), plan.packed_weight_bytes()) << "not split: " << plan.kernel_name();
      const auto result = testing::check_on_gpu(rt, d, rng, /*use_plan=*/true, Algorithm::kImplicitGemm);
      EXPECT_EQ(result.unwritten, 0u);
      EXPECT_LT(result.rel_err, testing::tolerance(d));
    }
  }
}

TEST_F(WgmmaNhwc, SplitPlansRunOnPackedWeightsWithTheirOwnOrTheCallersWorkspace) {
  // With packed_w a split run still needs its partial sums: the plan's own workspace, or
  // the caller's of workspace_bytes() - packed_weight_bytes() bytes.
  Runtime rt(options());
  std::mt19937_64 rng(1404);
  const Conv2dDesc d{.n = 1,
                     .c = 320,
                     .h = 7,
                     .w = 7,
                     .k = 64,
                     .r = 3,
                     .s = 3,
                     .pad_h = 1,
                     .pad_w = 1,
                     .bias = true,
                     .layout = Layout::kNHWC};
  const Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
  expect_wgmma_nhwc(plan.kernel_name());
  const std::uint64_t partial_bytes = plan.workspace_bytes() - plan.packed_weight_bytes();
  ASSERT_GT(partial_bytes, 0u) << "not split: " << plan.kernel_name();
  const auto x = testing::random_nonzero(static_cast<std::size_t>(d.x_elements()), rng, -1.0f, 1.0f, d.dtype);
  const auto w = testing::random_nonzero(static_cast<std::size_t>(d.w_elements()), rng, -1.0f, 1.0f, d.dtype);
  const auto b = testing::random_nonzero(static_cast<std::size_t>(d.k), rng, -1.0f, 1.0f, d.dtype);
  auto upload = [&](const std::vector<float>& values) {
    const auto bytes = to_storage(values, d.dtype);
    DeviceBuffer buffer(rt, bytes.size());
    buffer.upload(bytes.data(), bytes.size());
    return buffer;
  };
  const DeviceBuffer dx = upload(testing::x_in_layout(d, x));
  const DeviceBuffer dw = upload(testing::w_in_layout(d, w));
  const DeviceBuffer db = upload(b);
  DeviceBuffer packed(rt, plan.packed_weight_bytes());
  plan.pack_weights(dw.data(), packed.data());
  const std::vector<double> expected = testing::reference_conv2d(d, x, w, b);
  DeviceBuffer workspace(rt, partial_bytes);
  for (const bool own : {true, false}) {
    SCOPED_TRACE(own ? "the plan's workspace" : "the caller's workspace");
    DeviceBuffer dy(rt, static_cast<std::size_t>(d.y_elements()) * size_of(d.dtype));
    dy.fill_u32(nan_fill_pattern(d.dtype));
    plan.run(Conv2dArgs{.x = dx.data(),
                        .packed_w = packed.data(),
                        .bias = db.data(),
                        .y = dy.data(),
                        .workspace = own ? nullptr : workspace.data(),
                        .workspace_bytes = own ? 0 : partial_bytes});
    std::vector<unsigned char> raw(dy.size());
    dy.download(raw.data(), raw.size());
    const std::vector<float> y = testing::y_from_layout(d, from_storage(raw, d.dtype));
    EXPECT_EQ(std::count_if(y.begin(), y.end(), [](float v) { return std::isnan(v); }), 0);
    EXPECT_LT(testing::relative_l2(y, expected), testing::tolerance(d));
  }
}

}  // namespace
}  // namespace convjit
