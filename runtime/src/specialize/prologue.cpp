#include "specialize/prologue.hpp"

#include <fmt/format.h>

namespace convjit {

Prologue::Prologue(std::string_view kernel_name)
    : head_(fmt::format("// Specialized by convjit; the template follows the prologue.\n"
                        "#define CONVJIT_SPECIALIZED 1\n#define CONVJIT_KERNEL_NAME {}\n",
                        kernel_name)) {}

Prologue& Prologue::constant(std::string_view name, int value) {
  fmt::format_to(std::back_inserter(constants_), "constexpr int {} = {};\n", name, value);
  return *this;
}

Prologue& Prologue::constant(std::string_view name, bool value) {
  fmt::format_to(std::back_inserter(constants_), "constexpr bool {} = {};\n", name, value ? "true" : "false");
  return *this;
}

std::string Prologue::finish(std::string_view template_text) const {
  return fmt::format("{}namespace spec {{\n{}}}  // namespace spec\n#line 1\n{}", head_, constants_, template_text);
}

}  // namespace convjit
