#include "convjit/conv2d_desc.hpp"

#include <gtest/gtest.h>

#include <functional>

#include "convjit/error.hpp"

namespace convjit {
namespace {

Conv2dDesc headline() { return Conv2dDesc{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7}; }

TEST(Conv2dDesc, OutputShapeFollowsPyTorchFormula) {
  EXPECT_EQ(headline().output_shape(), (Conv2dOutputShape{8, 128, 508, 250}));
  // KernelBench 50: 224 + 2*2 - 11 = 217, / 4 + 1 = 55.
  Conv2dDesc strided{.n = 1,
                     .c = 3,
                     .h = 224,
                     .w = 224,
                     .k = 96,
                     .r = 11,
                     .s = 11,
                     .stride_h = 4,
                     .stride_w = 4,
                     .pad_h = 2,
                     .pad_w = 2};
  EXPECT_EQ(strided.output_shape(), (Conv2dOutputShape{1, 96, 55, 55}));
  // KernelBench 80: dilation (2,3), padding (2,4), kernel (5,9).
  Conv2dDesc dilated{.n = 8,
                     .c = 32,
                     .h = 512,
                     .w = 512,
                     .k = 64,
                     .r = 5,
                     .s = 9,
                     .pad_h = 2,
                     .pad_w = 4,
                     .dilation_h = 2,
                     .dilation_w = 3};
  EXPECT_EQ(dilated.output_shape(), (Conv2dOutputShape{8, 64, 508, 496}));
}

TEST(Conv2dDesc, ValidAcceptsDepthwiseAndGrouped) {
  EXPECT_NO_THROW(headline().validate());
  EXPECT_NO_THROW((Conv2dDesc{.n = 2, .c = 64, .h = 9, .w = 9, .k = 64, .r = 3, .s = 3, .groups = 64}).validate());
  EXPECT_NO_THROW((Conv2dDesc{.n = 1, .c = 6, .h = 4, .w = 1, .k = 9, .r = 1, .s = 1, .groups = 3}).validate());
}

struct InvalidCase {
  const char* name;
  std::function<void(Conv2dDesc&)> mutate;
  const char* message_part;
  ErrorCode code;
};

TEST(Conv2dDesc, EveryInvalidFieldIsRejectedWithItsName) {
  const InvalidCase cases[] = {
      {"n zero", [](Conv2dDesc& d) { d.n = 0; }, "Conv2dDesc.n: expected >= 1, got 0", ErrorCode::kInvalidArgument},
      {"c negative", [](Conv2dDesc& d) { d.c = -3; }, "Conv2dDesc.c: expected >= 1, got -3",
       ErrorCode::kInvalidArgument},
      {"h zero", [](Conv2dDesc& d) { d.h = 0; }, "Conv2dDesc.h: expected >= 1", ErrorCode::kInvalidArgument},
      {"w zero", [](Conv2dDesc& d) { d.w = 0; }, "Conv2dDesc.w: expected >= 1", ErrorCode::kInvalidArgument},
      {"k zero", [](Conv2dDesc& d) { d.k = 0; }, "Conv2dDesc.k: expected >= 1", ErrorCode::kInvalidArgument},
      {"r zero", [](Conv2dDesc& d) { d.r = 0; }, "Conv2dDesc.r: expected >= 1", ErrorCode::kInvalidArgument},
      {"s zero", [](Conv2dDesc& d) { d.s = 0; }, "Conv2dDesc.s: expected >= 1", ErrorCode::kInvalidArgument},
      {"stride_h zero", [](Conv2dDesc& d) { d.stride_h = 0; }, "Conv2dDesc.stride_h: expected >= 1",
       ErrorCode::kInvalidArgument},
      {"stride_w negative", [](Conv2dDesc& d) { d.stride_w = -1; }, "Conv2dDesc.stride_w: expected >= 1",
       ErrorCode::kInvalidArgument},
      {"pad_h negative", [](Conv2dDesc& d) { d.pad_h = -1; }, "Conv2dDesc.pad_h: expected >= 0, got -1",
       ErrorCode::kInvalidArgument},
      {"pad_w negative", [](Conv2dDesc& d) { d.pad_w = -2; }, "Conv2dDesc.pad_w: expected >= 0, got -2",
       ErrorCode::kInvalidArgument},
      {"dilation_h zero", [](Conv2dDesc& d) { d.dilation_h = 0; }, "Conv2dDesc.dilation_h: expected >= 1",
       ErrorCode::kInvalidArgument},
      {"dilation_w zero", [](Conv2dDesc& d) { d.dilation_w = 0; }, "Conv2dDesc.dilation_w: expected >= 1",
       ErrorCode::kInvalidArgument},
      {"groups zero", [](Conv2dDesc& d) { d.groups = 0; }, "Conv2dDesc.groups: expected >= 1",
       ErrorCode::kInvalidArgument},
      {"groups not dividing c", [](Conv2dDesc& d) { d.groups = 3; }, "Conv2dDesc.groups: expected a divisor of c = 64",
       ErrorCode::kInvalidArgument},
      {"groups not dividing k",
       [](Conv2dDesc& d) {
         d.c = 96;
         d.k = 128;
         d.groups = 3;
       },
       "Conv2dDesc.groups: expected a divisor of k = 128", ErrorCode::kInvalidArgument},
      {"filter taller than input", [](Conv2dDesc& d) { d.h = 4; }, "Conv2dDesc.h: padded input height 4",
       ErrorCode::kInvalidArgument},
      {"dilated filter wider than input",
       [](Conv2dDesc& d) {
         d.w = 20;
         d.dilation_w = 4;
       },
       "Conv2dDesc.w: padded input width 20", ErrorCode::kInvalidArgument},
      {"tensor over 2^62 elements",
       [](Conv2dDesc& d) {
         d.n = 2000000000;
         d.c = 20000;
         d.k = 64;
       },
       "over the 2^62 limit", ErrorCode::kInvalidArgument},
      // Values the kernels hold in int (issue 12: pad=1073741824 made kP = -2147483647).
      {"padding past int", [](Conv2dDesc& d) { d.pad_h = 1073741824; }, "Conv2dDesc.pad_h: h + 2 * pad_h",
       ErrorCode::kInvalidArgument},
      {"padding past int in width", [](Conv2dDesc& d) { d.pad_w = 2147483000; }, "Conv2dDesc.pad_w: w + 2 * pad_w",
       ErrorCode::kInvalidArgument},
      {"dilated filter past int", [](Conv2dDesc& d) { d.dilation_h = 1 << 30; }, "Conv2dDesc.dilation_h",
       ErrorCode::kInvalidArgument},
      {"input plane past int",
       [](Conv2dDesc& d) {
         d.h = 50000;
         d.w = 50000;
       },
       "Conv2dDesc.h: an input plane", ErrorCode::kInvalidArgument},
      {"output plane past int",
       [](Conv2dDesc& d) {
         d.h = 40000;
         d.w = 40000;
         d.r = 1;
         d.s = 1;
         d.pad_h = 4000;
         d.pad_w = 4000;
       },
       "Conv2dDesc.h: an output plane", ErrorCode::kInvalidArgument},
      {"reduction past int",
       [](Conv2dDesc& d) {
         d.c = 1 << 28;
         d.r = 3;
         d.s = 3;
         d.h = 8;
         d.w = 8;
       },
       "Conv2dDesc.c: the reduction", ErrorCode::kInvalidArgument},
      {"dtype out of the enum", [](Conv2dDesc& d) { d.dtype = static_cast<DType>(7); },
       "Conv2dDesc.dtype: expected f32, f16 or bf16", ErrorCode::kInvalidArgument},
      {"layout out of the enum", [](Conv2dDesc& d) { d.layout = static_cast<Layout>(5); },
       "Conv2dDesc.layout: expected nchw or nhwc", ErrorCode::kInvalidArgument},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    Conv2dDesc d = headline();
    c.mutate(d);
    try {
      d.validate();
      ADD_FAILURE() << "accepted: " << d.to_string();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), c.code);
      EXPECT_NE(std::string(e.what()).find(c.message_part), std::string::npos) << e.what();
    }
  }
}

