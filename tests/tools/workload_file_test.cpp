// Workload files (runtime/src/workload/json.cpp, workload_file.cpp): bad input is a
// typed error naming file:line:column and the field, never undefined behaviour or a
// silently different problem.
#include "workload/workload_file.hpp"

#include <gtest/gtest.h>

#include <string>

#include "convjit/error.hpp"
#include "workload/json.hpp"

namespace convjit {
namespace {

// The message of the Error(kInvalidArgument) that parsing `text` throws; "" when none.
std::string workload_error(const std::string& text) {
  try {
    parse_workloads(text, "kb.json");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    return e.what();
  }
  return "";
}

// One 2D problem with `field` (its text, e.g. "\"N\": 8") in place of the default.
std::string problem_with(const std::string& field) {
  std::string fields = R"("op": "conv", "N": 1, "C": 4, "K": 8, "spatial": [8, 8], "kernel": [3, 3], )"
                       R"("stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1, "bias": false)";
  const std::string name = field.substr(0, field.find(':'));
  const std::size_t at = fields.find(name + ":");
  const std::size_t end = fields.find(", \"", at);
  fields.replace(at, (end == std::string::npos ? fields.size() : end) - at, field);
  return "{\"problems\": [\n{" + fields + "}]}";
}

TEST(Json, ValuesKnowTheLineAndColumnWhereTheyStart) {
  const json::Value doc = json::parse("{\"a\": [1,\n   {\"b\": \"x\"}]}", "t.json");
  EXPECT_EQ(doc.line, 1);
  EXPECT_EQ(doc.column, 1);
  const auto& a = doc.find("a")->array();
  EXPECT_EQ(a[0].line, 1);
  EXPECT_EQ(a[0].column, 8);
  EXPECT_EQ(a[1].line, 2);
  EXPECT_EQ(a[1].column, 4);
  EXPECT_EQ(a[1].find("b")->column, 10);
}

TEST(Json, MemberGivenTwiceInOneObjectIsAnErrorNamingBothPlaces) {
  try {
    json::parse("{\"n\": 1,\n \"m\": {\"n\": 2}, \"n\": 3}", "t.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_STREQ(e.what(), "t.json:2:17: member \"n\" is given twice in one object (first at 1:2)");
  }
  // The same name in different objects is fine.
  EXPECT_NO_THROW(json::parse("{\"n\": 1, \"m\": {\"n\": 2}}", "t.json"));
}

TEST(Json, NumbersFollowRfc8259AndKeepTheirText) {
  EXPECT_EQ(json::parse("[-0.5e+3]", "t").array()[0].number(), -500.0);
  EXPECT_EQ(json::parse("[4294967304]", "t").array()[0].token, "4294967304");
  EXPECT_EQ(json::parse("[1e999]", "t").array()[0].token, "1e999");
  const struct {
    const char* text;
    const char* message;
  } bad[] = {
      {"[01]", "t:1:2: expected a number without leading zeros"},
      {"[1.]", "t:1:4: expected a digit after the decimal point, got ']'"},
      {"[-]", "t:1:3: expected a digit, got ']'"},
      {"[1e]", "t:1:4: expected a digit in the exponent, got ']'"},
      {"[+1]", "t:1:2: expected a value, got '+'"},
      {"[.5]", "t:1:2: expected a value, got '.'"},
  };
  for (const auto& b : bad) {
    try {
      json::parse(b.text, "t");
      ADD_FAILURE() << b.text << " parsed";
    } catch (const Error& e) {
      EXPECT_STREQ(e.what(), b.message) << b.text;
    }
  }
}

TEST(Json, IntegerIsExactAndRangeCheckedBeforeAnyConversion) {
  const auto item = [](const char* text) { return json::parse(text, "t").array()[0]; };
  EXPECT_EQ(item("[2147483647]").integer(1, 2147483647), 2147483647);
  EXPECT_EQ(item("[2147483648]").integer(1, 2147483647), std::nullopt);
  EXPECT_EQ(item("[4294967304]").integer(1, 2147483647), std::nullopt);
  EXPECT_EQ(item("[99999999999999999999999]").integer(1, 2147483647), std::nullopt);
  EXPECT_EQ(item("[-1]").integer(0, 2147483647), std::nullopt);
  EXPECT_EQ(item("[8.0]").integer(1, 2147483647), std::nullopt);
  EXPECT_EQ(item("[8e0]").integer(1, 2147483647), std::nullopt);
  EXPECT_EQ(item("[\"8\"]").integer(1, 2147483647), std::nullopt);
}

// Issue 12: a spatial extent of 4294967304 was cast to int with undefined behaviour.
TEST(WorkloadFile, NumberTooLargeForIntIsAnErrorNamingPlaceAndField) {
  EXPECT_EQ(workload_error(problem_with(R"("spatial": [8, 4294967304])")),
            "kb.json:2:55: problems[0]: field 'spatial'[1]: expected an integer from 1 to 2147483647, got 4294967304");
  EXPECT_EQ(workload_error(problem_with(R"("N": 2147483648)")),
            "kb.json:2:21: problems[0]: field 'N': expected an integer from 1 to 2147483647, got 2147483648");
}

TEST(WorkloadFile, EveryFieldRejectsFractionsOutOfRangeValuesAndOtherTypesNamingTheField) {
  const struct {
    const char* field;
    const char* message_part;
  } cases[] = {
      {R"("N": 8.5)", "problems[0]: field 'N': expected an integer, got 8.5"},
      {R"("N": 8.0)", "problems[0]: field 'N': expected an integer, got 8.0"},
      {R"("C": -4)", "problems[0]: field 'C': expected an integer from 1 to 2147483647, got -4"},
      {R"("K": 0)", "problems[0]: field 'K': expected an integer from 1 to 2147483647, got 0"},
      {R"("K": "eight")", "problems[0]: field 'K': expected an integer, got \"eight\""},
      {R"("kernel": [3, 1e2])", "problems[0]: field 'kernel'[1]: expected an integer, got 1e2"},
      {R"("stride": [0, 1])", "problems[0]: field 'stride'[0]: expected an integer from 1 to 2147483647, got 0"},
      {R"("padding": [-1, 0])", "problems[0]: field 'padding'[0]: expected an integer from 0 to 2147483647, got -1"},
      {R"("dilation": [1, null])", "problems[0]: field 'dilation'[1]: expected an integer, got null"},
      {R"("groups": -2)", "problems[0]: field 'groups': expected an integer from 1 to 2147483647, got -2"},
      {R"("spatial": 8)", "problems[0]: field 'spatial': expected an array of integers, got 8"},
      {R"("kernel": [3, 3, 3])", "problems[0]: field 'kernel': expected 2 values, one per spatial dimension, got 3"},
      {R"("bias": 1)", "problems[0]: field 'bias': expected true or false, got 1"},
      {R"("op": 5)", "problems[0]: field 'op': expected a string, got 5"},
  };
  for (const auto& c : cases) {
    const std::string message = workload_error(problem_with(c.field));
    EXPECT_EQ(message.rfind("kb.json:2:", 0), 0u) << c.field << ": " << message;
    EXPECT_NE(message.find(c.message_part), std::string::npos)
        << c.field << "\n  got:      " << message << "\n  expected: " << c.message_part;
  }
}

TEST(WorkloadFile, MissingFieldIsNamedAtTheProblem) {
  EXPECT_EQ(workload_error("{\"problems\": [\n  {\"op\": \"conv\", \"spatial\": [8, 8]}]}"),
            "kb.json:2:3: problems[0]: field 'kernel': expected an array of integers, got nothing (the field is "
            "missing)");
}

TEST(WorkloadFile, InvalidProblemIsAnErrorAtTheProblemsLineAndColumn) {
  // Every field is in range, but groups = 3 divides neither C = 4 nor K = 8.
  EXPECT_EQ(workload_error(R"({"problems": [
  {"id": 3, "name": "odd_groups", "op": "conv", "N": 1, "C": 4, "K": 8, "spatial": [8, 8], "kernel": [3, 3],
   "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 3}]})"),
            "kb.json:2:3: problems[0] (#3 odd_groups): invalid problem: Conv2dDesc.groups: expected a divisor of c = "
            "4, got 3");
  // A separable problem is checked half by half, its depthwise half before that half's
  // output extents size the pointwise one.
  EXPECT_EQ(workload_error(R"({"problems": [{"op": "separable", "N": 1, "C": 4, "K": 8, "spatial": [8, 8],
    "kernel": [9, 9], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1]}]})")
                .rfind("kb.json:1:15: problems[0] (problem): invalid problem: Conv2dDesc.h: padded input height 8", 0),
            0u);
}

