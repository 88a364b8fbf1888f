#pragma once
// The one exception type convjit throws.

#include <stdexcept>
#include <string>
#include <string_view>

namespace convjit {

enum class ErrorCode {
  kInvalidArgument,  // a descriptor field, pointer or option is out of range
  kUnsupported,      // valid request that this version cannot run (dtype, layout, arch)
  kNoDriver,         // libcuda.so.1 could not be loaded
  kNoDevice,         // the driver loaded but the requested device is absent
  kDriver,           // a CUDA Driver API call failed
  kContextLost,      // the CUDA context hit a sticky error (a kernel faulted): nothing more runs in it
  kCompile,          // NVRTC failed; the message carries the log and the options
  kCublas,           // a cuBLAS call failed
  kCache,            // the on-disk cache cannot be used
  kIo,               // a file could not be read or written
  kInternal,         // a broken invariant inside convjit
};

std::string_view to_string(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message);
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace convjit
