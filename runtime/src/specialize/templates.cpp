#include "specialize/templates.hpp"

#include <vector>

#include "base/fail.hpp"

namespace convjit {

std::span<const TemplateFile> embedded_headers() {
  static const std::vector<TemplateFile> kHeaders = [] {
    std::vector<TemplateFile> headers;
    for (const auto& file : embedded_templates()) {
      if (file.name.ends_with(".cuh")) headers.push_back(file);
    }
    return headers;
  }();
  return kHeaders;
}

std::string_view template_text(std::string_view name) {
  for (const auto& file : embedded_templates()) {
    if (file.name == name) return file.text;
  }
  fail(ErrorCode::kInternal, "kernel template '{}' is not embedded in this build", name);
}

}  // namespace convjit
