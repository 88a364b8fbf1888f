#include "common.hpp"

#include <fmt/format.h>

#include <cmath>

#include "tooling/tooling.hpp"

namespace convjit::cli {

std::filesystem::path cache_dir_from(const Args& args) {
  if (auto dir = args.value("--dir")) return *dir;
  return default_cache_dir();
}

RuntimeOptions runtime_options(const Args& args) { return RuntimeOptions{.cache_dir = cache_dir_from(args)}; }

std::string target_arch(const CommandSpec& spec, const Args& args, Runtime& runtime) {
  if (auto arch = args.value("--arch")) {
    try {
      parse_arch(*arch);
    } catch (const Error& e) {
      fail(e.code(), "convjit {}: --{}", spec.name, e.what());
    }
    return *arch;
  }
  try {
    return runtime.device_arch();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kNoDriver && e.code() != ErrorCode::kNoDevice) throw;
    fail(e.code(), "convjit {}: no GPU here to take the arch from ({}); give the target, e.g. --arch sm_90", spec.name,
         e.what());
  }
}

Conv2dDesc shape_argument(const CommandSpec& spec, std::string_view text) {
  const ShapeParse parsed = parse_shape_text(text);
  if (parsed.desc) return *parsed.desc;
  fail(
      ErrorCode::kInvalidArgument,
      "convjit {}: malformed shape at column {}: {}\n  {}\n  {:>{}}\n(the form is n8c64h512w256k128r5s7 stride=1 pad=0 "
      "...; see docs/cli.md)",
      spec.name, parsed.error.column, parsed.error.message, text, "^", parsed.error.column);
}

Algorithm algorithm_option(const CommandSpec& spec, const Args& args) {
  const auto name = args.value("--algorithm");
  if (!name) return Algorithm::kAuto;
  for (Algorithm a : {Algorithm::kAuto, Algorithm::kDirect, Algorithm::kImplicitGemm, Algorithm::kIm2colGemm}) {
    if (*name == to_string(a)) return a;
  }
  fail(ErrorCode::kInvalidArgument,
       "convjit {}: option '--algorithm' expects auto, direct, implicit_gemm or im2col_gemm, got '{}'", spec.name,
       *name);
}

void print_cache_stats(const CacheStats& s) {
  fmt::print(
      "runtime   compiles {} ({} in NVRTC), disk hits {}, memory hits {}, misses {}, corrupt rebuilt {}, "
      "disk writes {}, module loads {}\n",
      s.compiles, format_ms(s.compile_ms), s.disk_hits, s.memory_hits, s.misses, s.corrupt_rebuilt, s.disk_writes,
      s.module_loads);
  if (s.remote_mode == RemoteCacheMode::kOff) {
    if (!s.remote_note.empty()) fmt::print("remote    off: {}\n", s.remote_note);
    return;
  }
  fmt::print(
      "remote    hits {}, misses {}, rejects {}, unavailable {} (timeouts {}, errors {}, skipped {}), "
      "publishes {}, lock waits {}, lock takeovers {}, {} in remote calls ({}{})\n",
      s.remote_hits, s.remote_misses, s.remote_rejects, s.remote_unavailable, s.remote_timeouts, s.remote_errors,
      s.remote_skipped, s.remote_publishes, s.remote_lock_waits, s.remote_lock_takeovers, format_ms(s.remote_ms),
      s.remote_note, s.remote_mode == RemoteCacheMode::kReadOnly ? ", read-only" : "");
}

std::string format_bytes(std::uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes) / 1024;
  int unit = 0;
  while (value >= 1024 && unit < 3) {
    value /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", value, kUnits[unit]);
}

std::string format_ms(double ms) {
  if (ms < 1000) return fmt::format("{:.0f} ms", ms);
  if (ms < 600'000) return fmt::format("{:.1f} s", ms / 1000);
  return fmt::format("{}m{:02.0f}s", static_cast<int>(ms / 60'000), std::fmod(ms / 1000, 60.0));
}

}  // namespace convjit::cli