TEST(WorkloadFile, LayoutFieldIsOptionalAndCarriedToBothHalvesOfASeparableProblem) {
  const auto plain = parse_workloads(problem_with(R"("bias": false)"), "kb.json");
  ASSERT_EQ(plain.size(), 1u);
  EXPECT_EQ(plain[0].descs.at(0).layout, Layout::kNCHW);
  const auto nhwc = parse_workloads(problem_with(R"("bias": false, "layout": "nhwc")"), "kb.json");
  EXPECT_EQ(nhwc[0].descs.at(0).layout, Layout::kNHWC);
  const auto separable = parse_workloads(R"({"problems": [{"op": "separable", "N": 1, "C": 4, "K": 8,
    "spatial": [8, 8], "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
    "layout": "nhwc"}]})",
                                         "kb.json");
  ASSERT_EQ(separable[0].descs.size(), 2u);
  EXPECT_EQ(separable[0].descs[0].layout, Layout::kNHWC);
  EXPECT_EQ(separable[0].descs[1].layout, Layout::kNHWC);
  const std::string bad = workload_error(problem_with(R"("bias": false, "layout": "chwn")"));
  EXPECT_NE(bad.find("kb.json:2:"), std::string::npos) << bad;
  EXPECT_NE(bad.find("problems[0]: field 'layout': expected \"nchw\" or \"nhwc\""), std::string::npos) << bad;
  EXPECT_NE(workload_error(problem_with(R"("bias": false, "layout": 1)")).find("field 'layout'"), std::string::npos);
}

