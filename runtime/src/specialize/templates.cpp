#include "specialize/templates.hpp"

#include "core/fail.hpp"

namespace convjit {

std::string_view template_text(std::string_view name) {
  for (const auto& file : embedded_templates()) {
    if (file.name == name) return file.text;
  }
  fail(ErrorCode::kInternal, "kernel template '{}' is not embedded in this build", name);
}

}  // namespace convjit
