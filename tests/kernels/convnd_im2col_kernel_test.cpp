// Issue 15 on im2col + cuBLAS, on the CPU: 3-D and transposed problems reach the im2col
// template (depth constants, the transposed map, the weight pack), compile under NVRTC
// for sm_80 and sm_90 in every dtype and layout without spilling, chunk their columns by
// rows of (z, p) pairs with the repacked weights after them, and kAuto sends dense ones
// to it (sparse or strided-strict ones stay on the direct kernel).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>

#include "compile/nvrtc.hpp"
#include "compile/ptxas_report.hpp"
#include "convjit/error.hpp"
#include "runtime/im2col_gemm.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/specialized_source.hpp"
#include "support/workloads.hpp"

namespace convjit {
namespace {

Conv2dDesc conv3d() {
  return {.n = 2,
          .c = 6,
          .h = 7,
          .w = 9,
          .k = 10,
          .r = 3,
          .s = 2,
          .pad_h = 1,
          .bias = true,
          .spatial_dims = 3,
          .d = 5,
          .t = 3,
          .pad_d = 1};
}

Conv2dDesc transposed3d() {
  return {.n = 2,
          .c = 8,
          .h = 5,
          .w = 6,
          .k = 12,
          .r = 3,
          .s = 3,
          .stride_h = 2,
          .stride_w = 2,
          .pad_h = 1,
          .pad_w = 1,
          .groups = 2,
          .bias = true,
          .spatial_dims = 3,
          .d = 4,
          .t = 2,
          .stride_d = 2,
          .transposed = true,
          .output_padding_h = 1};
}

TEST(ConvNdIm2colKernel, DepthAndTransposedSourcesCompileForEveryDtypeLayoutAndArchWithoutSpills) {
  for (Conv2dDesc d : {conv3d(), transposed3d()}) {
    for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
      for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        d.layout = layout;
        d.dtype = dtype;
        const Specialization src = specialize(d, Algorithm::kIm2colGemm, "sm_90", kFullAlignment);
        ASSERT_EQ(src.source.template_name, "conv2d_im2col.cu");
        EXPECT_NE(src.source.text.find(fmt::format("enum : int {{ kT = {} }};", d.t)), std::string::npos);
        EXPECT_NE(src.source.text.find(fmt::format("enum : bool {{ kTransposed = {} }};", d.transposed)),
                  std::string::npos);
        for (const char* arch : {"sm_80", "sm_90"}) {
          SCOPED_TRACE(fmt::format("{} {}", d.to_string(), arch));
          const auto out = Nvrtc::compile(src.source.text, src.source.kernel_name + ".cu", Nvrtc::options_for(arch));
          EXPECT_FALSE(out.cubin.empty());
          for (const char* kernel : {"_im2col", "_pack_w", "_bias_act", "_scatter"}) {
            const std::string name = src.source.kernel_name + kernel;
            EXPECT_NE(out.ptx.find(".entry " + name), std::string::npos) << name;
            const auto usage = parse_ptxas_report(out.log, name);
            EXPECT_EQ(usage.spill_store_bytes, 0) << name << "\n" << out.log;
            EXPECT_EQ(usage.spill_load_bytes, 0) << name << "\n" << out.log;
          }
        }
      }
    }
  }
}

TEST(ConvNdIm2colKernel, ADepthOrTransposedOneByOneProblemGathersColumnsInsteadOfReadingXAsIs) {
  Conv2dDesc d{.n = 2, .c = 16, .h = 8, .w = 8, .k = 32, .spatial_dims = 3, .d = 4};
  EXPECT_FALSE(is_pointwise_gemm(d));
  EXPECT_FALSE(plan_im2col_chunks(d, std::uint64_t{1} << 30).pointwise);
  Conv2dDesc t{.n = 2, .c = 16, .h = 8, .w = 8, .k = 32, .transposed = true};
  EXPECT_FALSE(is_pointwise_gemm(t));
  EXPECT_FALSE(plan_im2col_chunks(t, std::uint64_t{1} << 30).pointwise);
  t.transposed = false;
  EXPECT_TRUE(is_pointwise_gemm(t));
}

