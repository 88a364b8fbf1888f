// Issue 15: the descriptor for 1, 2 and 3 spatial dimensions, forward and transposed.
// Output extents as PyTorch's nn.Conv*d / nn.ConvTranspose*d compute them, every bad
// field named, the new fields in equality, hash, text form and kernel names (2-D names
// unchanged), and the algorithms that take each kind.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>

#include "convjit/algorithm.hpp"
#include "convjit/conv2d_desc.hpp"
#include "convjit/error.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/prologue.hpp"
#include "specialize/specialized_source.hpp"

namespace convjit {
namespace {

std::string error_of(const ConvDesc& d) {
  try {
    d.validate();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    return e.what();
  }
  return "";
}

ConvDesc conv3d() {
  return ConvDesc{.n = 2, .c = 3, .h = 9, .w = 10, .k = 4, .r = 3, .s = 5, .spatial_dims = 3, .d = 7, .t = 2};
}

TEST(ConvDesc, Conv2dDescIsTheSameTypeWithTwoDimensionalForwardDefaults) {
  static_assert(std::is_same_v<Conv2dDesc, ConvDesc>);
  const Conv2dDesc d{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7};
  EXPECT_EQ(d.spatial_dims, 2);
  EXPECT_FALSE(d.transposed);
  EXPECT_EQ(d.output_shape(), (Conv2dOutputShape{8, 128, 508, 250, 1}));
  EXPECT_EQ(d.to_string(),
            "n8c64h512w256k128r5s7 stride=1 pad=0 dilation=1 groups=1 bias=0 dtype=f32 layout=nchw "
            "math=tf32");
}

TEST(ConvDesc, ThreeDimensionalOutputShapeElementsAndFlopsCountTheDepth) {
  ConvDesc d = conv3d();
  d.stride_d = 2;
  d.pad_d = 1;
  d.dilation_d = 2;
  // depth: (7 + 2 - 2 * 1 - 1) / 2 + 1 = 4
  EXPECT_EQ(d.output_shape(), (Conv2dOutputShape{2, 4, 7, 6, 4}));
  EXPECT_EQ(d.x_elements(), 2 * 3 * 7 * 9 * 10);
  EXPECT_EQ(d.w_elements(), 4 * 3 * 2 * 3 * 5);
  EXPECT_EQ(d.y_elements(), 2 * 4 * 4 * 7 * 6);
  EXPECT_DOUBLE_EQ(d.flops(), 2.0 * d.y_elements() * 3 * 2 * 3 * 5);
}

TEST(ConvDesc, TransposedOutputShapeIsPyTorchsFormulaInEveryDimension) {
  // (in - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1
  ConvDesc d{.n = 1,
             .c = 32,
             .h = 64,
             .w = 128,
             .k = 64,
             .r = 3,
             .s = 3,
             .stride_h = 5,
             .stride_w = 5,
             .pad_h = 1,
             .pad_w = 1,
             .dilation_h = 2,
             .dilation_w = 2,
             .transposed = true};
  EXPECT_EQ(d.output_shape(), (Conv2dOutputShape{1, 64, 63 * 5 - 2 + 4 + 1, 127 * 5 - 2 + 4 + 1, 1}));  // KB 81
  d.output_padding_h = 4;
  d.output_padding_w = 1;
  EXPECT_EQ(d.output_shape().p, 63 * 5 - 2 + 4 + 4 + 1);
  EXPECT_EQ(d.output_shape().q, 127 * 5 - 2 + 4 + 1 + 1);
  EXPECT_EQ(error_of(d), "");
  // The weight is PyTorch's (c, k / groups, ...): as many elements as the forward filter.
  d.groups = 4;
  EXPECT_EQ(d.w_elements(), 32 * (64 / 4) * 3 * 3);
  // Every input element meets k / groups filters of r x s taps.
  EXPECT_DOUBLE_EQ(d.flops(), 2.0 * d.x_elements() * 16 * 9);
}

TEST(ConvDesc, ValidateNamesEveryBadNewField) {
  struct BadCase {
    ConvDesc desc;
    std::string field;
  };
  const ConvDesc one_d{.c = 4, .w = 16, .k = 8, .s = 3, .spatial_dims = 1};
  auto with = [](ConvDesc d, auto change) {
    change(d);
    return d;
  };
  const BadCase cases[] = {
      {with(one_d, [](ConvDesc& d) { d.spatial_dims = 4; }), "Conv2dDesc.spatial_dims: expected 1, 2 or 3, got 4"},
      {with(one_d, [](ConvDesc& d) { d.spatial_dims = 0; }), "Conv2dDesc.spatial_dims"},
      {with(one_d, [](ConvDesc& d) { d.h = 2; }), "Conv2dDesc.h: expected 1 for a 1-D convolution"},
      {with(one_d, [](ConvDesc& d) { d.r = 3; }), "Conv2dDesc.r: expected 1 for a 1-D convolution"},
      {with(one_d, [](ConvDesc& d) { d.pad_h = 1; }), "Conv2dDesc.pad_h: expected 0 for a 1-D convolution"},
      {with(one_d, [](ConvDesc& d) { d.stride_h = 2; }), "Conv2dDesc.stride_h: expected 1 for a 1-D"},
      {with(one_d, [](ConvDesc& d) { d.dilation_h = 2; }), "Conv2dDesc.dilation_h: expected 1 for a 1-D"},
      {with(one_d, [](ConvDesc& d) { d.d = 2; }), "Conv2dDesc.d: expected 1 for a 1-D convolution"},
      {with(ConvDesc{}, [](ConvDesc& d) { d.t = 2; }), "Conv2dDesc.t: expected 1 for a 2-D convolution"},
      {with(ConvDesc{}, [](ConvDesc& d) { d.pad_d = 1; }), "Conv2dDesc.pad_d: expected 0 for a 2-D convolution"},
      {with(conv3d(), [](ConvDesc& d) { d.d = 0; }), "Conv2dDesc.d: expected >= 1, got 0"},
      {with(conv3d(), [](ConvDesc& d) { d.t = 0; }), "Conv2dDesc.t: expected >= 1, got 0"},
      {with(conv3d(), [](ConvDesc& d) { d.stride_d = 0; }), "Conv2dDesc.stride_d: expected >= 1, got 0"},
      {with(conv3d(), [](ConvDesc& d) { d.dilation_d = 0; }), "Conv2dDesc.dilation_d: expected >= 1, got 0"},
      {with(conv3d(), [](ConvDesc& d) { d.pad_d = -1; }), "Conv2dDesc.pad_d: expected >= 0, got -1"},
      {with(conv3d(), [](ConvDesc& d) { d.t = 9; }), "Conv2dDesc.d: padded input depth 7 + 2*0 is smaller than"},
      {with(conv3d(), [](ConvDesc& d) { d.output_padding_d = 1; }),
       "Conv2dDesc.output_padding_d: expected 0 for a forward convolution"},
      {with(one_d,
            [](ConvDesc& d) {
              d.transposed = true;
              d.stride_w = 2;
              d.output_padding_w = 2;
            }),
       "Conv2dDesc.output_padding_w: expected less than the stride (2) or the dilation (1) of its dimension, got 2"},
      {with(one_d,
            [](ConvDesc& d) {
              d.transposed = true;
              d.output_padding_w = -1;
            }),
       "Conv2dDesc.output_padding_w: expected >= 0, got -1"},
      {with(one_d,
            [](ConvDesc& d) {
              d.transposed = true;
              d.w = 1;
              d.s = 1;
              d.pad_w = 1;
            }),
       "Conv2dDesc.w: the transposed output width"},
  };
  for (const auto& c : cases) {
    const std::string message = error_of(c.desc);
    EXPECT_EQ(message.rfind(c.field, 0), 0u)
        << c.desc.to_string() << "\n  got:      " << message << "\n  expected: " << c.field;
  }
  // Output padding below the dilation is allowed even at stride 1, as in PyTorch.
  ConvDesc dilated = one_d;
  dilated.transposed = true;
  dilated.dilation_w = 3;
  dilated.output_padding_w = 2;
  EXPECT_EQ(error_of(dilated), "");
}

TEST(ConvDesc, NewFieldsTakePartInEqualityHashAndText) {
  const ConvDesc base = conv3d();
  ConvDesc other = base;
  other.transposed = true;
  EXPECT_NE(base, other);
  EXPECT_NE(ConvDescHash{}(base), ConvDescHash{}(other));
  EXPECT_NE(base.to_string(), other.to_string());
  other = base;
  other.stride_d = 2;
  EXPECT_NE(ConvDescHash{}(base), ConvDescHash{}(other));
  EXPECT_EQ(base.to_string(),
            "n2c3d7h9w10k4t2r3s5 stride=1 pad=0 dilation=1 groups=1 bias=0 dtype=f32 layout=nchw "
            "math=tf32");
  other.pad_w = 2;
  EXPECT_NE(other.to_string().find(" stride=2,1,1 pad=0,0,2 "), std::string::npos) << other.to_string();
  const ConvDesc one_d{.n = 32, .c = 64, .w = 131072, .k = 128, .s = 3, .spatial_dims = 1};
  EXPECT_EQ(one_d.to_string().rfind("n32c64w131072k128s3 stride=1 pad=0 dilation=1 ", 0), 0u) << one_d.to_string();
  ConvDesc transposed = one_d;
  transposed.transposed = true;
  transposed.stride_w = 2;
  transposed.output_padding_w = 1;
  EXPECT_NE(transposed.to_string().find(" transposed=1 output_padding=1"), std::string::npos) << transposed.to_string();
}

TEST(ConvDesc, KernelNamesOfTwoDimensionalProblemsAreUnchangedAndNewOnesAreDistinct) {
  const ConvDesc two_d{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7};
  EXPECT_EQ(problem_tag(two_d), "n8c64h512w256_k128r5s7_u1x1_p0x0_d1x1_g1_nobias");
  // A 1-D problem runs as the 2-D one with h = r = 1, under its name.
  const ConvDesc one_d{.n = 2, .c = 4, .w = 50, .k = 8, .s = 3, .spatial_dims = 1};
  EXPECT_EQ(problem_tag(one_d), problem_tag(ConvDesc{.n = 2, .c = 4, .h = 1, .w = 50, .k = 8, .r = 1, .s = 3}));
  ConvDesc three_d = conv3d();
  EXPECT_EQ(problem_tag(three_d), "n2c3h9w10_k4r3s5_u1x1_p0x0_d1x1_g1_nobias_z7t2u1p0d1");
  ConvDesc transposed = three_d;
  transposed.transposed = true;
  EXPECT_NE(problem_tag(transposed), problem_tag(three_d));
  transposed.stride_h = 2;
  transposed.output_padding_h = 1;
  EXPECT_NE(problem_tag(transposed).find("_tr0x1x0"), std::string::npos) << problem_tag(transposed);
}

TEST(ConvDesc, DepthAndStrideOneTransposedProblemsRunOnDirectIm2colAndImplicitGemmAndOneDOnEveryAlgorithm) {
  const ConvDesc one_d{.n = 2, .c = 32, .w = 500, .k = 64, .s = 3, .spatial_dims = 1};
  for (Algorithm a : {Algorithm::kDirect, Algorithm::kImplicitGemm, Algorithm::kIm2colGemm, Algorithm::kAuto}) {
    EXPECT_FALSE(why_unsupported(one_d, a, "sm_90").has_value()) << to_string(a);
  }
  ConvDesc transposed = one_d;
  transposed.transposed = true;
  for (const ConvDesc& d : {conv3d(), transposed}) {
    EXPECT_FALSE(why_unsupported(d, Algorithm::kDirect, "sm_90").has_value());
    EXPECT_FALSE(why_unsupported(d, Algorithm::kAuto, "sm_90").has_value());
    EXPECT_FALSE(why_unsupported(d, Algorithm::kIm2colGemm, "sm_90").has_value());
    // NCHW 3-D and stride-1 transposed problems run on the mma.sync kernel.
    EXPECT_FALSE(why_unsupported(d, Algorithm::kImplicitGemm, "sm_90").has_value());
    EXPECT_TRUE(depthwise_unsupported_reason(d).has_value());
    // kAuto falls back to the direct kernel, whose source carries the depth and the map.
    const auto source = specialize(d, Algorithm::kDirect, "sm_90", kFullAlignment).source;
    EXPECT_EQ(source.template_name, "conv2d_direct.cu");
    EXPECT_NE(source.text.find(fmt::format("enum : bool {{ kTransposed = {} }};", d.transposed ? "true" : "false")),
              std::string::npos);
    EXPECT_NE(source.text.find(fmt::format("enum : int {{ kZ = {} }};", d.output_shape().z)), std::string::npos);
  }
}

TEST(ConvDesc, TheDirectKernelsGridCoversEveryOutputDepthSlice) {
  ConvDesc d = conv3d();
  d.d = 40;  // output 39 x 7 x 6 = 1638 pixels: 7 tiles of 256 for each of the 2 images
  const auto launch = specialize(d, Algorithm::kDirect, "sm_90", kFullAlignment).launch;
  EXPECT_EQ(launch.geometry.grid_x, 2u * 7u);
  EXPECT_EQ(launch.geometry.block_x, 256u);
}

}  // namespace
}  // namespace convjit
