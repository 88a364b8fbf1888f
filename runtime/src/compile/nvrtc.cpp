#include "compile/nvrtc.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nvrtc.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <regex>
#include <sstream>
#include <string_view>

#include "base/fail.hpp"
#include "specialize/arch.hpp"

namespace convjit {

#define CONVJIT_NVRTC_CHECK(call, ...)                                                                            \
  do {                                                                                                            \
    const nvrtcResult convjit_res_ = (call);                                                                      \
    if (convjit_res_ != NVRTC_SUCCESS) {                                                                          \
      ::convjit::fail(::convjit::ErrorCode::kCompile, "{}: {} failed → {} ({})", fmt::format(__VA_ARGS__), #call, \
                      static_cast<int>(convjit_res_), nvrtcGetErrorString(convjit_res_));                         \
    }                                                                                                             \
  } while (0)

namespace {
struct ProgramDeleter {
  void operator()(nvrtcProgram program) const noexcept { nvrtcDestroyProgram(&program); }
};
using ProgramHandle = std::unique_ptr<_nvrtcProgram, ProgramDeleter>;

std::string read_log(nvrtcProgram program) {
  size_t size = 0;
  if (nvrtcGetProgramLogSize(program, &size) != NVRTC_SUCCESS || size <= 1) return {};
  std::string log(size, '\0');
  if (nvrtcGetProgramLog(program, log.data()) != NVRTC_SUCCESS) return {};
  log.resize(size - 1);
  return log;
}
}  // namespace

std::string Nvrtc::version() {
  int major = 0;
  int minor = 0;
  CONVJIT_NVRTC_CHECK(nvrtcVersion(&major, &minor), "querying the NVRTC version");
  return fmt::format("{}.{}", major, minor);
}

std::vector<std::string> Nvrtc::options_for(const std::string& arch) {
  parse_arch(arch);
  // A real sm_XY target makes NVRTC emit a CUBIN (loaded with no driver JIT) and the PTX.
  // --minimal leaves out of NVRTC's built-in header what no template uses (textures and
  // surfaces, the device runtime, launches from device code, the runtime API's types):
  // the front end does less, and the code it emits is the same (docs/perf.md). NVRTC
  // has it since 12.4; an older one (a Python process may load PyTorch's) goes without.
  static const bool minimal = [] {
    int major = 0;
    int minor = 0;
    return nvrtcVersion(&major, &minor) == NVRTC_SUCCESS && (major > 12 || (major == 12 && minor >= 4));
  }();
  // -lineinfo stays: NVVM's code depends on it (a transposed f16 mma.sync kernel spills
  // without it), so without it every kernel measured so far would be another kernel. But
  // ptxas leaves the line table out of the CUBIN (--suppress-debug-info): the same code
  // in a third of the bytes, which a warm start reads, checks and loads (docs/perf.md,
  // "Start-up"). The PTX keeps its .loc lines. CONVJIT_CUBIN_LINE_TABLE=1 keeps the
  // table too, for a profiler's source view (an option, so part of the cache key).
  std::vector<std::string> options = {"--gpu-architecture=" + arch, "--std=c++17", "-lineinfo", "--ptxas-options=-v"};
  static const bool line_table = [] {
    const char* env = std::getenv("CONVJIT_CUBIN_LINE_TABLE");
    return env != nullptr && std::string_view(env) == "1";
  }();
  if (!line_table) options.emplace_back("--ptxas-options=--suppress-debug-info");
  if (minimal) options.insert(options.begin() + 2, "--minimal");
  // CONVJIT_NVRTC_OPTIONS: more options, space-separated, for measuring what they do to
  // a kernel (docs/perf.md). They are options like the others, so part of the cache key.
  static const std::vector<std::string> extra = [] {
    std::vector<std::string> words;
    if (const char* env = std::getenv("CONVJIT_NVRTC_OPTIONS"); env != nullptr) {
      std::istringstream in(env);
      for (std::string word; in >> word;) words.push_back(word);
    }
    return words;
  }();
  options.insert(options.end(), extra.begin(), extra.end());
  return options;
}

CompiledKernel Nvrtc::compile(const std::string& source, const std::string& name,
                              const std::vector<std::string>& options, std::span<const TemplateFile> headers) {
  const auto start = std::chrono::steady_clock::now();
  // NVRTC wants NUL-terminated strings; the embedded views are not promised to be.
  std::vector<std::string> header_texts;
  std::vector<std::string> header_names;
  for (const auto& header : headers) {
    header_texts.emplace_back(header.text);
    header_names.emplace_back(header.name);
  }
  std::vector<const char*> texts;
  std::vector<const char*> names;
  for (std::size_t i = 0; i < headers.size(); ++i) {
    texts.push_back(header_texts[i].c_str());
    names.push_back(header_names[i].c_str());
  }
  nvrtcProgram raw = nullptr;
  CONVJIT_NVRTC_CHECK(nvrtcCreateProgram(&raw, source.c_str(), name.c_str(), static_cast<int>(texts.size()),
                                         texts.data(), names.data()),
                      "creating program {}", name);
  ProgramHandle program(raw);
  std::vector<const char*> argv;
  for (const auto& option : options) argv.push_back(option.c_str());
  // CONVJIT_NVRTC_TIME=FILE: NVRTC appends each compile's phase times (front end, NVVM
  // optimizer, ptxas) to FILE as CSV. A diagnostic that changes no code, so it stays out
  // of the options recorded (and so of the cache key).
  static const std::string time_option = [] {
    const char* file = std::getenv("CONVJIT_NVRTC_TIME");
    return file != nullptr && *file != '\0' ? std::string("--time=") + file : std::string();
  }();
  if (!time_option.empty()) argv.push_back(time_option.c_str());
  const nvrtcResult result = nvrtcCompileProgram(raw, static_cast<int>(argv.size()), argv.data());
  CompiledKernel out;
  out.options = fmt::format("{}", fmt::join(options, " "));
  out.log = read_log(raw);
  if (result != NVRTC_SUCCESS) {
    fail(ErrorCode::kCompile, "compiling {} failed → {} ({})\noptions: {}\nlog:\n{}", name, static_cast<int>(result),
         nvrtcGetErrorString(result), fmt::join(options, " "), out.log);
  }
  size_t size = 0;
  CONVJIT_NVRTC_CHECK(nvrtcGetPTXSize(raw, &size), "reading the PTX of {}", name);
  out.ptx.resize(size);
  CONVJIT_NVRTC_CHECK(nvrtcGetPTX(raw, out.ptx.data()), "reading the PTX of {}", name);
  if (!out.ptx.empty() && out.ptx.back() == '\0') out.ptx.pop_back();
  CONVJIT_NVRTC_CHECK(nvrtcGetCUBINSize(raw, &size), "reading the CUBIN of {}", name);
  out.cubin.resize(size);
  CONVJIT_NVRTC_CHECK(nvrtcGetCUBIN(raw, out.cubin.data()), "reading the CUBIN of {}", name);
  out.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace convjit
