// The one-line shape form: the exact inverse of Conv2dDesc::to_string(), PyTorch's
// defaults for what is left out, and errors that name the column and what was expected.
#include "workload/shape_text.hpp"

#include <gtest/gtest.h>

#include "convjit/conv2d_desc.hpp"
#include "convjit/error.hpp"
#include "support/workloads.hpp"

namespace convjit {
namespace {

Conv2dDesc headline() { return Conv2dDesc{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7}; }

TEST(ShapeText, ToStringRoundTripsForEveryKernelBench2dProblem) {
  const auto problems = testing::kernelbench_2d_problems();
  ASSERT_EQ(problems.size(), 13u);  // 11 convs and the two halves of the separable one
  for (const auto& p : problems) {
    EXPECT_EQ(parse_shape(p.desc.to_string()), p.desc) << p.name << ": " << p.desc.to_string();
    EXPECT_EQ(parse_shape(to_short_string(p.desc)), p.desc) << p.name << ": " << to_short_string(p.desc);
  }
}

TEST(ShapeText, ToStringRoundTripsEveryOptionValue) {
  std::vector<Conv2dDesc> descs;
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
      for (MathMode math : {MathMode::kTF32, MathMode::kStrictFp32}) {
        for (Activation act : {Activation::kNone, Activation::kRelu}) {
          for (bool bias : {false, true}) {
            descs.push_back(Conv2dDesc{.n = 3,
                                       .c = 12,
                                       .h = 31,
                                       .w = 17,
                                       .k = 6,
                                       .r = 3,
                                       .s = 5,
                                       .stride_h = 2,
                                       .stride_w = 1,
                                       .pad_h = 0,
                                       .pad_w = 4,
                                       .dilation_h = 3,
                                       .dilation_w = 2,
                                       .groups = 3,
                                       .bias = bias,
                                       .activation = act,
                                       .dtype = dtype,
                                       .layout = layout,
                                       .math = math});
          }
        }
      }
    }
  }
  const std::size_t all = descs.size();
  for (std::size_t i = 0; i < all; ++i) {
    descs.push_back(descs[i]);
    descs.back().dynamic_batch = true;
  }
  for (const auto& d : descs) {
    EXPECT_EQ(parse_shape(d.to_string()), d) << d.to_string();
    EXPECT_EQ(parse_shape(to_short_string(d)), d) << to_short_string(d);
  }
}

TEST(ShapeText, ShortFormLeavesOutExactlyTheDefaultOptions) {
  EXPECT_EQ(to_short_string(headline()), "n8c64h512w256k128r5s7");
  EXPECT_EQ(to_short_string(Conv2dDesc{.n = 2,
                                       .c = 8,
                                       .h = 9,
                                       .w = 9,
                                       .k = 8,
                                       .r = 3,
                                       .s = 3,
                                       .stride_w = 2,
                                       .pad_h = 1,
                                       .pad_w = 1,
                                       .groups = 8,
                                       .bias = true,
                                       .math = MathMode::kStrictFp32}),
            "n2c8h9w9k8r3s3 stride=1,2 pad=1 groups=8 bias=1 math=strict");
}

TEST(ShapeText, BatchOptionTakesStaticOrDynamicAndNamesTheChoicesOtherwise) {
  EXPECT_FALSE(parse_shape("n8c64h56k64r3").dynamic_batch);
  EXPECT_FALSE(parse_shape("n8c64h56k64r3 batch=static").dynamic_batch);
  const Conv2dDesc dynamic = parse_shape("n256c256h14w14k256r3s3 pad=1 batch=dynamic");
  EXPECT_TRUE(dynamic.dynamic_batch);
  EXPECT_EQ(dynamic.n, 256);  // the largest batch of a run
  EXPECT_EQ(to_short_string(dynamic), "n256c256h14w14k256r3s3 pad=1 batch=dynamic");
  const ShapeParse bad = parse_shape_text("n8c64h56k64r3 batch=dyn");
  ASSERT_FALSE(bad.desc);
  EXPECT_EQ(bad.error.column, 21);
  EXPECT_EQ(bad.error.message, "expected static or dynamic for 'batch', got 'dyn'");
  const ShapeParse twice = parse_shape_text("n8c64h56k64r3 batch=dynamic batch=static");
  ASSERT_FALSE(twice.desc);
  EXPECT_NE(twice.error.message.find("'batch' is given twice"), std::string::npos) << twice.error.message;
}

TEST(ShapeText, HeadlineShortFormTakesConv2dDefaults) {
  EXPECT_EQ(parse_shape("n8c64h512w256k128r5s7 stride=1 pad=0"), headline());
  EXPECT_EQ(parse_shape("n8c64h512w256k128r5s7"), headline());
}

