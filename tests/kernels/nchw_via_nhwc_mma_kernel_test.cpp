// NCHW stems through the NHWC mma.sync kernel (specialize_implicit_gemm_via_nhwc): unset,
// the implicit GEMM on sm_80 and newer specializes one-group NCHW problems of fewer than 16
// input channels (ResNet's, VGG's and EfficientNet's stems, the U-Net's 4-channel input)
// into the route's kernel: its own name, NHWC stages reading the caller's K,C,R,S weights
// an element at a time, y stored NCHW by the kernel, x's transpose in the module and the
// launch spec with its region; it compiles in every dtype and math mode, spilling no more
// than the plain NHWC kernel.
// Off (=0), every problem gets exactly the kernel it got before; forced (=1) it reaches
// wider problems whose NHWC twin runs on mma.sync; dynamic batch, depth, transposed
// problems and unnamed or pre-Ampere archs keep the NCHW path with the reason said.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>

#include "compile/nvrtc.hpp"
#include "compile/ptxas_report.hpp"
#include "convjit/error.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/specialized_source.hpp"
#include "support/prologue_constant.hpp"
#include "support/random_desc.hpp"
#include "support/scoped_env.hpp"

namespace convjit {
namespace {

using testing::prologue_constant;
using testing::ScopedEnv;
using testing::with_dtype;

constexpr const char* kSwitch = "CONVJIT_NCHW_MMA_VIA_NHWC";

bool via(const Specialization& src) { return src.source.kernel_name.ends_with("_via_nhwc"); }

// ResNet-50's stem (7x7 stride 2 over 3 channels), VGG's (3x3 over 3), and the U-Net's
// input layer (3x3 over 4 channels into 320).
const Conv2dDesc kResnetStem{
    .n = 16, .c = 3, .h = 224, .w = 224, .k = 64, .r = 7, .s = 7, .stride_h = 2, .stride_w = 2, .pad_h = 3, .pad_w = 3};
const Conv2dDesc kVggStem{.n = 8, .c = 3, .h = 224, .w = 224, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
const Conv2dDesc kUnetIn{
    .n = 2, .c = 4, .h = 64, .w = 64, .k = 320, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};

TEST(NchwViaNhwcMmaKernel, StemKernelsCompileWithoutSpillsWithXsTransposeAndNchwStoresInEveryDtypeAndMathMode) {
  ScopedEnv unset(kSwitch, nullptr);
  const Conv2dDesc cases[] = {with_dtype(kResnetStem, DType::kFloat16), with_dtype(kVggStem, DType::kBFloat16),
                              with_dtype(kUnetIn, DType::kFloat32),
                              with_dtype(kResnetStem, DType::kFloat32, MathMode::kStrictFp32)};
  for (const Conv2dDesc& d : cases) {
    ASSERT_FALSE(nchw_mma_via_nhwc_unsupported_reason(d, "sm_90")) << *nchw_mma_via_nhwc_unsupported_reason(d, "sm_90");
    EXPECT_TRUE(nchw_mma_takes_route(d, "sm_90"));
    EXPECT_EQ(select_algorithm(d, "sm_90"), Algorithm::kImplicitGemm) << d.to_string();
    const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
    const std::string& name = src.source.kernel_name;
    SCOPED_TRACE(name);
    ASSERT_TRUE(via(src));
    EXPECT_TRUE(name.starts_with("conv2d_igemm_")) << name;
    EXPECT_NE(name.find("_nchw_"), std::string::npos) << "the caller's layout is in the name";
    EXPECT_EQ(prologue_constant(src, "int", "kLayout"), "1");
    EXPECT_EQ(prologue_constant(src, "int", "kWVecBytes"), std::to_string(size_of(d.dtype)));
    EXPECT_NE(src.source.text.find("#define CONVJIT_IGEMM_VIA_NHWC 1"), std::string::npos);
    EXPECT_NE(src.launch.tile.find("NCHW through NHWC"), std::string::npos) << src.launch.tile;
    const auto e = static_cast<unsigned>(size_of(d.dtype));
    EXPECT_EQ(src.launch.needs, (AlignmentNeeds{e, e, e, e}));
    EXPECT_FALSE(src.launch.weight_pack.has_value());
    ASSERT_TRUE(src.launch.x_to_nhwc.has_value());
    const auto& t = *src.launch.x_to_nhwc;
    EXPECT_EQ(t.kernel_name, name + "_x_to_nhwc");
    const auto x_bytes = static_cast<std::uint64_t>(d.x_elements()) * e;
    EXPECT_GE(t.region_bytes, x_bytes);
    EXPECT_LT(t.region_bytes, x_bytes + kRegionAlign);
    EXPECT_EQ(t.region_bytes % kRegionAlign, 0u);
    EXPECT_EQ(t.block_x, 256u);

    const auto compiled = Nvrtc::compile(src.source.text, name + ".cu", Nvrtc::options_for("sm_90"));
    const std::string transpose = name + "_x_to_nhwc";
    EXPECT_NE(compiled.ptx.find(".entry " + transpose + "("), std::string::npos);
    const auto transpose_usage = parse_ptxas_report(compiled.log, transpose);
    EXPECT_EQ(transpose_usage.spill_store_bytes + transpose_usage.spill_load_bytes, 0) << compiled.log;
    // The main kernel spills no more than the plain NHWC kernel of the same problem (the
    // 3-channel stems' one-element copies keep a window a row, which ptxas spills a little
    // of in 3xTF32 either way).
    Conv2dDesc twin = d;
    twin.layout = Layout::kNHWC;
    const auto plain = specialize_implicit_gemm(twin);
    const auto plain_compiled =
        Nvrtc::compile(plain.source.text, plain.source.kernel_name + ".cu", Nvrtc::options_for("sm_90"));
    const auto usage = parse_ptxas_report(compiled.log, name);
    const auto plain_usage = parse_ptxas_report(plain_compiled.log, plain.source.kernel_name);
    EXPECT_LE(usage.spill_store_bytes, plain_usage.spill_store_bytes) << compiled.log;
    EXPECT_LE(usage.spill_load_bytes, plain_usage.spill_load_bytes) << compiled.log;
  }
}

// Off: the kernel of before, to the byte; any other value than 0 or 1 is refused, named.
TEST(NchwViaNhwcMmaKernel, ZeroGivesExactlyTheKernelOfBeforeAndOtherValuesAreRefused) {
  for (const Conv2dDesc& d : {with_dtype(kResnetStem, DType::kFloat16), with_dtype(kUnetIn, DType::kBFloat16)}) {
    SCOPED_TRACE(d.to_string());
    {
      ScopedEnv off(kSwitch, "0");
      ASSERT_TRUE(nchw_mma_via_nhwc_unsupported_reason(d, "sm_90").has_value());
      const auto before = runs_on_wgmma(d, "sm_90") ? specialize_wgmma(d) : specialize_implicit_gemm(d);
      const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
      EXPECT_EQ(src.source.kernel_name, before.source.kernel_name);
      EXPECT_EQ(src.source.text, before.source.text);
      EXPECT_FALSE(src.launch.x_to_nhwc.has_value());
    }
    ScopedEnv bad(kSwitch, "yes");
    try {
      (void)specialize(d, Algorithm::kImplicitGemm, "sm_90");
      ADD_FAILURE() << "CONVJIT_NCHW_MMA_VIA_NHWC=yes was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("CONVJIT_NCHW_MMA_VIA_NHWC"), std::string::npos) << e.what();
    }
  }
}

// Unset, only the stems take it: 16 channels or more, fewer than 16 output channels,
// grouped and 1x1 problems keep their kernels, and so does a stem with a short reduction
// and a large x; forced, a 32-channel problem whose NHWC twin runs on mma.sync (on sm_80)
// takes it too.
TEST(NchwViaNhwcMmaKernel, UnsetOnlyStemsTakeItAndForcedReachesWiderMmaProblems) {
  ScopedEnv unset(kSwitch, nullptr);
  Conv2dDesc deep = with_dtype(kVggStem, DType::kFloat16);
  deep.c = 32;
  Conv2dDesc thin = with_dtype(kVggStem, DType::kFloat16);
  thin.k = 8;
  Conv2dDesc grouped = with_dtype(kVggStem, DType::kFloat16);
  grouped.c = 8;
  grouped.k = 64;
  grouped.groups = 2;
  Conv2dDesc pointwise = with_dtype(kVggStem, DType::kFloat16);
  pointwise.r = pointwise.s = 1;
  pointwise.pad_h = pointwise.pad_w = 0;
  // EfficientNet's stem: stride 2 over 3 channels into 32, a reduction of 27 and x 0.375
  // of y's elements: the transpose costs more than it saves.
  const Conv2dDesc effnet = with_dtype({.n = 32,
                                        .c = 3,
                                        .h = 224,
                                        .w = 224,
                                        .k = 32,
                                        .r = 3,
                                        .s = 3,
                                        .stride_h = 2,
                                        .stride_w = 2,
                                        .pad_h = 1,
                                        .pad_w = 1},
                                       DType::kFloat16);
  for (const Conv2dDesc& d : {deep, thin, grouped, pointwise, effnet}) {
    SCOPED_TRACE(d.to_string());
    EXPECT_FALSE(nchw_mma_takes_route(d, "sm_90"));
  }
  ScopedEnv on(kSwitch, "1");
  ASSERT_FALSE(nchw_mma_via_nhwc_unsupported_reason(deep, "sm_80"))
      << *nchw_mma_via_nhwc_unsupported_reason(deep, "sm_80");
  EXPECT_TRUE(via(specialize(deep, Algorithm::kImplicitGemm, "sm_80")));
}

TEST(NchwViaNhwcMmaKernel, DynamicBatchDepthTransposedAndOldOrUnnamedArchsKeepTheNchwPathWithTheReason) {
  ScopedEnv on(kSwitch, "1");
  Conv2dDesc dynamic = with_dtype(kVggStem, DType::kFloat16);
  dynamic.dynamic_batch = true;
  Conv2dDesc depth = with_dtype(kVggStem, DType::kFloat16);
  depth.d = 4;
  depth.t = 3;
  depth.pad_d = 1;
  Conv2dDesc transposed = with_dtype(kVggStem, DType::kFloat16);
  transposed.transposed = true;
  Conv2dDesc nhwc = with_dtype(kVggStem, DType::kFloat16);
  nhwc.layout = Layout::kNHWC;
  struct Case {
    Conv2dDesc desc;
    std::string arch;
    std::string why;
  };
  const Case cases[] = {{dynamic, "sm_90", "dynamic-batch"},
                        {depth, "sm_90", "2-D forward"},
                        {transposed, "sm_90", "2-D forward"},
                        {with_dtype(kVggStem, DType::kFloat16), "sm_75", "sm_80"},
                        {with_dtype(kVggStem, DType::kFloat16), "", "named arch"},
                        {nhwc, "sm_90", "NCHW problems"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.desc.to_string() + " " + c.arch);
    const auto why = nchw_mma_via_nhwc_unsupported_reason(c.desc, c.arch);
    ASSERT_TRUE(why.has_value());
    EXPECT_NE(why->find(c.why), std::string::npos) << *why;
    EXPECT_FALSE(nchw_mma_takes_route(c.desc, c.arch));
  }
}

}  // namespace
}  // namespace convjit
