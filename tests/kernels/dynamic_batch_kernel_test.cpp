// Dynamic batch (Conv2dDesc::dynamic_batch) in every kernel template, on the CPU: a
// dynamic descriptor's source differs from another max batch's only in the batch bound
// kN and the kernel's name, so nothing else of the kernel depends on n; every dynamic
// kernel compiles under NVRTC, for each data type and math mode and both layouts, with
// the batch as its last parameter, which no static kernel has; and its cache key is
// apart from the static kernel's.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <functional>
#include <regex>
#include <string>
#include <vector>

#include "compile/kernel_key.hpp"
#include "compile/nvrtc.hpp"
#include "specialize/specialized_source.hpp"

namespace convjit {
namespace {

struct Case {
  std::string name;
  std::string arch;  // what NVRTC compiles for
  std::function<Specialization(const Conv2dDesc&)> specialize;
  Conv2dDesc desc;
};

Conv2dDesc with(Conv2dDesc d, DType dtype, MathMode math, Layout layout) {
  d.dtype = dtype;
  d.math = math;
  d.layout = layout;
  return d;
}

// Every template, each kernel family's data types and math modes, both layouts where the
// kernel reads them.
std::vector<Case> cases() {
  const Conv2dDesc dense{
      .n = 8, .c = 24, .h = 13, .w = 18, .k = 40, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};
  const Conv2dDesc depthwise{
      .n = 8, .c = 32, .h = 14, .w = 14, .k = 32, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 32};
  const Conv2dDesc pointwise{.n = 8, .c = 24, .h = 9, .w = 14, .k = 36, .bias = true, .activation = Activation::kRelu};
  // Small images over a deep reduction: the NHWC wgmma grid leaves SMs idle at n = 8 and
  // at n = 64 alike, so both maximum batches split the reduction into the same slices.
  const Conv2dDesc deep{
      .n = 8, .c = 512, .h = 4, .w = 4, .k = 128, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};
  const auto direct = [](const Conv2dDesc& d) { return specialize_direct(d); };
  const auto mma = [](const Conv2dDesc& d) { return specialize_implicit_gemm(d); };
  const auto wgmma = [](const Conv2dDesc& d) { return specialize_wgmma(d); };
  const auto im2col = [](const Conv2dDesc& d) { return specialize_im2col(d); };
  std::vector<Case> out;
  struct Mode {
    DType dtype;
    MathMode math;
  };
  const Mode modes[] = {{DType::kFloat32, MathMode::kTF32},
                        {DType::kFloat32, MathMode::kStrictFp32},
                        {DType::kFloat16, MathMode::kTF32},
                        {DType::kBFloat16, MathMode::kTF32}};
  for (const Mode& m : modes) {
    const std::string mode = fmt::format("{}_{}", to_string(m.dtype), to_string(m.math));
    for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
      const std::string l(to_string(layout));
      out.push_back({"mma_" + mode + "_" + l, "sm_80", mma, with(dense, m.dtype, m.math, layout)});
    }
    for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
      const std::string l(to_string(layout));
      out.push_back({"wgmma_" + mode + "_" + l, "sm_90a", wgmma, with(dense, m.dtype, m.math, layout)});
    }
    out.push_back({"wgmma_split_k_" + mode + "_nhwc", "sm_90a", wgmma, with(deep, m.dtype, m.math, Layout::kNHWC)});
  }
  for (DType dtype : {DType::kFloat32, DType::kFloat16}) {
    for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
      const std::string tag = fmt::format("{}_{}", to_string(dtype), to_string(layout));
      out.push_back({"direct_" + tag, "sm_90", direct, with(dense, dtype, MathMode::kTF32, layout)});
      out.push_back({"depthwise_" + tag, "sm_90", direct, with(depthwise, dtype, MathMode::kTF32, layout)});
      out.push_back({"im2col_" + tag, "sm_90", im2col, with(dense, dtype, MathMode::kTF32, layout)});
      out.push_back({"im2col_1x1_" + tag, "sm_90", im2col, with(pointwise, dtype, MathMode::kTF32, layout)});
    }
  }
  return out;
}

Conv2dDesc dynamic(Conv2dDesc d, int n) {
  d.n = n;
  d.dynamic_batch = true;
  return d;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

TEST(DynamicBatchKernels, SourceForAnotherMaxBatchDiffersOnlyInTheBoundKNAndTheKernelName) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const Specialization small = c.specialize(dynamic(c.desc, 8));
    const Specialization large = c.specialize(dynamic(c.desc, 64));
    EXPECT_NE(small.source.kernel_name.find("_ndyn8c"), std::string::npos) << small.source.kernel_name;
    EXPECT_NE(small.source.text.find("#define CONVJIT_DYNAMIC_BATCH 1\n"), std::string::npos);
    EXPECT_NE(small.source.text.find("enum : int { kN = 8 };\n"), std::string::npos);
    const std::string renamed = replace_all(replace_all(small.source.text, "_ndyn8c", "_ndyn64c"),
                                            "enum : int { kN = 8 };", "enum : int { kN = 64 };");
    EXPECT_EQ(renamed, large.source.text);
    // Launch geometry scales with the run's batch the same way for both.
    const LaunchGeometry& g = small.launch.geometry;
    const LaunchGeometry& h = large.launch.geometry;
    EXPECT_EQ(g.grid_x_per_image, h.grid_x_per_image);
    EXPECT_EQ(g.grid_x_divisor, h.grid_x_divisor);
    EXPECT_EQ(g.grid_y, h.grid_y);
    EXPECT_EQ(g.shared_bytes, h.shared_bytes);
    if (c.name.starts_with("im2col")) continue;  // its kernels are launched per chunk by the GEMM runner
    ASSERT_GT(g.grid_x_per_image, 0u);
    // The grid the dynamic kernel gets for each batch covers that batch's pixels with its
    // tiles, the grid the static kernel specialized for that batch has where its tiles are
    // the same (a static batch of few pixels may take half tiles).
    for (int batch : {1, 3, 8, 17, 64}) {
      Conv2dDesc fixed = c.desc;
      fixed.n = batch;
      const LaunchGeometry s = c.specialize(fixed).launch.geometry;
      const std::uint64_t pixels = static_cast<std::uint64_t>(batch) * h.grid_x_per_image;
      EXPECT_EQ(h.grid_x_for(batch), (pixels + h.grid_x_divisor - 1) / h.grid_x_divisor) << "batch " << batch;
      if (s.grid_x_divisor == h.grid_x_divisor) EXPECT_EQ(h.grid_x_for(batch), s.grid_x) << "batch " << batch;
    }
  }
}

