// f16 and bf16 data through every algorithm, on the CPU: the specialized sources
// compile under NVRTC, carry the element type in their prologue, use the 16-bit
// tensor-core instructions, and fit the register budget their launch bounds promise.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "compile/nvrtc.hpp"
#include "compile/ptxas_report.hpp"
#include "runtime/im2col_gemm.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/specialized_source.hpp"

namespace convjit {
namespace {

constexpr DType k16BitTypes[] = {DType::kFloat16, DType::kBFloat16};
constexpr Algorithm kAlgorithms[] = {Algorithm::kDirect, Algorithm::kImplicitGemm, Algorithm::kIm2colGemm};

// Shapes that exercise every branch of the templates: odd channels and a reduction that
// is no multiple of 8 (weights through registers), tails of every tile, groups,
// depthwise, stride, padding, dilation, bias and ReLU, a 1x1 GEMM, the headline, and
// a reduction gathered without the table.
std::vector<Conv2dDesc> shapes() {
  return {
      Conv2dDesc{.n = 1, .c = 3, .h = 11, .w = 1, .k = 17, .r = 3, .s = 1, .pad_h = 1, .bias = true},
      Conv2dDesc{.n = 2, .c = 16, .h = 9, .w = 13, .k = 16, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 16},
      Conv2dDesc{.n = 1,
                 .c = 8,
                 .h = 7,
                 .w = 7,
                 .k = 24,
                 .r = 3,
                 .s = 3,
                 .groups = 8,
                 .bias = true,
                 .activation = Activation::kRelu},
      Conv2dDesc{.n = 1,
                 .c = 3,
                 .h = 31,
                 .w = 29,
                 .k = 17,
                 .r = 7,
                 .s = 5,
                 .stride_h = 3,
                 .stride_w = 2,
                 .pad_h = 3,
                 .pad_w = 2,
                 .dilation_h = 2,
                 .dilation_w = 3},
      Conv2dDesc{.n = 3, .c = 40, .h = 15, .w = 17, .k = 96, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      Conv2dDesc{.n = 2, .c = 64, .h = 10, .w = 10, .k = 48, .r = 1, .s = 1},
      Conv2dDesc{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7},
      // A reduction too long for the compile-time gather table (C*R*S = 9216).
      Conv2dDesc{.n = 1, .c = 1024, .h = 6, .w = 7, .k = 32, .r = 3, .s = 3, .pad_h = 1},
  };
}

TEST(SixteenBitKernels, EveryAlgorithmCompilesUnderNvrtcForF16AndBf16) {
  for (const DType dtype : k16BitTypes) {
    for (Conv2dDesc d : shapes()) {
      d.dtype = dtype;
      ASSERT_NO_THROW(d.validate()) << d.to_string();
      for (const Algorithm algorithm : kAlgorithms) {
        SCOPED_TRACE(fmt::format("{} / {}", d.to_string(), to_string(algorithm)));
        ASSERT_FALSE(unsupported_reason(d, algorithm).has_value());
        const Specialization src = specialize(d, algorithm);
        EXPECT_NE(src.source.text.find(fmt::format("enum : int {{ kDType = {} }};", dtype == DType::kFloat16 ? 1 : 2)),
                  std::string::npos);
        const auto out = Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for("sm_90"));
        EXPECT_FALSE(out.cubin.empty());
      }
    }
  }
}

TEST(SixteenBitKernels, ImplicitGemmUsesTheMatching16BitMmaWithFp32Accumulation) {
  Conv2dDesc d{.n = 2, .c = 32, .h = 20, .w = 20, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  for (const DType dtype : k16BitTypes) {
    d.dtype = dtype;
    const Specialization src = specialize(d, Algorithm::kImplicitGemm);
    EXPECT_EQ(src.source.template_name, "conv2d_implicit_gemm_mma.cu");
    EXPECT_NE(src.source.kernel_name.find(dtype == DType::kFloat16 ? "igemm_f16_" : "igemm_bf16_"), std::string::npos);
    const auto out = Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for("sm_90"));
    const std::string mma = dtype == DType::kFloat16 ? "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
                                                     : "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32";
    EXPECT_NE(out.ptx.find(mma), std::string::npos) << to_string(dtype);
    EXPECT_NE(out.ptx.find("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"), std::string::npos);
  }
}

// A spill in the main loop costs more than any tile choice gains: every default tile
// must fit the registers its launch bounds leave (ptxas's own report).
TEST(SixteenBitKernels, ImplicitGemmDefaultTilesDoNotSpill) {
  for (const int k : {8, 24, 48, 128, 256}) {
    for (const DType dtype : k16BitTypes) {
      for (const int pad : {0, 2}) {
        const Conv2dDesc d{.n = 8,
                           .c = 64,
                           .h = 64,
                           .w = 64,
                           .k = k,
                           .r = 5,
                           .s = 7,
                           .pad_h = pad,
                           .pad_w = pad,
                           .bias = true,
                           .activation = Activation::kRelu,
                           .dtype = dtype};
        SCOPED_TRACE(d.to_string());
        const Specialization src = specialize(d, Algorithm::kImplicitGemm);
        const auto out = Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for("sm_90"));
        const ResourceUsage usage = parse_ptxas_report(out.log, src.source.kernel_name);
        EXPECT_GT(usage.registers, 0) << out.log;
        EXPECT_EQ(usage.spill_store_bytes, 0) << src.launch.tile << "\n" << out.log;
        EXPECT_EQ(usage.spill_load_bytes, 0) << src.launch.tile << "\n" << out.log;
      }
    }
  }
}

// For 16-bit data the math mode changes nothing: one kernel source for both modes.
TEST(SixteenBitKernels, MathModeLeavesTheKernelSourceUnchanged) {
  for (const DType dtype : k16BitTypes) {
    for (const Algorithm algorithm : kAlgorithms) {
      Conv2dDesc d = shapes()[4];
      d.dtype = dtype;
      d.math = MathMode::kTF32;
      const Specialization tf32 = specialize(d, algorithm);
      d.math = MathMode::kStrictFp32;
      const Specialization strict = specialize(d, algorithm);
      EXPECT_EQ(tf32.source.text, strict.source.text) << to_string(dtype) << " " << to_string(algorithm);
      EXPECT_EQ(tf32.source.kernel_name, strict.source.kernel_name);
    }
  }
}

TEST(SixteenBitKernels, KernelNamesAndSourcesDifferByDtype) {
  for (const Algorithm algorithm : kAlgorithms) {
    Conv2dDesc d = shapes()[4];
    std::vector<SpecializedSource> sources;
    for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      d.dtype = dtype;
      sources.push_back(specialize(d, algorithm).source);
    }
    for (std::size_t i = 0; i < sources.size(); ++i) {
      for (std::size_t j = i + 1; j < sources.size(); ++j) {
        EXPECT_NE(sources[i].kernel_name, sources[j].kernel_name) << to_string(algorithm);
        EXPECT_NE(sources[i].text, sources[j].text) << to_string(algorithm);
      }
    }
  }
}

