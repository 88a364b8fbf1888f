#include "base/log.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace convjit::log {
namespace {
std::atomic<int> g_level{static_cast<int>(level_from_env())};
}

LogLevel level() noexcept { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }
void set_level(LogLevel lvl) noexcept { g_level.store(static_cast<int>(lvl), std::memory_order_relaxed); }

LogLevel level_from_env() noexcept {
  const char* env = std::getenv("CONVJIT_LOG_LEVEL");
  if (env == nullptr) return LogLevel::kWarn;
  const std::string v(env);
  if (v == "error") return LogLevel::kError;
  if (v == "info") return LogLevel::kInfo;
  if (v == "debug") return LogLevel::kDebug;
  return LogLevel::kWarn;
}

void write(LogLevel lvl, std::string_view message) noexcept {
  static constexpr const char* kNames[] = {"error", "warn", "info", "debug"};
  // NOTE: one fprintf per line so lines from concurrent threads do not interleave.
  std::fprintf(stderr, "[convjit %s] %.*s\n", kNames[static_cast<int>(lvl)],
               static_cast<int>(message.size()), message.data());
}

}  // namespace convjit::log