TEST(DynamicBatchKernels, EveryDynamicKernelCompilesWithTheBatchAsItsLastParameterAndNoStaticOneHasIt) {
  // The entry point's fifth parameter (x, w, bias, y, batch): "<name>_param_4"; one more in
  // the wgmma kernel's TMA variant for each map after y (x's, then w's, then y's).
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    for (bool dyn : {true, false}) {
      Conv2dDesc d = c.desc;
      d.dynamic_batch = dyn;
      const Specialization spec = c.specialize(d);
      const SpecializedSource& src = spec.source;
      const CompiledKernel compiled = Nvrtc::compile(src.text, src.kernel_name, Nvrtc::options_for(c.arch));
      const std::string entry = c.name.starts_with("im2col") ? src.kernel_name + "_bias_act" : src.kernel_name;
      const int maps = static_cast<int>(spec.launch.a_map.has_value()) +
                       static_cast<int>(spec.launch.b_map.has_value()) +
                       static_cast<int>(spec.launch.y_map.has_value());
      const std::string last = c.name.starts_with("im2col") ? "_param_2" : "_param_" + std::to_string(4 + maps);
      const bool has = compiled.ptx.find(".param .u32 " + entry + last) != std::string::npos ||
                       compiled.ptx.find(".param .s32 " + entry + last) != std::string::npos;
      EXPECT_EQ(has, dyn) << entry << last;
    }
  }
}

TEST(DynamicBatchKernels, SplitKReduceTakesTheBatchAndItsSlicesStayTheMaxBatchApart) {
  // The NHWC wgmma kernel's split-K partial sums: the workspace holds the slices for the
  // descriptor's n, whatever batch a run has, and the reduce pass takes the batch too
  // (partial, bias, y, batch: "<name>_reduce_param_3").
  const Conv2dDesc deep{.n = 64,
                        .c = 512,
                        .h = 4,
                        .w = 4,
                        .k = 128,
                        .r = 3,
                        .s = 3,
                        .pad_h = 1,
                        .pad_w = 1,
                        .bias = true,
                        .layout = Layout::kNHWC};
  for (bool dyn : {true, false}) {
    SCOPED_TRACE(dyn ? "dynamic" : "static");
    Conv2dDesc d = deep;
    d.dynamic_batch = dyn;
    const Specialization spec = specialize_wgmma(d);
    ASSERT_TRUE(spec.launch.split_reduce.has_value()) << spec.launch.tile;
    const SplitReduce& r = *spec.launch.split_reduce;
    ASSERT_GT(r.slices, 1);
    EXPECT_EQ(spec.launch.geometry.grid_z, static_cast<unsigned>(r.slices));
    EXPECT_EQ(r.partial_bytes, std::uint64_t{64} * 4 * 4 * 128 * sizeof(float) * r.slices);
    const CompiledKernel compiled =
        Nvrtc::compile(spec.source.text, spec.source.kernel_name, Nvrtc::options_for("sm_90a"));
    const std::string reduce = r.kernel_name + "_param_3";
    const bool has = compiled.ptx.find(".param .u32 " + reduce) != std::string::npos ||
                     compiled.ptx.find(".param .s32 " + reduce) != std::string::npos;
    EXPECT_EQ(has, dyn) << reduce;
    EXPECT_NE(compiled.ptx.find(".entry " + r.kernel_name + "("), std::string::npos) << r.kernel_name;
  }
}

TEST(DynamicBatchKernels, CacheKeyAndKernelNameTellADynamicEntryFromAStaticOne) {
  const Conv2dDesc fixed{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7};
  const Conv2dDesc dyn = dynamic(fixed, 8);
  for (const auto& specialize : std::vector<std::function<Specialization(const Conv2dDesc&)>>{
           [](const Conv2dDesc& d) { return specialize_direct(d); },
           [](const Conv2dDesc& d) { return specialize_implicit_gemm(d); },
           [](const Conv2dDesc& d) { return specialize_wgmma(d); }, specialize_im2col}) {
    const SpecializedSource a = specialize(fixed).source;
    const SpecializedSource b = specialize(dyn).source;
    EXPECT_NE(a.kernel_name, b.kernel_name);
    EXPECT_NE(b.kernel_name.find("ndyn8"), std::string::npos) << b.kernel_name;
    const KernelKey ka = make_kernel_key(fixed, a, "sm_90", Nvrtc::options_for("sm_90"), "13.0");
    const KernelKey kb = make_kernel_key(dyn, b, "sm_90", Nvrtc::options_for("sm_90"), "13.0");
    EXPECT_NE(ka.hash, kb.hash);
    EXPECT_NE(kb.text.find("batch=dynamic"), std::string::npos) << kb.text;
    EXPECT_EQ(ka.text.find("batch=dynamic"), std::string::npos) << ka.text;
  }
}

}  // namespace
}  // namespace convjit