TEST(WorkloadFile, BatchFieldMakesBothHalvesOfASeparableProblemDynamicAndRejectsOtherValues) {
  EXPECT_FALSE(parse_workloads(problem_with(R"("bias": false)"), "kb.json")[0].descs.at(0).dynamic_batch);
  EXPECT_FALSE(
      parse_workloads(problem_with(R"("bias": false, "batch": "static")"), "kb.json")[0].descs.at(0).dynamic_batch);
  EXPECT_TRUE(
      parse_workloads(problem_with(R"("bias": false, "batch": "dynamic")"), "kb.json")[0].descs.at(0).dynamic_batch);
  const auto separable = parse_workloads(R"({"problems": [{"op": "separable", "N": 16, "C": 4, "K": 8,
    "spatial": [8, 8], "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
    "batch": "dynamic"}]})",
                                         "kb.json");
  ASSERT_EQ(separable[0].descs.size(), 2u);
  EXPECT_TRUE(separable[0].descs[0].dynamic_batch);
  EXPECT_TRUE(separable[0].descs[1].dynamic_batch);
  EXPECT_EQ(separable[0].descs[1].n, 16);
  const std::string bad = workload_error(problem_with(R"("bias": false, "batch": "any")"));
  EXPECT_NE(bad.find("problems[0]: field 'batch': expected \"static\" or \"dynamic\", got"), std::string::npos) << bad;
  EXPECT_NE(workload_error(problem_with(R"("bias": false, "batch": true)")).find("field 'batch'"), std::string::npos);
}

TEST(WorkloadFile, OpsConvjitCannotRunAreStillSkippedNotErrors) {
  const auto problems =
      parse_workloads(R"({"problems": [{"id": 2, "op": "max_pool", "spatial": [8, 8, 8]}]})", "kb.json");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].skipped, "op 'max_pool' is not supported (conv, conv_transpose and separable are)");
}

