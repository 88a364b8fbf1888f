#pragma once
// The kernel templates embedded at build time (see kernel_sources/CMakeLists.txt),
// and the headers they include (the files named *.cuh).

#include <span>
#include <string_view>

namespace convjit {

struct TemplateFile {
  std::string_view name;  // file name under kernel_sources/
  std::string_view text;
  // sha256 of `text` in hex, computed when the library was built (cmake/embed_file.cmake).
  std::string_view sha256;
};

// Every embedded file, templates and headers.
std::span<const TemplateFile> embedded_templates();
// The embedded headers alone (names ending in ".cuh"): what `#include "name"` in a
// template resolves to under NVRTC, and part of every cache key.
std::span<const TemplateFile> embedded_headers();
// The first tier's kernels (kernel_sources/conv_generic.cu), compiled when convjit was
// built: a compressed fatbin the driver loads as it is.
std::string_view first_tier_fatbin();
// Throws Error(kInternal) when `name` was not embedded.
std::string_view template_text(std::string_view name);

}  // namespace convjit
