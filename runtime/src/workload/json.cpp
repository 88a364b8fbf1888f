#include "workload/json.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include "base/fail.hpp"

namespace convjit::json {

const Value* Value::find(std::string_view name) const {
  if (!is_object()) return nullptr;
  const auto& obj = object();
  auto it = obj.find(name);
  return it == obj.end() ? nullptr : &it->second;
}

bool Value::written_as_integer() const {
  if (!is_number()) return false;
  const std::string_view digits = std::string_view(token).substr(token.starts_with('-') ? 1 : 0);
  return !digits.empty() && digits.find_first_not_of("0123456789") == std::string_view::npos;
}

std::optional<long long> Value::integer(long long min, long long max) const {
  // "8.0" and "8e0" are not integers as written, and parsing the token (not the
  // double) keeps 9007199254740993 from passing as ...992.
  if (!written_as_integer()) return std::nullopt;
  long long value = 0;
  const auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
  if (ec != std::errc() || end != token.data() + token.size() || value < min || value > max) return std::nullopt;
  return value;
}

std::string Value::describe() const {
  if (is_number()) return token;
  if (is_string()) {
    constexpr std::size_t kShown = 40;
    const std::string& text = string();
    return text.size() <= kShown ? fmt::format("\"{}\"", text) : fmt::format("\"{}...\"", text.substr(0, kShown));
  }
  if (is_bool()) return boolean() ? "true" : "false";
  if (is_array()) return "an array";
  if (is_object()) return "an object";
  return "null";
}

namespace {
class Parser {
 public:
  Parser(std::string_view text, std::string_view origin) : text_(text), origin_(origin) {
    for (std::size_t i = 0; i < text_.size(); ++i) {
      if (text_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  Value document() {
    Value value = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) error("end of input");
    return value;
  }

 private:
  // 1-based line and column (in bytes) of offset `at`.
  std::pair<int, int> position(std::size_t at) const {
    const auto next = std::upper_bound(line_starts_.begin(), line_starts_.end(), at);
    const std::size_t line_start = *(next - 1);
    return {static_cast<int>(next - line_starts_.begin()), static_cast<int>(at - line_start) + 1};
  }

  [[noreturn]] void error(std::string_view expected) const {
    const std::string got = pos_ < text_.size() ? fmt::format("'{}'", text_[pos_]) : "end of input";
    error_at(pos_, fmt::format("expected {}, got {}", expected, got));
  }

  [[noreturn]] void error_at(std::size_t at, std::string_view message) const {
    const auto [line, column] = position(std::min(at, text_.size()));
    fail(ErrorCode::kInvalidArgument, "{}:{}:{}: {}", origin_, line, column, message);
  }

  void skip_space() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\t' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool consume(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  Value parse_value(int depth) {
    if (depth > 64) error("nesting of at most 64 levels");
    skip_space();
    if (pos_ >= text_.size()) error("a value");
    const auto [line, column] = position(pos_);
    Value value = parse_bare_value(depth);
    value.line = line;
    value.column = column;
    return value;
  }

  Value parse_bare_value(int depth) {
    const char c = text_[pos_];
    if (c == '{') return parse_object(depth);
    if (c == '[') return parse_array(depth);
    if (c == '"') return Value{parse_string()};
    if (consume("true")) return Value{true};
    if (consume("false")) return Value{false};
    if (consume("null")) return Value{nullptr};
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
    error("a value");
  }

  bool digit_at(std::size_t at) const { return at < text_.size() && text_[at] >= '0' && text_[at] <= '9'; }
  void skip_digits() {
    while (digit_at(pos_)) ++pos_;
  }

  // RFC 8259: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
  Value parse_number() {
    const std::size_t start = pos_;
    if (text_[pos_] == '-') ++pos_;
    if (!digit_at(pos_)) error("a digit");
    if (text_[pos_] == '0' && digit_at(pos_ + 1)) error_at(pos_, "expected a number without leading zeros");
    skip_digits();
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      if (!digit_at(pos_)) error("a digit after the decimal point");
      skip_digits();
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (!digit_at(pos_)) error("a digit in the exponent");
      skip_digits();
    }
    std::string token(text_.substr(start, pos_ - start));
    // NOTE: from_chars, not strtod: independent of the locale ("8,5" in de_DE).
    double value = 0;
    const auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
    if (ec == std::errc::result_out_of_range) {
      // Too large in magnitude or too small: the token stays exact for integer checks.
      const bool tiny = token.find("e-") != std::string::npos || token.find("E-") != std::string::npos;
      value = tiny ? 0.0 : (token.starts_with('-') ? -HUGE_VAL : HUGE_VAL);
    } else if (ec != std::errc() || end != token.data() + token.size()) {
      pos_ = start;
      error("a number");
    }
    return Value{value, 0, 0, std::move(token)};
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (pos_ < text_.size() && text_[pos_] != '"') {
      char c = text_[pos_++];
      if (static_cast<unsigned char>(c) < 0x20) {
        --pos_;
        error("a printable character in a string");
      }
      if (c == '\\') {
        if (pos_ >= text_.size()) error("an escape sequence");
        const char e = text_[pos_++];
        switch (e) {
          case '"':
          case '\\':
          case '/':
            out.push_back(e);
            break;
          case 'n':
            out.push_back('\n');
            break;
          case 't':
            out.push_back('\t');
            break;
          case 'r':
            out.push_back('\r');
            break;
          case 'b':
            out.push_back('\b');
            break;
          case 'f':
            out.push_back('\f');
            break;
          case 'u': {
            unsigned code = 0;
            if (pos_ + 4 > text_.size() ||
                std::from_chars(text_.data() + pos_, text_.data() + pos_ + 4, code, 16).ptr !=
                    text_.data() + pos_ + 4) {
              error("four hex digits after \\u");
            }
            pos_ += 4;
            // Workload names are ASCII; other code points are kept as '?'.
            out.push_back(code < 0x80 ? static_cast<char>(code) : '?');
            break;
          }
          default:
            --pos_;
            error("a valid escape sequence");
        }
      } else {
        out.push_back(c);
      }
    }
    if (pos_ >= text_.size()) error("a closing '\"'");
    ++pos_;
    return out;
  }