TEST(WorkloadFile, OneAndThreeDimensionalAndTransposedProblemsBecomeDescriptors) {
  const auto problems = parse_workloads(R"({"problems": [
    {"id": 67, "op": "conv", "N": 32, "C": 64, "K": 128, "spatial": [131072], "kernel": [3], "stride": [1],
     "padding": [0], "dilation": [1], "groups": 1, "bias": false},
    {"id": 72, "op": "conv_transpose", "N": 8, "C": 32, "K": 32, "spatial": [12, 24, 48], "kernel": [3, 5, 7],
     "stride": [2, 2, 2], "padding": [1, 2, 3], "dilation": [1, 1, 1], "groups": 4, "output_padding": [1, 1, 1],
     "bias": false},
    {"id": 75, "op": "conv_transpose", "N": 16, "C": 32, "K": 64, "spatial": [128, 256], "kernel": [3, 5],
     "stride": [2, 3], "padding": [1, 2], "dilation": [2, 1], "groups": 4, "output_padding": [0, 0]}]})",
                                        "kb.json");
  ASSERT_EQ(problems.size(), 3u);
  EXPECT_EQ(problems[0].descs.at(0), (Conv2dDesc{.n = 32, .c = 64, .w = 131072, .k = 128, .s = 3, .spatial_dims = 1}));
  EXPECT_EQ(problems[1].descs.at(0), (Conv2dDesc{.n = 8,
                                                 .c = 32,
                                                 .h = 24,
                                                 .w = 48,
                                                 .k = 32,
                                                 .r = 5,
                                                 .s = 7,
                                                 .stride_h = 2,
                                                 .stride_w = 2,
                                                 .pad_h = 2,
                                                 .pad_w = 3,
                                                 .groups = 4,
                                                 .spatial_dims = 3,
                                                 .d = 12,
                                                 .t = 3,
                                                 .stride_d = 2,
                                                 .pad_d = 1,
                                                 .transposed = true,
                                                 .output_padding_d = 1,
                                                 .output_padding_h = 1,
                                                 .output_padding_w = 1}));
  // PyTorch's output: (in - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1.
  EXPECT_EQ(problems[1].descs.at(0).output_shape(), (Conv2dOutputShape{8, 32, 48, 96, 24}));
  EXPECT_EQ(problems[2].descs.at(0).output_shape(), (Conv2dOutputShape{16, 64, 257, 766, 1}));
}

TEST(WorkloadFile, ListsOfTheWrongRankAndOutputPaddingOnAForwardProblemAreNamed) {
  const std::string wrong_rank = workload_error(R"({"problems": [{"op": "conv", "N": 1, "C": 4, "K": 8,
    "spatial": [8, 8, 8], "kernel": [3, 3], "stride": [1, 1, 1], "padding": [0, 0, 0], "dilation": [1, 1, 1]}]})");
  EXPECT_NE(wrong_rank.find("field 'kernel': expected 3 values, one per spatial dimension, got 2"), std::string::npos)
      << wrong_rank;
  const std::string forward_op = workload_error(R"({"problems": [{"op": "conv", "N": 1, "C": 4, "K": 8,
    "spatial": [8], "kernel": [3], "stride": [2], "padding": [0], "dilation": [1], "output_padding": [1]}]})");
  EXPECT_NE(forward_op.find("field 'output_padding': only a conv_transpose has one"), std::string::npos) << forward_op;
  const std::string too_big = workload_error(R"({"problems": [{"op": "conv_transpose", "N": 1, "C": 4, "K": 8,
    "spatial": [8], "kernel": [3], "stride": [2], "padding": [0], "dilation": [1], "output_padding": [2]}]})");
  EXPECT_NE(too_big.find("Conv2dDesc.output_padding_w: expected less than the stride (2) or the dilation (1)"),
            std::string::npos)
      << too_big;
}

TEST(WorkloadFile, EveryKernelBenchLevel1ConvolutionIsADescriptorNoneSkipped) {
  const auto problems = load_workloads(CONVJIT_WORKLOADS_FILE);
  EXPECT_EQ(problems.size(), 35u);
  int transposed = 0, three_d = 0, one_d = 0;
  for (const auto& p : problems) {
    EXPECT_TRUE(p.skipped.empty()) << p.id << ": " << p.skipped;
    for (const auto& d : p.descs) {
      EXPECT_NO_THROW(d.validate()) << d.to_string();
      transposed += d.transposed ? 1 : 0;
      three_d += d.spatial_dims == 3 ? 1 : 0;
      one_d += d.spatial_dims == 1 ? 1 : 0;
    }
  }
  EXPECT_EQ(transposed, 17);
  EXPECT_EQ(three_d, 4 + 7);  // forward, and transposed
  EXPECT_EQ(one_d, 2 + 3);
}

}  // namespace
}  // namespace convjit
