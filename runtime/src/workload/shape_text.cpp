#include "workload/shape_text.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <climits>

#include "base/fail.hpp"

namespace convjit {

namespace {

struct HeadField {
  char letter;
  std::string_view meaning;
  bool optional;  // n defaults to 1; an omitted extent to the one before it (w to h, s to r)
  int Conv2dDesc::*member;
};

// One head per spatial rank; the letters it has say which (docs/cli.md): 2-D is
// n c h w k r s; 1-D n c w k s (no h, no r); 3-D n c d h w k t r s.
constexpr std::array<HeadField, 7> kHead = {{
    {'n', "batch", true, &Conv2dDesc::n},
    {'c', "input channels", false, &Conv2dDesc::c},
    {'h', "input height", false, &Conv2dDesc::h},
    {'w', "input width", true, &Conv2dDesc::w},
    {'k', "output channels", false, &Conv2dDesc::k},
    {'r', "filter height", false, &Conv2dDesc::r},
    {'s', "filter width", true, &Conv2dDesc::s},
}};
constexpr std::array<HeadField, 5> kHead1d = {{
    {'n', "batch", true, &Conv2dDesc::n},
    {'c', "input channels", false, &Conv2dDesc::c},
    {'w', "input width", false, &Conv2dDesc::w},
    {'k', "output channels", false, &Conv2dDesc::k},
    {'s', "filter width", false, &Conv2dDesc::s},
}};
constexpr std::array<HeadField, 9> kHead3d = {{
    {'n', "batch", true, &Conv2dDesc::n},
    {'c', "input channels", false, &Conv2dDesc::c},
    {'d', "input depth", false, &Conv2dDesc::d},
    {'h', "input height", true, &Conv2dDesc::h},
    {'w', "input width", true, &Conv2dDesc::w},
    {'k', "output channels", false, &Conv2dDesc::k},
    {'t', "filter depth", false, &Conv2dDesc::t},
    {'r', "filter height", true, &Conv2dDesc::r},
    {'s', "filter width", true, &Conv2dDesc::s},
}};

constexpr std::string_view kKeys =
    "stride, pad, dilation, groups, bias, dtype, layout, math, act, transposed, output_padding, batch";
constexpr std::size_t kKeyCount = 12;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Thrown inside the parser only; parse_shape_text turns it into a value.
struct ParseStop {
  ShapeTextError error;
};

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Conv2dDesc parse() {
    Conv2dDesc desc;
    skip_space();
    if (at_end()) stop(pos_, "expected a shape such as n8c64h512w256k128r5s7, got end of text");
    parse_head(desc);
    // Column of each key's first use, to name both places when one is given twice.
    std::array<std::size_t, kKeyCount> seen{};
    while (true) {
      skip_space();
      if (at_end()) break;
      parse_option(desc, seen);
    }
    if (!desc.transposed && seen[10] != 0) {
      stop(seen[10] - 1, "'output_padding' needs transposed=1");
    }
    return desc;
  }

 private:
  [[noreturn]] void stop(std::size_t at, std::string message) const {
    throw ParseStop{ShapeTextError{static_cast<int>(at) + 1, std::move(message)}};
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }
  void skip_space() {
    while (!at_end() && is_space(text_[pos_])) ++pos_;
  }

  // The token starting at `at`, for "got '...'" in messages.
  std::string got(std::size_t at) const {
    if (at >= text_.size()) return "end of text";
    if (is_space(text_[at])) return "a space";
    std::size_t end = at;
    while (end < text_.size() && !is_space(text_[end]) && end - at < 24) ++end;
    return fmt::format("'{}'", text_.substr(at, end - at));
  }

  int parse_int(int min, std::string_view what) {
    const std::size_t start = pos_;
    long long value = 0;
    while (!at_end() && is_digit(peek())) {
      value = value * 10 + (peek() - '0');
      if (value > INT_MAX) {
        while (!at_end() && is_digit(peek())) ++pos_;
        stop(start,
             fmt::format("expected {} from {} to {}, got '{}'", what, min, INT_MAX, text_.substr(start, pos_ - start)));
      }
      ++pos_;
    }
    if (pos_ == start) stop(start, fmt::format("expected {} (a number), got {}", what, got(start)));
    if (value < min) stop(start, fmt::format("expected {} >= {}, got {}", what, min, value));
    return static_cast<int>(value);
  }

  // The rank is read off the head's letters before it is parsed: a 'd' or 't' makes it
  // 3-D; 'w' with neither 'h' nor 'r' 1-D; anything else 2-D, whose messages name the
  // 2-D letters.
  void parse_head(Conv2dDesc& desc) {
    std::size_t end = pos_;
    while (end < text_.size() && !is_space(text_[end])) ++end;
    const std::string_view head = text_.substr(pos_, end - pos_);
    auto has = [&](char letter) { return head.find(letter) != std::string_view::npos; };
    if (has('d') || has('t')) {
      desc.spatial_dims = 3;
      parse_fields(desc, kHead3d, "n c d h w k t r s");
    } else if (has('w') && !has('h') && !has('r')) {
      desc.spatial_dims = 1;
      parse_fields(desc, kHead1d, "n c w k s");
    } else {
      parse_fields(desc, kHead, "n c h w k r s");
    }
  }

