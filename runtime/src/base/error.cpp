#include "convjit/error.hpp"

namespace convjit {

std::string_view to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid argument";
    case ErrorCode::kUnsupported:
      return "unsupported";
    case ErrorCode::kNoDriver:
      return "no CUDA driver";
    case ErrorCode::kNoDevice:
      return "no CUDA device";
    case ErrorCode::kDriver:
      return "CUDA driver error";
    case ErrorCode::kContextLost:
      return "CUDA context lost";
    case ErrorCode::kCompile:
      return "compile error";
    case ErrorCode::kCublas:
      return "cuBLAS error";
    case ErrorCode::kCache:
      return "cache error";
    case ErrorCode::kIo:
      return "I/O error";
    case ErrorCode::kInternal:
      return "internal error";
  }
  return "unknown error";
}

Error::Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}

}  // namespace convjit
