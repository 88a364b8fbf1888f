#pragma once
// The cache key: everything that changes the binary, as readable text, and its hash.

#include <span>
#include <string>
#include <vector>

#include "specialize/specialized_source.hpp"
#include "specialize/templates.hpp"

namespace convjit {

struct KernelKey {
  std::string text;  // one "field value" per line; stored in the entry and compared in full
  std::string hash;  // sha256 of text, hex; the entry's file name

  bool operator==(const KernelKey&) const = default;
};

// Covers the problem, the template's hash, the full specialized source (so every
// injected constant: the hash of its prologue when it is the prologue and then the
// template, else of the whole text), the hash of every header the compile is given (`headers`, by
// default every embedded one, as Nvrtc::compile), the compile options, the NVRTC
// version, the arch and convjit's version (the cache's own format version keeps its entries apart). Never a path or a
// timestamp.
KernelKey make_kernel_key(const Conv2dDesc& desc, const SpecializedSource& source, const std::string& arch,
                          const std::vector<std::string>& options, const std::string& nvrtc_version,
                          std::span<const TemplateFile> headers = embedded_headers());

}  // namespace convjit