// The im2col column matrix is in the data's type: half the bytes of f32 for the same chunk.
TEST(SixteenBitKernels, Im2colWorkspaceHoldsTwoBytesAnElement) {
  Conv2dDesc d{.n = 3, .c = 8, .h = 30, .w = 30, .k = 16, .r = 3, .s = 3};
  const Im2colChunking f32 = plan_im2col_chunks(d, std::uint64_t{1} << 30);
  for (const DType dtype : k16BitTypes) {
    d.dtype = dtype;
    const Im2colChunking c = plan_im2col_chunks(d, std::uint64_t{1} << 30);
    EXPECT_EQ(c.images_per_chunk, f32.images_per_chunk);
    EXPECT_EQ(c.rows_per_chunk, f32.rows_per_chunk);
    EXPECT_EQ(c.workspace_bytes * 2, f32.workspace_bytes);
  }
  // Under a limit that cuts the f32 problem into row chunks, 16-bit chunks hold twice the rows.
  const std::uint64_t row_bytes_f32 = std::uint64_t{8} * 9 * 28 * 4;
  d.dtype = DType::kFloat32;
  const Im2colChunking small_f32 = plan_im2col_chunks(d, row_bytes_f32 * 5);
  d.dtype = DType::kFloat16;
  const Im2colChunking small_f16 = plan_im2col_chunks(d, row_bytes_f32 * 5);
  EXPECT_EQ(small_f32.rows_per_chunk, 5);
  EXPECT_EQ(small_f16.rows_per_chunk, 10);
}

}  // namespace
}  // namespace convjit
