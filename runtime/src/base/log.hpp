#pragma once
// Minimal leveled logging to stderr, formatted with fmt.

#include <fmt/format.h>

#include <atomic>
#include <string_view>

#include "convjit/log_level.hpp"

namespace convjit::log {

LogLevel level() noexcept;
void set_level(LogLevel level) noexcept;
LogLevel level_from_env() noexcept;
void write(LogLevel level, std::string_view message) noexcept;

template <typename... Args>
void at(LogLevel lvl, fmt::format_string<Args...> format, Args&&... args) {
  if (static_cast<int>(lvl) <= static_cast<int>(level())) {
    write(lvl, fmt::format(format, std::forward<Args>(args)...));
  }
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... a) { at(LogLevel::kWarn, f, std::forward<Args>(a)...); }
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... a) { at(LogLevel::kInfo, f, std::forward<Args>(a)...); }
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... a) { at(LogLevel::kDebug, f, std::forward<Args>(a)...); }

}  // namespace convjit::log
