#pragma once
// What the kernel tests read back from a specialization: a constant of its prologue.

#include <string>

#include "specialize/specialized_source.hpp"

namespace convjit::testing {

// The value of `enum : <type> { <name> = ... };` in src's prologue, as written;
// "<absent>" when the source has no such constant.
inline std::string prologue_constant(const Specialization& src, const std::string& type, const std::string& name) {
  const std::string needle = "enum : " + type + " { " + name + " = ";
  const auto at = src.source.text.find(needle);
  if (at == std::string::npos) return "<absent>";
  return src.source.text.substr(at + needle.size(), src.source.text.find(" };", at) - at - needle.size());
}

}  // namespace convjit::testing
