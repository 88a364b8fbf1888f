// The NHWC wgmma kernel's TMA variant: A through one im2col copy a stage instead of 128
// threads' cp.async. It is the default (CONVJIT_WGMMA_TMA=0 turns it off); its source
// compiles for sm_90a in every dtype and math mode without spills; the im2col map the host
// derives walks the output pixels in y's order for padding, stride, dilation and channel
// tails; problems the map cannot express keep the cp.async copies, with the reason said.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "compile/nvrtc.hpp"
#include "compile/ptxas_report.hpp"
#include "convjit/error.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/specialized_source.hpp"
#include "support/prologue_constant.hpp"
#include "support/scoped_env.hpp"

namespace convjit {
namespace {

using testing::prologue_constant;
using testing::ScopedEnv;

const Conv2dDesc kHeadline{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7};

Conv2dDesc nhwc(Conv2dDesc d, DType dtype = DType::kFloat32, MathMode math = MathMode::kTF32) {
  d.layout = Layout::kNHWC;
  d.dtype = dtype;
  d.math = math;
  return d;
}

bool is_tma(const Specialization& src) { return src.source.kernel_name.ends_with("_tma"); }

auto compiled(const Specialization& src) {
  return Nvrtc::compile(src.source.text, src.source.kernel_name + ".cu", Nvrtc::options_for(src.source.compile_arch));
}

TEST(WgmmaTmaKernel, TheVariantIsTheDefaultAndZeroKeepsTheCpAsyncCopies) {
  const Conv2dDesc d = nhwc(kHeadline, DType::kFloat16);
  ScopedEnv box_a_tap("CONVJIT_WGMMA_ROW_HALO", "0");  // the same stages in both
  for (const char* value : {static_cast<const char*>(nullptr), "", "1"}) {
    ScopedEnv env("CONVJIT_WGMMA_TMA", value);
    SCOPED_TRACE(value == nullptr ? "unset" : value);
    const auto src = specialize_wgmma(d);
    EXPECT_TRUE(is_tma(src)) << src.source.kernel_name;
    EXPECT_EQ(prologue_constant(src, "bool", "kATma"), "true");
    EXPECT_NE(src.source.text.find("#define CONVJIT_WGMMA_TMA 1"), std::string::npos);
    ASSERT_TRUE(src.launch.a_map.has_value());
    EXPECT_NE(src.launch.tile.find("x by TMA im2col"), std::string::npos) << src.launch.tile;
    // The map's global address is x: 16-byte aligned, as the 16-byte cp.async pieces needed.
    EXPECT_EQ(src.launch.needs.x, 16u);
  }
  // (Outputs from registers in both: y's map needs the TMA variant and its boxes take room.)
  ScopedEnv registers("CONVJIT_WGMMA_Y_MAP", "0");
  const auto tma = specialize_wgmma(d);
  ScopedEnv off("CONVJIT_WGMMA_TMA", "0");
  const auto src = specialize_wgmma(d);
  EXPECT_FALSE(is_tma(src)) << src.source.kernel_name;
  EXPECT_EQ(prologue_constant(src, "bool", "kATma"), "false");
  EXPECT_EQ(src.source.text.find("#define CONVJIT_WGMMA_TMA"), std::string::npos);
  EXPECT_FALSE(src.launch.a_map.has_value());
  EXPECT_NE(src.launch.tile.find("16-byte pieces"), std::string::npos) << src.launch.tile;
  // The stages start on a 1024-byte boundary the kernel finds at run time: 1024 bytes more.
  EXPECT_EQ(tma.launch.geometry.shared_bytes, src.launch.geometry.shared_bytes + 1024);
}

// A mid-size 3x3, a grouped strided dilated problem with a channel tail past C, a deep one
// split across SMs and a dynamic-batch one, in every dtype and math mode: one im2col copy
// a stage (4-D, the map a 128-byte parameter after y), no cp.async left for x, the
// consumers' wgmma unchanged, no spills, no serialized wgmma. The weights: one 3-D tiled
// copy a stage through a second map after x's (TF32 and 16-bit; TF32 then rounded in
// shared memory and fenced for wgmma), or (3xTF32) one bulk copy of the packed planes.
TEST(WgmmaTmaKernel, SourcesCompileToIm2colCopiesWithoutSpillsInEveryDtypeAndMathMode) {
  Conv2dDesc dynamic{.n = 4, .c = 96, .h = 14, .w = 14, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  dynamic.dynamic_batch = true;
  const Conv2dDesc shapes[] = {
      {.n = 2, .c = 64, .h = 28, .w = 28, .k = 192, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      {.n = 1,
       .c = 128,
       .h = 9,
       .w = 13,
       .k = 70,
       .r = 2,
       .s = 3,
       .stride_h = 2,
       .dilation_w = 2,
       .groups = 2,
       .activation = Activation::kRelu},
      {.n = 1, .c = 520, .h = 7, .w = 7, .k = 256, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
      dynamic,
  };
  const std::pair<DType, MathMode> kinds[] = {{DType::kFloat32, MathMode::kTF32},
                                              {DType::kFloat32, MathMode::kStrictFp32},
                                              {DType::kFloat16, MathMode::kTF32},
                                              {DType::kBFloat16, MathMode::kTF32}};
  int index = 0;
  for (const Conv2dDesc& shape : shapes) {
    for (const auto& [dtype, math] : kinds) {
      // The dynamic-batch shape in one kind only: its difference is the parameter list.
      if (shape.dynamic_batch && index++ % 4 != 2) continue;
      const Conv2dDesc d = nhwc(shape, dtype, math);
      ASSERT_FALSE(wgmma_tma_unsupported_reason(d)) << *wgmma_tma_unsupported_reason(d);
      const auto src = specialize_wgmma(d);
      SCOPED_TRACE(src.source.kernel_name);
      ASSERT_TRUE(is_tma(src));
      const auto out =
          Nvrtc::compile(src.source.text, src.source.kernel_name + ".cu", Nvrtc::options_for(src.source.compile_arch));
      const std::string& ptx = out.ptx;
      EXPECT_NE(ptx.find("cp.async.bulk.tensor.4d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes"),
                std::string::npos);
      EXPECT_NE(ptx.find("prefetch.tensormap"), std::string::npos);
      EXPECT_NE(ptx.find(".param .align 64 .b8 " + src.source.kernel_name + "_param_4[128]"), std::string::npos);
      // TF32 rounds what the map reads in every pixel tile: the map on grids of 4 tiles or
      // fewer only (the first shape has 7).
      const auto out_shape = d.output_shape();
      const std::int64_t tiles = (std::int64_t{out_shape.n} * out_shape.p * out_shape.q +
                                  std::stoi(prologue_constant(src, "int", "kBQ")) - 1) /
                                 std::stoi(prologue_constant(src, "int", "kBQ"));
      const bool b_map = dtype != DType::kFloat32 || (math == MathMode::kTF32 && tiles <= 4);
      EXPECT_EQ(prologue_constant(src, "bool", "kBMap"), b_map ? "true" : "false");
      EXPECT_EQ(src.launch.b_map.has_value(), b_map);
      EXPECT_EQ(src.launch.weight_pack.has_value(), !b_map);
      const int batch_param = (b_map ? 6 : 5) + (src.launch.y_map ? 1 : 0);
      if (b_map) {
        EXPECT_NE(ptx.find(".param .align 64 .b8 " + src.source.kernel_name + "_param_5[128]"), std::string::npos);
        EXPECT_NE(ptx.find("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"),
                  std::string::npos);
        EXPECT_EQ(ptx.find("cp.async.bulk.shared::cluster.global"), std::string::npos);
        // TF32's rounded weights, or the staged outputs, handed to the async proxy.
        EXPECT_EQ(ptx.find("fence.proxy.async.shared::cta") != std::string::npos,
                  dtype == DType::kFloat32 || src.launch.y_map.has_value());
        EXPECT_LE(tiles, dtype == DType::kFloat32 ? 4 : tiles);
      } else {
        EXPECT_NE(ptx.find("cp.async.bulk.shared::cluster.global"), std::string::npos);  // the packed weights
      }
      // The batch comes after the maps; a static kernel has no parameter past them.
      EXPECT_EQ(ptx.find(src.source.kernel_name + "_param_" + std::to_string(batch_param)) != std::string::npos,
                d.dynamic_batch);
      EXPECT_EQ(ptx.find("cp.async.cg.shared.global"), std::string::npos);
      EXPECT_EQ(ptx.find("cp.async.ca.shared.global"), std::string::npos);
      EXPECT_NE(ptx.find("wgmma.mma_async.sync.aligned.m64n"), std::string::npos);
      const auto usage = parse_ptxas_report(out.log, src.source.kernel_name);
      EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
      EXPECT_EQ(usage.spill_load_bytes, 0) << out.log;
      EXPECT_EQ(out.log.find("wgmma.mma_async instructions are serialized"), std::string::npos) << out.log;
    }
  }
}

// The traversal the PTX ISA describes for im2col mode, over the map the host derived:
// from the instruction's start (w, h, n), step along W by its element stride, wrapping to
// the box's lower W corner and the next H row past the box's last W position, and to the
// next image past its last H row. Step i must be tile pixel i's tap-(0, 0) input position,
// and each tap's offset added to it must be the convolution's input position, for every
// tile of the problem: then the kBM rows of a stage are y's pixels in order.
void expect_map_walks_output_pixels(const Conv2dDesc& d) {
  const auto src = specialize_wgmma(d);
  SCOPED_TRACE(src.source.kernel_name);
  ASSERT_TRUE(src.launch.a_map.has_value());
  const Im2colTensorMap& m = *src.launch.a_map;
  const auto e = static_cast<std::uint64_t>(size_of(d.dtype));
  EXPECT_EQ(m.dtype, d.dtype);
  EXPECT_EQ(m.dims[0], static_cast<std::uint64_t>(d.c));
  EXPECT_EQ(m.dims[1], static_cast<std::uint64_t>(d.w));
  EXPECT_EQ(m.dims[2], static_cast<std::uint64_t>(d.h));
  EXPECT_EQ(m.dims[3], static_cast<std::uint64_t>(d.n));
  EXPECT_EQ(m.strides[0], d.c * e);
  EXPECT_EQ(m.strides[1], d.c * e * d.w);
  EXPECT_EQ(m.strides[2], d.c * e * d.w * d.h);
  // A stage's pixel row: 64 bytes where one group's channels fill 64 but not 128, else 128.
  const std::uint64_t run = d.c / d.groups * e;
  const unsigned row = d.groups == 1 && run >= 64 && run < 128 ? 64u : 128u;
  EXPECT_EQ(m.channels_per_pixel * e, row);
  EXPECT_EQ(m.swizzle_bytes, row);
  const int bm = std::stoi(prologue_constant(src, "int", "kBQ"));
  EXPECT_EQ(m.pixels_per_column, static_cast<unsigned>(bm));
  EXPECT_EQ(m.element_strides[0], 1u);
  EXPECT_EQ(m.element_strides[3], 1u);
  const int sw = static_cast<int>(m.element_strides[1]);
  const int sh = static_cast<int>(m.element_strides[2]);
  const int w_last = d.w - 1 + m.upper[0];
  const int h_last = d.h - 1 + m.upper[1];
  ASSERT_GE(w_last, m.lower[0]);
  ASSERT_GE(h_last, m.lower[1]);
  for (int corner : {m.lower[0], m.lower[1], m.upper[0], m.upper[1]}) {
    EXPECT_GE(corner, -128);
    EXPECT_LE(corner, 127);
  }
  // Each tap reads its input at the traversal's position plus (s x dilation_w, r x
  // dilation_h), which the instruction takes unsigned, up to 255 in rank 4: so the position
  // the walk below checks is the convolution's tap-(0, 0) input, and every tap follows.
  EXPECT_LE((d.s - 1) * d.dilation_w, 255);
  EXPECT_LE((d.r - 1) * d.dilation_h, 255);
  const auto out = d.output_shape();
  const int pixels = out.n * out.p * out.q;
  for (int tile = 0; tile * bm < pixels; ++tile) {
    // The kernel's start: the tile's first pixel at tap (0, 0).
    const int first = tile * bm;
    const int img0 = first / (out.p * out.q);
    const int pq0 = first - img0 * out.p * out.q;
    int n = img0;
    int h = pq0 / out.q * d.stride_h - d.pad_h;
    int w = pq0 % out.q * d.stride_w - d.pad_w;
    for (int i = 0; i < bm && first + i < pixels; ++i) {
      const int pixel = first + i;
      const int img = pixel / (out.p * out.q);
      const int p = pixel / out.q % out.p;
      const int q = pixel % out.q;
      ASSERT_EQ(n, img) << "tile " << tile << " row " << i;
      ASSERT_EQ(h, p * d.stride_h - d.pad_h) << "tile " << tile << " row " << i;
      ASSERT_EQ(w, q * d.stride_w - d.pad_w) << "tile " << tile << " row " << i;
      w += sw;
      if (w > w_last) {
        w = m.lower[0];
        h += sh;
        if (h > h_last) {
          h = m.lower[1];
          ++n;
        }
      }
    }
  }
}

TEST(WgmmaTmaKernel, TheMapWalksTheOutputPixelsInYsOrderForPaddingStrideAndDilation) {
  ScopedEnv box_a_tap("CONVJIT_WGMMA_ROW_HALO", "0");  // the row halo's walk: RowHalo* below
  const Conv2dDesc shapes[] = {
      // no padding, stride 1: the box ends where the filter's last tap would leave x
      {.n = 3, .c = 32, .h = 11, .w = 13, .k = 64, .r = 3, .s = 5},
      // padding wider than the filter's reach on one side
      {.n = 2, .c = 64, .h = 9, .w = 10, .k = 40, .r = 3, .s = 3, .pad_h = 2, .pad_w = 3},
      // strides that leave input columns over at the end (W + 2 pad - reach not a multiple)
      {.n = 2,
       .c = 96,
       .h = 17,
       .w = 23,
       .k = 48,
       .r = 3,
       .s = 3,
       .stride_h = 2,
       .stride_w = 3,
       .pad_h = 1,
       .pad_w = 1},
      // dilation with stride and padding: upper corners below -pad
      {.n = 1,
       .c = 40,
       .h = 30,
       .w = 31,
       .k = 33,
       .r = 3,
       .s = 4,
       .stride_h = 2,
       .stride_w = 1,
       .pad_h = 2,
       .pad_w = 1,
       .dilation_h = 3,
       .dilation_w = 2},
      // 1-D (h = r = 1), a channel tail past C, groups whose runs are whole chunks
      {.n = 4, .c = 36, .h = 1, .w = 300, .k = 64, .r = 1, .s = 7, .stride_w = 2, .pad_w = 3},
      {.n = 2, .c = 128, .h = 12, .w = 12, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 2},
      // the headline: many tiles, each starting mid-row
      kHeadline,
  };
  for (const Conv2dDesc& shape : shapes) {
    for (const auto& [dtype, math] :
         {std::pair{DType::kFloat32, MathMode::kTF32}, std::pair{DType::kFloat32, MathMode::kStrictFp32},
          std::pair{DType::kFloat16, MathMode::kTF32}}) {
      Conv2dDesc d = nhwc(shape, dtype, math);
      if (dtype != DType::kFloat32 && d.groups > 1) d.c = 2 * d.c;  // whole 64-channel runs
      if (d.dtype != DType::kFloat32 && d.c % 8 != 0) d.c += 8 - d.c % 8;
      d.validate();
      ASSERT_FALSE(wgmma_tma_unsupported_reason(d)) << d.to_string() << ": " << *wgmma_tma_unsupported_reason(d);
      expect_map_walks_output_pixels(d);
    }
  }
}

// What the rank-4 im2col map cannot express keeps the cp.async copies: the kernel has no
// _tma suffix and no map, and its tile says why.
TEST(WgmmaTmaKernel, ProblemsTheMapCannotExpressKeepCpAsyncWithTheReason) {
  const Conv2dDesc base = nhwc({.n = 1, .c = 64, .h = 12, .w = 12, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1});
  struct Case {
    const char* what;
    Conv2dDesc desc;
    AlignmentNeeds align;
    const char* reason;  // a phrase of the reason
  };
  auto with = [&](auto change) {
    Conv2dDesc d = base;
    change(d);
    return d;
  };
  const Case cases[] = {
      {"NCHW", with([](Conv2dDesc& d) { d.layout = Layout::kNCHW; }), kFullAlignment, "NCHW"},
      {"x 8-byte aligned", base, AlignmentNeeds{8, 16, 16, 16}, "16-byte aligned"},
      {"24-byte pixels", with([](Conv2dDesc& d) { d.c = 38; }), kFullAlignment, "multiple of 16"},
      {"groups of 48 channels", with([](Conv2dDesc& d) { d.c = 96, d.groups = 2; }), kFullAlignment,
       "whole 128-byte chunks"},
      {"stride 9", with([](Conv2dDesc& d) { d.w = 60, d.stride_w = 9; }), kFullAlignment, "traversal strides"},
      {"dilated reach 256", with([](Conv2dDesc& d) { d.w = 300, d.dilation_w = 128; }), kFullAlignment,
       "im2col offsets"},
      {"padding 129", with([](Conv2dDesc& d) { d.w = 20, d.pad_w = 129, d.s = 1; }), kFullAlignment,
       "bounding box corner"},
      {"padding 128 on a 1-wide filter", with([](Conv2dDesc& d) { d.pad_w = 128, d.s = 1; }), kFullAlignment,
       "bounding box corner"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    c.desc.validate();
    const auto why = wgmma_tma_unsupported_reason(c.desc, c.align);
    ASSERT_TRUE(why.has_value());
    EXPECT_NE(why->find(c.reason), std::string::npos) << *why;
    ASSERT_FALSE(wgmma_unsupported_reason(c.desc, "sm_90", c.align)) << *wgmma_unsupported_reason(c.desc, "sm_90");
    const auto src = specialize_wgmma(c.desc, c.align);
    EXPECT_FALSE(is_tma(src)) << src.source.kernel_name;
    EXPECT_EQ(prologue_constant(src, "bool", "kATma"), "false");
    EXPECT_FALSE(src.launch.a_map.has_value());
    if (c.desc.layout == Layout::kNHWC) {
      EXPECT_NE(src.launch.tile.find("TMA im2col refused: " + *why), std::string::npos) << src.launch.tile;
    }
  }
  // Where the map can, the plan's variant for less-aligned x is the cp.async kernel.
  const auto aligned = specialize(base, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_TRUE(is_tma(aligned)) << aligned.source.kernel_name;
  const auto unaligned = specialize(base, Algorithm::kImplicitGemm, "sm_90", AlignmentNeeds{4, 16, 16, 16});
  EXPECT_FALSE(is_tma(unaligned)) << unaligned.source.kernel_name;
  EXPECT_EQ(unaligned.source.template_name, "conv2d_implicit_gemm_wgmma.cu");
}

// Where the map reads x, large NHWC grids (the headline) go to the TMA kernel; with the
// cp.async copies (CONVJIT_WGMMA_TMA=0, or x the map cannot take) mma.sync keeps them.
TEST(WgmmaTmaKernel, LargeNhwcGridsTheMapCanReadGoToTheTmaKernel) {
  const Conv2dDesc d = nhwc(kHeadline, DType::kFloat16);
  {
    ScopedEnv env("CONVJIT_WGMMA_TMA", "0");
    EXPECT_FALSE(nhwc_prefers_wgmma(d, "sm_90"));
    EXPECT_EQ(specialize(d, Algorithm::kImplicitGemm, "sm_90").source.template_name, "conv2d_implicit_gemm_mma.cu");
  }
  const AlignmentNeeds x_by_8{8, 16, 16, 16};
  EXPECT_FALSE(nhwc_prefers_wgmma(d, "sm_90", x_by_8));
  EXPECT_EQ(specialize(d, Algorithm::kImplicitGemm, "sm_90", x_by_8).source.template_name,
            "conv2d_implicit_gemm_mma.cu");
  EXPECT_TRUE(nhwc_prefers_wgmma(d, "sm_90"));
  const auto src = specialize(d, Algorithm::kImplicitGemm, "sm_90");
  EXPECT_TRUE(is_tma(src)) << src.source.kernel_name;
  // Channels that fill a 32-byte stage row take the TMA kernel with 32-byte rows; fewer
  // (or CONVJIT_WGMMA_ROW32=0, which leaves 16 halves to a quarter of a 128-byte row) still
  // go to mma.sync.
  Conv2dDesc narrow = d;
  narrow.c = 16;
  EXPECT_TRUE(nhwc_prefers_wgmma(narrow, "sm_90"));
  {
    ScopedEnv env("CONVJIT_WGMMA_ROW32", "0");
    EXPECT_FALSE(nhwc_prefers_wgmma(narrow, "sm_90"));
  }
  narrow.c = 8;
  EXPECT_FALSE(nhwc_prefers_wgmma(narrow, "sm_90"));
}

// Stream-K: a grid whose last wave leaves more than 15% of the SMs idle and that split-K
// does not take (more blocks than half the SMs) runs stream-K in TF32 and 3xTF32 (in
// 16-bit only with CONVJIT_WGMMA_STREAM_K=1; =0 turns it off): one block an SM (or fewer,
// each with 8 stages at least), the workspace's slots and counters sized for them, and a
// clean compile with the consumers' own barrier and the items' atomic counts. Grids that
// fill their waves, split-K grids and dynamic-batch problems keep their kernels.
TEST(WgmmaTmaKernel, StreamKTakesF32GridsWithAnIdleLastWaveOnly) {
  // 640->384 at 64x64, two images: 32 tiles x 3 k blocks = 96 items on 132 SMs (192 items,
  // 1.45 waves, in 3xTF32). (sd_unet's 640->320 layer was this example until its 320
  // filters took two n160 blocks of 128-pixel tiles: 128 items, no idle wave.)
  const Conv2dDesc idle{
      .n = 2, .c = 640, .h = 64, .w = 64, .k = 384, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};
  // 264 items (528 in 3xTF32, whose tiles are half as many pixels): whole waves.
  const Conv2dDesc full{.n = 1, .c = 128, .h = 132, .w = 256, .k = 256, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  // 8 items: split-K's.
  const Conv2dDesc few{.n = 1, .c = 256, .h = 32, .w = 32, .k = 256, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  for (const auto& [dtype, math] :
       {std::pair{DType::kFloat32, MathMode::kTF32}, std::pair{DType::kFloat32, MathMode::kStrictFp32},
        std::pair{DType::kFloat16, MathMode::kTF32}}) {
    const Conv2dDesc d = nhwc(idle, dtype, math);
    SCOPED_TRACE(d.to_string());
    const bool by_default = dtype == DType::kFloat32;
    EXPECT_EQ(prologue_constant(specialize_wgmma(d), "bool", "kStreamK"), by_default ? "true" : "false");
    {
      ScopedEnv off("CONVJIT_WGMMA_STREAM_K", "0");
      const auto plain = specialize_wgmma(d);
      EXPECT_EQ(prologue_constant(plain, "bool", "kStreamK"), "false");
      EXPECT_FALSE(plain.launch.stream_k.has_value());
    }
    ScopedEnv on("CONVJIT_WGMMA_STREAM_K", "1");
    const auto src = specialize_wgmma(d);
    ASSERT_EQ(prologue_constant(src, "bool", "kStreamK"), "true");
    const int bn = std::stoi(prologue_constant(src, "int", "kBN"));
    const int mb = std::stoi(prologue_constant(src, "int", "kMB"));
    const int bm = std::stoi(prologue_constant(src, "int", "kBQ"));
    const std::int64_t items = (2 * 64 * 64 + bm - 1) / bm * ((384 + bn - 1) / bn);
    const std::int64_t waves = (items + 131) / 132;
    EXPECT_GT(1.0 - static_cast<double>(items) / static_cast<double>(waves * 132), 0.15);
    EXPECT_EQ(prologue_constant(src, "int", "kStreamWorkers"), "132");
    EXPECT_EQ(src.launch.geometry.grid_x, 132u);
    EXPECT_EQ(src.launch.geometry.grid_y, 1u);
    EXPECT_EQ(src.launch.geometry.grid_z, 1u);
    EXPECT_FALSE(src.launch.geometry.persistent);
    EXPECT_FALSE(src.launch.split_reduce.has_value());
    ASSERT_TRUE(src.launch.stream_k.has_value());
    EXPECT_EQ(src.launch.stream_k->counters, static_cast<std::uint64_t>(items));
    EXPECT_EQ(src.launch.stream_k->slot_bytes, 132u * 2 * 256 * mb * (bn / 2) * 4);
    // 96 items: no whole wave; 192 (3xTF32's half-size tiles): one, then 60 shared.
    EXPECT_NE(src.launch.tile.find(items < 132 ? "stream-K: 132 blocks, 0 whole items, then 96 items' stages shared"
                                               : "stream-K: 132 blocks, 132 whole items, then 60 items' stages shared"),
              std::string::npos)
        << src.launch.tile;
    const auto out =
        Nvrtc::compile(src.source.text, src.source.kernel_name + ".cu", Nvrtc::options_for(src.source.compile_arch));
    EXPECT_NE(out.ptx.find("bar.sync 1, 256"), std::string::npos);
    EXPECT_NE(out.ptx.find("atom.global.add"), std::string::npos);
    const auto usage = parse_ptxas_report(out.log, src.source.kernel_name);
    EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
    EXPECT_EQ(usage.spill_load_bytes, 0) << out.log;
    EXPECT_EQ(out.log.find("wgmma.mma_async instructions are serialized"), std::string::npos) << out.log;
    EXPECT_EQ(prologue_constant(specialize_wgmma(nhwc(full, dtype, math)), "bool", "kStreamK"), "false");
    const auto split = specialize_wgmma(nhwc(few, dtype, math));
    EXPECT_EQ(prologue_constant(split, "bool", "kStreamK"), "false");
    EXPECT_TRUE(split.launch.split_reduce.has_value());
    Conv2dDesc dynamic = d;
    dynamic.dynamic_batch = true;
    EXPECT_EQ(prologue_constant(specialize_wgmma(dynamic), "bool", "kStreamK"), "false");
  }
}

// n160 tiles: a group of 320 filters (Stable Diffusion's 640->320 and 320->320 layers) is two
// n160 blocks of 128-pixel tiles in TF32 and 16-bit (128 blocks on 132 SMs, no stream-K),
// compiled to m64n160 wgmmas without spills or serialization; 3xTF32 (two accumulator
// sets), 256 and 640 filters (whole n128 blocks) and NCHW's own kernel keep n128. The
// tuning override takes n160 with one m64 block only.
TEST(WgmmaTmaKernel, ThreeHundredTwentyFiltersTakeTwoN160BlocksOf128PixelTiles) {
  const Conv2dDesc sd{
      .n = 2, .c = 640, .h = 64, .w = 64, .k = 320, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};
  for (const auto& [dtype, math] :
       {std::pair{DType::kFloat32, MathMode::kTF32}, std::pair{DType::kFloat16, MathMode::kTF32},
        std::pair{DType::kBFloat16, MathMode::kTF32}}) {
    const Conv2dDesc d = nhwc(sd, dtype, math);
    SCOPED_TRACE(d.to_string());
    const auto src = specialize_wgmma(d);
    EXPECT_TRUE(is_tma(src));
    EXPECT_EQ(prologue_constant(src, "int", "kBN"), "160");
    EXPECT_EQ(prologue_constant(src, "int", "kMB"), "1");
    EXPECT_EQ(prologue_constant(src, "int", "kBQ"), "128");
    EXPECT_EQ(prologue_constant(src, "bool", "kStreamK"), "false");
    EXPECT_EQ(src.launch.geometry.grid_x * src.launch.geometry.grid_y, 128u);
    const auto out =
        Nvrtc::compile(src.source.text, src.source.kernel_name + ".cu", Nvrtc::options_for(src.source.compile_arch));
    EXPECT_NE(out.ptx.find(dtype == DType::kFloat32 ? "m64n160k8" : "m64n160k16"), std::string::npos);
    const auto usage = parse_ptxas_report(out.log, src.source.kernel_name);
    EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
    EXPECT_EQ(out.log.find("wgmma.mma_async instructions are serialized"), std::string::npos) << out.log;
  }
  const auto bn_of = [](const Conv2dDesc& d) { return prologue_constant(specialize_wgmma(d), "int", "kBN"); };
  EXPECT_EQ(bn_of(nhwc(sd, DType::kFloat32, MathMode::kStrictFp32)), "128");
  Conv2dDesc whole = sd;
  for (const int k : {256, 640}) {
    whole.k = k;
    EXPECT_EQ(bn_of(nhwc(whole)), "128") << k;
  }
  Conv2dDesc nchw = sd;
  nchw.math = MathMode::kTF32;
  {
    ScopedEnv kernel("CONVJIT_NCHW_VIA_NHWC", "0");
    EXPECT_EQ(bn_of(nchw), "128");
  }
  {
    ScopedEnv tile("CONVJIT_WGMMA_TILE", "160,1,1,128,0");
    EXPECT_EQ(bn_of(nhwc(whole)), "160");
  }
  for (const char* bad : {"160,2,1,256,0", "96,1,1,128,0"}) {
    ScopedEnv tile("CONVJIT_WGMMA_TILE", bad);
    EXPECT_THROW((void)specialize_wgmma(nhwc(whole)), Error) << bad;
  }
}

// By default stream-K needs each of the SMs to get kMinSliceStages, and its share of the
// stages plus a split item's fix-up to beat the waves of whole items: VGG's 256->512 at
// 28x28 in TF32 (100 items of 72 stages on 132 SMs: 55 stages a worker, and a fix-up of
// 256 x 128 fp32 sums) and ResNet's 64->64 1x1 at 56x56 in 3xTF32 (196 items of 2 stages:
// 49 workers) keep their grids; with CONVJIT_WGMMA_STREAM_K=1 both take it.
TEST(WgmmaTmaKernel, StreamKIsLeftOutWhereItsFixUpOrTooFewStagesCostMoreThanTheIdleWave) {
  const Conv2dDesc vgg = nhwc({.n = 8, .c = 256, .h = 28, .w = 28, .k = 512, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
                              DType::kFloat32, MathMode::kTF32);
  const Conv2dDesc resnet =
      nhwc({.n = 16, .c = 64, .h = 56, .w = 56, .k = 64, .r = 1, .s = 1}, DType::kFloat32, MathMode::kStrictFp32);
  for (const auto& [d, workers] : {std::pair{vgg, 132u}, std::pair{resnet, 49u}}) {
    SCOPED_TRACE(d.to_string());
    EXPECT_EQ(prologue_constant(specialize_wgmma(d), "bool", "kStreamK"), "false");
    ScopedEnv on("CONVJIT_WGMMA_STREAM_K", "1");
    const auto forced = specialize_wgmma(d);
    EXPECT_EQ(prologue_constant(forced, "bool", "kStreamK"), "true");
    EXPECT_EQ(forced.launch.geometry.grid_x, workers);
  }
  // The same VGG layer's 512->512 twin (144 stages an item, 110 a worker) takes it.
  Conv2dDesc twin = vgg;
  twin.c = 512;
  EXPECT_EQ(prologue_constant(specialize_wgmma(twin), "bool", "kStreamK"), "true");
}

// The NHWC TMA kernel's grid rules: tiles of one m64 block a warpgroup where two would
// compute a third more pixels or worse (the Stable Diffusion 8x8 layers' 128 pixels; never
// for a dynamic batch, whose tile is the same for every batch); persistent blocks on grids
// of whole tiles (not where split-K divides the reduction); stages of three taps for 16-bit
// 64-byte rows on such grids only.
TEST(WgmmaTmaKernel, FewPixelsTakeHalfTilesWholeTileGridsRunPersistentAndSixteenBitSixtyFourByteRowsTakeThreeTaps) {
  const Conv2dDesc deep8{.n = 2, .c = 2560, .h = 8, .w = 8, .k = 1280, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  const Conv2dDesc deep16{.n = 2, .c = 1280, .h = 16, .w = 16, .k = 1280, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  const Conv2dDesc kb55{.n = 8, .c = 64, .h = 512, .w = 1024, .k = 128, .r = 3, .s = 3};
  const Conv2dDesc kb62{.n = 8, .c = 32, .h = 512, .w = 512, .k = 64, .r = 5, .s = 9};
  for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(to_string(dtype));
    const auto half = specialize_wgmma(nhwc(deep8, dtype));
    EXPECT_EQ(prologue_constant(half, "int", "kMB"), "1");
    EXPECT_EQ(prologue_constant(half, "int", "kBQ"), "128");
    EXPECT_FALSE(half.launch.geometry.persistent) << half.launch.tile;  // split-K
    Conv2dDesc dynamic = nhwc(deep8, dtype);
    dynamic.dynamic_batch = true;
    EXPECT_EQ(prologue_constant(specialize_wgmma(dynamic), "int", "kMB"), "2");
    EXPECT_EQ(prologue_constant(specialize_wgmma(nhwc(deep16, dtype)), "int", "kMB"), "2");

    const auto whole = specialize_wgmma(nhwc(kb55, dtype));
    EXPECT_TRUE(whole.launch.geometry.persistent) << whole.launch.tile;
    EXPECT_NE(whole.launch.tile.find("persistent blocks"), std::string::npos) << whole.launch.tile;
    {
      ScopedEnv off("CONVJIT_WGMMA_PERSISTENT", "0");
      EXPECT_FALSE(specialize_wgmma(nhwc(kb55, dtype)).launch.geometry.persistent);
    }

    const auto rows64 = specialize_wgmma(nhwc(kb62, dtype));
    EXPECT_EQ(prologue_constant(rows64, "int", "kTapsPerStage"), dtype == DType::kFloat32 ? "1" : "3");
    EXPECT_EQ(prologue_constant(rows64, "int", "kARowBytes"), dtype == DType::kFloat32 ? "128" : "64");
    // The same rows on a grid that splits its reduction keep a tap a stage.
    const Conv2dDesc small{.n = 1, .c = 32, .h = 20, .w = 24, .k = 64, .r = 5, .s = 9};
    EXPECT_EQ(prologue_constant(specialize_wgmma(nhwc(small, dtype)), "int", "kTapsPerStage"), "1");
  }
}

// 16-bit stages feed wgmma through shared-memory descriptors for A (no fragment loads into
// registers: no ld.shared in the kernel), in 128-, 64- and 32-byte rows, n160 and split-K
// tiles, without spills; TF32 and 3xTF32 keep the register path (it rounds A); the
// development switch turns 16-bit off (=0) or TF32 on (=tf32).
TEST(WgmmaTmaKernel, SixteenBitAndWideTf32StagesFeedWgmmaThroughDescriptorsAndNarrowTf32KeepsItsRoundedRegisters) {
  const Conv2dDesc shapes[] = {
      {.n = 8, .c = 64, .h = 512, .w = 1024, .k = 128, .r = 3, .s = 3},                        // 128-byte rows
      {.n = 8, .c = 32, .h = 512, .w = 512, .k = 64, .r = 5, .s = 9},                          // 64, 3 taps
      {.n = 2, .c = 16, .h = 40, .w = 40, .k = 48, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},    // 32
      {.n = 2, .c = 320, .h = 32, .w = 32, .k = 320, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},  // n160
      {.n = 1, .c = 1280, .h = 8, .w = 8, .k = 1280, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},  // split-K
  };
  for (const Conv2dDesc& shape : shapes) {
    for (const DType dtype : {DType::kFloat16, DType::kBFloat16}) {
      const auto src = specialize_wgmma(nhwc(shape, dtype));
      SCOPED_TRACE(src.launch.tile);
      ASSERT_TRUE(is_tma(src));
      EXPECT_EQ(prologue_constant(src, "bool", "kASmem"), "true");
      EXPECT_NE(src.launch.tile.find("wgmma reads it from shared memory"), std::string::npos);
      const auto out = compiled(src);
      EXPECT_EQ(out.ptx.find("ld.shared"), std::string::npos);
      EXPECT_NE(out.ptx.find(", p, 1, 1, 0, 0;"), std::string::npos);  // both operands' transpose flags
      const auto usage = parse_ptxas_report(out.log, src.source.kernel_name);
      EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
      EXPECT_EQ(usage.spill_load_bytes, 0) << out.log;
      EXPECT_EQ(out.log.find("wgmma.mma_async instructions are serialized"), std::string::npos) << out.log;
    }
    // TF32 on tiles of 128 filters or more over 128-byte rows (truncated A), never 3xTF32
    // (its two planes).
    const auto tf32 = specialize_wgmma(nhwc(shape, DType::kFloat32, MathMode::kTF32));
    const bool wide = (tf32.launch.tile.find(" x 128 channels") != std::string::npos ||
                       tf32.launch.tile.find(" x 160 channels") != std::string::npos) &&
                      shape.c * 4 >= 128;
    EXPECT_EQ(prologue_constant(tf32, "bool", "kASmem"), wide ? "true" : "false") << tf32.launch.tile;
    const auto strict = specialize_wgmma(nhwc(shape, DType::kFloat32, MathMode::kStrictFp32));
    EXPECT_EQ(prologue_constant(strict, "bool", "kASmem"), "false") << strict.launch.tile;
  }
  // The narrow tile's TF32 keeps its rounded registers, and so does a wide one over 64-byte rows.
  EXPECT_EQ(prologue_constant(specialize_wgmma(nhwc(shapes[1])), "bool", "kASmem"), "false");
  const Conv2dDesc kb63{.n = 16, .c = 16, .h = 1024, .w = 1024, .k = 128, .r = 3, .s = 3};
  const auto rows64 = specialize_wgmma(nhwc(kb63));
  EXPECT_NE(rows64.launch.tile.find(" x 128 channels"), std::string::npos) << rows64.launch.tile;
  EXPECT_EQ(prologue_constant(rows64, "bool", "kASmem"), "false") << rows64.launch.tile;
  {
    ScopedEnv registers("CONVJIT_WGMMA_A_SMEM", "16");
    const auto tf32 = specialize_wgmma(nhwc(shapes[0]));
    EXPECT_EQ(prologue_constant(tf32, "bool", "kASmem"), "false");
    EXPECT_NE(compiled(tf32).ptx.find("cvt.rna.tf32.f32"), std::string::npos) << "A rounded in registers";
  }
  const Conv2dDesc kb55 = shapes[0];
  {
    ScopedEnv off("CONVJIT_WGMMA_A_SMEM", "0");
    const auto src = specialize_wgmma(nhwc(kb55, DType::kFloat16));
    EXPECT_EQ(prologue_constant(src, "bool", "kASmem"), "false");
    EXPECT_NE(compiled(src).ptx.find("ld.shared"), std::string::npos);  // the fragments
  }
  const auto src = specialize_wgmma(nhwc(kb55));
  EXPECT_EQ(prologue_constant(src, "bool", "kASmem"), "true");
  const auto out = compiled(src);
  EXPECT_EQ(out.ptx.find("ld.shared"), std::string::npos) << "A is neither loaded nor rounded on this path";
  EXPECT_EQ(prologue_constant(specialize_wgmma(nhwc(kb55, DType::kFloat32, MathMode::kStrictFp32)), "bool", "kASmem"),
            "false");
}

// f32 tiles of 128 filters whose whole boxes (128 KB or 64 KB of outputs) would cost a
// stage stage them a share at a time: four passes in TF32 (256 pixels), two in 3xTF32 (128),
// the stages kept; the switch fixes the passes, also for 16-bit; a count that does not
// divide the boxes is refused with the variable named.
TEST(WgmmaTmaKernel, Float32TilesWhoseBoxesWouldCostAStageStageThemInPassesAndKeepTheirStages) {
  const Conv2dDesc d{.n = 2, .c = 32, .h = 37, .w = 41, .k = 128, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  const struct {
    MathMode math;
    const char* passes;
  } cases[] = {{MathMode::kTF32, "4"}, {MathMode::kStrictFp32, "2"}};
  for (const auto& c : cases) {
    const auto src = specialize_wgmma(nhwc(d, DType::kFloat32, c.math));
    SCOPED_TRACE(src.launch.tile);
    ASSERT_TRUE(src.launch.y_map.has_value());
    EXPECT_EQ(prologue_constant(src, "int", "kYPasses"), c.passes);
    EXPECT_NE(src.launch.tile.find(fmt::format("({} passes)", c.passes)), std::string::npos);
    std::string registers;
    {
      ScopedEnv off("CONVJIT_WGMMA_Y_MAP", "0");
      registers = prologue_constant(specialize_wgmma(nhwc(d, DType::kFloat32, c.math)), "int", "kStages");
    }
    EXPECT_EQ(prologue_constant(src, "int", "kStages"), registers) << "the boxes cost no stage";
    const auto out = compiled(src);
    EXPECT_NE(out.ptx.find("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group"), std::string::npos);
    const auto usage = parse_ptxas_report(out.log, src.source.kernel_name);
    EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
  }
  {
    ScopedEnv two("CONVJIT_WGMMA_Y_PASSES", "2");
    const auto src = specialize_wgmma(nhwc(d, DType::kFloat16));
    EXPECT_EQ(prologue_constant(src, "int", "kYPasses"), "2");
    EXPECT_EQ(compiled(src).log.find("error"), std::string::npos);
  }
  ScopedEnv three("CONVJIT_WGMMA_Y_PASSES", "3");
  try {
    specialize_wgmma(nhwc(d));
    ADD_FAILURE() << "3 passes of 4 boxes were accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("CONVJIT_WGMMA_Y_PASSES"), std::string::npos) << e.what();
  }
}

// The row halo (kRowHalo): stride-1 problems whose output rows hold whole tiles but for at
// most 1/16 and whose wgmmas read A through descriptors take row tiles and one A copy a
// filter row (KernelBench 55 and 56 in TF32 and 16-bit; not 62, whose TF32 tiles of 64
// filters load A into registers and whose 16-bit rows are 64 bytes); the map then walks input columns,
// padding included, a copy a filter row's halo of pixels, and y's map is per output row.
// Rows a tile would leave a quarter idle (VGG's 224 columns of 256-pixel tiles), strided
// columns, a one-tap-wide filter and the switch's 0 keep a box a tap; its 1 takes 224
// columns too. The sources compile without spills.
// The row halo's map, walked as expect_map_walks_output_pixels walks a tap's: from a row
// tile's start (q0 - pad_w, p x stride_h - pad_h, image) step i must be input column
// q0 - pad_w + i of that row, padding included, for every i that one of the tile's output
// pixels reads (its pixels + (S - 1) x dilation_w), and the copy must hold them all.
void expect_halo_map_walks_input_rows(const Conv2dDesc& d) {
  const auto src = specialize_wgmma(d);
  SCOPED_TRACE(src.source.kernel_name);
  ASSERT_EQ(prologue_constant(src, "bool", "kRowHalo"), "true") << src.launch.tile;
  ASSERT_TRUE(src.launch.a_map.has_value());
  const Im2colTensorMap& m = *src.launch.a_map;
  EXPECT_EQ(m.lower[0], -d.pad_w);
  EXPECT_EQ(m.upper[0], d.pad_w);
  EXPECT_EQ(m.element_strides[1], 1u);
  const int bm = std::stoi(prologue_constant(src, "int", "kBQ"));
  const int w_last = d.w - 1 + m.upper[0];
  const int h_last = d.h - 1 + m.upper[1];
  const auto out = d.output_shape();
  for (int p = 0; p < out.p; ++p) {
    for (int q0 = 0; q0 < out.q; q0 += bm) {
      const int reads = static_cast<int>(std::min<std::int64_t>(bm, out.q - q0)) + (d.s - 1) * d.dilation_w;
      ASSERT_LE(reads, static_cast<int>(m.pixels_per_column));
      int w = q0 - d.pad_w;
      int h = p * d.stride_h - d.pad_h;
      ASSERT_LE(h, h_last);
      for (int i = 0; i < reads; ++i) {
        ASSERT_EQ(w, q0 - d.pad_w + i) << "row " << p << " tile at " << q0 << " pixel " << i;
        ASSERT_EQ(h, p * d.stride_h - d.pad_h) << "row " << p << " tile at " << q0 << " pixel " << i;
        if (++w > w_last) {
          w = m.lower[0];
          h += static_cast<int>(m.element_strides[2]);
        }
      }
    }
  }
}

TEST(WgmmaTmaKernel, RowHaloMapWalksEachFilterRowsInputColumnsPaddingIncluded) {
  ScopedEnv on("CONVJIT_WGMMA_ROW_HALO", "1");
  const Conv2dDesc shapes[] = {
      {.n = 2, .c = 32, .h = 6, .w = 300, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
      {.n = 1,
       .c = 32,
       .h = 9,
       .w = 150,
       .k = 96,
       .r = 3,
       .s = 5,
       .stride_h = 2,
       .pad_h = 1,
       .pad_w = 4,
       .dilation_w = 2},
      {.n = 1, .c = 64, .h = 4, .w = 1000, .k = 128, .r = 2, .s = 7, .pad_w = 3},
  };
  for (const Conv2dDesc& shape : shapes) expect_halo_map_walks_input_rows(nhwc(shape));
}

TEST(WgmmaTmaKernel, RowHaloTakesStrideOneRowsOfWholeTilesAndItsSourcesCompileWithoutSpills) {
  const Conv2dDesc kb55{.n = 8, .c = 64, .h = 512, .w = 1024, .k = 128, .r = 3, .s = 3};
  const Conv2dDesc kb62{.n = 8, .c = 32, .h = 512, .w = 512, .k = 64, .r = 5, .s = 9};
  const Conv2dDesc vgg{.n = 8, .c = 64, .h = 224, .w = 224, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  const auto halo = [](const Specialization& src) { return prologue_constant(src, "bool", "kRowHalo") == "true"; };
  const std::pair<DType, MathMode> kinds[] = {{DType::kFloat32, MathMode::kTF32},
                                              {DType::kFloat32, MathMode::kStrictFp32},
                                              {DType::kFloat16, MathMode::kTF32},
                                              {DType::kBFloat16, MathMode::kTF32}};
  for (const auto& [dtype, math] : kinds) {
    SCOPED_TRACE(fmt::format("{} {}", to_string(dtype), to_string(math)));
    for (const Conv2dDesc& shape : {kb55, kHeadline}) {
      const auto src = specialize_wgmma(nhwc(shape, dtype, math));
      // 3xTF32 loads A into registers: no halo by default (the switch's 1 tests it below).
      if (math == MathMode::kStrictFp32) {
        EXPECT_FALSE(halo(src)) << src.launch.tile;
        continue;
      }
      ASSERT_TRUE(halo(src)) << src.launch.tile;
      EXPECT_NE(src.launch.tile.find("row tiles"), std::string::npos) << src.launch.tile;
      const auto out = shape.output_shape();
      const int bm = std::stoi(prologue_constant(src, "int", "kBQ"));
      EXPECT_EQ(src.launch.geometry.grid_x, static_cast<std::uint64_t>(out.n) * out.p * ((out.q + bm - 1) / bm));
      ASSERT_TRUE(src.launch.a_map);
      EXPECT_EQ(src.launch.a_map->upper[0], shape.pad_w);
      EXPECT_EQ(src.launch.a_map->pixels_per_column % 8, 0u);
      EXPECT_GE(src.launch.a_map->pixels_per_column, static_cast<unsigned>(bm + shape.s - 1));
      EXPECT_GE(std::stoi(prologue_constant(src, "int", "kStages")), shape.s + 2);
      if (src.launch.y_map) {
        EXPECT_EQ(src.launch.y_map->dims[1], static_cast<std::uint64_t>(out.q));
        EXPECT_EQ(src.launch.y_map->dims[2], static_cast<std::uint64_t>(out.n) * out.p);
      }
      const auto compiled_src = compiled(src);
      const auto usage = parse_ptxas_report(compiled_src.log, src.source.kernel_name);
      EXPECT_EQ(usage.spill_store_bytes, 0) << compiled_src.log;
    }
    // 62's 64-filter TF32 tiles load A into registers (no halo by default); its 16-bit rows are 64 bytes.
    EXPECT_FALSE(halo(specialize_wgmma(nhwc(kb62, dtype, math))));
    {
      ScopedEnv on("CONVJIT_WGMMA_ROW_HALO", "1");
      // 3xTF32's two planes do not fit the 11 stages a 9-wide filter needs beside the ring.
      EXPECT_EQ(halo(specialize_wgmma(nhwc(kb62, dtype, math))), dtype == DType::kFloat32 && math == MathMode::kTF32);
    }
    EXPECT_FALSE(halo(specialize_wgmma(nhwc(vgg, dtype, math))));
    Conv2dDesc strided = kb55;
    strided.stride_w = 2;
    EXPECT_FALSE(halo(specialize_wgmma(nhwc(strided, dtype, math))));
    Conv2dDesc column = kb55;
    column.s = 1;
    EXPECT_FALSE(halo(specialize_wgmma(nhwc(column, dtype, math))));
    {
      ScopedEnv off("CONVJIT_WGMMA_ROW_HALO", "0");
      EXPECT_FALSE(halo(specialize_wgmma(nhwc(kb55, dtype, math))));
    }
    ScopedEnv on("CONVJIT_WGMMA_ROW_HALO", "1");
    EXPECT_TRUE(halo(specialize_wgmma(nhwc(vgg, dtype, math))));
  }
}

// The row halo's f32 outputs: 55's TF32 boxes in four passes that alternate between two
// buffers of 32 KB (measured 2.0-2.5% faster), the 64 KB that two passes of one buffer take,
// so the same stages; CONVJIT_WGMMA_Y_BUFFERS=1 gives back the two passes of one buffer, and
// 16-bit tiles keep their one. Beside it the timing switch CONVJIT_WGMMA_HALO_RING=3 gives
// 55's tiles a third ring slot and the stages its wait needs ((ring - 1) S + 1), the boxes then
// giving way to register stores. All compile without spills, and out-of-range values are refused.
TEST(WgmmaTmaKernel, HaloF32OutputsAlternateTwoBuffersInTheBytesOfOneAndSwitchesCompile) {
  const Conv2dDesc kb55{.n = 8, .c = 64, .h = 512, .w = 1024, .k = 128, .r = 3, .s = 3};
  const auto constant = [](const Specialization& src, const char* name) {
    return std::stoi(prologue_constant(src, "int", name));
  };
  const auto no_spills = [](const Specialization& src) {
    return parse_ptxas_report(compiled(src).log, src.source.kernel_name).spill_store_bytes == 0;
  };
  const auto two = specialize_wgmma(nhwc(kb55, DType::kFloat32, MathMode::kTF32));
  SCOPED_TRACE(two.launch.tile);
  ASSERT_TRUE(two.launch.y_map);
  EXPECT_EQ(constant(two, "kHaloRing"), 2);
  EXPECT_EQ(constant(two, "kYPasses"), 4);
  EXPECT_EQ(constant(two, "kYBuffers"), 2);
  EXPECT_TRUE(no_spills(two));
  {
    ScopedEnv one("CONVJIT_WGMMA_Y_BUFFERS", "1");
    const auto src = specialize_wgmma(nhwc(kb55, DType::kFloat32, MathMode::kTF32));
    ASSERT_TRUE(src.launch.y_map);
    EXPECT_EQ(constant(src, "kYPasses"), 2);
    EXPECT_EQ(constant(src, "kYBuffers"), 1);
    EXPECT_EQ(constant(src, "kStages"), constant(two, "kStages"));
    EXPECT_EQ(src.launch.geometry.shared_bytes, two.launch.geometry.shared_bytes);
  }
  for (const DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    const auto src = specialize_wgmma(nhwc(kb55, dtype, MathMode::kTF32));
    EXPECT_EQ(constant(src, "kYBuffers"), 1) << src.launch.tile;
  }
  for (const DType dtype : {DType::kFloat32, DType::kFloat16}) {
    ScopedEnv three("CONVJIT_WGMMA_HALO_RING", "3");
    const auto src = specialize_wgmma(nhwc(kb55, dtype, MathMode::kTF32));
    SCOPED_TRACE(src.launch.tile);
    EXPECT_EQ(constant(src, "kHaloRing"), 3);
    EXPECT_GE(constant(src, "kStages"), 2 * kb55.s + 1);
    EXPECT_NE(src.launch.tile.find("3 in a ring"), std::string::npos);
    EXPECT_TRUE(no_spills(src));
  }
  for (const auto& [name, value] : {std::pair{"CONVJIT_WGMMA_HALO_RING", "5"}, {"CONVJIT_WGMMA_Y_BUFFERS", "3"}}) {
    ScopedEnv bad(name, value);
    try {
      specialize_wgmma(nhwc(kb55, DType::kFloat32, MathMode::kTF32));
      ADD_FAILURE() << name << "=" << value << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace convjit
