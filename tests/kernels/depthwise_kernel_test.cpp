// The depthwise / narrow-group kernel on the CPU: which problems the direct algorithm
// hands it, that its sources compile under NVRTC for every data type, stream with
// 16-byte loads and stores where the shape allows, and do not spill.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <random>
#include <regex>

#include "compile/nvrtc.hpp"
#include "compile/ptxas_report.hpp"
#include "convjit/error.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/specialized_source.hpp"
#include "support/scoped_env.hpp"

namespace convjit {
namespace {

constexpr DType kDTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

// KernelBench level-1 82, 83, 84, 85 and the depthwise half of 86, at full size.
std::vector<Conv2dDesc> kernelbench_depthwise() {
  return {
      Conv2dDesc{.n = 16, .c = 64, .h = 512, .w = 512, .k = 64, .r = 3, .s = 3, .groups = 64},
      Conv2dDesc{.n = 64, .c = 8, .h = 512, .w = 512, .k = 8, .r = 3, .s = 1, .groups = 8},
      Conv2dDesc{.n = 64, .c = 128, .h = 256, .w = 512, .k = 128, .r = 3, .s = 3, .groups = 128},
      Conv2dDesc{.n = 32, .c = 128, .h = 128, .w = 256, .k = 128, .r = 3, .s = 7, .groups = 128},
      Conv2dDesc{.n = 16, .c = 64, .h = 512, .w = 512, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 64},
  };
}

// Odd and tiny sizes, every geometry option, multipliers and narrow groups.
std::vector<Conv2dDesc> odd_shapes() {
  return {
      Conv2dDesc{.n = 1, .c = 4, .h = 1, .w = 1, .k = 8, .r = 1, .s = 1, .groups = 4},
      Conv2dDesc{.n = 1, .c = 4, .h = 7, .w = 1, .k = 4, .r = 3, .s = 1, .pad_h = 1, .groups = 4, .bias = true},
      Conv2dDesc{.n = 2,
                 .c = 6,
                 .h = 13,
                 .w = 16,
                 .k = 12,
                 .r = 3,
                 .s = 3,
                 .stride_w = 2,
                 .pad_h = 1,
                 .pad_w = 1,
                 .dilation_w = 2,
                 .groups = 3,
                 .bias = true,
                 .activation = Activation::kRelu},
      Conv2dDesc{.n = 3,
                 .c = 20,
                 .h = 23,
                 .w = 19,
                 .k = 40,
                 .r = 5,
                 .s = 7,
                 .stride_h = 3,
                 .stride_w = 3,
                 .pad_h = 3,
                 .pad_w = 2,
                 .dilation_h = 3,
                 .dilation_w = 2,
                 .groups = 5,
                 .bias = true},
      Conv2dDesc{.n = 1,
                 .c = 2,
                 .h = 3,
                 .w = 2100,
                 .k = 2,
                 .r = 3,
                 .s = 3,
                 .stride_w = 3,
                 .pad_h = 1,
                 .pad_w = 1,
                 .groups = 2},
  };
}

TEST(DepthwiseKernel, DirectAlgorithmPicksItForDepthwiseAndNarrowGroupProblems) {
  for (const DType dtype : kDTypes) {
    for (Conv2dDesc d : kernelbench_depthwise()) {
      d.dtype = dtype;
      SCOPED_TRACE(d.to_string());
      EXPECT_FALSE(depthwise_unsupported_reason(d).has_value());
      const Specialization src = specialize(d, Algorithm::kDirect);
      EXPECT_EQ(src.source.template_name, "conv2d_depthwise.cu");
      EXPECT_EQ(src.source.kernel_name, depthwise_kernel_name(d));
      EXPECT_TRUE(src.source.kernel_name.starts_with("conv2d_depthwise_" + std::string(to_string(dtype)) + "_nchw_"));
      EXPECT_EQ(src.launch.algorithm, "direct");
      // Enough blocks to fill a 132-SM GPU several times over.
      EXPECT_GE(src.launch.geometry.grid_x, 132u * 4);
      EXPECT_LE(src.launch.geometry.block_x, 256u);
      EXPECT_GE(src.launch.geometry.block_x, 128u);
    }
  }
  EXPECT_EQ(depthwise_kernel_name(kernelbench_depthwise()[0]),
            "conv2d_depthwise_f32_nchw_n16c64h512w512_k64r3s3_u1x1_p0x0_d1x1_g64_nobias");
}

TEST(DepthwiseKernel, DenseAndWideGroupProblemsKeepTheDirectTemplate) {
  const Conv2dDesc keep[] = {
      Conv2dDesc{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7},            // dense
      Conv2dDesc{.n = 1, .c = 1, .h = 16, .w = 16, .k = 1, .r = 3, .s = 3},                 // groups 1
      Conv2dDesc{.n = 1, .c = 10, .h = 16, .w = 16, .k = 10, .r = 3, .s = 3, .groups = 2},  // 5 channels a group
      Conv2dDesc{.n = 1, .c = 4, .h = 16, .w = 16, .k = 36, .r = 3, .s = 3, .groups = 4},   // multiplier 9
      Conv2dDesc{.n = 1, .c = 4, .h = 32, .w = 32, .k = 4, .r = 9, .s = 9, .groups = 4},    // 81 taps
  };
  for (const Conv2dDesc& d : keep) {
    SCOPED_TRACE(d.to_string());
    EXPECT_TRUE(depthwise_unsupported_reason(d).has_value());
    const Specialization src = specialize(d, Algorithm::kDirect);
    EXPECT_EQ(src.source.template_name, "conv2d_direct.cu");
    EXPECT_EQ(src.source.kernel_name, direct_kernel_name(d));
  }
}

// For f32 data the math mode changes nothing: fp32 FMA is exact, strict and TF32 share one kernel.
TEST(DepthwiseKernel, MathModeLeavesTheSourceUnchanged) {
  for (const DType dtype : kDTypes) {
    Conv2dDesc d = kernelbench_depthwise()[2];
    d.dtype = dtype;
    d.math = MathMode::kTF32;
    const Specialization tf32 = specialize(d, Algorithm::kDirect);
    d.math = MathMode::kStrictFp32;
    const Specialization strict = specialize(d, Algorithm::kDirect);
    EXPECT_EQ(tf32.source.text, strict.source.text);
    EXPECT_EQ(tf32.source.kernel_name, strict.source.kernel_name);
  }
}

// A spill in a bandwidth kernel costs more memory traffic than the tile saves; rows of
// whole 16-byte chunks must load (and, with 4-aligned rows, store) as vectors.
TEST(DepthwiseKernel, KernelBenchShapesStreamWithVectorAccessesAndDoNotSpill) {
  for (const DType dtype : kDTypes) {
    for (Conv2dDesc d : kernelbench_depthwise()) {
      d.dtype = dtype;
      d.bias = true;
      d.activation = Activation::kRelu;
      SCOPED_TRACE(d.to_string());
      const Specialization src = specialize(d, Algorithm::kDirect);
      const auto out = Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for("sm_90"));
      const ResourceUsage usage = parse_ptxas_report(out.log, src.source.kernel_name);
      EXPECT_GT(usage.registers, 0) << out.log;
      EXPECT_LE(usage.registers, 64) << src.launch.tile;  // four 256-thread blocks an SM
      EXPECT_EQ(usage.spill_store_bytes, 0) << src.launch.tile << "\n" << out.log;
      EXPECT_EQ(usage.spill_load_bytes, 0) << src.launch.tile << "\n" << out.log;
      EXPECT_NE(out.ptx.find("ld.global.nc.v4.u32"), std::string::npos);
      EXPECT_NE(out.ptx.find("ld.shared.v4.f32"), std::string::npos);
      if (d.output_shape().q % 4 == 0) {
        EXPECT_NE(out.ptx.find(dtype == DType::kFloat32 ? "st.global.v4.f32" : "st.global.v2.u32"), std::string::npos);
      }
    }
  }
}

TEST(DepthwiseKernel, OddShapesCompileForEveryDataType) {
  for (const DType dtype : kDTypes) {
    for (Conv2dDesc d : odd_shapes()) {
      d.dtype = dtype;
      ASSERT_NO_THROW(d.validate()) << d.to_string();
      SCOPED_TRACE(d.to_string());
      const Specialization src = specialize(d, Algorithm::kDirect);
      EXPECT_EQ(src.source.template_name, "conv2d_depthwise.cu");
      const auto out = Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for("sm_90"));
      const ResourceUsage usage = parse_ptxas_report(out.log, src.source.kernel_name);
      EXPECT_EQ(usage.spill_store_bytes, 0) << src.launch.tile << "\n" << out.log;
    }
  }
}