TEST(ConvNdIm2colKernel, ColumnsAreChunkedByRowsOfEveryDepthAndSizedOverTheDepthTaps) {
  Conv2dDesc d = conv3d();
  d.n = 1;  // one image: chunks of rows, never merged
  const auto o = d.output_shape();
  const std::uint64_t gemm_k = static_cast<std::uint64_t>(d.c) * d.t * d.r * d.s;
  const std::uint64_t row_bytes = gemm_k * o.q * sizeof(float);
  const auto whole = plan_im2col_chunks(d, std::uint64_t{1} << 30);
  EXPECT_EQ(whole.rows_per_chunk, o.z * o.p);
  EXPECT_EQ(whole.column_bytes, row_bytes * o.z * o.p);
  EXPECT_EQ(whole.packed_weight_bytes, 0u);
  // Room for a little more than one depth slice: a chunk's rows then cross depths.
  const auto cut = plan_im2col_chunks(d, row_bytes * (o.p + 2));
  EXPECT_EQ(cut.rows_per_chunk, o.p + 2);
  EXPECT_LE(cut.workspace_bytes, row_bytes * (o.p + 2));
}

TEST(ConvNdIm2colKernel, TransposedWeightsArePackedAfterTheColumnsWithinTheLimit) {
  for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    Conv2dDesc d = transposed3d();
    d.layout = layout;
    const std::uint64_t w_bytes = d.w_elements() * sizeof(float);
    for (const std::uint64_t limit : {std::uint64_t{48} << 10, std::uint64_t{1} << 30}) {
      SCOPED_TRACE(fmt::format("{} limit {}", d.to_string(), limit));
      const auto c = plan_im2col_chunks(d, limit);
      EXPECT_EQ(c.packed_weight_bytes, w_bytes);
      EXPECT_EQ(c.packed_weight_offset % 16, 0u);
      EXPECT_GE(c.packed_weight_offset, c.column_bytes);
      EXPECT_EQ(c.workspace_bytes, c.packed_weight_offset + w_bytes);
      EXPECT_LE(c.workspace_bytes, limit);
    }
    try {
      (void)plan_im2col_chunks(d, w_bytes - 1);
      ADD_FAILURE() << "a limit below the packed weights was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
      EXPECT_NE(std::string(e.what()).find("repacked transposed weights"), std::string::npos) << e.what();
    }
  }
}

