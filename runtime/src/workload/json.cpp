#include "workload/json.hpp"

#include <charconv>
#include <cstdlib>

#include "core/fail.hpp"

namespace convjit::json {

const Value* Value::find(std::string_view name) const {
  if (!is_object()) return nullptr;
  const auto& obj = object();
  auto it = obj.find(name);
  return it == obj.end() ? nullptr : &it->second;
}

namespace {
class Parser {
 public:
  Parser(std::string_view text, std::string_view origin) : text_(text), origin_(origin) {}

  Value document() {
    Value value = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) error("end of input");
    return value;
  }

 private:
  [[noreturn]] void error(std::string_view expected) const {
    int line = 1;
    int column = 1;
    for (std::size_t i = 0; i < pos_ && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    const std::string got = pos_ < text_.size() ? fmt::format("'{}'", text_[pos_]) : "end of input";
    fail(ErrorCode::kInvalidArgument, "{}:{}:{}: expected {}, got {}", origin_, line, column, expected, got);
  }

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\r')) {
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

  Value parse_number() {
    const std::size_t start = pos_;
    while (pos_ < text_.size() && std::string_view("+-0123456789.eE").find(text_[pos_]) != std::string_view::npos) {
      ++pos_;
    }
    const std::string token(text_.substr(start, pos_ - start));
    char* end = nullptr;
    const double value = std::strtod(token.c_str(), &end);
    if (end != token.c_str() + token.size()) {
      pos_ = start;
      error("a number");
    }
    return Value{value};
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
          case '"': case '\\': case '/': out.push_back(e); break;
          case 'n': out.push_back('\n'); break;
          case 't': out.push_back('\t'); break;
          case 'r': out.push_back('\r'); break;
          case 'b': out.push_back('\b'); break;
          case 'f': out.push_back('\f'); break;
          case 'u': {
            unsigned code = 0;
            if (pos_ + 4 > text_.size() ||
                std::from_chars(text_.data() + pos_, text_.data() + pos_ + 4, code, 16).ptr != text_.data() + pos_ + 4) {
              error("four hex digits after \\u");
            }
            pos_ += 4;
            // Workload names are ASCII; other code points are kept as '?'.
            out.push_back(code < 0x80 ? static_cast<char>(code) : '?');
            break;
          }
          default: --pos_; error("a valid escape sequence");
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
    skip_space();
    if (consume("}")) return Value{std::move(members)};
    while (true) {
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != '"') error("a member name in quotes");
      std::string name = parse_string();
      skip_space();
      if (!consume(":")) error("':'");
      members.insert_or_assign(std::move(name), parse_value(depth + 1));
      skip_space();
      if (consume("}")) return Value{std::move(members)};
      if (!consume(",")) error("',' or '}'");
    }
  }

  std::string_view text_;
  std::string_view origin_;
  std::size_t pos_ = 0;
};
}  // namespace

Value parse(std::string_view text, std::string_view origin) { return Parser(text, origin).document(); }

}  // namespace convjit::json
