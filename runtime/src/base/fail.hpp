#pragma once
// Throwing helpers: every convjit error message is built with fmt.

#include <fmt/format.h>

#include "convjit/error.hpp"

namespace convjit {

template <typename... Args>
[[noreturn]] void fail(ErrorCode code, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(code, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace convjit
