#pragma once
namespace convjit {
inline constexpr const char* kVersion = "0.1.0";
}  // namespace convjit
