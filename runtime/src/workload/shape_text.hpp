#pragma once
// The one-line problem form, the inverse of Conv2dDesc::to_string():
//
//   n8c64h512w256k128r5s7 stride=1 pad=0 dilation=1 groups=1 bias=0 dtype=f32 layout=nchw math=tf32 act=relu
//   n256c256h14w14k256r3s3 pad=1 batch=dynamic     (one kernel for every batch 1..256)
//
// A head of sizes (n, w and s optional: n=1, w=h, s=r) and then key=value options
// in any order, each at most once; what is left out takes Conv2dDesc's defaults.
// Shared by the convjit command, the tests and the benchmarks; docs/cli.md is the
// user-facing description.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convjit/conv2d_desc.hpp"

namespace convjit {

struct ShapeTextError {
  int column = 0;       // 1-based, into the parsed text
  std::string message;  // "expected ..., got ..."
};

// A parse as a value: the problem, or where and why it is not one.
struct ShapeParse {
  std::optional<Conv2dDesc> desc;
  ShapeTextError error;  // meaningful only when !desc
};

// Never throws. Checks syntax and ranges of single fields (sizes >= 1, pad >= 0);
// cross-field checks (groups divides c, output not empty) stay in Conv2dDesc::validate().
ShapeParse parse_shape_text(std::string_view text);

// Throws Error(kInvalidArgument) "<origin>:<line>:<column>: <message>".
Conv2dDesc parse_shape(std::string_view text, std::string_view origin = "shape", int line = 1);

// The one-line form with every option at its default left out, e.g.
// "n2c8h9w9k8r3s3 pad=1 groups=8 bias=1"; parses back to `desc`.
std::string to_short_string(const Conv2dDesc& desc);

struct ShapeLine {
  int line = 0;  // 1-based line number in the list
  Conv2dDesc desc;
};

// One shape per line; '#' starts a comment, blank lines are skipped. Throws
// Error(kInvalidArgument) at the first malformed line, or the first problem that
// Conv2dDesc::validate() rejects as invalid, naming origin:line:column.
std::vector<ShapeLine> parse_shape_lines(std::string_view text, std::string_view origin);

}  // namespace convjit