TEST(ConvNdIm2colKernel, AutoSendsDenseDepthAndTransposedProblemsToIm2colAndSparseOnesToDirect) {
  // Strided, or channels last: the implicit GEMM takes stride-1 NCHW transposed ones only.
  // 128 outputs reuse each column enough to pay for its zeros (predicted_im2col_ms).
  Conv2dDesc dense{
      .n = 4, .c = 32, .h = 64, .w = 64, .k = 128, .r = 3, .s = 3, .stride_h = 2, .stride_w = 2, .transposed = true};
  for (const char* arch : {"", "sm_75", "sm_80", "sm_90"}) {
    EXPECT_EQ(resolve_algorithm(dense, Algorithm::kAuto, arch), Algorithm::kIm2colGemm) << arch;
  }
  Conv2dDesc dense_nhwc = dense;
  dense_nhwc.stride_h = dense_nhwc.stride_w = 1;
  dense_nhwc.layout = Layout::kNHWC;
  EXPECT_EQ(resolve_algorithm(dense_nhwc, Algorithm::kAuto, "sm_90"), Algorithm::kIm2colGemm);
  Conv2dDesc thin = dense;
  thin.k = 4;  // too few output channels for a GEMM tile
  EXPECT_EQ(select_algorithm(thin, "sm_90"), Algorithm::kDirect);
  Conv2dDesc shallow = dense;
  shallow.c = 2;
  shallow.r = shallow.s = 2;
  // 2 x 4 taps, a quarter of them useful
  EXPECT_EQ(select_algorithm(shallow, "sm_90"), Algorithm::kDirect);
  // Strided 3-D transposed: one tap in eight is useful, and the columns (every group's)
  // are written and read once: with 512 outputs a group tensor cores pay for them, the
  // FMA units of strict fp32 do not (tests/specialize/algorithm_choice_test.cpp has the
  // few-outputs side).
  Conv2dDesc strided = transposed3d();
  strided.c = 256;
  strided.k = 512;
  strided.groups = 1;
  strided.d = strided.h = strided.w = 16;
  strided.stride_h = strided.stride_w = 2;
  for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    strided.dtype = dtype;
    strided.math = MathMode::kTF32;
    EXPECT_EQ(select_algorithm(strided, "sm_90"), Algorithm::kIm2colGemm) << to_string(dtype);
  }
  strided.dtype = DType::kFloat32;
  strided.math = MathMode::kStrictFp32;
  EXPECT_EQ(select_algorithm(strided, "sm_90"), Algorithm::kDirect);
  // 3-D forward: the implicit GEMM's depth gather in NCDHW, im2col channels last. A float32
  // stem of fewer than 8 channels on a short filter (6 x 18 taps here) goes to the direct
  // kernel in NCDHW; 16-bit data, or a long filter, keeps the implicit GEMM.
  Conv2dDesc forward3d = conv3d();
  forward3d.k = 64;
  EXPECT_EQ(select_algorithm(forward3d, "sm_90"), Algorithm::kDirect);
  forward3d.dtype = DType::kFloat16;
  EXPECT_EQ(select_algorithm(forward3d, "sm_90"), Algorithm::kImplicitGemm);
  forward3d.dtype = DType::kFloat32;
  forward3d.s = 9;
  EXPECT_EQ(select_algorithm(forward3d, "sm_90"), Algorithm::kImplicitGemm);
  forward3d.s = 2;
  forward3d.c = 16;
  EXPECT_EQ(select_algorithm(forward3d, "sm_90"), Algorithm::kImplicitGemm);
  forward3d.layout = Layout::kNHWC;
  EXPECT_EQ(select_algorithm(forward3d, "sm_90"), Algorithm::kIm2colGemm);
  forward3d.c = 6;
  EXPECT_EQ(select_algorithm(forward3d, "sm_90"), Algorithm::kIm2colGemm);
}

// The KernelBench problems that are not 2-D forward, in TF32: the 3-D forward and
// stride-1 transposed ones (all NCHW) run on the implicit GEMM, except the 3-channel stems
// on 27 and 9 taps (54, 59: the direct kernel); of the strided transposed
// ones, 77 and 79 (dilation 2 = stride 2: one receiving phase) on the route's implicit
// GEMM, those with 8 or 16 outputs a group (72, 73, 75) and the sparsest (81, stride 5) on
// the direct kernel.
TEST(ConvNdIm2colKernel, AutoRunsKernelBenchDepthAndTransposedProblemsWhereTheModelSends) {
  int im2col = 0;
  int igemm = 0;
  int total = 0;
  for (const auto& [name, d] : testing::kernelbench_problems()) {
    if (!beyond_2d_forward_reason(d)) continue;  // 2-D and 1-D forward: every 2-D algorithm
    ++total;
    const Algorithm a = resolve_algorithm(d, Algorithm::kAuto, "sm_90");
    im2col += a == Algorithm::kIm2colGemm ? 1 : 0;
    igemm += a == Algorithm::kImplicitGemm ? 1 : 0;
    if (a == Algorithm::kImplicitGemm) {
      EXPECT_TRUE(!d.transposed || (d.stride_d == 1 && d.stride_h == 1 && d.stride_w == 1) || forward_twin(d).phased())
          << name;
    }
  }
  EXPECT_EQ(total, 21);
  // All but 72, 73, 75 and 81 (several receiving phases: the direct kernel), 79 in f32
  // (its one phase through the route predicted slower than the direct kernel) and the
  // short float32 stems 54 and 59.
  EXPECT_EQ(igemm, 14);
  EXPECT_EQ(im2col, 0);
}

}  // namespace
}  // namespace convjit
