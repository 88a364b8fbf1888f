#pragma once
// cuBLAS as convjit uses it: one checking macro, an RAII handle.

#include <cublasLt.h>
#include <cublas_v2.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "base/fail.hpp"

namespace convjit {

std::string_view cublas_status_name(cublasStatus_t status) noexcept;

#define CONVJIT_CUBLAS_CHECK(call, ...)                                                                          \
  do {                                                                                                           \
    const cublasStatus_t convjit_st_ = (call);                                                                   \
    if (convjit_st_ != CUBLAS_STATUS_SUCCESS) {                                                                  \
      ::convjit::fail(::convjit::ErrorCode::kCublas, "{}: {} failed → {} ({})", fmt::format(__VA_ARGS__), #call, \
                      static_cast<int>(convjit_st_), ::convjit::cublas_status_name(convjit_st_));                \
    }                                                                                                            \
  } while (0)

class CublasHandle {
 public:
  CublasHandle();  // in the current context; safe while a stream is capturing
  ~CublasHandle();
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const noexcept { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

// A cuBLASLt handle: the matmul API whose algorithms can be listed and picked (the
// pointwise GEMMs' timing switch, CONVJIT_CUBLASLT_ALGO).
class CublasLtHandle {
 public:
  CublasLtHandle();
  ~CublasLtHandle();
  CublasLtHandle(const CublasLtHandle&) = delete;
  CublasLtHandle& operator=(const CublasLtHandle&) = delete;
  cublasLtHandle_t get() const noexcept { return handle_; }

 private:
  cublasLtHandle_t handle_ = nullptr;
};

// One handle for every plan of a context. A cuBLAS handle is not thread-safe, so a
// caller holds `mutex` from binding the stream and workspace to its last enqueued GEMM;
// enqueueing is microseconds, so one handle per context costs nothing in practice and
// keeps handle creation (which allocates) off the launch path.
struct SharedCublas {
  std::mutex mutex;
  CublasHandle handle;
  std::unique_ptr<CublasLtHandle> lt;  // made on first use, under `mutex`
};

// cuBLAS's workspace for one run: with a workspace given, cuBLAS never allocates on its
// own, which a graph capture needs (NVIDIA's guidance for capture: cublasSetWorkspace).
// NVIDIA's recommended size for `arch`, but at most an eighth of `limit` (the plan's whole
// workspace limit, which the columns share), in whole 256-byte units.
std::uint64_t cublas_workspace_bytes(const std::string& arch, std::uint64_t limit) noexcept;

}  // namespace convjit
