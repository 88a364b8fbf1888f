#pragma once
// The CUDA driver, loaded at run time with dlopen so that convjit loads, compiles
// and caches on machines that have no GPU and no libcuda.so.1.

#include <cuda.h>

#include <memory>
#include <string>

#include "core/fail.hpp"

namespace convjit {

// Every entry point convjit uses, listed once with its signature.
#define CONVJIT_DRIVER_ENTRY_POINTS(X)                                                                \
  X(cuInit, (unsigned int))                                                                           \
  X(cuDriverGetVersion, (int*))                                                                       \
  X(cuGetErrorName, (CUresult, const char**))                                                         \
  X(cuGetErrorString, (CUresult, const char**))                                                       \
  X(cuDeviceGet, (CUdevice*, int))                                                                    \
  X(cuDeviceGetCount, (int*))                                                                         \
  X(cuDeviceGetAttribute, (int*, CUdevice_attribute, CUdevice))                                       \
  X(cuDeviceGetName, (char*, int, CUdevice))                                                          \
  X(cuDevicePrimaryCtxRetain, (CUcontext*, CUdevice))                                                 \
  X(cuDevicePrimaryCtxRelease, (CUdevice))                                                            \
  X(cuCtxGetCurrent, (CUcontext*))                                                                    \
  X(cuCtxSetCurrent, (CUcontext))                                                                     \
  X(cuCtxPushCurrent, (CUcontext))                                                                    \
  X(cuCtxPopCurrent, (CUcontext*))                                                                    \
  X(cuCtxSynchronize, ())                                                                             \
  X(cuModuleLoadData, (CUmodule*, const void*))                                                       \
  X(cuModuleUnload, (CUmodule))                                                                       \
  X(cuModuleGetFunction, (CUfunction*, CUmodule, const char*))                                        \
  X(cuFuncGetAttribute, (int*, CUfunction_attribute, CUfunction))                                     \
  X(cuFuncSetAttribute, (CUfunction, CUfunction_attribute, int))                                      \
  X(cuLaunchKernel, (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, \
                     CUstream, void**, void**))                                                       \
  X(cuMemAlloc, (CUdeviceptr*, size_t))                                                               \
  X(cuMemFree, (CUdeviceptr))                                                                         \
  X(cuMemcpyHtoD, (CUdeviceptr, const void*, size_t))                                                 \
  X(cuMemcpyDtoH, (void*, CUdeviceptr, size_t))                                                       \
  X(cuMemsetD32, (CUdeviceptr, unsigned int, size_t))                                                 \
  X(cuStreamCreate, (CUstream*, unsigned int))                                                        \
  X(cuStreamDestroy, (CUstream))                                                                      \
  X(cuStreamSynchronize, (CUstream))                                                                  \
  X(cuEventCreate, (CUevent*, unsigned int))                                                          \
  X(cuEventDestroy, (CUevent))                                                                        \
  X(cuEventRecord, (CUevent, CUstream))                                                               \
  X(cuEventSynchronize, (CUevent))                                                                    \
  X(cuEventElapsedTime, (float*, CUevent, CUevent))

class CudaDriver {
 public:
  // The process-wide driver; throws Error(kNoDriver) with dlerror's text when absent.
  static CudaDriver& get();

#define CONVJIT_DECLARE_ENTRY(name, params) CUresult(CUDAAPI* name) params = nullptr;
  CONVJIT_DRIVER_ENTRY_POINTS(CONVJIT_DECLARE_ENTRY)
#undef CONVJIT_DECLARE_ENTRY

  int version() const noexcept { return version_; }
  // "cuModuleLoadData failed → 218 (CUDA_ERROR_INVALID_PTX: a PTX JIT compilation failed)"
  std::string describe(CUresult result) const;

 private:
  CudaDriver();
  struct LibraryCloser {
    void operator()(void* handle) const noexcept;
  };
  std::unique_ptr<void, LibraryCloser> library_;
  int version_ = 0;
};

// Checks a driver call and throws Error(kDriver) with the call, the context and the driver's own text.
#define CONVJIT_CU_CHECK(call, ...)                                                                  \
  do {                                                                                               \
    auto& convjit_drv_ = ::convjit::CudaDriver::get();                                               \
    const CUresult convjit_res_ = convjit_drv_.call;                                                 \
    if (convjit_res_ != CUDA_SUCCESS) {                                                              \
      ::convjit::fail(::convjit::ErrorCode::kDriver, "{}: {} failed → {}", fmt::format(__VA_ARGS__), \
                      #call, convjit_drv_.describe(convjit_res_));                                   \
    }                                                                                                \
  } while (0)

}  // namespace convjit
