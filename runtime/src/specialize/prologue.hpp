#pragma once
// Builds the constexpr prologue that fixes a template's values. One literal
// printer per value type, so every template spells its constants the same way.

#include <cstdint>
#include <string>
#include <string_view>

namespace convjit {

class Prologue {
 public:
  explicit Prologue(std::string_view kernel_name);
  Prologue& constant(std::string_view name, int value);
  Prologue& constant(std::string_view name, bool value);
  // The prologue text followed by the template.
  std::string finish(std::string_view template_text) const;

 private:
  std::string head_;
  std::string constants_;
};

}  // namespace convjit
