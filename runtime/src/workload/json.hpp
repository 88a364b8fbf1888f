#pragma once
// A small JSON reader for workload files: enough of RFC 8259 for numbers, strings,
// booleans, null, arrays and objects, with line:column in every error.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace convjit::json {

struct Value;
using Array = std::vector<Value>;
using Object = std::map<std::string, Value, std::less<>>;

struct Value {
  std::variant<std::nullptr_t, bool, double, std::string, Array, Object> data;
  // Where the value starts in the text (1-based), so that a reader of a well-formed
  // document can name the place of a bad field too.
  int line = 0;
  int column = 0;
  // Numbers only: the text as written ("4294967304", "8.0"), for exact integer checks
  // and messages; a double alone cannot say whether "8.0" was written.
  std::string token;

  bool is_object() const { return std::holds_alternative<Object>(data); }
  bool is_array() const { return std::holds_alternative<Array>(data); }
  bool is_number() const { return std::holds_alternative<double>(data); }
  bool is_string() const { return std::holds_alternative<std::string>(data); }
  bool is_bool() const { return std::holds_alternative<bool>(data); }
  const Object& object() const { return std::get<Object>(data); }
  const Array& array() const { return std::get<Array>(data); }
  double number() const { return std::get<double>(data); }
  const std::string& string() const { return std::get<std::string>(data); }
  bool boolean() const { return std::get<bool>(data); }
  // Member lookup; nullptr when absent or not an object.
  const Value* find(std::string_view name) const;
  // A number written as an integer: "-?digits", no fraction, no exponent, any size.
  bool written_as_integer() const;
  // Numbers written as an integer that fit in [min, max];
  // the value then, else nullopt. Never converts an out-of-range double.
  std::optional<long long> integer(long long min, long long max) const;
  // For messages: the number as written, a string in quotes, or "an array", "null", ...
  std::string describe() const;
};

// Throws Error(kInvalidArgument) "<origin>:<line>:<col>: expected ..., got ...", also
// for a member name given twice in one object (RFC 8259 leaves that undefined; a
// workload file must not mean two things).
Value parse(std::string_view text, std::string_view origin);

}  // namespace convjit::json
