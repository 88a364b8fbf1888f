// NCHW through the NHWC TMA wgmma kernel: forced (CONVJIT_NCHW_VIA_NHWC=1), the implicit
// GEMM on sm_90 specializes NCHW problems the NHWC map can read into the route's kernel
// (its own name, NHWC stages reading NCHW weights, x's transpose in the module and the
// launch spec, y stored NCHW by the kernel or, split, by the reduce pass, room for x's
// region), whose source compiles for sm_90a without spills in
// every dtype and math mode; off (=0), every problem gets exactly the kernel it got before
// the route existed; unset, the cost model decides (mid-size layers take the route, wide
// images keep the NCHW kernel); dynamic batch, other archs and problems the map cannot
// read keep the NCHW path with the reason said.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>

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

constexpr const char* kSwitch = "CONVJIT_NCHW_VIA_NHWC";

bool via(const Specialization& src) { return src.source.kernel_name.ends_with("_via_nhwc"); }

// The VGG layer of the measured gap, a grouped strided one with odd extents, and deep
// channels on a small image (the last two few tiles: split-K in the NHWC kernel).
const Conv2dDesc kVgg{.n = 8, .c = 512, .h = 28, .w = 28, .k = 512, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
const Conv2dDesc kGrouped{.n = 2,
                          .c = 256,
                          .h = 15,
                          .w = 17,
                          .k = 66,
                          .r = 3,
                          .s = 3,
                          .stride_h = 2,
                          .stride_w = 2,
                          .pad_h = 1,
                          .pad_w = 1,
                          .groups = 2,
                          .bias = true,
                          .activation = Activation::kRelu};
const Conv2dDesc kDeep{
    .n = 2, .c = 512, .h = 7, .w = 7, .k = 256, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};

// One kind of each, a split one in 3xTF32 (the heaviest kernel): the route's kernel,
// its constants, its launch steps and workspace, and a clean sm_90a compile.
TEST(NchwViaNhwcKernel, RouteKernelsCompileWithoutSpillsAndStoreNchwYThemselvesInEveryDtypeAndMathMode) {
  ScopedEnv on(kSwitch, "1");
  struct Case {
    Conv2dDesc desc;
    bool split;
  };
  const Case cases[] = {{with_dtype(kVgg, DType::kFloat16), false},
                        {with_dtype(kGrouped, DType::kBFloat16), true},
                        {with_dtype(kVgg, DType::kFloat32), false},
                        {with_dtype(kDeep, DType::kFloat32, MathMode::kStrictFp32), true}};
  for (const Case& c : cases) {
    const Conv2dDesc& d = c.desc;
    ASSERT_FALSE(nchw_via_nhwc_unsupported_reason(d, "sm_90")) << *nchw_via_nhwc_unsupported_reason(d, "sm_90");
    const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
    const std::string& name = src.source.kernel_name;
    SCOPED_TRACE(name);
    ASSERT_TRUE(via(src));
    EXPECT_TRUE(name.starts_with("conv2d_wgmma_")) << name;
    EXPECT_NE(name.find("_nchw_"), std::string::npos) << "the caller's layout is in the name";
    EXPECT_EQ(d.to_string().find("layout=nhwc"), std::string::npos) << "the descriptor stays NCHW";
    EXPECT_EQ(src.source.compile_arch, "sm_90a");
    // NHWC stages through the map, weights in the caller's NCHW order.
    EXPECT_EQ(prologue_constant(src, "int", "kLayout"), "1");
    EXPECT_EQ(prologue_constant(src, "bool", "kATma"), "true");
    EXPECT_EQ(prologue_constant(src, "bool", "kWeightsKcrs"), "true");
    EXPECT_NE(src.source.text.find("#define CONVJIT_WGMMA_VIA_NHWC 1"), std::string::npos);
    EXPECT_NE(src.launch.tile.find("NCHW through NHWC"), std::string::npos) << src.launch.tile;
    // The caller's pointers are read and written one element at a time.
    const auto e = static_cast<unsigned>(size_of(d.dtype));
    EXPECT_EQ(src.launch.needs, (AlignmentNeeds{e, e, e, e}));
    // The map reads x's NHWC copy: C, W, H, N.
    ASSERT_TRUE(src.launch.a_map.has_value());
    EXPECT_EQ(src.launch.a_map->dims[0], static_cast<std::uint64_t>(d.c));
    EXPECT_EQ(src.launch.a_map->dims[1], static_cast<std::uint64_t>(d.w));
    EXPECT_EQ(src.launch.a_map->dims[3], static_cast<std::uint64_t>(d.n));
    ASSERT_TRUE(src.launch.weight_pack.has_value());
    EXPECT_EQ(src.launch.split_reduce.has_value(), c.split);
    ASSERT_TRUE(src.launch.x_to_nhwc.has_value());
    EXPECT_EQ(src.launch.x_to_nhwc->kernel_name, name + "_x_to_nhwc");
    // Unsplit, the kernel stores the caller's NCHW y itself; split, its reduce pass does,
    // a block a 32 x 32 tile of (pixel, channel): no y transpose, no y region.
    EXPECT_EQ(src.source.text.find("#define CONVJIT_WGMMA_Y_NCHW 1") != std::string::npos, !c.split);
    if (c.split) {
      const auto out = d.output_shape();
      const std::uint64_t tiles = (static_cast<std::uint64_t>(out.n) * out.p * out.q + 31) / 32 * ((d.k + 31) / 32);
      EXPECT_EQ(src.launch.split_reduce->grid_x, std::min<std::uint64_t>(tiles, 132 * 8));
      EXPECT_NE(src.launch.tile.find("y stored NCHW by the reduce pass"), std::string::npos) << src.launch.tile;
    } else {
      EXPECT_EQ(prologue_constant(src, "bool", "kPairStores"), "false");
    }
    const auto x_bytes = static_cast<std::uint64_t>(d.x_elements()) * e;
    EXPECT_GE(src.launch.x_to_nhwc->region_bytes, x_bytes);
    EXPECT_LT(src.launch.x_to_nhwc->region_bytes, x_bytes + kRegionAlign);
    EXPECT_EQ(src.launch.x_to_nhwc->region_bytes % kRegionAlign, 0u);
    EXPECT_GE(src.launch.x_to_nhwc->grid_x, 1u);
    EXPECT_EQ(src.launch.x_to_nhwc->block_x, 256u);

    const auto compiled = Nvrtc::compile(src.source.text, name + ".cu", Nvrtc::options_for(src.source.compile_arch));
    const std::string& ptx = compiled.ptx;
    EXPECT_EQ(ptx.find("_y_to_nchw("), std::string::npos);
    for (const std::string& entry : {name, name + "_pack", name + "_x_to_nhwc", name + (c.split ? "_reduce" : "")}) {
      EXPECT_NE(ptx.find(".entry " + entry + "("), std::string::npos) << entry;
      const auto usage = parse_ptxas_report(compiled.log, entry);
      EXPECT_EQ(usage.spill_store_bytes, 0) << entry << "\n" << compiled.log;
      EXPECT_EQ(usage.spill_load_bytes, 0) << entry << "\n" << compiled.log;
    }
    EXPECT_EQ(ptx.find(".entry " + name + "_reduce(") != std::string::npos, c.split);
    EXPECT_NE(ptx.find("cp.async.bulk.tensor.4d.shared::cluster.global.im2col"), std::string::npos);
    EXPECT_EQ(compiled.log.find("wgmma.mma_async instructions are serialized"), std::string::npos) << compiled.log;
  }
}

// Off (=0): what the implicit GEMM specialized before the route existed, to the byte, for
// problems the route would take; forced (=1), the same problems take the route; any other
// value is refused with the variable named.
TEST(NchwViaNhwcKernel, ZeroGivesExactlyTheNchwKernelOfBeforeAndOtherValuesAreRefused) {
  const Conv2dDesc problems[] = {with_dtype(kVgg, DType::kFloat16), with_dtype(kGrouped, DType::kFloat32),
                                 with_dtype(kDeep, DType::kBFloat16)};
  for (const Conv2dDesc& d : problems) {
    SCOPED_TRACE(d.to_string());
    const auto before = runs_on_wgmma(d, "sm_90") ? specialize_wgmma(d) : specialize_implicit_gemm(d);
    {
      ScopedEnv off(kSwitch, "0");
      ASSERT_TRUE(nchw_via_nhwc_unsupported_reason(d, "sm_90").has_value());
      EXPECT_FALSE(nchw_takes_route(d, "sm_90"));
      const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
      EXPECT_EQ(src.source.kernel_name, before.source.kernel_name);
      EXPECT_EQ(src.source.text, before.source.text);
      EXPECT_FALSE(src.launch.x_to_nhwc.has_value());
      EXPECT_EQ(src.source.text.find("#define CONVJIT_WGMMA_VIA_NHWC"), std::string::npos);
      EXPECT_EQ(std::isinf(predicted_nchw_via_nhwc_ms(d, "sm_90")), true);
    }
    {
      ScopedEnv bad(kSwitch, "yes");
      try {
        (void)specialize(d, Algorithm::kImplicitGemm, "sm_90");
        ADD_FAILURE() << "CONVJIT_NCHW_VIA_NHWC=yes was accepted";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
        EXPECT_NE(std::string(e.what()).find("CONVJIT_NCHW_VIA_NHWC"), std::string::npos) << e.what();
      }
    }
    ScopedEnv on(kSwitch, "1");
    EXPECT_TRUE(via(specialize(d, Algorithm::kImplicitGemm, "sm_90")));
  }
  // Every kernel of before reads the weights in its own layout's order (the value that
  // keeps its code): NCHW K,C,R,S, NHWC K,R,S,C.
  const Conv2dDesc nchw = with_dtype(kVgg, DType::kFloat16);
  Conv2dDesc nhwc = nchw;
  nhwc.layout = Layout::kNHWC;
  EXPECT_EQ(prologue_constant(specialize_wgmma(nchw), "bool", "kWeightsKcrs"), "true");
  EXPECT_EQ(prologue_constant(specialize_wgmma(nhwc), "bool", "kWeightsKcrs"), "false");
  ScopedEnv on(kSwitch, "1");
  EXPECT_FALSE(via(specialize(nhwc, Algorithm::kImplicitGemm, "sm_90"))) << "NHWC problems keep their kernel";
}

// Refused, with the reason, and the NCHW kernel the problem got without the switch.
TEST(NchwViaNhwcKernel, DynamicBatchOtherArchsAndProblemsTheMapCannotReadKeepTheNchwPath) {
  ScopedEnv on(kSwitch, "1");
  // The 3-channel problem below would take the mma.sync route (NchwViaNhwcMmaKernel).
  ScopedEnv no_mma_route("CONVJIT_NCHW_MMA_VIA_NHWC", "0");
  Conv2dDesc dynamic = with_dtype(kVgg, DType::kFloat16);
  dynamic.dynamic_batch = true;
  Conv2dDesc strided = with_dtype(kVgg, DType::kFloat16);  // past the map's traversal strides
  strided.stride_h = 9;
  Conv2dDesc tail = with_dtype(kGrouped, DType::kFloat16);  // groups of 72 channels: no whole chunks
  tail.c = 144;
  Conv2dDesc narrow = with_dtype(kVgg, DType::kFloat32);  // 12-byte pixels: no map stride
  narrow.c = 3;
  struct Case {
    Conv2dDesc desc;
    std::string arch;
    std::string why;
  };
  const Case cases[] = {{dynamic, "sm_90", "dynamic-batch"},
                        {with_dtype(kVgg, DType::kFloat16), "sm_80", "sm_90"},
                        {strided, "sm_90", "traversal strides"},
                        {tail, "sm_90", "whole 128-byte chunks"},
                        {narrow, "sm_90", "multiple of 16"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.desc.to_string() + " " + c.arch);
    const auto why = nchw_via_nhwc_unsupported_reason(c.desc, c.arch);
    ASSERT_TRUE(why.has_value());
    EXPECT_NE(why->find(c.why), std::string::npos) << *why;
    const auto src = specialize(c.desc, Algorithm::kImplicitGemm, c.arch);
    EXPECT_FALSE(via(src)) << src.source.kernel_name;
    EXPECT_FALSE(src.launch.x_to_nhwc.has_value());
    ScopedEnv off(kSwitch, nullptr);
    EXPECT_EQ(src.source.text, specialize(c.desc, Algorithm::kImplicitGemm, c.arch).source.text);
  }
}

// The cost model prices the route as it runs: the NHWC kernel's time plus both tensors
// read and written once, the weights packed from K,C/g,R,S, and the launches.
TEST(NchwViaNhwcKernel, PredictedTimeIsTheNhwcKernelsPlusTheTransposesThePackAndTheLaunches) {
  ScopedEnv on(kSwitch, "1");
  const Conv2dDesc d = with_dtype(kVgg, DType::kFloat16);
  Conv2dDesc twin = d;
  twin.layout = Layout::kNHWC;
  const double route = predicted_nchw_via_nhwc_ms(d, "sm_90");
  const double kernel = predicted_wgmma_ms(twin, "sm_90");
  ASSERT_TRUE(std::isfinite(route));
  // x and y are 6.4 MB each in f16 (25.7 MB moved: ~14 us at 1.8 TB/s), the weights 4.7 MB
  // (read and written: ~6 us), and 8 us of launches.
  EXPECT_GT(route - kernel, 0.02);
  EXPECT_LT(route - kernel, 0.04);
  EXPECT_TRUE(std::isinf(predicted_nchw_via_nhwc_ms(d, "sm_80")));
}

// Unset, the choice is the cost model's, from the JIT constants: a mid-size layer, where
// the NCHW kernel's stages are bound by copying short input rows, takes the route; a wide
// image (KernelBench 56), where the NCHW kernel copies long rows and the transposes would
// move 400 MB, keeps the NCHW kernel.
TEST(NchwViaNhwcKernel, UnsetTheModelSendsMidSizeLayersThroughTheRouteAndKeepsWideImagesOnTheNchwKernel) {
  ScopedEnv unset(kSwitch, nullptr);
  const Conv2dDesc vgg = with_dtype(kVgg, DType::kFloat16);
  EXPECT_LT(predicted_nchw_via_nhwc_ms(vgg, "sm_90"), predicted_nchw_wgmma_copy_ms(vgg, "sm_90"));
  EXPECT_TRUE(nchw_takes_route(vgg, "sm_90"));
  EXPECT_TRUE(via(specialize(vgg, Algorithm::kImplicitGemm, "sm_90")));
  const Conv2dDesc wide = with_dtype({.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7}, DType::kFloat16);
  EXPECT_FALSE(nchw_via_nhwc_unsupported_reason(wide, "sm_90").has_value());
  EXPECT_GT(predicted_nchw_via_nhwc_ms(wide, "sm_90"), predicted_nchw_wgmma_copy_ms(wide, "sm_90"));
  EXPECT_FALSE(nchw_takes_route(wide, "sm_90"));
  EXPECT_FALSE(via(specialize(wide, Algorithm::kImplicitGemm, "sm_90")));
  // The same decision in every mode for these two.
  for (const auto& [dtype, math] :
       {std::pair{DType::kFloat32, MathMode::kTF32}, std::pair{DType::kFloat32, MathMode::kStrictFp32},
        std::pair{DType::kBFloat16, MathMode::kTF32}}) {
    EXPECT_TRUE(nchw_takes_route(with_dtype(kVgg, dtype, math), "sm_90"));
    EXPECT_FALSE(nchw_takes_route(with_dtype(wide, dtype, math), "sm_90"));
  }
}

}  // namespace
}  // namespace convjit