TEST(Conv2dDesc, EveryDtypeIsAcceptedInEitherMathModeAndEitherLayout) {
  for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (const MathMode math : {MathMode::kTF32, MathMode::kStrictFp32}) {
      for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
        Conv2dDesc d = headline();
        d.dtype = dtype;
        d.math = math;
        d.layout = layout;
        EXPECT_NO_THROW(d.validate()) << d.to_string();
      }
    }
  }
}

// For 16-bit data the math mode selects nothing, but the descriptor keeps it as given:
// the two are different descriptors (and cache keys) with the same kernel.
TEST(Conv2dDesc, SixteenBitDescriptorsKeepTheirMathModeAndDtype) {
  Conv2dDesc a = headline();
  a.dtype = DType::kFloat16;
  Conv2dDesc b = a;
  b.math = MathMode::kStrictFp32;
  EXPECT_NE(a, b);
  EXPECT_NE(a.to_string(), b.to_string());
  Conv2dDesc c = a;
  c.dtype = DType::kBFloat16;
  EXPECT_NE(a, c);
  EXPECT_NE(Conv2dDescHash{}(a), Conv2dDescHash{}(c));
  EXPECT_NE(a.to_string().find("dtype=f16"), std::string::npos);
  EXPECT_NE(c.to_string().find("dtype=bf16"), std::string::npos);
}

TEST(Conv2dDesc, ToStringNamesEveryFieldReadably) {
  Conv2dDesc d{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7, .stride_w = 2, .pad_h = 1, .pad_w = 1};
  EXPECT_EQ(d.to_string(),
            "n8c64h512w256k128r5s7 stride=1,2 pad=1 dilation=1 groups=1 bias=0 dtype=f32 layout=nchw math=tf32");
}

TEST(Conv2dDesc, EqualityAndHashSeeEveryField) {
  Conv2dDesc a = headline();
  Conv2dDesc b = headline();
  EXPECT_EQ(a, b);
  EXPECT_EQ(Conv2dDescHash{}(a), Conv2dDescHash{}(b));
  b.dilation_w = 2;
  EXPECT_NE(a, b);
  EXPECT_NE(Conv2dDescHash{}(a), Conv2dDescHash{}(b));
}

TEST(Conv2dDesc, DynamicBatchIsNamedInToStringAndSeenByEqualityAndHash) {
  Conv2dDesc a = headline();
  Conv2dDesc b = headline();
  b.dynamic_batch = true;
  ASSERT_NO_THROW(b.validate());
  EXPECT_NE(a, b);
  EXPECT_NE(Conv2dDescHash{}(a), Conv2dDescHash{}(b));
  EXPECT_EQ(a.to_string().find("batch="), std::string::npos) << a.to_string();
  EXPECT_EQ(b.to_string(), a.to_string() + " batch=dynamic");
}

TEST(Conv2dDesc, FlopsCountTwoPerMultiplyAdd) {
  EXPECT_DOUBLE_EQ(headline().flops(), 2.0 * 8 * 128 * 508 * 250 * 64 * 5 * 7);
}

}  // namespace
}  // namespace convjit
