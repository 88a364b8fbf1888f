#include "base/log.hpp"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>

namespace convjit::log {
namespace {
std::atomic<int> g_level{static_cast<int>(level_from_env())};

// NOTE: writers share the lock for the whole call of the sink, so set_sink (exclusive)
// returns only once no call of the old sink is running: its owner may then destroy
// whatever it refers to. Built on first use and never destroyed, so logging works
// during static initialization and from threads still running at exit.
std::shared_mutex& sink_mutex() {
  static auto* const mutex = new std::shared_mutex;
  return *mutex;
}
Sink& current_sink() {
  static auto* const sink = new Sink;
  return *sink;
}
}  // namespace

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

Sink set_sink(Sink sink) {
  const std::unique_lock lock(sink_mutex());
  return std::exchange(current_sink(), std::move(sink));
}

void write(LogLevel lvl, std::string_view message) noexcept {
  static constexpr const char* kNames[] = {"error", "warn", "info", "debug"};
  {
    const std::shared_lock lock(sink_mutex());
    if (const Sink& sink = current_sink()) {
      try {
        sink(lvl, message);
      } catch (...) {
        // A logger must not turn a message into a failure of the operation that logged it.
      }
      return;
    }
  }
  // NOTE: one fprintf per line so lines from concurrent threads do not interleave.
  std::fprintf(stderr, "[convjit %s] %.*s\n", kNames[static_cast<int>(lvl)], static_cast<int>(message.size()),
               message.data());
}

}  // namespace convjit::log