  template <std::size_t N>
  void parse_fields(Conv2dDesc& desc, const std::array<HeadField, N>& fields, std::string_view order) {
    std::array<bool, N> given{};
    std::string letters;
    for (const auto& f : fields) letters += f.letter;
    std::string pending;  // optional fields skipped since the last match, for the message
    for (std::size_t i = 0; i < N; ++i) {
      const HeadField& f = fields[i];
      const std::string here = fmt::format("'{}' ({})", f.letter, f.meaning);
      if (peek() == f.letter) {
        ++pos_;
        desc.*f.member = parse_int(1, fmt::format("{} after '{}'", f.meaning, f.letter));
        given[i] = true;
        pending.clear();
        continue;
      }
      if (f.optional) {
        pending += pending.empty() ? here : ", " + here;
        continue;
      }
      const bool head_letter = letters.find(peek()) != std::string::npos && !at_end();
      stop(pos_, fmt::format("expected {}{}, got {}{}", pending.empty() ? "" : pending + " or ", here, got(pos_),
                             head_letter ? fmt::format(" (sizes go in the order {})", order) : std::string()));
    }
    if (!at_end() && !is_space(peek())) {
      stop(pos_, fmt::format("expected {}a space before the options, got {}", pending.empty() ? "" : pending + " or ",
                             got(pos_)));
    }
    // An omitted optional extent repeats the one before it (n: 1).
    for (std::size_t i = 0; i < N; ++i) {
      if (given[i]) continue;
      desc.*fields[i].member = i == 0 ? 1 : desc.*fields[i - 1].member;
    }
  }

  // "a", "a,b" (h, w) or "a,b,c" (d, h, w), as many as the rank has; one value sets
  // every dimension, like PyTorch's int-or-tuple arguments.
  void parse_dims(int min, std::string_view key, int dims, int& d, int& h, int& w) {
    std::array<int, 3> values{};
    values[0] = parse_int(min, fmt::format("the value of '{}'", key));
    int count = 1;
    constexpr std::array<std::string_view, 2> kNth = {"second", "third"};
    while (peek() == ',') {
      if (count == dims) {
        const std::string_view names = dims == 1   ? "one value (w)"
                                       : dims == 2 ? "two values (h,w)"
                                                   : "three values (d,h,w)";
        stop(pos_, fmt::format("expected at most {} for '{}', got {}", names, key,
                               count == 1   ? "a second"
                               : count == 2 ? "a third"
                                            : "a fourth"));
      }
      ++pos_;
      values[count] = parse_int(min, fmt::format("the {} value of '{}'", kNth[count - 1], key));
      ++count;
    }
    if (count != 1 && count != dims) {
      stop(pos_, fmt::format("expected one value or {} for '{}' in {}-D, got {}", dims, key, dims, count));
    }
    if (count == 1) values.fill(values[0]);
    if (dims == 1) {
      w = values[0];
    } else if (dims == 2) {
      h = values[0];
      w = values[1];
    } else {
      d = values[0];
      h = values[1];
      w = values[2];
    }
  }

  // A lowercase word value; returns its index in `choices` or stops naming them all.
  template <std::size_t N>
  std::size_t parse_choice(std::string_view key, const std::array<std::string_view, N>& choices) {
    const std::size_t start = pos_;
    while (!at_end() && !is_space(peek())) ++pos_;
    const std::string_view word = text_.substr(start, pos_ - start);
    for (std::size_t i = 0; i < N; ++i) {
      if (word == choices[i]) return i;
    }
    std::string list;
    for (std::size_t i = 0; i < N; ++i)
      list += fmt::format("{}{}", i == 0 ? "" : i + 1 == N ? " or " : ", ", choices[i]);
    stop(start, fmt::format("expected {} for '{}', got {}", list, key, got(start)));
  }

