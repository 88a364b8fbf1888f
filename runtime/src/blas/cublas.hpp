#pragma once
// cuBLAS as convjit uses it: one checking macro, an RAII handle.

#include <cublas_v2.h>

#include "core/fail.hpp"

namespace convjit {

std::string_view cublas_status_name(cublasStatus_t status) noexcept;

#define CONVJIT_CUBLAS_CHECK(call, ...)                                                          \
  do {                                                                                           \
    const cublasStatus_t convjit_st_ = (call);                                                   \
    if (convjit_st_ != CUBLAS_STATUS_SUCCESS) {                                                  \
      ::convjit::fail(::convjit::ErrorCode::kCublas, "{}: {} failed → {} ({})",                  \
                      fmt::format(__VA_ARGS__), #call, static_cast<int>(convjit_st_),            \
                      ::convjit::cublas_status_name(convjit_st_));                               \
    }                                                                                            \
  } while (0)

class CublasHandle {
 public:
  CublasHandle();  // in the current context
  ~CublasHandle();
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const noexcept { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

}  // namespace convjit
