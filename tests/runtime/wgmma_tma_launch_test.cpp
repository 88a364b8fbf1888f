// The wgmma kernel's TMA variant on the launch path, on the fake driver: each run encodes
// the im2col map of its own x and batch with the arguments the specializer derived (the
// fake checks them against the driver's documented limits), passes it after y, and a map
// the driver refuses is an error naming the call and every argument, with nothing
// launched. With CONVJIT_WGMMA_TMA=0 nothing is encoded and the parameters are the cp.async
// kernel's.
#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <string>
#include <vector>

#include "support/fake_driver_test.hpp"
#include "support/scoped_env.hpp"

namespace convjit {
namespace {

using testing::expect_error;
using testing::FakeIm2colEncode;
using testing::Operands;
using testing::ScopedEnv;

Conv2dDesc nhwc(Conv2dDesc d, DType dtype) {
  d.layout = Layout::kNHWC;
  d.dtype = dtype;
  return d;
}

class WgmmaTmaLaunch : public testing::FakeDriverTest {
 protected:
  const Conv2dPlan& plan_for(Runtime& rt, const Conv2dDesc& d) {
    plans_.push_back(rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm}));
    return plans_.back();
  }
  std::deque<Conv2dPlan> plans_;  // references to its elements stay valid as it grows
  // The x and w maps' tests: outputs from registers, so no y map joins the parameters
  // (WgmmaTmaYMapLaunch has those).
  ScopedEnv registers_{"CONVJIT_WGMMA_Y_MAP", "0"};
};

class WgmmaTmaYMapLaunch : public testing::FakeDriverTest {
 protected:
  const Conv2dPlan& plan_for(Runtime& rt, const Conv2dDesc& d) {
    plans_.push_back(rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm}));
    return plans_.back();
  }
  std::deque<Conv2dPlan> plans_;
};

struct Expected {
  CUtensorMapDataType dtype;
  std::vector<std::uint64_t> dims, strides;
  std::vector<int> lower, upper;
  unsigned channels, pixels;
  std::vector<unsigned> element_strides;
};