  Value parse_array(int depth) {
    ++pos_;
    Array items;
    skip_space();
    if (consume("]")) return Value{std::move(items)};
    while (true) {
      items.push_back(parse_value(depth + 1));
      skip_space();
      if (consume("]")) return Value{std::move(items)};
      if (!consume(",")) error("',' or ']'");
    }
  }

  Value parse_object(int depth) {
    ++pos_;
    Object members;
    std::map<std::string, std::size_t, std::less<>> name_positions;  // where each member's name starts
    skip_space();
    if (consume("}")) return Value{std::move(members)};
    while (true) {
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != '"') error("a member name in quotes");
      const std::size_t name_at = pos_;
      std::string name = parse_string();
      if (const auto first = name_positions.find(name); first != name_positions.end()) {
        const auto [line, column] = position(first->second);
        error_at(name_at,
                 fmt::format("member \"{}\" is given twice in one object (first at {}:{})", name, line, column));
      }
      name_positions.emplace(name, name_at);
      skip_space();
      if (!consume(":")) error("':'");
      members.emplace(std::move(name), parse_value(depth + 1));
      skip_space();
      if (consume("}")) return Value{std::move(members)};
      if (!consume(",")) error("',' or '}'");
    }
  }

  std::string_view text_;
  std::string_view origin_;
  std::size_t pos_ = 0;
  std::vector<std::size_t> line_starts_{0};  // offset of each line's first byte
};
}  // namespace

Value parse(std::string_view text, std::string_view origin) { return Parser(text, origin).document(); }

}  // namespace convjit::json
