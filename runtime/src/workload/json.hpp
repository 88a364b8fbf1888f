#pragma once
// A small JSON reader for workload files: enough of RFC 8259 for numbers, strings,
// booleans, null, arrays and objects, with line:column in every error.

#include <map>
#include <memory>
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
};

// Throws Error(kInvalidArgument) "<origin>:<line>:<col>: expected ..., got ...".
Value parse(std::string_view text, std::string_view origin);

}  // namespace convjit::json