void expect_encode(const FakeIm2colEncode& e, const void* x, const Expected& want,
                   CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_128B) {
  EXPECT_EQ(e.dtype, want.dtype);
  EXPECT_EQ(e.rank, 4u);
  EXPECT_EQ(e.address, x);
  EXPECT_EQ(e.dims, want.dims);
  EXPECT_EQ(e.strides, want.strides);
  EXPECT_EQ(e.lower, want.lower);
  EXPECT_EQ(e.upper, want.upper);
  EXPECT_EQ(e.channels_per_pixel, want.channels);
  EXPECT_EQ(e.pixels_per_column, want.pixels);
  EXPECT_EQ(e.element_strides, want.element_strides);
  EXPECT_EQ(e.interleave, CU_TENSOR_MAP_INTERLEAVE_NONE);
  EXPECT_EQ(e.swizzle, swizzle);
  EXPECT_EQ(e.oob_fill, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

TEST_F(WgmmaTmaLaunch, EachRunEncodesItsXsMapAndPassesItAfterY) {
  Runtime rt(options());
  struct Case {
    Conv2dDesc desc;
    Expected want;
  };
  // f16, padding 1: corners -1 / -1 (3x3); f32 strict with stride 2, dilation 2, padding 2
  // on a 3x5 filter: upper corners 2 - 2 x 2 = -2 (H) and 2 - 2 x 4 = -6 (W), element
  // strides 2 (40 output channels: n64 tiles of two m64 blocks even in 3xTF32, but 90 output
  // pixels take tiles of one, 128 pixels); bf16 1-D over a channel tail (72 channels, two
  // 64-channel chunks).
  const Case cases[] = {
      {nhwc({.n = 2, .c = 64, .h = 10, .w = 12, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
            DType::kFloat16),
       {CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        {64, 12, 10, 2},
        {128, 1536, 15360},
        {-1, -1},
        {-1, -1},
        64,
        256,
        {1, 1, 1, 1}}},
      {[] {
         Conv2dDesc d = nhwc({.n = 1,
                              .c = 36,
                              .h = 20,
                              .w = 21,
                              .k = 40,
                              .r = 3,
                              .s = 5,
                              .stride_h = 2,
                              .stride_w = 2,
                              .pad_h = 2,
                              .pad_w = 2,
                              .dilation_h = 2,
                              .dilation_w = 2},
                             DType::kFloat32);
         d.math = MathMode::kStrictFp32;
         return d;
       }(),
       {CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
        {36, 21, 20, 1},
        {144, 3024, 60480},
        {-2, -2},
        {-6, -2},
        32,
        128,
        {1, 2, 2, 1}}},
      {nhwc({.n = 3, .c = 72, .h = 1, .w = 50, .k = 32, .r = 1, .s = 3, .pad_w = 1}, DType::kBFloat16),
       {CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, {72, 50, 1, 3}, {144, 7200, 7200}, {-1, 0}, {-1, 0}, 64, 256, {1, 1, 1, 1}}},
  };
  for (const Case& c : cases) {
    fake().reset();
    const Conv2dPlan& plan = plan_for(rt, c.desc);
    SCOPED_TRACE(plan.kernel_name());
    ASSERT_TRUE(plan.kernel_name().ends_with("_tma")) << plan.kernel_name();
    EXPECT_EQ(plan.alignment().x, 16u);
    Operands ops(c.desc);
    for (int run = 0; run < 2; ++run) plan.run(ops.args());
    const auto encodes = fake().im2col_encodes();
    ASSERT_EQ(encodes.size(), 2u);  // one a run: the map holds the run's x
    for (const auto& e : encodes) expect_encode(e, ops.x.at(), c.want);
    // 3xTF32 packs its weights; TF32 and 16-bit read w through a second map, one a run.
    const bool b_map = c.desc.math != MathMode::kStrictFp32;
    EXPECT_EQ(plan.packed_weight_bytes() == 0, b_map);
    EXPECT_EQ(fake().tiled_encodes().size(), b_map ? 2u : 0u);
    for (const auto& e : fake().tiled_encodes()) EXPECT_EQ(e.address, ops.w.at());
    // (Pack,) convolution (and split-K's reduce pass, for the strict case), twice.
    int convolutions = 0;
    int packs = 0;
    for (const auto& launch : fake().launches()) {
      if (launch.function == plan.kernel_name() + "_pack") ++packs;
      if (launch.function != plan.kernel_name()) continue;
      ++convolutions;
      // x, w or the packed weights, bias, y (or the partial sums), x's map (, w's map)
      ASSERT_EQ(launch.args.size(), b_map ? 6u : 5u);
      EXPECT_EQ(launch.pointer_arg(0), ops.x.at());
      EXPECT_EQ(launch.pointer_arg(4), ops.x.at());  // the fake's map starts with its address
      if (b_map) {
        EXPECT_EQ(launch.pointer_arg(1), ops.w.at());
        EXPECT_EQ(launch.pointer_arg(5), ops.w.at());
      }
    }
    EXPECT_EQ(convolutions, 2);
    EXPECT_EQ(packs, b_map ? 0 : 2);
  }
}

// A group whose channels fill 64 but not 128
// bytes a pixel is read in 64-byte boxes with TMA's 64-byte swizzle (32 f16 channels,
// 16 f32 ones a box); the fake checks the box against the swizzle's span. (56 output
// pixels: a tile of one m64 block a warpgroup, 128 pixels.)
TEST_F(WgmmaTmaLaunch, SixtyFourByteRowsEncodeSixtyFourByteBoxesWithTheSixtyFourByteSwizzle) {
  Runtime rt(options());
  struct Case {
    Conv2dDesc desc;
    Expected want;
  };
  const Case cases[] = {
      {nhwc({.n = 2, .c = 32, .h = 9, .w = 11, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1}, DType::kFloat16),
       {CU_TENSOR_MAP_DATA_TYPE_FLOAT16, {32, 11, 9, 2}, {64, 704, 6336}, {-1, -1}, {-1, -1}, 32, 256, {1, 1, 1, 1}}},
      {nhwc({.n = 1, .c = 24, .h = 7, .w = 8, .k = 40, .r = 1, .s = 3, .pad_w = 1}, DType::kFloat32),
       {CU_TENSOR_MAP_DATA_TYPE_FLOAT32, {24, 8, 7, 1}, {96, 768, 5376}, {-1, 0}, {-1, 0}, 16, 128, {1, 1, 1, 1}}},
  };
  for (const Case& c : cases) {
    fake().reset();
    const Conv2dPlan& plan = plan_for(rt, c.desc);
    SCOPED_TRACE(plan.kernel_name());
    ASSERT_TRUE(plan.kernel_name().ends_with("_tma")) << plan.kernel_name();
    Operands ops(c.desc);
    plan.run(ops.args());
    const auto encodes = fake().im2col_encodes();
    ASSERT_EQ(encodes.size(), 1u);
    expect_encode(encodes[0], ops.x.at(), c.want, CU_TENSOR_MAP_SWIZZLE_64B);
  }
}

TEST_F(WgmmaTmaLaunch, ADynamicBatchRunEncodesItsOwnBatchAndPassesTheBatchAfterTheMap) {
  Runtime rt(options());
  Conv2dDesc d =
      nhwc({.n = 8, .c = 64, .h = 6, .w = 7, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1}, DType::kFloat16);
  d.dynamic_batch = true;
  const Conv2dPlan& plan = plan_for(rt, d);
  ASSERT_TRUE(plan.kernel_name().ends_with("_tma")) << plan.kernel_name();
  Operands ops(d);
  Conv2dArgs args = ops.args();
  args.n = 3;
  plan.run(args);
  const auto encodes = fake().im2col_encodes();
  ASSERT_EQ(encodes.size(), 1u);
  EXPECT_EQ(encodes[0].dims, (std::vector<std::uint64_t>{64, 7, 6, 3}));
  const auto conv = fake().launches().back();
  ASSERT_EQ(conv.args.size(), 7u);  // x, w, bias, y, x's map, w's map, the batch
  EXPECT_EQ(conv.pointer_arg(4), ops.x.at());
  EXPECT_EQ(conv.pointer_arg(5), ops.w.at());
  EXPECT_EQ(conv.args[6], 3u);
}

TEST_F(WgmmaTmaLaunch, AMapTheDriverRefusesIsAnErrorNamingEveryArgumentAndNothingIsLaunched) {
  Runtime rt(options());
  const Conv2dDesc d =
      nhwc({.n = 2, .c = 64, .h = 10, .w = 12, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1}, DType::kFloat16);
  const Conv2dPlan& plan = plan_for(rt, d);
  Operands ops(d);
  fake().fail_next("cuTensorMapEncodeIm2col", CUDA_ERROR_INVALID_VALUE);
  expect_error(ErrorCode::kDriver, [&] { plan.run(ops.args()); },
               {"cuTensorMapEncodeIm2col", "im2col tensor map", plan.kernel_name(), "dims (C, W, H, N) 64x12x10x2",
                "pixel box corners W [-1, -1] H [-1, -1]", "64 channels a pixel", "256 pixels a column",
                "CUDA_ERROR_INVALID_VALUE"});
  EXPECT_EQ(launch_count(), 0u);
  // The next run encodes and launches as usual: the convolution alone (w through its map).
  plan.run(ops.args());
  EXPECT_EQ(launch_count(), 1u);
}

TEST_F(WgmmaTmaLaunch, AWeightMapTheDriverRefusesIsAnErrorNamingItsArgumentsAndNothingIsLaunched) {
  Runtime rt(options());
  const Conv2dDesc d =
      nhwc({.n = 2, .c = 64, .h = 10, .w = 12, .k = 96, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1}, DType::kBFloat16);
  const Conv2dPlan& plan = plan_for(rt, d);
  Operands ops(d);
  fake().fail_next("cuTensorMapEncodeTiled", CUDA_ERROR_INVALID_VALUE);
  expect_error(ErrorCode::kDriver, [&] { plan.run(ops.args()); },
               {"cuTensorMapEncodeTiled", "tiled tensor map", plan.kernel_name(), "dims 64x9x96", "box 64x1x128",
                "CUDA_ERROR_INVALID_VALUE"});
  EXPECT_EQ(launch_count(), 0u);
  plan.run(ops.args());
  EXPECT_EQ(launch_count(), 1u);
  ASSERT_EQ(fake().tiled_encodes().size(), 1u);
  const auto e = fake().tiled_encodes()[0];
  EXPECT_EQ(e.dtype, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16);
  EXPECT_EQ(e.rank, 3u);
  EXPECT_EQ(e.dims, (std::vector<std::uint64_t>{64, 9, 96}));
  EXPECT_EQ(e.strides, (std::vector<std::uint64_t>{128, 1152}));
  EXPECT_EQ(e.box, (std::vector<unsigned>{64, 1, 128}));
  EXPECT_EQ(e.swizzle, CU_TENSOR_MAP_SWIZZLE_128B);
  EXPECT_EQ(e.oob_fill, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);  // zeros past C/groups and K
}

// w at an offset its dtype allows but a map does not (2 bytes past 16 for f16): the variant
// for that alignment packs w as before, and encodes x's map only.
TEST_F(WgmmaTmaLaunch, LessAlignedWeightsArePackedAndEncodeNoWeightMap) {
  Runtime rt(options());
  const Conv2dDesc d =
      nhwc({.n = 2, .c = 64, .h = 10, .w = 12, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1}, DType::kFloat16);
  const Conv2dPlan& plan = plan_for(rt, d);
  Operands ops(d);
  plan.run(ops.args(/*x_offset=*/0, /*w_offset=*/2));
  EXPECT_TRUE(fake().tiled_encodes().empty());
  EXPECT_EQ(fake().im2col_encodes().size(), 1u);
  const auto launches = fake().launches();
  ASSERT_EQ(launches.size(), 2u);
  EXPECT_TRUE(launches[0].function.ends_with("_pack")) << launches[0].function;
  EXPECT_TRUE(launches[1].function.ends_with("_tma")) << launches[1].function;
  EXPECT_EQ(launches[1].args.size(), 5u);
  EXPECT_EQ(launches[0].pointer_arg(0), ops.w.at(2));
}

TEST_F(WgmmaTmaLaunch, LessAlignedXAndTheSwitchOffEncodeNothing) {
  const Conv2dDesc d =
      nhwc({.n = 2, .c = 64, .h = 10, .w = 12, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1}, DType::kFloat16);
  {
    Runtime rt(options());
    const Conv2dPlan& plan = plan_for(rt, d);
    Operands ops(d);
    // x 4 bytes past a 16-byte boundary: the map cannot start there, so the variant for
    // that alignment copies with cp.async and takes the four pointers alone.
    plan.run(ops.args(/*x_offset=*/4));
    EXPECT_TRUE(fake().im2col_encodes().empty());
    const auto conv = fake().launches().back();
    EXPECT_FALSE(conv.function.ends_with("_tma")) << conv.function;
    EXPECT_EQ(conv.args.size(), 4u);
  }
  fake().reset();
  ScopedEnv env("CONVJIT_WGMMA_TMA", "0");
  Runtime rt(options());
  const Conv2dPlan& plan = plan_for(rt, d);
  EXPECT_FALSE(plan.kernel_name().ends_with("_tma")) << plan.kernel_name();
  Operands ops(d);
  plan.run(ops.args());
  EXPECT_EQ(fake().calls("cuTensorMapEncodeIm2col"), 0u);
  EXPECT_EQ(fake().launches().back().args.size(), 4u);
}

// A stream-K run (fp16 here through CONVJIT_WGMMA_STREAM_K=1) zeroes its items'
// counters in the workspace's tail (an async memset, so a capture records it), then
// launches one block a worker with the workspace after the maps.
TEST_F(WgmmaTmaLaunch, StreamKRunsZeroTheirCountersAndPassTheWorkspaceAfterTheMaps) {
  ScopedEnv on("CONVJIT_WGMMA_STREAM_K", "1");
  Runtime rt(options());
  const Conv2dDesc d =
      nhwc({.n = 2, .c = 640, .h = 64, .w = 64, .k = 384, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
           DType::kFloat16);  // 32 tiles of 256 pixels x 3 n128 blocks: 96 items on 132 SMs
  const Conv2dPlan& plan = plan_for(rt, d);
  ASSERT_TRUE(plan.kernel_name().ends_with("_tma")) << plan.kernel_name();
  ASSERT_GT(plan.workspace_bytes(), 0u) << "stream-K's slots and counters";
  Operands ops(d);
  testing::FakeBuffer workspace(plan.workspace_bytes());
  // Counters a previous run (or anything else) left behind.
  std::memset(workspace.at(), 0x5a, plan.workspace_bytes());
  Conv2dArgs args = ops.args();
  args.workspace = workspace.at();
  args.workspace_bytes = plan.workspace_bytes();
  plan.run(args);
  EXPECT_EQ(fake().calls("cuMemsetD32Async"), 1u);
  const auto launches = fake().launches();
  ASSERT_EQ(launches.size(), 1u);  // fp16 reads w through its map: no pack
  const auto& conv = launches[0];
  EXPECT_EQ(conv.grid[0], 132u);
  EXPECT_EQ(conv.grid[1], 1u);
  EXPECT_EQ(conv.grid[2], 1u);
  ASSERT_EQ(conv.args.size(), 7u);  // x, w, bias, y, x's map, w's map, the workspace
  const std::uint64_t items = 32 * 3;
  const std::uint64_t counters_bytes = (items * 4 + 15) / 16 * 16;
  const std::uint64_t slots = plan.workspace_bytes() - counters_bytes;
  EXPECT_EQ(conv.pointer_arg(6), workspace.at());  // the whole workspace is the tail
  const auto* counters = static_cast<const unsigned char*>(workspace.at()) + slots;
  for (std::uint64_t i = 0; i < items * 4; ++i) ASSERT_EQ(counters[i], 0) << "byte " << i;
  EXPECT_EQ(counters[-1], 0x5a) << "the slots before the counters, untouched by the memset";
}

// Outputs through y's map (kYMap): each run encodes y as K x the run's pixels with its own
// y and batch, boxes of 128 bytes of channels by a tile's pixels, and passes it after w's
// map (before a dynamic batch); a y whose alignment the map cannot take gets the variant
// that stores from registers, with no y map; a y map the driver refuses is an error naming
// it, with nothing launched.
TEST_F(WgmmaTmaYMapLaunch, EachRunEncodesItsYsMapAndPassesItAfterTheWeightsMap) {
  Runtime rt(options());
  Conv2dDesc d =
      nhwc({.n = 4, .c = 64, .h = 10, .w = 12, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1}, DType::kFloat16);
  d.dynamic_batch = true;
  const Conv2dPlan& plan = plan_for(rt, d);
  ASSERT_TRUE(plan.kernel_name().ends_with("_tma")) << plan.kernel_name();
  EXPECT_EQ(plan.alignment().y, 16u);
  Operands ops(d);
  for (const int batch : {3, 1}) {
    fake().reset();
    Conv2dArgs args = ops.args();
    args.n = batch;
    plan.run(args);
    const auto tiled = fake().tiled_encodes();
    ASSERT_EQ(tiled.size(), 2u);  // w's, then y's
    EXPECT_EQ(tiled[0].address, ops.w.at());
    const auto& e = tiled[1];
    EXPECT_EQ(e.address, ops.y.at());
    EXPECT_EQ(e.dtype, CU_TENSOR_MAP_DATA_TYPE_FLOAT16);
    EXPECT_EQ(e.dims, (std::vector<std::uint64_t>{64, 120u * batch, 1}));
    EXPECT_EQ(e.strides, (std::vector<std::uint64_t>{128, 128u * 120 * 4}));
    EXPECT_EQ(e.box, (std::vector<unsigned>{64, 256, 1}));
    EXPECT_EQ(e.swizzle, CU_TENSOR_MAP_SWIZZLE_128B);
    const auto conv = fake().launches().back();
    ASSERT_EQ(conv.args.size(), 8u);  // x, w, bias, y, x's map, w's map, y's map, the batch
    EXPECT_EQ(conv.pointer_arg(4), ops.x.at());
    EXPECT_EQ(conv.pointer_arg(5), ops.w.at());
    EXPECT_EQ(conv.pointer_arg(6), ops.y.at());  // the fake's map starts with its address
    EXPECT_EQ(conv.args[7], static_cast<std::uint64_t>(batch));
  }
  // y 8 bytes past a 16-byte boundary (legal for f16): stores from registers, no y map.
  fake().reset();
  plan.run(ops.args(0, 0, 0, /*y_offset=*/8));
  ASSERT_EQ(fake().tiled_encodes().size(), 1u);
  EXPECT_EQ(fake().tiled_encodes()[0].address, ops.w.at());
  EXPECT_EQ(fake().launches().back().args.size(), 7u);
}

TEST_F(WgmmaTmaYMapLaunch, AYMapTheDriverRefusesIsAnErrorNamingItAndNothingIsLaunched) {
  Runtime rt(options());
  // 3xTF32 packs its weights: y's is the only tiled map (32 channels a box). 128 pixels take
  // one m64 block a warpgroup, whose four stages fit beside the boxes.
  Conv2dDesc d = nhwc({.n = 1, .c = 32, .h = 8, .w = 16, .k = 64, .r = 1, .s = 1}, DType::kFloat32);
  d.math = MathMode::kStrictFp32;
  const Conv2dPlan& plan = plan_for(rt, d);
  Operands ops(d);
  fake().fail_next("cuTensorMapEncodeTiled", CUDA_ERROR_INVALID_VALUE);
  expect_error(ErrorCode::kDriver, [&] { plan.run(ops.args()); },
               {"cuTensorMapEncodeTiled", "tiled tensor map", plan.kernel_name(), "dims 64x128x1", "box 32x128x1",
                "CUDA_ERROR_INVALID_VALUE"});
  EXPECT_EQ(launch_count(), 0u);
  plan.run(ops.args());
  EXPECT_EQ(launch_count(), 2u);  // the pack, the convolution
  const auto conv = fake().launches().back();
  ASSERT_EQ(conv.args.size(), 6u);  // x, packed w, bias, y, x's map, y's map
  EXPECT_EQ(conv.pointer_arg(5), ops.y.at());
}

}  // namespace
}  // namespace convjit