TEST(ShapeText, OmittedBatchWidthAndFilterWidthDefaultToOneAndSquare) {
  EXPECT_EQ(parse_shape("c3h32k8r3"), (Conv2dDesc{.n = 1, .c = 3, .h = 32, .w = 32, .k = 8, .r = 3, .s = 3}));
  EXPECT_EQ(parse_shape("n2c3h32w16k8r3"), (Conv2dDesc{.n = 2, .c = 3, .h = 32, .w = 16, .k = 8, .r = 3, .s = 3}));
}

TEST(ShapeText, OneValueSetsBothSpatialDimsAndTwoValuesAreHeightThenWidth) {
  const Conv2dDesc d = parse_shape("c4h9k4r3 stride=2,1 pad=1 dilation=1,3");
  EXPECT_EQ(d.stride_h, 2);
  EXPECT_EQ(d.stride_w, 1);
  EXPECT_EQ(d.pad_h, 1);
  EXPECT_EQ(d.pad_w, 1);
  EXPECT_EQ(d.dilation_h, 1);
  EXPECT_EQ(d.dilation_w, 3);
}

TEST(ShapeText, OptionsInAnyOrderWithTabsAndPyTorchSpellings) {
  const Conv2dDesc d = parse_shape("\t c4h9k8r3   math=strict\tgroups=2 padding=1 bias=true activation=relu  ");
  EXPECT_EQ(d, (Conv2dDesc{.c = 4,
                           .h = 9,
                           .w = 9,
                           .k = 8,
                           .r = 3,
                           .s = 3,
                           .pad_h = 1,
                           .pad_w = 1,
                           .groups = 2,
                           .bias = true,
                           .activation = Activation::kRelu,
                           .math = MathMode::kStrictFp32}));
}

TEST(ShapeText, CrossFieldChecksAreLeftToValidate) {
  // Parses (each field is well formed); validate() names the field that does not fit.
  const Conv2dDesc d = parse_shape("c4h8k6r3 groups=4");
  EXPECT_THROW(d.validate(), Error);
}

struct Malformed {
  const char* text;
  int column;
  const char* message_part;
};

TEST(ShapeText, EveryMalformedInputNamesTheColumnAndWhatWasExpected) {
  const Malformed cases[] = {
      {"", 1, "expected a shape such as n8c64h512w256k128r5s7, got end of text"},
      {"   ", 4, "expected a shape such as"},
      {"x8c64h5k1r1", 1, "expected 'n' (batch) or 'c' (input channels), got 'x8c64h5k1r1'"},
      {"n8cXh5k1r1", 4, "expected input channels after 'c' (a number), got 'Xh5k1r1'"},
      {"n0c1h1k1r1", 2, "expected batch after 'n' >= 1, got 0"},
      {"n99999999999c1h1k1r1", 2, "expected batch after 'n' from 1 to 2147483647, got '99999999999'"},
      {"c64n8h5k1r1", 4, "expected 'h' (input height), got 'n8h5k1r1' (sizes go in the order n c h w k r s)"},
      {"n8c64h512 k128r5s7", 10, "expected 'w' (input width) or 'k' (output channels), got a space"},
      {"n8c64h512w256k128", 18, "expected 'r' (filter height), got end of text"},
      {"n8c64h512w256k128r5x", 20, "expected 's' (filter width) or a space before the options, got 'x'"},
      {"n8c64h512w256k128r5s7x", 22, "expected a space before the options, got 'x'"},
      {"n8c64h512w256k128r5s7 strid=1", 23, "unknown key 'strid'; expected one of stride, pad, dilation, groups"},
      {"n8c64h512w256k128r5s7 =1", 23, "expected an option key=value (stride, pad,"},
      {"n8c64h512w256k128r5s7 stride", 29, "expected '=' after 'stride', got end of text"},
      {"n8c64h512w256k128r5s7 stride:2", 29, "expected '=' after 'stride', got ':2'"},
      {"n8c64h512w256k128r5s7 stride=", 30, "expected the value of 'stride' (a number), got end of text"},
      {"n8c64h512w256k128r5s7 stride=0", 30, "expected the value of 'stride' >= 1, got 0"},
      {"n8c64h512w256k128r5s7 stride=2,", 32, "expected the second value of 'stride' (a number), got end of text"},
      {"n8c64h512w256k128r5s7 stride=2,1,3", 33, "expected at most two values (h,w) for 'stride', got a third"},
      {"n8c64h512w256k128r5s7 pad=-1", 27, "expected the value of 'pad' (a number), got '-1'"},
      {"n8c64h512w256k128r5s7 pad=1x", 28, "expected a space or the end after the value of 'pad', got 'x'"},
      {"n8c64h512w256k128r5s7 pad=1 pad=2", 29, "'pad' is given twice (first at column 23)"},
      {"n8c64h512w256k128r5s7 groups=0", 30, "expected the value of 'groups' >= 1, got 0"},
      {"n8c64h512w256k128r5s7 bias=2", 28, "expected 0, 1, false or true for 'bias', got '2'"},
      {"n8c64h512w256k128r5s7 dtype=f64", 29, "expected f32, f16 or bf16 for 'dtype', got 'f64'"},
      {"n8c64h512w256k128r5s7 layout=NCHW", 30, "expected nchw or nhwc for 'layout', got 'NCHW'"},
      {"n8c64h512w256k128r5s7 math=fast", 28, "expected tf32 or strict for 'math', got 'fast'"},
      {"n8c64h512w256k128r5s7 act=gelu", 27, "expected none or relu for 'act', got 'gelu'"},
  };
  for (const auto& c : cases) {
    const ShapeParse parsed = parse_shape_text(c.text);
    ASSERT_FALSE(parsed.desc) << "'" << c.text << "' parsed";
    EXPECT_EQ(parsed.error.column, c.column) << "'" << c.text << "': " << parsed.error.message;
    EXPECT_NE(parsed.error.message.find(c.message_part), std::string::npos)
        << "'" << c.text << "'\n  got:      " << parsed.error.message << "\n  expected: " << c.message_part;
  }
}

