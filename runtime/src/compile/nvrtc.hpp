#pragma once
// NVRTC: specialized source in, PTX and CUBIN out. No GPU needed.

#include <span>
#include <string>
#include <vector>

#include "specialize/templates.hpp"

namespace convjit {

// What one NVRTC run produced; a value, handed forward to the cache and the loader.
// The compile stage's value: what NVRTC made of one specialized source.
struct CompiledKernel {
  std::string ptx;
  std::string cubin;
  std::string log;      // warnings; errors are thrown with the log inside
  std::string options;  // as given to NVRTC, space separated
  double compile_ms = 0;
};

class Nvrtc {
 public:
  // "13.0"
  static std::string version();
  // The options convjit compiles with for `arch` ("sm_90"); part of every cache key.
  static std::vector<std::string> options_for(const std::string& arch);
  // Compiles `source` (named `name` in diagnostics). `headers` are what its
  // `#include "..."` lines resolve to, given to NVRTC in memory: no include path, so
  // the output never depends on the file system. The default, every embedded header,
  // is what make_kernel_key hashes. Throws Error(kCompile) carrying the log and the
  // options on failure.
  static CompiledKernel compile(const std::string& source, const std::string& name,
                                const std::vector<std::string>& options,
                                std::span<const TemplateFile> headers = embedded_headers());
};

// "sm_90" → 90; throws Error(kInvalidArgument) for anything else.

}  // namespace convjit