// A constant of the kernel's prologue, e.g. kPlanes.
int prologue_constant(const Specialization& src, const std::string& name) {
  std::smatch m;
  const std::regex pattern("enum : int \\{ " + name + " = (-?[0-9]+) \\};");
  if (!std::regex_search(src.source.text, m, pattern)) return -1;
  return std::stoi(m[1]);
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

Conv2dDesc depthwise_layer(int n, int c, int hw, int rs, int stride, Layout layout = Layout::kNCHW) {
  return Conv2dDesc{.n = n,
                    .c = c,
                    .h = hw,
                    .w = hw,
                    .k = c,
                    .r = rs,
                    .s = rs,
                    .stride_h = stride,
                    .stride_w = stride,
                    .pad_h = rs / 2,
                    .pad_w = rs / 2,
                    .groups = c,
                    .layout = layout};
}

// EfficientNet-b0's small-image depthwise layers at batch 32 (7x7, 14x14, 28x28 planes):
// one plane a block would be a few dozen threads; several planes a block make a block of
// 128-256 threads whose x and y are one run each, moved 16 bytes at a time (the run
// length a whole number of 16-byte chunks, so every block's run starts aligned).
TEST(DepthwiseKernel, SmallNchwPlanesGoSeveralToABlockAndMoveWholeVectors) {
  for (const DType dtype : kDTypes) {
    for (Conv2dDesc d : {depthwise_layer(32, 1152, 7, 5, 1), depthwise_layer(32, 480, 14, 3, 1),
                         depthwise_layer(32, 240, 28, 5, 1), depthwise_layer(32, 672, 14, 5, 1)}) {
      d.dtype = dtype;
      SCOPED_TRACE(d.to_string());
      const Specialization src = specialize(d, Algorithm::kDirect);
      EXPECT_EQ(src.source.template_name, "conv2d_depthwise.cu");
      const int planes = prologue_constant(src, "kPlanes");
      EXPECT_GE(planes, 2) << src.launch.tile;
      const std::uint64_t all_planes = static_cast<std::uint64_t>(d.n) * d.groups;
      EXPECT_GE(src.launch.geometry.grid_x * planes, all_planes);
      EXPECT_LT((src.launch.geometry.grid_x - 1) * planes, all_planes);
      EXPECT_GE(src.launch.geometry.grid_x, 2u * 132u);
      EXPECT_GE(src.launch.geometry.block_x, 128u);
      EXPECT_LE(src.launch.geometry.block_x, 256u);
      const auto out = d.output_shape();
      EXPECT_EQ(planes * d.h * d.w * static_cast<std::int64_t>(size_of(dtype)) % 16, 0) << planes;
      EXPECT_EQ(planes * out.p * out.q * static_cast<std::int64_t>(size_of(dtype)) % 16, 0) << planes;

      const auto compiled = Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for("sm_90"));
      const ResourceUsage usage = parse_ptxas_report(compiled.log, src.source.kernel_name);
      EXPECT_EQ(usage.spill_store_bytes, 0) << src.launch.tile << "\n" << compiled.log;
      EXPECT_EQ(usage.spill_load_bytes, 0) << src.launch.tile << "\n" << compiled.log;
      EXPECT_NE(compiled.ptx.find("ld.global.nc.v4.u32"), std::string::npos);
      EXPECT_NE(compiled.ptx.find(dtype == DType::kFloat32 ? "st.global.v4.f32" : "st.global.v4.u32"),
                std::string::npos);
    }
  }
}