TEST(ShapeText, ParseShapeThrowsInvalidArgumentWithOriginLineAndColumn) {
  try {
    parse_shape("n8c64h512w256k128r5s7 strid=1", "--shape", 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()).rfind("--shape:1:23: unknown key 'strid'", 0), 0u) << e.what();
  }
}

TEST(ShapeText, ShapeListSkipsCommentsAndBlankLinesAndKeepsLineNumbers) {
  const auto lines =
      parse_shape_lines("# KernelBench headline\n\nn8c64h512w256k128r5s7  # 56\r\n   \nc3h32k8r3\n", "shapes.txt");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].line, 3);
  EXPECT_EQ(lines[0].desc, headline());
  EXPECT_EQ(lines[1].line, 5);
  EXPECT_EQ(lines[1].desc.c, 3);
}

TEST(ShapeText, ShapeListErrorNamesFileLineAndColumn) {
  try {
    parse_shape_lines("c3h32k8r3\n# fine\nn8c64h512w256k128r5s7 stride=2 dtype=f8\n", "shapes.txt");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("shapes.txt:3:38: expected f32, f16 or bf16 for 'dtype', got 'f8'", 0), 0u)
        << e.what();
  }
}

// Values past int's range are refused while the digits are read, in every field: no
// conversion ever sees them (issue 12 asks the same of workload files).
TEST(ShapeText, NumbersTooLargeForIntAreRejectedInEveryFieldWithTheirColumn) {
  const Malformed cases[] = {
      {"c4294967304h1k1r1", 2, "expected input channels after 'c' from 1 to 2147483647, got '4294967304'"},
      {"c1h2147483648k1r1", 4, "expected input height after 'h' from 1 to 2147483647, got '2147483648'"},
      {"c1h1k1r1s99999999999999999999999", 10, "expected filter width after 's' from 1 to 2147483647"},
      {"c1h1k1r1 stride=1,4294967304", 19, "expected the second value of 'stride' from 1 to 2147483647"},
      {"c1h1k1r1 pad=2147483648", 14, "expected the value of 'pad' from 0 to 2147483647, got '2147483648'"},
      {"c1h1k1r1 dilation=4294967304,1", 19, "expected the value of 'dilation' from 1 to 2147483647"},
      {"c1h1k1r1 groups=18446744073709551617", 17, "expected the value of 'groups' from 1 to 2147483647"},
  };
  for (const auto& c : cases) {
    const ShapeParse parsed = parse_shape_text(c.text);
    ASSERT_FALSE(parsed.desc) << "'" << c.text << "' parsed";
    EXPECT_EQ(parsed.error.column, c.column) << "'" << c.text << "': " << parsed.error.message;
    EXPECT_NE(parsed.error.message.find(c.message_part), std::string::npos)
        << "'" << c.text << "'\n  got:      " << parsed.error.message << "\n  expected: " << c.message_part;
  }
  EXPECT_EQ(parse_shape("c2147483647h1k1r1").c, 2147483647);
}

