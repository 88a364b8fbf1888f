// Channels-last (NHWC) through the direct, depthwise and im2col kernels, on the CPU:
// the layout reaches the prologue and the kernel name, every NHWC source compiles
// under NVRTC for each data type, math mode and arch without spilling, the depthwise
// kernel moves 16 bytes a load and store along the channels, the 1x1 case needs no
// column matrix, and kAuto sends dense NHWC problems to a GEMM.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>

#include "compile/nvrtc.hpp"
#include "compile/ptxas_report.hpp"
#include "runtime/im2col_gemm.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/specialized_source.hpp"
#include "support/scoped_env.hpp"

namespace convjit {
namespace {

constexpr DType kDTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};
constexpr MathMode kMaths[] = {MathMode::kTF32, MathMode::kStrictFp32};
constexpr const char* kArchs[] = {"sm_80", "sm_90"};

Conv2dDesc nhwc(Conv2dDesc d) {
  d.layout = Layout::kNHWC;
  return d;
}

// Every branch the NHWC paths have: odd channels, groups, depthwise (vector and
// scalar channel runs), a multiplier, narrow groups, stride, padding, dilation, bias
// and ReLU, a plain 1x1 GEMM and a strided 1x1 gather.
std::vector<Conv2dDesc> shapes() {
  return {
      nhwc({.n = 2, .c = 7, .h = 9, .w = 11, .k = 13, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true}),
      nhwc({.n = 1,
            .c = 12,
            .h = 17,
            .w = 15,
            .k = 18,
            .r = 5,
            .s = 3,
            .stride_h = 2,
            .stride_w = 3,
            .pad_h = 2,
            .pad_w = 1,
            .dilation_h = 2,
            .dilation_w = 1,
            .groups = 3,
            .bias = true,
            .activation = Activation::kRelu}),
      nhwc({.n = 2, .c = 32, .h = 13, .w = 14, .k = 32, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 32}),
      nhwc({.n = 1, .c = 13, .h = 8, .w = 9, .k = 13, .r = 3, .s = 3, .stride_w = 2, .groups = 13, .bias = true}),
      nhwc({.n = 1, .c = 6, .h = 10, .w = 7, .k = 24, .r = 3, .s = 1, .pad_h = 1, .groups = 6}),
      nhwc({.n = 2, .c = 12, .h = 7, .w = 9, .k = 15, .r = 3, .s = 3, .dilation_h = 2, .groups = 3}),
      nhwc({.n = 3, .c = 20, .h = 9, .w = 14, .k = 36}),
      nhwc({.n = 2, .c = 24, .h = 9, .w = 11, .k = 40, .stride_h = 2, .stride_w = 2, .bias = true}),
  };
}

Specialization compiled(const Conv2dDesc& d, Algorithm algorithm, const std::string& arch, CompiledKernel* out) {
  const Specialization src = specialize(d, algorithm, arch, kFullAlignment);
  *out = Nvrtc::compile(src.source.text, src.source.template_name, Nvrtc::options_for(arch));
  return src;
}

TEST(NhwcKernels, TheLayoutReachesThePrologueAndTheKernelName) {
  for (const Algorithm algorithm : {Algorithm::kDirect, Algorithm::kIm2colGemm}) {
    for (const Conv2dDesc& d : shapes()) {
      SCOPED_TRACE(fmt::format("{} {}", d.to_string(), to_string(algorithm)));
      const Specialization src = specialize(d, algorithm, "sm_90", kFullAlignment);
      EXPECT_NE(src.source.kernel_name.find("_nhwc_"), std::string::npos) << src.source.kernel_name;
      EXPECT_NE(src.source.text.find("enum : int { kLayout = 1 };"), std::string::npos);
      Conv2dDesc nchw = d;
      nchw.layout = Layout::kNCHW;
      const Specialization other = specialize(nchw, algorithm, "sm_90", kFullAlignment);
      EXPECT_NE(other.source.text.find("enum : int { kLayout = 0 };"), std::string::npos);
      EXPECT_NE(other.source.kernel_name, src.source.kernel_name);
    }
  }
}

TEST(NhwcKernels, DirectAndIm2colSourcesCompileForEveryDtypeMathAndArchWithoutSpills) {
  // The math mode reaches cuBLAS, not these sources: each distinct source compiles once.
  std::set<std::string> seen;
  for (const char* arch : kArchs) {
    for (const DType dtype : kDTypes) {
      for (const MathMode math : kMaths) {
        const auto all = shapes();
        // The direct template's dense and grouped forms, the depthwise kernel's vector
        // and multiplier forms; the im2col kernels for a padded 3x3 and a strided 1x1.
        const std::pair<std::size_t, Algorithm> picks[] = {{0, Algorithm::kDirect},     {1, Algorithm::kDirect},
                                                           {2, Algorithm::kDirect},     {4, Algorithm::kDirect},
                                                           {0, Algorithm::kIm2colGemm}, {7, Algorithm::kIm2colGemm}};
        for (const auto& [index, algorithm] : picks) {
          Conv2dDesc d = all[index];
          d.dtype = dtype;
          d.math = math;
          SCOPED_TRACE(fmt::format("{} {} {}", d.to_string(), to_string(algorithm), arch));
          if (!seen.insert(std::string(arch) + specialize(d, algorithm, arch, kFullAlignment).source.text).second) {
            continue;
          }
          CompiledKernel out;
          Specialization src;
          ASSERT_NO_THROW(src = compiled(d, algorithm, arch, &out));
          EXPECT_FALSE(out.ptx.empty());
          // The im2col module's entry points are <name>_im2col and <name>_bias_act.
          const std::string entry =
              algorithm == Algorithm::kIm2colGemm ? src.source.kernel_name + "_im2col" : src.source.kernel_name;
          const ResourceUsage usage = parse_ptxas_report(out.log, entry);
          EXPECT_GT(usage.registers, 0) << out.log;
          EXPECT_EQ(usage.spill_store_bytes, 0) << src.launch.tile << "\n" << out.log;
        }
      }
    }
  }
}

TEST(NhwcKernels, DirectHandsDepthwiseAndNarrowGroupsToTheDepthwiseKernelInNhwcToo) {
  const auto all = shapes();
  for (const std::size_t i : {1u, 2u, 3u, 4u, 5u}) {
    SCOPED_TRACE(all[i].to_string());
    EXPECT_FALSE(depthwise_unsupported_reason(all[i]).has_value()) << *depthwise_unsupported_reason(all[i]);
    const Specialization src = specialize(all[i], Algorithm::kDirect, "sm_90", kFullAlignment);
    EXPECT_EQ(src.source.template_name, "conv2d_depthwise.cu");
    EXPECT_TRUE(src.source.kernel_name.starts_with("conv2d_depthwise_f32_nhwc_")) << src.source.kernel_name;
  }
  for (const std::size_t i : {0u, 6u, 7u}) {
    const Specialization src = specialize(all[i], Algorithm::kDirect, "sm_90", kFullAlignment);
    EXPECT_EQ(src.source.template_name, "conv2d_direct.cu") << all[i].to_string();
  }
}

// Channels are contiguous in NHWC: a depthwise problem whose rows of channels are whole
// 16-byte vectors loads and stores them whole (behind a run-time test of the pointers,
// so element-aligned tensors still take the per-element path in the same kernel).
TEST(NhwcKernels, DepthwiseMovesSixteenBytesOfChannelsALoadAndAStore) {
  // The direct loads; the staged input tile copies 16 bytes a copy (depthwise_kernel_test).
  testing::ScopedEnv direct("CONVJIT_DEPTHWISE_STAGED", "0");
  for (const DType dtype : kDTypes) {
    Conv2dDesc d = shapes()[2];  // 32 channels: whole vectors in every dtype
    d.dtype = dtype;
    d.bias = true;
    d.activation = Activation::kRelu;
    SCOPED_TRACE(d.to_string());
    CompiledKernel out;
    const Specialization src = compiled(d, Algorithm::kDirect, "sm_90", &out);
    EXPECT_NE(out.ptx.find("ld.global.nc.v4.u32"), std::string::npos);
    EXPECT_NE(out.ptx.find(dtype == DType::kFloat32 ? "st.global.v4.f32" : "st.global.v4.u32"), std::string::npos);
    const ResourceUsage usage = parse_ptxas_report(out.log, src.source.kernel_name);
    EXPECT_LE(usage.registers, 128) << src.launch.tile;  // two 256-thread blocks an SM (its launch bounds)
    EXPECT_EQ(usage.spill_store_bytes, 0) << out.log;
    EXPECT_LE(src.launch.geometry.block_x, 256u);
  }
}

TEST(NhwcKernels, DepthwiseGridCoversEveryChannelVectorAndOutputColumn) {
  for (const DType dtype : kDTypes) {
    for (Conv2dDesc d :
         {shapes()[2], shapes()[3], shapes()[4],
          nhwc({.n = 2, .c = 960, .h = 7, .w = 7, .k = 960, .r = 5, .s = 5, .pad_h = 2, .pad_w = 2, .groups = 960})}) {
      d.dtype = dtype;
      SCOPED_TRACE(d.to_string());
      const Specialization src = specialize(d, Algorithm::kDirect, "sm_90", kFullAlignment);
      const int vec = dtype == DType::kFloat32 ? 4 : 8;
      const auto o = d.output_shape();
      // threads_c x threads_q x threads_p threads cover (k / vec) x (q / 4) x p per image.
      const std::uint64_t lanes = static_cast<std::uint64_t>(src.launch.geometry.grid_x) * src.launch.geometry.block_x;
      const std::uint64_t needed = static_cast<std::uint64_t>(d.n) * ((d.k + vec - 1) / vec) * ((o.q + 3) / 4) * o.p;
      EXPECT_GE(lanes, needed) << src.launch.tile;
    }
  }
}

TEST(NhwcKernels, PointwiseNhwcIsAGemmOnXWithNoWorkspaceAndStridedOneByOneGathers) {
  const Conv2dDesc pointwise = shapes()[6];
  const Im2colChunking plain = plan_im2col_chunks(pointwise, std::uint64_t{1} << 30);
  EXPECT_TRUE(plain.pointwise);
  EXPECT_EQ(plain.workspace_bytes, 0u);
  const Conv2dDesc strided = shapes()[7];
  const Im2colChunking gathered = plan_im2col_chunks(strided, std::uint64_t{1} << 30);
  EXPECT_FALSE(gathered.pointwise);
  const auto o = strided.output_shape();
  EXPECT_EQ(gathered.workspace_bytes, static_cast<std::uint64_t>(strided.n) * o.p * o.q * strided.c * 4);
  // The cost model counts no column matrix for the plain GEMM, in either layout.
  Conv2dDesc nchw = pointwise;
  nchw.layout = Layout::kNCHW;
  EXPECT_DOUBLE_EQ(predicted_im2col_ms(pointwise, "sm_90"), predicted_im2col_ms(nchw, "sm_90"));
  Conv2dDesc strided_same_flops = strided;
  strided_same_flops.stride_h = strided_same_flops.stride_w = 1;
  strided_same_flops.h = static_cast<int>(o.p);
  strided_same_flops.w = static_cast<int>(o.q);
  EXPECT_GT(predicted_im2col_ms(strided, "sm_90"), predicted_im2col_ms(strided_same_flops, "sm_90"));
}

// The NHWC GEMM's pixel extent runs across the chunk's images, and cuBLAS takes an int.
TEST(NhwcKernels, Im2colChunksKeepTheGemmPixelCountInAnInt) {
  const Conv2dDesc d = nhwc({.n = 8192, .c = 1, .h = 512, .w = 512, .k = 1, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1});
  Conv2dDesc nchw = d;
  nchw.layout = Layout::kNCHW;
  const std::uint64_t unlimited = std::uint64_t{1} << 60;
  EXPECT_EQ(plan_im2col_chunks(nchw, unlimited).images_per_chunk, 8192);  // batched per image in NCHW
  const Im2colChunking c = plan_im2col_chunks(d, unlimited);
  const auto o = d.output_shape();
  EXPECT_GE(c.images_per_chunk, 1);
  EXPECT_LE(static_cast<std::int64_t>(c.images_per_chunk) * o.p * o.q, std::int64_t{1} << 30);
}

TEST(NhwcKernels, AutoRunsDenseNhwcProblemsAsAGemmAndDepthwiseOnesDirect) {
  for (const char* arch : {"", "sm_80", "sm_90"}) {
    SCOPED_TRACE(arch);
    const Conv2dDesc dense = nhwc({.n = 2, .c = 64, .h = 14, .w = 14, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1});
    EXPECT_NE(resolve_algorithm(dense, Algorithm::kAuto, arch), Algorithm::kDirect);
    EXPECT_NE(resolve_algorithm(shapes()[6], Algorithm::kAuto, arch), Algorithm::kDirect);
    EXPECT_EQ(resolve_algorithm(shapes()[2], Algorithm::kAuto, arch), Algorithm::kDirect);
    for (const Algorithm a : {Algorithm::kDirect, Algorithm::kIm2colGemm}) {
      EXPECT_FALSE(why_unsupported(dense, a, arch).has_value()) << to_string(a);
    }
  }
}

}  // namespace
}  // namespace convjit