// Planes a tile does not cover, or few planes in all, keep one (image, group) a block:
// the large-image kernel is unchanged.
TEST(DepthwiseKernel, LargePlanesAndFewPlanesKeepOnePlaneABlock) {
  std::vector<Conv2dDesc> shapes = kernelbench_depthwise();
  shapes.push_back(depthwise_layer(32, 32, 112, 3, 1));
  shapes.push_back(depthwise_layer(32, 96, 112, 3, 2));
  shapes.push_back(depthwise_layer(1, 1152, 7, 5, 1));  // 1152 planes: a grid of pairs would not fill the GPU
  for (const DType dtype : kDTypes) {
    for (Conv2dDesc d : shapes) {
      d.dtype = dtype;
      SCOPED_TRACE(d.to_string());
      const Specialization src = specialize(d, Algorithm::kDirect);
      EXPECT_EQ(prologue_constant(src, "kPlanes"), 1) << src.launch.tile;
    }
  }
}

// The input columns a thread's `outs` outputs of a row read through some tap: the
// template's column_used over its row window.
int columns_read(const Conv2dDesc& d, int outs) {
  int columns = 0;
  for (int u = 0; u <= (outs - 1) * d.stride_w + (d.s - 1) * d.dilation_w; ++u) {
    for (int s = 0; s < d.s; ++s) {
      const int at = u - s * d.dilation_w;
      if (at >= 0 && at % d.stride_w == 0 && at / d.stride_w < outs) {
        ++columns;
        break;
      }
    }
  }
  return columns;
}

