#include <fmt/format.h>
#include <gtest/gtest.h>

#include <array>
#include <optional>
#include <random>

#include "compile/nvrtc.hpp"
#include "compile/ptxas_report.hpp"
#include "convjit/error.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/specialized_source.hpp"
#include "support/prologue_constant.hpp"
#include "support/scoped_env.hpp"
#include "support/workloads.hpp"

namespace convjit {
namespace {

const Conv2dDesc kHeadline{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7};

std::string constant(const Specialization& src, const std::string& name) {
  return testing::prologue_constant(src, "int", name);
}
std::string prologue_bool(const Specialization& src, const std::string& name) {
  return testing::prologue_constant(src, "bool", name);
}

TEST(WgmmaKernel, HopperImplicitGemmCompilesToWgmmaAndBulkCopiesWithoutSpills) {
  for (MathMode math : {MathMode::kTF32, MathMode::kStrictFp32}) {
    Conv2dDesc d = kHeadline;
    d.math = math;
    const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
    SCOPED_TRACE(src.source.kernel_name);
    EXPECT_EQ(src.source.template_name, "conv2d_implicit_gemm_wgmma.cu");
    EXPECT_EQ(src.source.compile_arch, "sm_90a");
    ASSERT_TRUE(src.launch.weight_pack.has_value());
    EXPECT_EQ(src.launch.weight_pack->kernel_name, src.source.kernel_name + "_pack");
    const auto out =
        Nvrtc::compile(src.source.text, src.source.kernel_name + ".cu", Nvrtc::options_for(src.source.compile_arch));
    EXPECT_NE(out.ptx.find("wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32"), std::string::npos);
    EXPECT_NE(out.ptx.find("cp.async.bulk.shared::cluster.global"), std::string::npos);
    EXPECT_NE(out.ptx.find(".entry " + src.launch.weight_pack->kernel_name), std::string::npos);
    const auto usage = parse_ptxas_report(out.log, src.source.kernel_name);
    EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
    EXPECT_EQ(usage.spill_load_bytes, 0) << out.log;
    // ptxas says so when it has to serialize wgmma (e.g. accumulators touched between them).
    EXPECT_EQ(out.log.find("wgmma.mma_async instructions are serialized"), std::string::npos) << out.log;
  }
}

TEST(WgmmaKernel, StrictMathSplitsIntoThreeTf32ProductsWithPartialSums) {
  Conv2dDesc d = kHeadline;
  d.math = MathMode::kStrictFp32;
  const auto strict = specialize(d, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_EQ(constant(strict, "kSplit"), "3");
  EXPECT_EQ(constant(strict, "kMB"), "1");  // room for the partial accumulators
  const auto tf32 = specialize(kHeadline, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_EQ(constant(tf32, "kSplit"), "1");
  EXPECT_EQ(constant(tf32, "kMB"), "2");
  // Two weight planes (big, small) for 3xTF32.
  EXPECT_EQ(strict.launch.weight_pack->packed_bytes, 2 * tf32.launch.weight_pack->packed_bytes);
  // The partial set is drained after every second stage; the switch restores every stage.
  EXPECT_EQ(testing::prologue_constant(strict, "bool", "kPairedPartials"), "true");
  EXPECT_EQ(testing::prologue_constant(tf32, "bool", "kPairedPartials"), "false");
  testing::ScopedEnv every_stage("CONVJIT_WGMMA_PAIRED_PARTIALS", "0");
  const auto unpaired = specialize(d, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_EQ(testing::prologue_constant(unpaired, "bool", "kPairedPartials"), "false");
  EXPECT_NE(unpaired.source.text, strict.source.text);
}

TEST(WgmmaKernel, OtherArchitecturesAndUnnamedTargetsKeepMmaSync) {
  for (const char* arch : {"sm_80", "sm_89", "sm_100", ""}) {
    const auto src = specialize(kHeadline, Algorithm::kImplicitGemm, arch);
    EXPECT_EQ(src.source.template_name, "conv2d_implicit_gemm_mma.cu") << arch;
    EXPECT_TRUE(src.source.compile_arch.empty()) << arch;
    EXPECT_FALSE(src.launch.weight_pack.has_value()) << arch;
  }
}

// On Hopper, 16-bit NCHW problems with fewer than 16 channels a group and a reduction of
// at most 64 (channels x taps: networks row 45's 4 x 3x3) take the mma.sync kernel instead
// of the NCHW wgmma kernel's 16-channel stages; the 7x7 stem (147), float32, 16 channels
// a group and NHWC (its own rule) keep their kernels. CONVJIT_NCHW_NARROW_MMA=1 sends every
// narrow 16-bit problem to mma.sync, =0 none.
TEST(WgmmaKernel, SixteenBitNchwProblemsOfFewChannelsAndShortReductionsTakeMmaSync) {
  // The rule between the NCHW kernels; by default the stems below go through NHWC on
  // mma.sync first (NchwViaNhwcMmaKernel).
  testing::ScopedEnv no_route("CONVJIT_NCHW_MMA_VIA_NHWC", "0");
  const Conv2dDesc stem{.n = 16,
                        .c = 3,
                        .h = 224,
                        .w = 224,
                        .k = 64,
                        .r = 7,
                        .s = 7,
                        .stride_h = 2,
                        .stride_w = 2,
                        .pad_h = 3,
                        .pad_w = 3};
  const Conv2dDesc row45{
      .n = 2, .c = 4, .h = 64, .w = 64, .k = 320, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};
  const Conv2dDesc grouped{.n = 2, .c = 14, .h = 20, .w = 20, .k = 60, .r = 3, .s = 3, .groups = 2};  // 7 x 9
  constexpr const char* kMma = "conv2d_implicit_gemm_mma.cu";
  constexpr const char* kWgmma = "conv2d_implicit_gemm_wgmma.cu";
  const auto template_of = [](Conv2dDesc d, DType dtype) {
    d.dtype = dtype;
    return specialize(d, Algorithm::kImplicitGemm, "sm_90").source.template_name;
  };
  for (const DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    EXPECT_EQ(template_of(row45, dtype), kMma);
    EXPECT_EQ(template_of(grouped, dtype), kMma);
    EXPECT_EQ(template_of(stem, dtype), kWgmma);
    Conv2dDesc sixteen = row45;
    sixteen.c = 16;
    EXPECT_EQ(template_of(sixteen, dtype), kWgmma);
    {
      testing::ScopedEnv every("CONVJIT_NCHW_NARROW_MMA", "1");
      EXPECT_EQ(template_of(stem, dtype), kMma);
      EXPECT_EQ(template_of(sixteen, dtype), kWgmma);
    }
    testing::ScopedEnv off("CONVJIT_NCHW_NARROW_MMA", "0");
    EXPECT_EQ(template_of(row45, dtype), kWgmma);
  }
  EXPECT_EQ(template_of(row45, DType::kFloat32), kWgmma);
  const auto compiled = [&] {
    Conv2dDesc d = row45;
    d.dtype = DType::kFloat16;
    const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
    return Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for("sm_90"));
  }();
  EXPECT_NE(compiled.ptx.find("mma.sync.aligned.m16n8k16"), std::string::npos);
}

TEST(WgmmaKernel, ReasonsNameWhatRulesTheKernelOut) {
  EXPECT_FALSE(wgmma_unsupported_reason(kHeadline, "sm_90"));
  EXPECT_NE(wgmma_unsupported_reason(kHeadline, "sm_80")->find("sm_90"), std::string::npos);
  Conv2dDesc narrow = kHeadline;
  narrow.k = 16;
  EXPECT_NE(wgmma_unsupported_reason(narrow, "sm_90")->find("output channels"), std::string::npos);
  // NCHW's own kernels: mma.sync (the route through the NHWC kernel, off here, takes it).
  testing::ScopedEnv own_kernels("CONVJIT_NCHW_VIA_NHWC", "0");
  EXPECT_EQ(specialize(narrow, Algorithm::kImplicitGemm, "sm_90").source.template_name, "conv2d_implicit_gemm_mma.cu");
}

// Problems whose patches are a few stages long (few input channels, short filters) hand
// their stores to store warps; long ones keep every producer warp copying.
TEST(WgmmaKernel, OnlyShortPatchesStageTheirOutputsForStoreWarps) {
  const Conv2dDesc short_patches{.n = 16, .c = 16, .h = 1024, .w = 1024, .k = 128, .r = 3, .s = 3};
  const auto staged = specialize(short_patches, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_NE(staged.source.text.find("enum : bool { kStoreWarps = true };"), std::string::npos);
  EXPECT_TRUE(staged.launch.geometry.persistent);
  const auto direct = specialize(kHeadline, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_NE(direct.source.text.find("enum : bool { kStoreWarps = false };"), std::string::npos);
  const auto out = Nvrtc::compile(staged.source.text, staged.source.kernel_name + ".cu",
                                  Nvrtc::options_for(staged.source.compile_arch));
  EXPECT_EQ(parse_ptxas_report(out.log, staged.source.kernel_name).spill_store_bytes, 0) << out.log;
}

// The patch and the pipeline come from the problem's constants, the same rule for every
// shape: the patch holds exactly the block's pixels, rows of whole 8-pixel fragments,
// and the stages fit the 227 KiB a block may use.
TEST(WgmmaKernel, EveryKernelBenchProblemGetsAConsistentTileThatFitsSharedMemory) {
  int checked = 0;
  for (const auto& problem : testing::kernelbench_2d_problems()) {
    for (MathMode math : {MathMode::kTF32, MathMode::kStrictFp32}) {
      Conv2dDesc d = problem.desc;
      d.math = math;
      if (wgmma_unsupported_reason(d, "sm_90")) continue;
      const auto src = specialize_wgmma(d);
      SCOPED_TRACE(src.source.kernel_name);
      const int bp = std::stoi(constant(src, "kBP"));
      const int bq = std::stoi(constant(src, "kBQ"));
      const int mb = std::stoi(constant(src, "kMB"));
      EXPECT_EQ(bp * bq, 2 * mb * 64);
      EXPECT_EQ(bq % 8, 0);
      EXPECT_GE(std::stoi(constant(src, "kStages")), 2);
      EXPECT_LE(src.launch.geometry.shared_bytes, 227u * 1024);
      EXPECT_EQ(src.launch.geometry.block_x, 384u);
      ++checked;
    }
  }
  EXPECT_GT(checked, 10);
}

// ---- NHWC ----

Conv2dDesc nhwc(Conv2dDesc d, DType dtype = DType::kFloat32, MathMode math = MathMode::kTF32) {
  d.layout = Layout::kNHWC;
  d.dtype = dtype;
  d.math = math;
  return d;
}

// A mid-size 3x3 (several tiles, two channel blocks), the headline, and an odd group with a
// channel tail, in every dtype and math mode: wgmma from registers on A, bulk copies for B,
// the widest cp.async the channel run allows, no spills, no serialized wgmma.
TEST(WgmmaKernel, NhwcCompilesToWgmmaWithoutSpillsInEveryDtypeAndMathMode) {
  // The cp.async copies of x; the TMA variant has its own (wgmma_tma_kernel_test.cpp).
  testing::ScopedEnv cp_async("CONVJIT_WGMMA_TMA", "0");
  const Conv2dDesc shapes[] = {
      {.n = 2, .c = 64, .h = 28, .w = 28, .k = 192, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      kHeadline,
      {.n = 1,
       .c = 44,
       .h = 9,
       .w = 13,
       .k = 70,
       .r = 2,
       .s = 3,
       .stride_h = 2,
       .groups = 2,
       .activation = Activation::kRelu},
  };
  const std::pair<DType, MathMode> kinds[] = {{DType::kFloat32, MathMode::kTF32},
                                              {DType::kFloat32, MathMode::kStrictFp32},
                                              {DType::kFloat16, MathMode::kTF32},
                                              {DType::kBFloat16, MathMode::kTF32}};
  for (const Conv2dDesc& shape : shapes) {
    for (const auto& [dtype, math] : kinds) {
      const Conv2dDesc d = nhwc(shape, dtype, math);
      // The template itself, whether or not kAuto's NHWC rule would pick it here.
      const auto src = specialize_wgmma(d);
      SCOPED_TRACE(src.source.kernel_name);
      ASSERT_EQ(src.source.template_name, "conv2d_implicit_gemm_wgmma.cu");
      EXPECT_EQ(constant(src, "kLayout"), "1");
      EXPECT_EQ(constant(src, "kBP"), "1");
      const auto out =
          Nvrtc::compile(src.source.text, src.source.kernel_name + ".cu", Nvrtc::options_for(src.source.compile_arch));
      const std::string type = dtype == DType::kFloat16    ? "f16.f16"
                               : dtype == DType::kBFloat16 ? "bf16.bf16"
                                                           : "tf32.tf32";
      EXPECT_NE(out.ptx.find("wgmma.mma_async.sync.aligned.m64n" + constant(src, "kBN") + "k"), std::string::npos);
      EXPECT_NE(out.ptx.find(type), std::string::npos);
      EXPECT_NE(out.ptx.find("cp.async.bulk.shared::cluster.global"), std::string::npos);
      // 44 channels over 2 groups: runs of 88 (f32) or 44 bytes: 8- or 4-byte pieces.
      const std::string piece = constant(src, "kXVecBytes");
      EXPECT_NE(out.ptx.find(piece == "16" ? "cp.async.cg.shared.global [%r" : "cp.async.ca.shared.global"),
                std::string::npos)
          << piece;
      const auto usage = parse_ptxas_report(out.log, src.source.kernel_name);
      EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
      EXPECT_EQ(usage.spill_load_bytes, 0) << out.log;
      EXPECT_EQ(out.log.find("wgmma.mma_async instructions are serialized"), std::string::npos) << out.log;
    }
  }
}

// The copy piece is the widest of 16, 8 and 4 bytes that the group's channel run and x's
// alignment allow; below 4 bytes (16-bit runs of odd length, 16-bit x at 2 bytes) the
// mma.sync kernel takes the problem, with the reason said.
TEST(WgmmaKernel, NhwcCopyPiecesFollowTheChannelRunAndTheAlignment) {
  const Conv2dDesc base{.n = 1, .c = 24, .h = 10, .w = 10, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  struct Case {
    int c;
    DType dtype;
    unsigned align_x;
    const char* piece;  // kXVecBytes, or nullptr: refused
  };
  const Case cases[] = {
      {24, DType::kFloat32, 16, "16"},   {26, DType::kFloat32, 16, "8"},  {27, DType::kFloat32, 16, "4"},
      {24, DType::kFloat32, 8, "8"},     {24, DType::kFloat32, 4, "4"},   {24, DType::kFloat16, 16, "16"},
      {20, DType::kFloat16, 16, "8"},    {18, DType::kBFloat16, 16, "4"}, {21, DType::kFloat16, 16, nullptr},
      {24, DType::kFloat16, 2, nullptr},
  };
  for (const Case& c : cases) {
    Conv2dDesc d = nhwc(base, c.dtype);
    d.c = c.c;
    const auto e = static_cast<unsigned>(size_of(c.dtype));
    const AlignmentNeeds align{c.align_x, 16, 16, 16};
    SCOPED_TRACE(fmt::format("{} x aligned {}", d.to_string(), c.align_x));
    const auto why = wgmma_unsupported_reason(d, "sm_90", align);
    const auto src = why ? specialize(d, Algorithm::kImplicitGemm, "sm_90", align) : specialize_wgmma(d, align);
    if (c.piece == nullptr) {
      ASSERT_TRUE(why.has_value());
      EXPECT_NE(why->find("4-byte pieces"), std::string::npos) << *why;
      EXPECT_EQ(src.source.template_name, "conv2d_implicit_gemm_mma.cu");
      continue;
    }
    EXPECT_FALSE(why.has_value()) << *why;
    ASSERT_EQ(src.source.template_name, "conv2d_implicit_gemm_wgmma.cu");
    EXPECT_EQ(constant(src, "kXVecBytes"), c.piece);
    EXPECT_EQ(src.launch.needs.x, static_cast<unsigned>(std::stoi(c.piece)));
    // x through the map where it is 16-byte aligned with whole 16-byte pixels; then w too,
    // by its own map (needing w 16-byte aligned), unless the stage rows are 64 bytes.
    // Otherwise w is read element by element by the pack kernel.
    const bool tma = src.source.kernel_name.ends_with("_tma");
    EXPECT_EQ(tma, c.align_x == 16 && c.c * e % 16 == 0);
    EXPECT_EQ(src.launch.b_map.has_value(), tma && constant(src, "kARowBytes") == "128");
    EXPECT_EQ(src.launch.needs.w, src.launch.b_map ? 16u : e);
    EXPECT_TRUE(satisfies(align, src.launch.needs));
  }
}

// Where the TMA kernel reads w through its own map (16-bit always; TF32 on a few pixel
// tiles), the map is w as C/groups, R x S, K with one tap's stage row of kBN filters a box,
// swizzled as the stage's A, and w must be 16-byte aligned; no pack.
TEST(WgmmaKernel, WeightMapBoxesAreOneTapsStageRowOfKbnFiltersAndNeedAnAlignedW) {
  const Conv2dDesc shape{
      .n = 1, .c = 128, .h = 9, .w = 7, .k = 200, .r = 3, .s = 5, .pad_h = 1, .pad_w = 2, .groups = 2};
  for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    const Conv2dDesc d = nhwc(shape, dtype, MathMode::kTF32);
    const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
    SCOPED_TRACE(src.source.kernel_name);
    ASSERT_TRUE(src.launch.b_map.has_value());
    EXPECT_FALSE(src.launch.weight_pack.has_value());
    EXPECT_EQ(testing::prologue_constant(src, "bool", "kBMap"), "true");
    const auto e = static_cast<std::uint64_t>(size_of(dtype));
    const auto& m = *src.launch.b_map;
    EXPECT_EQ(m.dtype, dtype);
    EXPECT_EQ((std::array<std::uint64_t, 3>{m.dims[0], m.dims[1], m.dims[2]}),
              (std::array<std::uint64_t, 3>{64, 15, 200}));
    EXPECT_EQ(m.strides[0], 64 * e);
    EXPECT_EQ(m.strides[1], 64 * 15 * e);
    // 64 channels a group: two 128-byte rows in f32, one in 16-bit (groups of whole rows
    // for x's map, whose zero fill stops at C only).
    EXPECT_EQ(m.box[0], 128u / e);
    EXPECT_EQ(m.box[1], 1u);
    EXPECT_EQ(m.box[2], static_cast<unsigned>(std::stoi(constant(src, "kBN"))));
    EXPECT_EQ(m.swizzle_bytes, 128u);
    EXPECT_EQ(src.launch.needs.w, 16u);
    // w 8 bytes past a 16-byte boundary: packed, needing only the element size.
    const auto packed = specialize(d, Algorithm::kImplicitGemm, "sm_90", AlignmentNeeds{16, 8, 16, 16});
    EXPECT_FALSE(packed.launch.b_map.has_value());
    EXPECT_TRUE(packed.launch.weight_pack.has_value());
    EXPECT_EQ(packed.launch.needs.w, static_cast<unsigned>(e));
    EXPECT_NE(packed.source.kernel_name, src.source.kernel_name);
  }
}

// Channel pairs go out in one store where the group's channel count is even and y's
// alignment holds a pair; otherwise one store a channel, needing only the element size.
// (66 filters: even, not whole runs of four, which kQuadStores would take.)
TEST(WgmmaKernel, NhwcPairStoresNeedAnEvenChannelCountAndTheirAlignment) {
  const Conv2dDesc even = nhwc({.n = 1, .c = 32, .h = 10, .w = 10, .k = 66, .r = 3, .s = 3});
  const auto paired = specialize(even, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_NE(paired.source.text.find("enum : bool { kPairStores = true };"), std::string::npos);
  EXPECT_EQ(paired.launch.needs.y, 8u);
  const auto y4 = specialize(even, Algorithm::kImplicitGemm, "sm_90", AlignmentNeeds{16, 16, 16, 4});
  EXPECT_NE(y4.source.text.find("enum : bool { kPairStores = false };"), std::string::npos);
  EXPECT_EQ(y4.launch.needs.y, 4u);
  EXPECT_NE(y4.source.kernel_name, paired.source.kernel_name);  // a variant has a name of its own
  Conv2dDesc odd = even;
  odd.k = 65;
  const auto single = specialize(odd, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_NE(single.source.text.find("enum : bool { kPairStores = false };"), std::string::npos);
  EXPECT_EQ(single.launch.needs.y, 4u);
}

// 16-bit NHWC outputs go out four channels (8 bytes) a store where a group's channels come
// in whole fours and y is 8-byte aligned; a y at 4 bytes keeps the pair stores, odd groups
// of pairs too, f32 always (its pairs already fill sectors), and CONVJIT_WGMMA_QUAD_STORES=0
// turns them off. The kernels compile without spills in both dtypes.
TEST(WgmmaKernel, SixteenBitNhwcQuadStoresNeedRunsOfFourChannelsAndEightByteAlignment) {
  // Two whole waves of tiles: neither split-K nor stream-K, whose partial sums store apart.
  const Conv2dDesc shape{.n = 4, .c = 64, .h = 132, .w = 128, .k = 68, .r = 3, .s = 3, .bias = true};
  for (const DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    const Conv2dDesc d = nhwc(shape, dtype);
    const auto quads = specialize(d, Algorithm::kImplicitGemm, "sm_90");
    SCOPED_TRACE(quads.source.kernel_name);
    EXPECT_EQ(prologue_bool(quads, "kQuadStores"), "true");
    EXPECT_EQ(quads.launch.needs.y, 8u);
    const auto y4 = specialize(d, Algorithm::kImplicitGemm, "sm_90", AlignmentNeeds{16, 16, 16, 4});
    EXPECT_EQ(prologue_bool(y4, "kQuadStores"), "false");
    EXPECT_EQ(prologue_bool(y4, "kPairStores"), "true");
    EXPECT_EQ(y4.launch.needs.y, 4u);
    Conv2dDesc pairs_only = d;
    pairs_only.k = 66;
    EXPECT_EQ(prologue_bool(specialize(pairs_only, Algorithm::kImplicitGemm, "sm_90"), "kQuadStores"), "false");
    {
      testing::ScopedEnv off("CONVJIT_WGMMA_QUAD_STORES", "0");
      EXPECT_EQ(prologue_bool(specialize(d, Algorithm::kImplicitGemm, "sm_90"), "kQuadStores"), "false");
    }
    const auto out = Nvrtc::compile(quads.source.text, quads.source.kernel_name + ".cu",
                                    Nvrtc::options_for(quads.source.compile_arch));
    EXPECT_NE(out.ptx.find("shfl.sync.bfly.b32"), std::string::npos);
    EXPECT_NE(out.ptx.find("st.global.v2.b32"), std::string::npos);
    const auto usage = parse_ptxas_report(out.log, quads.source.kernel_name);
    EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
    EXPECT_EQ(out.log.find("wgmma.mma_async instructions are serialized"), std::string::npos) << out.log;
  }
  for (const MathMode math : {MathMode::kTF32, MathMode::kStrictFp32}) {
    const auto f32 = specialize(nhwc(shape, DType::kFloat32, math), Algorithm::kImplicitGemm, "sm_90");
    EXPECT_EQ(prologue_bool(f32, "kQuadStores"), "false");
    // Pairs from registers, unless y's map stores the tile.
    EXPECT_EQ(prologue_bool(f32, "kPairStores"), f32.launch.y_map ? "false" : "true");
  }
}

// NHWC tiles are kBM consecutive pixels; a stage is 128 bytes of each pixel and of each
// output channel per weight plane, and the packed weights hold every (tap, chunk) stage of
// every channel block.
TEST(WgmmaKernel, NhwcTileStagesAndPackedWeightsFollowTheChannelChunks) {
  const Conv2dDesc shape{.n = 2, .c = 100, .h = 20, .w = 30, .k = 200, .r = 3, .s = 5, .pad_h = 1, .pad_w = 2};
  for (const auto& [dtype, math] :
       {std::pair{DType::kFloat32, MathMode::kTF32}, std::pair{DType::kFloat32, MathMode::kStrictFp32},
        std::pair{DType::kFloat16, MathMode::kTF32}}) {
    const Conv2dDesc d = nhwc(shape, dtype, math);
    const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
    SCOPED_TRACE(src.source.kernel_name);
    const int bn = std::stoi(constant(src, "kBN"));
    const int mb = std::stoi(constant(src, "kMB"));
    const int bm = std::stoi(constant(src, "kBQ"));
    const int planes = math == MathMode::kStrictFp32 ? 2 : 1;
    EXPECT_EQ(bn, 128);
    EXPECT_EQ(mb, planes == 2 ? 1 : 2);
    EXPECT_EQ(bm, 2 * mb * 64);
    EXPECT_EQ(std::stoi(constant(src, "kStageBytes")), (bm + planes * bn) * 128);
    EXPECT_NE(src.source.text.find("enum : bool { kStoreWarps = false };"), std::string::npos);
    EXPECT_EQ(std::stoi(constant(src, "kStages")), 4);
    EXPECT_LE(src.launch.geometry.shared_bytes, 227u * 1024);
    const int channels_a_chunk = 128 / static_cast<int>(size_of(dtype));
    const int chunks = (100 + channels_a_chunk - 1) / channels_a_chunk;
    const std::uint64_t k_blocks = 2;
    // Packed in every kind here: 3xTF32 packs its planes, TF32 on 5 pixel tiles (it would
    // round what a map reads in each), and f16's 200-byte pixels are no tensor map's stride.
    ASSERT_TRUE(src.launch.weight_pack.has_value());
    EXPECT_FALSE(src.launch.b_map.has_value());
    EXPECT_EQ(src.launch.weight_pack->packed_bytes, k_blocks * 3 * 5 * chunks * planes * bn * 128u);
    const std::int64_t pixels = 2 * 20 * 30;
    EXPECT_EQ(src.launch.geometry.grid_y, k_blocks);
    if (!src.launch.geometry.persistent) {
      EXPECT_EQ(src.launch.geometry.grid_x, (pixels + bm - 1) / bm);
    }
  }
}

// NHWC tiles are as wide as the filters of a group need, n16 to n128: a stage's A is the same
// whatever the width, so a wider tile only copies and multiplies zero weights. The NCHW
// kernel keeps n64 at least (its store warps). The narrow tiles compile to their own wgmma
// shapes, with the packed and the map-read weights, in every kind, without spills.
TEST(WgmmaKernel, NhwcTileIsTheNarrowestThatHoldsAGroupsFiltersAndCompilesWithoutSpills) {
  const std::pair<DType, MathMode> kinds[] = {{DType::kFloat32, MathMode::kTF32},
                                              {DType::kFloat32, MathMode::kStrictFp32},
                                              {DType::kFloat16, MathMode::kTF32},
                                              {DType::kBFloat16, MathMode::kTF32}};
  const std::pair<int, int> k_and_bn[] = {{1, 16}, {16, 16}, {17, 32}, {32, 32}, {33, 64}, {64, 64}, {65, 128}};
  for (const auto& [dtype, math] : kinds) {
    for (const auto& [k, bn] : k_and_bn) {
      const Conv2dDesc shape{.n = 2, .c = 64, .h = 9, .w = 13, .k = 2 * k, .r = 3, .s = 3, .groups = 2};
      const auto src = specialize_wgmma(nhwc(shape, dtype, math));
      SCOPED_TRACE(src.source.kernel_name);
      EXPECT_EQ(std::stoi(constant(src, "kBN")), bn);
      auto nchw = shape;
      nchw.dtype = dtype;
      nchw.math = math;
      const auto nchw_src = specialize_wgmma(nchw);
      EXPECT_EQ(std::stoi(constant(nchw_src, "kBN")), std::max(bn, 64)) << nchw_src.source.kernel_name;
    }
    // The narrow tiles, on the TMA kernel (the weights through their map where the kind
    // allows it, else packed) and on the cp.async one.
    for (const char* tma : {"1", "0"}) {
      testing::ScopedEnv copies("CONVJIT_WGMMA_TMA", tma);
      for (const int k : {16, 24}) {
        const Conv2dDesc d =
            nhwc({.n = 2, .c = 64, .h = 9, .w = 13, .k = k, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
                 dtype, math);
        const auto src = specialize_wgmma(d);
        SCOPED_TRACE(src.source.kernel_name);
        EXPECT_EQ(src.source.kernel_name.ends_with("_tma"), std::string_view(tma) == "1");
        const std::string bn = constant(src, "kBN");
        EXPECT_EQ(bn, k == 16 ? "16" : "32");
        const auto out = Nvrtc::compile(src.source.text, src.source.kernel_name + ".cu",
                                        Nvrtc::options_for(src.source.compile_arch));
        EXPECT_NE(out.ptx.find("wgmma.mma_async.sync.aligned.m64n" + bn + "k"), std::string::npos);
        const auto usage = parse_ptxas_report(out.log, src.source.kernel_name);
        EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
        EXPECT_EQ(usage.spill_load_bytes, 0) << out.log;
        EXPECT_EQ(out.log.find("wgmma.mma_async instructions are serialized"), std::string::npos) << out.log;
      }
    }
  }
}

// The development switch for several taps a stage (NHWC through the map): the largest
// divisor of the filter's taps up to the request whose stages fit three deep; a stage is
// that many taps' A boxes and weights; the stage count a tile falls by the same factor;
// one im2col copy a tap in the PTX; no spills in any kind, the weights packed or through
// their map. Without the switch every stage is one tap.
TEST(WgmmaKernel, SeveralTapsAStageDivideTheFilterFitThreeStagesAndCompileWithoutSpills) {
  const std::pair<DType, MathMode> kinds[] = {{DType::kFloat16, MathMode::kTF32},
                                              {DType::kBFloat16, MathMode::kTF32},
                                              {DType::kFloat32, MathMode::kTF32},
                                              {DType::kFloat32, MathMode::kStrictFp32}};
  // 32 channels: 64-byte rows in 16-bit, 128-byte ones in f32; 16 filters (n16); 3x5 taps.
  const Conv2dDesc shape{.n = 2, .c = 32, .h = 20, .w = 30, .k = 16, .r = 3, .s = 5, .pad_h = 1, .pad_w = 2};
  for (const auto& [dtype, math] : kinds) {
    const Conv2dDesc d = nhwc(shape, dtype, math);
    const auto one = specialize_wgmma(d);
    ASSERT_TRUE(one.source.kernel_name.ends_with("_tma")) << one.source.kernel_name;
    EXPECT_EQ(constant(one, "kTapsPerStage"), "1");
    testing::ScopedEnv several("CONVJIT_WGMMA_TAPS_PER_STAGE", "4");
    const auto src = specialize_wgmma(d);
    SCOPED_TRACE(src.source.kernel_name);
    const int taps = std::stoi(constant(src, "kTapsPerStage"));
    const int stages = std::stoi(constant(src, "kStages"));
    const int row = dtype == DType::kFloat32 ? 128 : 64;
    const int planes = math == MathMode::kStrictFp32 ? 2 : 1;
    const int per_tap = (256 + planes * 16) * row;
    EXPECT_EQ(15 % taps, 0);
    EXPECT_LE(taps, 4);
    EXPECT_GE((227 * 1024 - 256 - 1024) / (taps * per_tap), 3);
    // The next divisor up (5) would not fit three stages; in 16-bit three taps do.
    EXPECT_LT((227 * 1024 - 256 - 1024) / (5 * per_tap), 3);
    if (dtype != DType::kFloat32) {
      EXPECT_EQ(taps, 3);
    }
    EXPECT_EQ(std::stoi(constant(src, "kStageBytes")), taps * per_tap);
    EXPECT_GE(stages, 3);
    // The weights are the same bytes however the stages group the taps.
    if (one.launch.weight_pack) {
      EXPECT_EQ(src.launch.weight_pack->packed_bytes, one.launch.weight_pack->packed_bytes);
    }
    if (taps > 1) {
      EXPECT_NE(src.launch.tile.find(fmt::format("of {} taps", taps)), std::string::npos) << src.launch.tile;
      EXPECT_NE(src.source.text, one.source.text);
    }
    const auto out =
        Nvrtc::compile(src.source.text, src.source.kernel_name + ".cu", Nvrtc::options_for(src.source.compile_arch));
    std::size_t copies = 0;
    for (auto at = out.ptx.find(".im2col"); at != std::string::npos; at = out.ptx.find(".im2col", at + 1)) ++copies;
    EXPECT_GE(copies, static_cast<std::size_t>(taps));
    const auto usage = parse_ptxas_report(out.log, src.source.kernel_name);
    EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
    EXPECT_EQ(usage.spill_load_bytes, 0) << out.log;
  }
  testing::ScopedEnv bad("CONVJIT_WGMMA_TAPS_PER_STAGE", "0");
  EXPECT_THROW(specialize_wgmma(nhwc(shape, DType::kFloat16, MathMode::kTF32)), Error);
}

// Split-K: where tiles x channel blocks x groups leave SMs idle, the reduction is cut into
// slices of at least 8 stages (at most 16 slices, no more than the idle SMs hold), each a
// block writing fp32 partial sums; a second entry point adds them with the epilogue.
TEST(WgmmaKernel, NhwcSplitsTheReductionOnlyWhereTheGridCannotFillTheMachine) {
  // 49 pixels (one tile) x 4 channel blocks; 9 taps x 16 chunks = 144 stages.
  const Conv2dDesc deep =
      nhwc({.n = 1, .c = 512, .h = 7, .w = 7, .k = 512, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true});
  const auto split = specialize(deep, Algorithm::kImplicitGemm, "sm_90");
  SCOPED_TRACE(split.source.kernel_name);
  EXPECT_EQ(constant(split, "kSplitK"), "16");
  EXPECT_NE(split.source.text.find("#define CONVJIT_WGMMA_SPLIT_K 1"), std::string::npos);
  EXPECT_EQ(split.launch.geometry.grid_z, 16u);
  EXPECT_EQ(split.launch.geometry.grid_x * split.launch.geometry.grid_y * split.launch.geometry.grid_z, 64u);
  EXPECT_FALSE(split.launch.geometry.persistent);
  ASSERT_TRUE(split.launch.split_reduce.has_value());
  EXPECT_EQ(split.launch.split_reduce->kernel_name, split.source.kernel_name + "_reduce");
  EXPECT_EQ(split.launch.split_reduce->slices, 16);
  EXPECT_EQ(split.launch.split_reduce->partial_bytes, 16u * 49 * 512 * 4);
  const auto out = Nvrtc::compile(split.source.text, split.source.kernel_name + ".cu",
                                  Nvrtc::options_for(split.source.compile_arch));
  EXPECT_NE(out.ptx.find(".entry " + split.launch.split_reduce->kernel_name), std::string::npos);
  EXPECT_EQ(parse_ptxas_report(out.log, split.source.kernel_name).spill_store_bytes, 0) << out.log;
  const auto work = wgmma_work(deep);
  ASSERT_TRUE(work.has_value());
  EXPECT_EQ(work->blocks, 64);
  EXPECT_EQ(work->slices, 16);
  EXPECT_EQ(work->block_reduction, 9 * 32);  // 9 stages of 32 channels

  // Enough tiles for the machine: no split, no second entry point.
  const auto whole = specialize_wgmma(nhwc(kHeadline));
  EXPECT_EQ(constant(whole, "kSplitK"), "1");
  EXPECT_FALSE(whole.launch.split_reduce.has_value());
  EXPECT_EQ(whole.source.text.find("#define CONVJIT_WGMMA_SPLIT_K"), std::string::npos);
  // Few stages: a slice would be shorter than the pipeline's fill.
  const Conv2dDesc shallow = nhwc({.n = 1, .c = 32, .h = 7, .w = 7, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1});
  EXPECT_EQ(constant(specialize(shallow, Algorithm::kImplicitGemm, "sm_90"), "kSplitK"), "1");
  // The NCHW kernel never splits (the route through the NHWC kernel, off here, does).
  testing::ScopedEnv own_kernel("CONVJIT_NCHW_VIA_NHWC", "0");
  Conv2dDesc nchw = deep;
  nchw.layout = Layout::kNCHW;
  EXPECT_EQ(constant(specialize(nchw, Algorithm::kImplicitGemm, "sm_90"), "kSplitK"), "1");
}

// Every slice of every split has stages, and the slices cover the reduction, for problems
// of every depth and size; the split blocks never outnumber the SMs.
TEST(WgmmaKernel, NhwcSplitSlicesAreNeverEmptyAndFitOneWave) {
  std::mt19937_64 rng(1402);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  int split = 0;
  for (int i = 0; i < 400; ++i) {
    Conv2dDesc d{.n = pick(1, 4), .c = pick(1, 2600), .h = pick(1, 20), .w = pick(1, 20), .k = pick(32, 600)};
    d.r = d.s = pick(0, 1) == 0 ? 1 : 3;
    d.pad_h = d.pad_w = d.r / 2;
    d.layout = Layout::kNHWC;
    d.dtype = std::array{DType::kFloat32, DType::kFloat16, DType::kBFloat16}[pick(0, 2)];
    if (d.dtype != DType::kFloat32) d.c += d.c % 2;
    if (wgmma_unsupported_reason(d, "sm_90")) continue;
    const auto src = specialize_wgmma(d);
    const int slices = std::stoi(constant(src, "kSplitK"));
    const int stage_c = 128 / static_cast<int>(size_of(d.dtype));
    const int stages = d.r * d.s * ((d.c + stage_c - 1) / stage_c);
    const int per_slice = (stages + slices - 1) / slices;
    SCOPED_TRACE(src.source.kernel_name);
    EXPECT_LT((slices - 1) * per_slice, stages);
    if (slices > 1) {
      ++split;
      EXPECT_GE(per_slice, 8);
      EXPECT_LE(src.launch.geometry.grid_x * src.launch.geometry.grid_y * src.launch.geometry.grid_z, 132u);
      EXPECT_EQ(src.launch.split_reduce->partial_bytes, static_cast<std::uint64_t>(slices) * d.n * d.h * d.w * d.k * 4);
    }
  }
  EXPECT_GT(split, 20);
}

TEST(WgmmaKernel, NhwcReasonsNameWhatRulesTheKernelOut) {
  const Conv2dDesc d = nhwc(kHeadline);
  EXPECT_FALSE(wgmma_unsupported_reason(d, "sm_90"));
  Conv2dDesc narrow = d;
  narrow.k = 16;
  // A few output channels run through the TMA map (bound by reading x once), not with
  // the cp.async copies, nor in groups.
  EXPECT_FALSE(wgmma_unsupported_reason(narrow, "sm_90"));
  EXPECT_TRUE(specialize(narrow, Algorithm::kImplicitGemm, "sm_90").source.kernel_name.ends_with("_tma"));
  {
    testing::ScopedEnv cp_async("CONVJIT_WGMMA_TMA", "0");
    EXPECT_NE(wgmma_unsupported_reason(narrow, "sm_90")->find("output channels"), std::string::npos);
  }
  Conv2dDesc grouped_narrow = narrow;
  grouped_narrow.c = 128;
  grouped_narrow.k = 32;
  grouped_narrow.groups = 2;
  EXPECT_NE(wgmma_unsupported_reason(grouped_narrow, "sm_90")->find("output channels"), std::string::npos);
  // 16-bit NHWC needs no even width (the channels are what is copied in pieces).
  Conv2dDesc odd_width = nhwc(kHeadline, DType::kFloat16);
  odd_width.w = 255;
  EXPECT_FALSE(wgmma_unsupported_reason(odd_width, "sm_90"));
}

}  // namespace
}  // namespace convjit

namespace convjit {
namespace {

// The narrow-row kernels' common checks: the TMA kernel with `row` bytes a stage row, its
// map boxes of that many bytes swizzled by as many, and the same switch (`off`) keeping the
// problem off it; then a clean sm_90a compile through the im2col map (no spills, no
// serialized wgmmas).
Specialization expect_tma_rows(const Conv2dDesc& d, int row, const char* off) {
  {
    testing::ScopedEnv rows(off, "0");
    EXPECT_FALSE(specialize(d, Algorithm::kImplicitGemm, "sm_90").source.kernel_name.ends_with("_tma"))
        << off << "=0 keeps the problem off the TMA kernel";
  }
  auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_TRUE(src.source.kernel_name.ends_with("_tma")) << src.source.kernel_name;
  EXPECT_EQ(constant(src, "kARowBytes"), std::to_string(row));
  EXPECT_TRUE(src.launch.a_map.has_value());
  if (src.launch.a_map) {
    EXPECT_EQ(src.launch.a_map->swizzle_bytes, static_cast<unsigned>(row));
    EXPECT_EQ(src.launch.a_map->channels_per_pixel, static_cast<unsigned>(row / static_cast<int>(size_of(d.dtype))));
  }
  return src;
}

void expect_clean_tma_compile(const Specialization& src) {
  const auto out =
      Nvrtc::compile(src.source.text, src.source.kernel_name + ".cu", Nvrtc::options_for(src.source.compile_arch));
  EXPECT_NE(out.ptx.find("cp.async.bulk.tensor.4d.shared::cluster.global.im2col"), std::string::npos);
  const auto usage = parse_ptxas_report(out.log, src.source.kernel_name);
  EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
  EXPECT_EQ(usage.spill_load_bytes, 0) << out.log;
  EXPECT_EQ(out.log.find("wgmma.mma_async instructions are serialized"), std::string::npos) << out.log;
}

// A one-group NHWC problem whose channels fill 64 but not 128 bytes a pixel runs the TMA
// kernel with 64-byte stage rows (no zero half), in every dtype and mode: kARowBytes 64,
// a 64-byte swizzled map of 64-byte boxes, stages and packed weights sized for 64-byte
// rows, and a clean sm_90a compile. With CONVJIT_WGMMA_ROW64=0, or for
// channels that fill 128 bytes, the rows stay 128 bytes.
TEST(WgmmaKernel, SixtyFourByteRowsSizeStagesMapsAndPackingForThemAndCompileWithoutSpills) {
  struct Case {
    DType dtype;
    MathMode math;
    int c;
  };
  const Case cases[] = {{DType::kFloat16, MathMode::kTF32, 32},
                        {DType::kBFloat16, MathMode::kTF32, 48},
                        {DType::kFloat32, MathMode::kTF32, 16},
                        {DType::kFloat32, MathMode::kStrictFp32, 20}};
  for (const Case& c : cases) {
    Conv2dDesc d{.n = 2, .c = c.c, .h = 17, .w = 19, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};
    d.layout = Layout::kNHWC;
    d.dtype = c.dtype;
    d.math = c.math;
    const int e = static_cast<int>(size_of(c.dtype));
    const auto src = expect_tma_rows(d, 64, "CONVJIT_WGMMA_ROW64");
    SCOPED_TRACE(src.source.kernel_name);
    const int planes = c.math == MathMode::kStrictFp32 && c.dtype == DType::kFloat32 ? 2 : 1;
    const int bm = 2 * std::stoi(constant(src, "kMB")) * 64;
    EXPECT_EQ(std::stoi(constant(src, "kStageBytes")), (bm + planes * 64) * 64);
    const int chunks = (c.c * e + 63) / 64;
    // Packed: a map's box of 64-byte rows ran slower than the packed stage's bulk copy.
    ASSERT_TRUE(src.launch.weight_pack.has_value());
    EXPECT_FALSE(src.launch.b_map.has_value());
    EXPECT_EQ(src.launch.weight_pack->packed_bytes, static_cast<std::uint64_t>(chunks) * 9 * planes * 64 * 64);
    expect_clean_tma_compile(src);
  }
  // Channels that fill 128 bytes keep 128-byte rows.
  Conv2dDesc full{.n = 2, .c = 64, .h = 17, .w = 19, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  full.layout = Layout::kNHWC;
  full.dtype = DType::kFloat16;
  EXPECT_EQ(constant(specialize(full, Algorithm::kImplicitGemm, "sm_90"), "kARowBytes"), "128");
}

// Channels that fill 32 but not 64 bytes a pixel (16-31 halves, 8-15 floats) run the TMA
// kernel with 32-byte stage rows, one k step a tap, in every dtype and mode: kARowBytes 32,
// a 32-byte swizzled map of 32-byte boxes, stages of whole swizzle atoms (n32 at least),
// packed weights, several taps a stage by default (an odd number of k steps a stage), and
// a clean sm_90a compile: no spills, no serialized wgmmas (which ptxas reports for
// one-step stages). With CONVJIT_WGMMA_ROW32=0 they stay off the TMA kernel.
TEST(WgmmaKernel, ThirtyTwoByteRowsSizeStagesMapsAndPackingForThemAndCompileWithoutSpills) {
  struct Case {
    DType dtype;
    MathMode math;
    int c, k;
    const char* taps;
  };
  const Case cases[] = {{DType::kFloat16, MathMode::kTF32, 16, 128, "3"},
                        {DType::kBFloat16, MathMode::kTF32, 24, 16, "3"},
                        {DType::kFloat32, MathMode::kTF32, 8, 64, "3"},
                        {DType::kFloat32, MathMode::kStrictFp32, 12, 40, "1"},
                        {DType::kFloat16, MathMode::kTF32, 16, 128, nullptr}};
  for (const Case& c : cases) {
    Conv2dDesc d{.n = 2, .c = c.c, .h = 17, .w = 19, .k = c.k, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};
    d.layout = Layout::kNHWC;
    d.dtype = c.dtype;
    d.math = c.math;
    const int e = static_cast<int>(size_of(c.dtype));
    // nullptr: the default, three of the 3x3 filter's taps a stage (the largest divisor
    // up to 8 whose stages fit three deep).
    std::optional<testing::ScopedEnv> taps;
    if (c.taps != nullptr) taps.emplace("CONVJIT_WGMMA_TAPS_PER_STAGE", c.taps);
    const auto src = expect_tma_rows(d, 32, "CONVJIT_WGMMA_ROW32");
    SCOPED_TRACE(src.source.kernel_name);
    const int planes = c.math == MathMode::kStrictFp32 && c.dtype == DType::kFloat32 ? 2 : 1;
    const int bm = 2 * std::stoi(constant(src, "kMB")) * 64;
    const int bn = std::stoi(constant(src, "kBN"));
    EXPECT_GE(bn, 32);
    const int per_stage = std::stoi(constant(src, "kTapsPerStage"));
    EXPECT_EQ(per_stage, c.taps != nullptr ? std::stoi(c.taps) : 3);
    EXPECT_EQ(std::stoi(constant(src, "kStageBytes")), per_stage * (bm + planes * bn) * 32);
    EXPECT_EQ(std::stoi(constant(src, "kStageBytes")) % 1024, 0);
    ASSERT_TRUE(src.launch.weight_pack.has_value());
    EXPECT_FALSE(src.launch.b_map.has_value());
    const int k_blocks = (c.k + bn - 1) / bn;
    const int chunks = (c.c * e + 31) / 32;  // 48 bytes: two rows, the second half zeros
    EXPECT_EQ(src.launch.weight_pack->packed_bytes,
              static_cast<std::uint64_t>(k_blocks) * chunks * 9 * planes * bn * 32);
    expect_clean_tma_compile(src);
  }
}

}  // namespace
}  // namespace convjit
