#include "compile/kernel_key.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "base/sha256.hpp"
#include "convjit/version.hpp"
#include "specialize/templates.hpp"

namespace convjit {

KernelKey make_kernel_key(const Conv2dDesc& desc, const SpecializedSource& source, const std::string& arch,
                          const std::vector<std::string>& options, const std::string& nvrtc_version,
                          std::span<const TemplateFile> headers) {
  // The specialized source only names its headers (#include "convjit_device.cuh"), so
  // their text is hashed here: a header edit must miss every cached kernel. Every
  // header, not only the ones this template includes, as NVRTC is given all of them.
  std::string header_lines;
  for (const auto& header : headers) {
    header_lines += fmt::format("header {} sha256:{}\n", header.name, sha256_hex(header.text));
  }
  KernelKey key;
  key.text = fmt::format(
      "convjit {}\nproblem {}\ntemplate {} sha256:{}\n{}kernel {}\nsource sha256:{}\narch {}\n"
      "nvrtc {}\noptions {}\n",
      kVersion, desc.to_string(), source.template_name, sha256_hex(template_text(source.template_name)), header_lines,
      source.kernel_name, sha256_hex(source.text), arch, nvrtc_version, fmt::join(options, " "));
  key.hash = sha256_hex(key.text);
  return key;
}

}  // namespace convjit