// NHWC: each input column a thread's row of outputs shares is loaded once a filter row
// (one 16- or 8-byte vector of channels; stride 1 and 5 taps: 8 columns for 4 outputs,
// not 20), the taps come from shared memory as float4s, a slab is at most 128 bytes of
// a pixel, and the kernel stays within two blocks' registers.
TEST(DepthwiseKernel, NhwcLoadsEachInputColumnOnceAFilterRowAndTakesTapsFromSharedMemory) {
  testing::ScopedEnv direct("CONVJIT_DEPTHWISE_STAGED", "0");  // the direct loads (the staged tile: below)
  Conv2dDesc dilated = depthwise_layer(2, 64, 20, 3, 1, Layout::kNHWC);
  dilated.dilation_w = 2;
  dilated.pad_w = 2;
  Conv2dDesc strided = depthwise_layer(2, 64, 20, 1, 3, Layout::kNHWC);
  const Conv2dDesc layers[] = {
      depthwise_layer(32, 240, 28, 5, 1, Layout::kNHWC),
      depthwise_layer(32, 144, 56, 5, 2, Layout::kNHWC),
      depthwise_layer(32, 96, 112, 3, 2, Layout::kNHWC),
      dilated,
      strided,
  };
  EXPECT_EQ(columns_read(layers[0], 4), 8);   // 3 + 5
  EXPECT_EQ(columns_read(layers[1], 4), 11);  // 3 x 2 + 5
  EXPECT_EQ(columns_read(dilated, 4), 8);     // 3 + 2 x 2 + 1
  EXPECT_EQ(columns_read(strided, 4), 4);     // 1x1 stride 3: every third column
  for (const DType dtype : kDTypes) {
    for (Conv2dDesc d : layers) {
      d.dtype = dtype;
      SCOPED_TRACE(d.to_string());
      const Specialization src = specialize(d, Algorithm::kDirect);
      EXPECT_EQ(src.source.template_name, "conv2d_depthwise.cu");
      const int channels = prologue_constant(src, "kNhwcChannels");
      const int vector_bytes = channels * (dtype == DType::kFloat32 ? 4 : 2);
      ASSERT_TRUE(vector_bytes == 16 || vector_bytes == 8) << src.launch.tile;
      EXPECT_LE(prologue_constant(src, "kThreadsC") * vector_bytes, 128);
      EXPECT_LE(src.launch.geometry.block_x, 256u);
      const auto compiled = Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for("sm_90"));
      const int columns = columns_read(d, prologue_constant(src, "kNhwcOuts"));
      EXPECT_EQ(count_of(compiled.ptx, vector_bytes == 16 ? "ld.global.nc.v4.u32" : "ld.global.nc.v2.u32"),
                static_cast<std::size_t>(d.r * columns))
          << src.launch.tile;
      EXPECT_EQ(count_of(compiled.ptx, "ld.shared.v4.f32"), static_cast<std::size_t>(d.r * d.s * channels / 4));
      const ResourceUsage usage = parse_ptxas_report(compiled.log, src.source.kernel_name);
      EXPECT_LE(usage.registers, 128) << src.launch.tile;
      EXPECT_EQ(usage.spill_store_bytes, 0) << compiled.log;
      EXPECT_EQ(usage.spill_load_bytes, 0) << compiled.log;
    }
  }
}