TEST(ShapeText, ShapeListInvalidProblemNamesFileLineAndColumn) {
  try {
    parse_shape_lines("c3h32k8r3\n\t c4h8k6r3 groups=4  # groups must divide k\n", "shapes.txt");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_STREQ(e.what(), "shapes.txt:2:3: invalid problem: Conv2dDesc.groups: expected a divisor of k = 6, got 4");
  }
  // A layout this version cannot run is not invalid: prewarm counts it as unsupported.
  EXPECT_EQ(parse_shape_lines("c3h32k8r3 layout=nhwc\n", "shapes.txt").size(), 1u);
}

TEST(ShapeText, ToStringRoundTripsForEveryKernelBenchProblemOfEveryRankAndDirection) {
  const auto problems = testing::kernelbench_problems();
  ASSERT_EQ(problems.size(), 36u);  // 35 problems, the separable one as two
  for (const auto& p : problems) {
    EXPECT_EQ(parse_shape(p.desc.to_string()), p.desc) << p.name << ": " << p.desc.to_string();
    EXPECT_EQ(parse_shape(to_short_string(p.desc)), p.desc) << p.name << ": " << to_short_string(p.desc);
  }
}

TEST(ShapeText, TheHeadsLettersGiveTheRank) {
  EXPECT_EQ(parse_shape("n32c64w131072k128s3"),
            (Conv2dDesc{.n = 32, .c = 64, .w = 131072, .k = 128, .s = 3, .spatial_dims = 1}));
  EXPECT_EQ(
      parse_shape("n16c3d64h64w64k64t3r3s3"),
      (Conv2dDesc{.n = 16, .c = 3, .h = 64, .w = 64, .k = 64, .r = 3, .s = 3, .spatial_dims = 3, .d = 64, .t = 3}));
  // 3-D: an omitted extent repeats the one before it (h = d, w = h, r = t, s = r).
  EXPECT_EQ(parse_shape("c3d8k4t3"), parse_shape("n1c3d8h8w8k4t3r3s3"));
  EXPECT_EQ(parse_shape("c3d8h6k4t3s1"), parse_shape("n1c3d8h6w6k4t3r3s1"));
}

TEST(ShapeText, ThreeValuesAreDepthHeightWidthAndTransposedTakesOutputPadding) {
  const auto d = parse_shape("n8c32d12h24w48k32t3r5s7 stride=2 pad=1,2,3 groups=4 transposed=1 output_padding=1,0,1");
  EXPECT_EQ(d.stride_d, 2);
  EXPECT_EQ(d.stride_w, 2);
  EXPECT_EQ(d.pad_d, 1);
  EXPECT_EQ(d.pad_h, 2);
  EXPECT_EQ(d.pad_w, 3);
  EXPECT_TRUE(d.transposed);
  EXPECT_EQ(d.output_padding_d, 1);
  EXPECT_EQ(d.output_padding_h, 0);
  EXPECT_EQ(d.output_padding_w, 1);
  const auto one_d = parse_shape("n16c32w131072k64s3 stride=2 pad=1 dilation=2 transposed=true");
  EXPECT_EQ(one_d.stride_w, 2);
  EXPECT_EQ(one_d.stride_h, 1);
  EXPECT_EQ(one_d.dilation_w, 2);
  EXPECT_TRUE(one_d.transposed);
}

TEST(ShapeText, MalformedRanksAndOutputPaddingNameTheColumn) {
  const struct {
    const char* text;
    int column;
    const char* message_part;
  } cases[] = {
      {"c4w16k8", 8, "expected 's' (filter width), got end of text"},
      {"c4d8h8w8k8r3", 11, "expected 't' (filter depth), got 'r3'"},
      {"c4w16k8s3 stride=2,2", 19, "expected at most one value (w) for 'stride', got a second"},
      {"c4d8k8t3 pad=1,2", 17, "expected one value or 3 for 'pad' in 3-D, got 2"},
      {"c4d8k8t3 pad=1,2,3,4", 19, "expected at most three values (d,h,w) for 'pad', got a fourth"},
      {"c4h8k8r3 output_padding=1", 10, "'output_padding' needs transposed=1"},
      {"c4h8k8r3 transposed=2", 21, "expected 0, 1, false or true for 'transposed', got '2'"},
  };
  for (const auto& c : cases) {
    const auto parsed = parse_shape_text(c.text);
    ASSERT_FALSE(parsed.desc.has_value()) << c.text;
    EXPECT_EQ(parsed.error.column, c.column) << "'" << c.text << "': " << parsed.error.message;
    EXPECT_NE(parsed.error.message.find(c.message_part), std::string::npos)
        << "'" << c.text << "'\n  got:      " << parsed.error.message << "\n  expected: " << c.message_part;
  }
}

}  // namespace
}  // namespace convjit
