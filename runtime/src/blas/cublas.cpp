#include "blas/cublas.hpp"

namespace convjit {

std::string_view cublas_status_name(cublasStatus_t status) noexcept {
  // cublasGetStatusName/String exist since 11.4; they are the library's own words.
  const char* name = cublasGetStatusName(status);
  return name != nullptr ? name : "unknown cuBLAS status";
}

CublasHandle::CublasHandle() { CONVJIT_CUBLAS_CHECK(cublasCreate(&handle_), "creating a cuBLAS handle"); }

CublasHandle::~CublasHandle() {
  if (handle_ != nullptr) cublasDestroy(handle_);
}

}  // namespace convjit
