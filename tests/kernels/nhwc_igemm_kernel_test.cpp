// The channels-last (NHWC) implicit-GEMM kernel on the host, no GPU needed: which
// kernel reads NHWC on which arch, the copy widths and alignment it asks of each
// pointer, and every element type, math mode, arch and alignment variant compiled by
// NVRTC all the way to a CUBIN.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>

#include "compile/nvrtc.hpp"
#include "compile/ptxas_report.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/specialized_source.hpp"
#include "support/random_desc.hpp"

namespace convjit {
namespace {

constexpr const char* kMma = "conv2d_implicit_gemm_mma.cu";

using testing::Kind;
using testing::kKinds;

// Grouped, padded, strided and dilated, channel counts a multiple of 8 (16-byte copies
// of x and w for every dtype, channel-pair stores).
Conv2dDesc grouped(const Kind& kind) {
  return {.n = 2,
          .c = 128,
          .h = 13,
          .w = 11,
          .k = 80,
          .r = 3,
          .s = 3,
          .stride_w = 2,
          .pad_h = 1,
          .pad_w = 2,
          .dilation_h = 2,
          .groups = 2,
          .bias = true,
          .activation = Activation::kRelu,
          .dtype = kind.dtype,
          .layout = Layout::kNHWC,
          .math = kind.math};
}

// Odd channel counts per group in and out: single-element copies, single stores.
Conv2dDesc odd(const Kind& kind) {
  return {.n = 1,
          .c = 21,
          .h = 10,
          .w = 9,
          .k = 57,
          .r = 3,
          .s = 2,
          .stride_h = 3,
          .pad_h = 1,
          .groups = 3,
          .dtype = kind.dtype,
          .layout = Layout::kNHWC,
          .math = kind.math};
}

std::string kind_name(const Kind& kind) { return fmt::format("{}/{}", to_string(kind.dtype), to_string(kind.math)); }

// Before Hopper (and for an arch not named) the mma.sync kernel reads NHWC; on Hopper the
// wgmma kernel takes what it can and runs faster (here 64 input and 40 output channels a
// group, 16-byte pieces, a grid of few tiles), the mma.sync kernel the rest (19 output
// channels a group).
TEST(NhwcImplicitGemmKernel, TheMmaSyncKernelReadsNhwcBeforeHopperAndWgmmaOnHopper) {
  for (const Kind& kind : kKinds) {
    const Conv2dDesc d = grouped(kind);
    for (const char* arch : {"", "sm_80", "sm_86"}) {
      SCOPED_TRACE(fmt::format("{} {}", kind_name(kind), arch));
      EXPECT_FALSE(unsupported_reason(d, Algorithm::kImplicitGemm, arch));
      EXPECT_EQ(resolve_algorithm(d, Algorithm::kImplicitGemm, arch), Algorithm::kImplicitGemm);
      const Specialization src = specialize(d, Algorithm::kImplicitGemm, arch);
      EXPECT_EQ(src.source.template_name, kMma);
      EXPECT_NE(src.source.kernel_name.find("_nhwc_"), std::string::npos) << src.source.kernel_name;
      EXPECT_NE(src.source.text.find("enum : int { kLayout = 1 };"), std::string::npos);
      EXPECT_FALSE(src.launch.weight_pack.has_value());
    }
    SCOPED_TRACE(kind_name(kind));
    EXPECT_FALSE(wgmma_unsupported_reason(d, "sm_90"));
    EXPECT_TRUE(nhwc_prefers_wgmma(d, "sm_90"));
    const Specialization hopper = specialize(d, Algorithm::kImplicitGemm, "sm_90");
    EXPECT_EQ(hopper.source.template_name, "conv2d_implicit_gemm_wgmma.cu");
    EXPECT_NE(hopper.source.text.find("enum : int { kLayout = 1 };"), std::string::npos);
    // Its weights packed per call, or (TMA) read through their own map.
    EXPECT_TRUE(hopper.launch.weight_pack.has_value() != hopper.launch.b_map.has_value());
    const Specialization narrow = specialize(odd(kind), Algorithm::kImplicitGemm, "sm_90");
    EXPECT_EQ(narrow.source.template_name, kMma);
    EXPECT_TRUE(unsupported_reason(d, Algorithm::kImplicitGemm, "sm_75"));
  }
}

TEST(NhwcImplicitGemmKernel, CopyWidthsFollowTheChannelCountsAndThePointers) {
  const Kind f32{DType::kFloat32, MathMode::kTF32};
  const Kind f16{DType::kFloat16, MathMode::kTF32};
  // 24 channels a group, 216-element W rows, 40 output channels a group.
  EXPECT_EQ(specialize_implicit_gemm(grouped(f32)).launch.needs, (AlignmentNeeds{16, 16, 4, 8}));
  EXPECT_EQ(specialize_implicit_gemm(grouped(f16)).launch.needs, (AlignmentNeeds{16, 16, 2, 4}));
  EXPECT_EQ(specialize_implicit_gemm(grouped(f32), {8, 4, 4, 4}).launch.needs, (AlignmentNeeds{8, 4, 4, 4}));
  EXPECT_EQ(specialize_implicit_gemm(grouped(f16), {4, 8, 2, 2}).launch.needs, (AlignmentNeeds{4, 8, 2, 2}));
  EXPECT_EQ(specialize_implicit_gemm(grouped(f16), {2, 2, 2, 2}).launch.needs, (AlignmentNeeds{2, 2, 2, 2}));
  // 7 channels a group, 42-element W rows, 19 output channels a group.
  EXPECT_EQ(specialize_implicit_gemm(odd(f32)).launch.needs, (AlignmentNeeds{4, 8, 4, 4}));
  EXPECT_EQ(specialize_implicit_gemm(odd(f16)).launch.needs, (AlignmentNeeds{2, 4, 2, 2}));
  // What the kernel was told and what it reports agree.
  const Specialization src = specialize_implicit_gemm(grouped(f16), {8, 16, 2, 2});
  EXPECT_NE(src.source.text.find("enum : int { kXVecBytes = 8 };"), std::string::npos);
  EXPECT_NE(src.source.text.find("enum : int { kWVecBytes = 16 };"), std::string::npos);
  EXPECT_NE(src.source.text.find("enum : int { kAlignX = 8 };"), std::string::npos);
}

// Every kind on sm_80 with the alignments a plan asks for (all 16 bytes; 8; 4; the
// element's own) and on sm_90 (odd channel counts, which the wgmma kernel leaves to it)
// with full alignment, and odd channel counts: each compiles
// to a CUBIN, asks of the pointers no more than it was given, and the full-alignment
// kernels copy 16 bytes at a time without spilling.
TEST(NhwcImplicitGemmKernel, EveryDtypeMathArchAndAlignmentVariantCompilesInFull) {
  for (const Kind& kind : kKinds) {
    const auto e = static_cast<unsigned>(size_of(kind.dtype));
    struct Variant {
      Conv2dDesc desc;
      const char* arch;
      AlignmentNeeds align;
    };
    const Variant variants[] = {
        {grouped(kind), "sm_80", kFullAlignment}, {grouped(kind), "sm_80", {8, 8, 8, 8}},
        {grouped(kind), "sm_80", {4, 4, 4, 4}},   {grouped(kind), "sm_80", {e, e, e, e}},
        {odd(kind), "sm_90", kFullAlignment},     {odd(kind), "sm_80", kFullAlignment},
    };
    for (const Variant& v : variants) {
      const Specialization src = specialize(v.desc, Algorithm::kImplicitGemm, v.arch, v.align);
      SCOPED_TRACE(fmt::format("{} {} {}", kind_name(kind), v.arch, src.source.kernel_name));
      ASSERT_EQ(src.source.template_name, kMma);
      EXPECT_TRUE(satisfies(v.align, src.launch.needs));
      const auto out = Nvrtc::compile(src.source.text, src.source.kernel_name + ".cu", Nvrtc::options_for(v.arch));
      EXPECT_FALSE(out.cubin.empty());
      EXPECT_NE(out.ptx.find(".entry " + src.source.kernel_name), std::string::npos);
      EXPECT_NE(out.ptx.find("mma.sync.aligned"), std::string::npos);
      if (v.align == kFullAlignment && v.desc.c == grouped(kind).c) {
        EXPECT_NE(out.ptx.find("cp.async.cg.shared.global"), std::string::npos) << "no 16-byte copies";
        const auto usage = parse_ptxas_report(out.log, src.source.kernel_name);
        EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
      }
    }
  }
}

}  // namespace
}  // namespace convjit