  void parse_option(Conv2dDesc& desc, std::array<std::size_t, kKeyCount>& seen) {
    const std::size_t key_start = pos_;
    while (!at_end() && ((peek() >= 'a' && peek() <= 'z') || peek() == '_')) ++pos_;
    std::string_view key = text_.substr(key_start, pos_ - key_start);
    if (key.empty()) stop(key_start, fmt::format("expected an option key=value ({}), got {}", kKeys, got(key_start)));
    if (key == "padding") key = "pad";  // PyTorch's spelling
    if (key == "activation") key = "act";
    static constexpr std::array<std::string_view, kKeyCount> kKnown = {
        "stride", "pad",  "dilation", "groups",     "bias",           "dtype",
        "layout", "math", "act",      "transposed", "output_padding", "batch"};
    std::size_t index = kKnown.size();
    for (std::size_t i = 0; i < kKnown.size(); ++i) {
      if (key == kKnown[i]) index = i;
    }
    if (index == kKnown.size()) {
      stop(key_start,
           fmt::format("unknown key '{}'; expected one of {}", text_.substr(key_start, pos_ - key_start), kKeys));
    }
    if (seen[index] != 0) {
      stop(key_start, fmt::format("'{}' is given twice (first at column {})", key, seen[index]));
    }
    seen[index] = key_start + 1;
    if (peek() != '=') stop(pos_, fmt::format("expected '=' after '{}', got {}", key, got(pos_)));
    ++pos_;

    switch (index) {
      case 0:
        parse_dims(1, key, desc.spatial_dims, desc.stride_d, desc.stride_h, desc.stride_w);
        break;
      case 1:
        parse_dims(0, key, desc.spatial_dims, desc.pad_d, desc.pad_h, desc.pad_w);
        break;
      case 2:
        parse_dims(1, key, desc.spatial_dims, desc.dilation_d, desc.dilation_h, desc.dilation_w);
        break;
      case 3:
        desc.groups = parse_int(1, "the value of 'groups'");
        break;
      case 4:
        desc.bias = parse_choice(key, std::array<std::string_view, 4>{"0", "1", "false", "true"}) % 2 == 1;
        break;
      case 5: {
        constexpr std::array<DType, 3> kTypes = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};
        desc.dtype = kTypes[parse_choice(key, std::array<std::string_view, 3>{"f32", "f16", "bf16"})];
        break;
      }
      case 6:
        desc.layout =
            parse_choice(key, std::array<std::string_view, 2>{"nchw", "nhwc"}) == 0 ? Layout::kNCHW : Layout::kNHWC;
        break;
      case 7:
        desc.math = parse_choice(key, std::array<std::string_view, 2>{"tf32", "strict"}) == 0 ? MathMode::kTF32
                                                                                              : MathMode::kStrictFp32;
        break;
      case 8:
        desc.activation = parse_choice(key, std::array<std::string_view, 2>{"none", "relu"}) == 0 ? Activation::kNone
                                                                                                  : Activation::kRelu;
        break;
      case 9:
        desc.transposed = parse_choice(key, std::array<std::string_view, 4>{"0", "1", "false", "true"}) % 2 == 1;
        break;
      case 10:
        parse_dims(0, key, desc.spatial_dims, desc.output_padding_d, desc.output_padding_h, desc.output_padding_w);
        break;
      case 11:
        // "static" is the default; n is then the only batch. "dynamic": any batch up to n.
        desc.dynamic_batch = parse_choice(key, std::array<std::string_view, 2>{"static", "dynamic"}) == 1;
        break;
    }
    if (!at_end() && !is_space(peek())) {
      stop(pos_, fmt::format("expected a space or the end after the value of '{}', got {}", key, got(pos_)));
    }
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

}  // namespace

ShapeParse parse_shape_text(std::string_view text) {
  try {
    return ShapeParse{Parser(text).parse(), {}};
  } catch (const ParseStop& stop) {
    return ShapeParse{std::nullopt, stop.error};
  }
}

Conv2dDesc parse_shape(std::string_view text, std::string_view origin, int line) {
  ShapeParse parsed = parse_shape_text(text);
  if (!parsed.desc) {
    fail(ErrorCode::kInvalidArgument, "{}:{}:{}: {}", origin, line, parsed.error.column, parsed.error.message);
  }
  return *parsed.desc;
}

std::string to_short_string(const Conv2dDesc& desc) {
  // Token by token against a default descriptor's form, so that a field added to
  // to_string() later is covered without touching this function.
  const std::string full = desc.to_string();
  const std::string defaults = Conv2dDesc{}.to_string();
  auto tokens = [](std::string_view text) {
    std::vector<std::string_view> out;
    for (std::size_t start = 0; start < text.size();) {
      const std::size_t end = std::min(text.find(' ', start), text.size());
      out.push_back(text.substr(start, end - start));
      start = end + 1;
    }
    return out;
  };
  const auto default_tokens = tokens(defaults);
  std::string out;
  for (std::string_view token : tokens(full)) {
    if (!out.empty() && std::find(default_tokens.begin(), default_tokens.end(), token) != default_tokens.end())
      continue;
    if (!out.empty()) out += ' ';
    out += token;
  }
  return out;
}

std::vector<ShapeLine> parse_shape_lines(std::string_view text, std::string_view origin) {
  std::vector<ShapeLine> out;
  int line_number = 0;
  while (!text.empty()) {
    const std::size_t newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text = newline == std::string_view::npos ? std::string_view{} : text.substr(newline + 1);
    ++line_number;
    line = line.substr(0, line.find('#'));
    const std::size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string_view::npos) continue;
    const Conv2dDesc desc = parse_shape(line, origin, line_number);
    // Well formed is not enough for a list of problems to run: an invalid one (groups
    // not dividing the channels, a filter larger than the padded input) is named where
    // it stands, before anything is compiled.
    try {
      desc.validate();
    } catch (const Error& e) {
      if (e.code() == ErrorCode::kInvalidArgument) {
        fail(ErrorCode::kInvalidArgument, "{}:{}:{}: invalid problem: {}", origin, line_number, first + 1, e.what());
      }
      // kUnsupported (a layout this version cannot run) is counted when the problem runs.
      if (e.code() != ErrorCode::kUnsupported) throw;
    }
    out.push_back(ShapeLine{line_number, desc});
  }
  return out;
}

}  // namespace convjit
