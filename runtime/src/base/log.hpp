#pragma once
// Minimal leveled logging, formatted with fmt: to stderr, or to a sink the embedder
// installs.

#include <fmt/format.h>

#include <atomic>
#include <functional>
#include <string_view>

#include "convjit/log_level.hpp"

namespace convjit::log {

LogLevel level() noexcept;
void set_level(LogLevel level) noexcept;
LogLevel level_from_env() noexcept;
void write(LogLevel level, std::string_view message) noexcept;

// Where lines go. Without a sink each line that passes level() is written to stderr
// as "[convjit <level>] <message>"; with one, the sink receives it instead, so an
// embedder can route convjit's messages into its own logging (or a test can see what
// the library is doing, e.g. that it is waiting for another process's lock).
//  - The sink is called from whichever thread logs, possibly several at once: it must
//    be thread-safe. `message` is valid only during the call.
//  - It must not log through convjit itself (that would deadlock), and should not
//    throw: an exception from it is swallowed, and that line is lost.
//  - set_sink returns the previous sink (empty for stderr); an empty sink restores
//    stderr. Once set_sink returns, the previous sink is no longer running and will not
//    be called again, so it may refer to objects its owner is about to destroy.
//  - level() still decides what is formatted at all: a sink sees debug lines only at
//    LogLevel::kDebug.
using Sink = std::function<void(LogLevel level, std::string_view message)>;
Sink set_sink(Sink sink);

template <typename... Args>
void at(LogLevel lvl, fmt::format_string<Args...> format, Args&&... args) {
  if (static_cast<int>(lvl) <= static_cast<int>(level())) {
    write(lvl, fmt::format(format, std::forward<Args>(args)...));
  }
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... a) {
  at(LogLevel::kWarn, f, std::forward<Args>(a)...);
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... a) {
  at(LogLevel::kInfo, f, std::forward<Args>(a)...);
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... a) {
  at(LogLevel::kDebug, f, std::forward<Args>(a)...);
}

}  // namespace convjit::log