// NHWC: the channel slab shrinks so that its taps fit the shared-memory budget (7x7
// taps, four input channels a group), the grid covers every channel vector, and no
// filter spills (a 31-wide row included).
TEST(DepthwiseKernel, NhwcChannelSlabsFitTheirTapsAndCoverEveryChannel) {
  const Conv2dDesc shapes[] = {
      Conv2dDesc{.n = 2,
                 .c = 64,
                 .h = 9,
                 .w = 9,
                 .k = 128,
                 .r = 7,
                 .s = 7,
                 .pad_h = 3,
                 .pad_w = 3,
                 .groups = 16,
                 .layout = Layout::kNHWC},
      depthwise_layer(3, 1151, 7, 5, 1, Layout::kNHWC),
      depthwise_layer(1, 13, 30, 3, 1, Layout::kNHWC),
      // A filter row too wide to keep in registers: taps one at a time.
      Conv2dDesc{.n = 2,
                 .c = 64,
                 .h = 9,
                 .w = 80,
                 .k = 64,
                 .r = 1,
                 .s = 31,
                 .pad_w = 15,
                 .groups = 64,
                 .layout = Layout::kNHWC},
  };
  for (const DType dtype : kDTypes) {
    for (Conv2dDesc d : shapes) {
      d.dtype = dtype;
      SCOPED_TRACE(d.to_string());
      const Specialization src = specialize(d, Algorithm::kDirect);
      const int vec = prologue_constant(src, "kNhwcChannels");
      const int threads_c = prologue_constant(src, "kThreadsC");
      ASSERT_GE(threads_c, 1);
      EXPECT_LE((threads_c * vec + 4) * d.r * d.s * (d.c / d.groups) * 4, 16 * 1024) << src.launch.tile;
      const int vectors = (d.k + vec - 1) / vec;
      const auto out = d.output_shape();
      const int tiles_q = prologue_constant(src, "kTilesQ");
      const int threads_p = prologue_constant(src, "kThreadsP");
      const std::uint64_t blocks = static_cast<std::uint64_t>(d.n) * ((vectors + threads_c - 1) / threads_c) * tiles_q *
                                   ((out.p + threads_p - 1) / threads_p);
      EXPECT_EQ(src.launch.geometry.grid_x, blocks);
      const auto compiled = Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for("sm_90"));
      EXPECT_EQ(parse_ptxas_report(compiled.log, src.source.kernel_name).spill_store_bytes, 0) << compiled.log;
    }
  }
}

