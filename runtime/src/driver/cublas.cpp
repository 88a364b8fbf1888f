#include "driver/cublas.hpp"

#include <algorithm>
#include <cstdlib>

#include "driver/stream_context.hpp"

namespace convjit {

std::string_view cublas_status_name(cublasStatus_t status) noexcept {
  // cublasGetStatusName/String exist since 11.4; they are the library's own words.
  const char* name = cublasGetStatusName(status);
  return name != nullptr ? name : "unknown cuBLAS status";
}

CublasHandle::CublasHandle() {
  RelaxedCaptureMode relaxed;  // cublasCreate allocates
  CONVJIT_CUBLAS_CHECK(cublasCreate(&handle_), "creating a cuBLAS handle");
}

std::uint64_t cublas_workspace_bytes(const std::string& arch, std::uint64_t limit) noexcept {
  // What NVIDIA recommends for cublasSetWorkspace: 32 MiB on Hopper and newer, 4 MiB before.
  const int number = arch.rfind("sm_", 0) == 0 ? std::atoi(arch.c_str() + 3) : 0;  // "sm_90a" -> 90
  const std::uint64_t recommended = number >= 90 ? std::uint64_t{32} << 20 : std::uint64_t{4} << 20;
  return std::min(recommended, limit / 8) / 256 * 256;
}

CublasHandle::~CublasHandle() {
  if (handle_ != nullptr) cublasDestroy(handle_);
}

CublasLtHandle::CublasLtHandle() {
  RelaxedCaptureMode relaxed;  // cublasLtCreate allocates
  CONVJIT_CUBLAS_CHECK(cublasLtCreate(&handle_), "creating a cuBLASLt handle");
}

CublasLtHandle::~CublasLtHandle() {
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

}  // namespace convjit
