#pragma once
// The kernel templates embedded at build time (see kernel_sources/CMakeLists.txt).

#include <span>
#include <string_view>

namespace convjit {

struct TemplateFile {
  std::string_view name;  // file name under kernel_sources/
  std::string_view text;
};

std::span<const TemplateFile> embedded_templates();
// Throws Error(kInternal) when `name` was not embedded.
std::string_view template_text(std::string_view name);

}  // namespace convjit