// NHWC, 16-bit: rows of four or five taps take 8-byte channel vectors (four blocks an SM,
// or eight outputs a thread at three with stride 1); three-tap rows and float32 keep
// 16-byte vectors of four outputs. CONVJIT_DEPTHWISE_NHWC overrides the choice and a
// malformed value is refused.
TEST(DepthwiseKernel, NhwcSixteenBitFiveTapRowsTakeEightByteVectorsAndTheRestSixteen) {
  testing::ScopedEnv direct("CONVJIT_DEPTHWISE_STAGED", "0");  // the direct loads' thread shapes
  struct Row {
    Conv2dDesc desc;
    int channels, outs, min_blocks;  // 16-bit
  };
  Conv2dDesc four_taps = depthwise_layer(4, 36, 17, 4, 1, Layout::kNHWC);
  four_taps.pad_h = four_taps.pad_w = 3;
  const Row rows[] = {
      {depthwise_layer(32, 240, 28, 5, 1, Layout::kNHWC), 4, 8, 3},
      {depthwise_layer(32, 1152, 7, 5, 1, Layout::kNHWC), 4, 8, 3},
      {depthwise_layer(32, 144, 56, 5, 2, Layout::kNHWC), 4, 4, 4},
      {four_taps, 4, 8, 3},
      {depthwise_layer(16, 64, 512, 3, 1, Layout::kNHWC), 8, 4, 3},
      {depthwise_layer(32, 96, 112, 3, 2, Layout::kNHWC), 8, 4, 3},
      {depthwise_layer(2, 64, 20, 7, 1, Layout::kNHWC), 8, 4, 2},
  };
  for (const DType dtype : kDTypes) {
    for (const Row& row : rows) {
      Conv2dDesc d = row.desc;
      d.dtype = dtype;
      SCOPED_TRACE(d.to_string());
      const Specialization src = specialize(d, Algorithm::kDirect);
      const bool f32 = dtype == DType::kFloat32;
      EXPECT_EQ(prologue_constant(src, "kNhwcChannels"), f32 ? 4 : row.channels);
      EXPECT_EQ(prologue_constant(src, "kNhwcOuts"), f32 ? 4 : row.outs);
      EXPECT_EQ(prologue_constant(src, "kMinBlocks"), f32 ? (d.s <= 3 ? 3 : 2) : row.min_blocks);
      const auto compiled = Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for("sm_90"));
      EXPECT_EQ(parse_ptxas_report(compiled.log, src.source.kernel_name).spill_store_bytes, 0) << compiled.log;
    }
  }
  Conv2dDesc d = rows[0].desc;
  d.dtype = DType::kFloat16;
  {
    testing::ScopedEnv shape("CONVJIT_DEPTHWISE_NHWC", "8,2,5");
    const Specialization src = specialize(d, Algorithm::kDirect);
    EXPECT_EQ(prologue_constant(src, "kNhwcChannels"), 8);
    EXPECT_EQ(prologue_constant(src, "kNhwcOuts"), 2);
    EXPECT_EQ(prologue_constant(src, "kMinBlocks"), 5);
  }
  for (const char* bad : {"4,8", "6,4,3", "4,9,3", "4,4,0", "16,4,3"}) {
    testing::ScopedEnv shape("CONVJIT_DEPTHWISE_NHWC", bad);
    try {
      (void)specialize(d, Algorithm::kDirect);
      ADD_FAILURE() << bad << " was taken";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    }
  }
}

TEST(DepthwiseKernel, KernelNamesAreUniquePerProblem) {
  const Conv2dDesc a = odd_shapes()[2];
  for (int field = 0; field < 6; ++field) {
    Conv2dDesc b = a;
    switch (field) {
      case 0:
        b.pad_w = 0;
        break;
      case 1:
        b.bias = false;
        break;
      case 2:
        b.activation = Activation::kNone;
        break;
      case 3:
        b.dtype = DType::kBFloat16;
        break;
      case 4:
        b.k = 6;
        break;
      case 5:
        b.stride_h = 2;
        break;
    }
    EXPECT_NE(depthwise_kernel_name(a), depthwise_kernel_name(b)) << field;
  }
}

