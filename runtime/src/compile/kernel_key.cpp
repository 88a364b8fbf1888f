#include "compile/kernel_key.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "base/sha256.hpp"
#include "convjit/version.hpp"
#include "specialize/templates.hpp"

namespace convjit {

namespace {
// The embedded templates' and headers' digests were computed when the library was built:
// a warm start computes a key before it can read the cache. Texts that are not the
// embedded ones (tests give their own) are hashed as given.
std::string text_hash(std::string_view text) {
  for (const auto& file : embedded_templates()) {
    if (file.text.data() == text.data() && file.text.size() == text.size()) return std::string(file.sha256);
  }
  return sha256_hex(text);
}
}  // namespace

KernelKey make_kernel_key(const Conv2dDesc& desc, const SpecializedSource& source, const std::string& arch,
                          const std::vector<std::string>& options, const std::string& nvrtc_version,
                          std::span<const TemplateFile> headers) {
  // The specialized source only names its headers (#include "convjit_device.cuh"), so
  // their text is hashed here: a header edit must miss every cached kernel. Every
  // header, not only the ones this template includes, as NVRTC is given all of them.
  std::string header_lines;
  for (const auto& header : headers) {
    header_lines += fmt::format("header {} sha256:{}\n", header.name, text_hash(header.text));
  }
  // The specialized source is a prologue followed by its template (Prologue::finish),
  // whose digest is already on the template line: the prologue's digest then pins the
  // whole text, and a warm start hashes a few hundred bytes instead of the template again.
  // A source that does not end with its template is hashed whole, under another name.
  const std::string_view template_source = template_text(source.template_name);
  const std::string_view text = source.text;
  const bool prologue_and_template = text.ends_with(template_source);
  const std::string source_line =
      prologue_and_template
          ? fmt::format("prologue sha256:{}", sha256_hex(text.substr(0, text.size() - template_source.size())))
          : fmt::format("source sha256:{}", sha256_hex(text));
  KernelKey key;
  key.text = fmt::format(
      "convjit {}\nproblem {}\ntemplate {} sha256:{}\n{}kernel {}\n{}\narch {}\n"
      "nvrtc {}\noptions {}\n",
      kVersion, desc.to_string(), source.template_name, text_hash(template_source), header_lines, source.kernel_name,
      source_line, arch, nvrtc_version, fmt::join(options, " "));
  key.hash = sha256_hex(key.text);
  return key;
}

}  // namespace convjit