// NHWC pure depthwise problems stage their block's input tile in shared memory: every
// copy an asynchronous 16- or 8-byte one (zero-filled outside the image), the tile and
// taps inside static shared memory, the grid covering every output, few spills; problems
// with a multiplier or several channels a group, and CONVJIT_DEPTHWISE_STAGED=0, keep
// the direct loads; CONVJIT_DEPTHWISE_NHWC_TILE sets the rows, passes and column threads.
TEST(DepthwiseKernel, NhwcDepthwiseStagesItsInputTileWithAsynchronousCopiesOnce) {
  Conv2dDesc dilated = depthwise_layer(2, 64, 20, 3, 1, Layout::kNHWC);
  dilated.dilation_h = dilated.dilation_w = 2;
  dilated.pad_h = dilated.pad_w = 2;
  Conv2dDesc odd = depthwise_layer(3, 36, 17, 3, 1, Layout::kNHWC);  // 36 channels: 8-byte 16-bit vectors
  const Conv2dDesc layers[] = {
      depthwise_layer(16, 64, 512, 3, 1, Layout::kNHWC),
      depthwise_layer(32, 32, 112, 3, 1, Layout::kNHWC),
      depthwise_layer(32, 96, 112, 3, 2, Layout::kNHWC),
      depthwise_layer(32, 144, 56, 5, 2, Layout::kNHWC),
      depthwise_layer(32, 240, 28, 5, 1, Layout::kNHWC),
      depthwise_layer(32, 480, 14, 3, 1, Layout::kNHWC),
      depthwise_layer(32, 1152, 7, 5, 1, Layout::kNHWC),
      dilated,
      odd,
  };
  for (const DType dtype : kDTypes) {
    for (Conv2dDesc d : layers) {
      d.dtype = dtype;
      SCOPED_TRACE(d.to_string());
      const Specialization src = specialize(d, Algorithm::kDirect);
      ASSERT_NE(src.source.text.find("enum : bool { kStaged = true };"), std::string::npos) << src.launch.tile;
      EXPECT_NE(src.launch.tile.find("input tile"), std::string::npos) << src.launch.tile;
      const int vector_bytes = prologue_constant(src, "kNhwcChannels") * (dtype == DType::kFloat32 ? 4 : 2);
      const auto o = d.output_shape();
      const int rows = prologue_constant(src, "kThreadsP") * prologue_constant(src, "kRowsPerThread") *
                       prologue_constant(src, "kPasses");
      const int cols = prologue_constant(src, "kThreadsQ") * prologue_constant(src, "kNhwcOuts");
      const int tile_rows = (rows - 1) * d.stride_h + (d.r - 1) * d.dilation_h + 1;
      const int tile_cols = (cols - 1) * d.stride_w + (d.s - 1) * d.dilation_w + 1;
      const int slab = prologue_constant(src, "kThreadsC") * vector_bytes;
      EXPECT_LE(slab, 128);
      const int stage = tile_rows * tile_cols * (slab + (slab < 128 ? 16 : 0));
      // KernelBench's 512 x 512 images (the first layer) run many waves of blocks: three rows
      // a thread within 100 KiB; the networks' layers two rows within 46 KiB.
      const bool large = d.h >= 512;
      if (large) {
        EXPECT_EQ(prologue_constant(src, "kRowsPerThread"), 3) << src.launch.tile;
      } else {
        EXPECT_LE(prologue_constant(src, "kRowsPerThread"), 2) << src.launch.tile;
      }
      EXPECT_LE(stage, (large ? 100 : 46) * 1024) << src.launch.tile;
      EXPECT_EQ(src.launch.geometry.shared_bytes, static_cast<unsigned>(stage));  // the launch's dynamic memory
      const int vectors = (d.k * (dtype == DType::kFloat32 ? 4 : 2) + slab - 1) / slab;
      EXPECT_EQ(src.launch.geometry.grid_x,
                static_cast<std::uint64_t>(d.n) * vectors * ((o.q + cols - 1) / cols) * ((o.p + rows - 1) / rows))
          << src.launch.tile;
      const auto compiled = Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for("sm_90"));
      EXPECT_GE(count_of(compiled.ptx, vector_bytes == 16 ? "cp.async.cg.shared.global" : "cp.async.ca.shared.global"),
                1u);
      const ResourceUsage usage = parse_ptxas_report(compiled.log, src.source.kernel_name);
      EXPECT_LE(usage.registers, 128) << src.launch.tile;
      // Three blocks an SM with a few words spilled measured faster than two without
      // (docs/perf.md, "NHWC depthwise: the input tile in shared memory").
      EXPECT_LE(usage.spill_store_bytes, 32) << compiled.log;
    }
  }
  Conv2dDesc multiplier = depthwise_layer(2, 32, 20, 3, 1, Layout::kNHWC);
  multiplier.k = 64;
  Conv2dDesc narrow = depthwise_layer(2, 64, 20, 3, 1, Layout::kNHWC);
  narrow.groups = 16;
  narrow.k = 32;
  // KernelBench 83 in 16-bit: one 16-byte vector a pixel measured faster on the direct loads.
  Conv2dDesc eight_channels = depthwise_layer(64, 8, 512, 3, 1, Layout::kNHWC);
  eight_channels.s = 1;
  eight_channels.pad_w = 0;
  eight_channels.dtype = DType::kFloat16;
  for (const Conv2dDesc& d : {multiplier, narrow, eight_channels, depthwise_layer(16, 64, 512, 3, 1, Layout::kNCHW)}) {
    SCOPED_TRACE(d.to_string());
    EXPECT_NE(specialize(d, Algorithm::kDirect).source.text.find("enum : bool { kStaged = false };"),
              std::string::npos);
  }
  const Conv2dDesc kb82 = layers[0];
  {
    testing::ScopedEnv off("CONVJIT_DEPTHWISE_STAGED", "0");
    EXPECT_NE(specialize(kb82, Algorithm::kDirect).source.text.find("enum : bool { kStaged = false };"),
              std::string::npos);
  }
  {
    testing::ScopedEnv tile("CONVJIT_DEPTHWISE_NHWC_TILE", "1,2,4");
    const Specialization src = specialize(kb82, Algorithm::kDirect);
    EXPECT_EQ(prologue_constant(src, "kRowsPerThread"), 1);
    EXPECT_EQ(prologue_constant(src, "kPasses"), 2);
    EXPECT_EQ(prologue_constant(src, "kThreadsQ"), 4);
  }
  {
    // A larger budget: taller tiles, as dynamic shared memory past 48 KiB.
    testing::ScopedEnv budget("CONVJIT_DEPTHWISE_STAGE_KB", "100");
    testing::ScopedEnv tile("CONVJIT_DEPTHWISE_NHWC_TILE", "4,1,8");
    const Specialization src = specialize(kb82, Algorithm::kDirect);
    EXPECT_EQ(prologue_constant(src, "kRowsPerThread"), 4);
    EXPECT_EQ(src.launch.geometry.shared_bytes, 18u * 34u * 128u);
    const auto compiled = Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for("sm_90"));
    EXPECT_LE(parse_ptxas_report(compiled.log, src.source.kernel_name).spill_store_bytes, 32) << compiled.log;
  }
  for (const char* bad : {"7", "201", "x"}) {
    testing::ScopedEnv budget("CONVJIT_DEPTHWISE_STAGE_KB", bad);
    try {
      (void)specialize(kb82, Algorithm::kDirect);
      ADD_FAILURE() << bad << " was taken";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    }
  }
  for (const char* bad : {"2,1", "0,1,8", "5,1,8", "2,0,8", "2,5,8", "2,1,0", "2,1,300"}) {
    testing::ScopedEnv tile("CONVJIT_DEPTHWISE_NHWC_TILE", bad);
    try {
      (void)specialize(kb82, Algorithm::kDirect);
      ADD_FAILURE() << bad << " was taken";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    }
  }
}

}  // namespace
}  // namespace convjit
