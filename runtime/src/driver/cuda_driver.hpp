#pragma once
// The CUDA driver, loaded at run time with dlopen so that convjit loads, compiles
// and caches on machines that have no GPU and no libcuda.so.1.

#include <cuda.h>

#include <memory>
#include <string>

#include "base/fail.hpp"

namespace convjit {

// Every entry point convjit uses, listed once with its signature. cuGetProcAddress
// returns a symbol's newest version introduced at or before the CUDA version asked
// for, so each is requested at kDriverAbiVersion (12.0) and the signatures here are
// 12.0's even where newer headers changed a function: cuStreamGetCtx (2 arguments,
// not 12.5's green-context variant), cuCtxGetDevice (the current context's, not
// 13.0's 2-argument one). Where a header macro renames a function (cuMemAlloc →
// cuMemAlloc_v2) it renames only the member; the signature is the one written here.
#define CONVJIT_DRIVER_ENTRY_POINTS(X)                                                                              \
  X(cuInit, (unsigned int))                                                                                         \
  X(cuDriverGetVersion, (int*))                                                                                     \
  X(cuGetErrorName, (CUresult, const char**))                                                                       \
  X(cuGetErrorString, (CUresult, const char**))                                                                     \
  X(cuDeviceGet, (CUdevice*, int))                                                                                  \
  X(cuDeviceGetCount, (int*))                                                                                       \
  X(cuDeviceGetAttribute, (int*, CUdevice_attribute, CUdevice))                                                     \
  X(cuDeviceGetName, (char*, int, CUdevice))                                                                        \
  X(cuDevicePrimaryCtxRetain, (CUcontext*, CUdevice))                                                               \
  X(cuDevicePrimaryCtxRelease, (CUdevice))                                                                          \
  X(cuDevicePrimaryCtxGetState, (CUdevice, unsigned int*, int*))                                                    \
  X(cuCtxDestroy, (CUcontext))                                                                                      \
  X(cuCtxGetId, (CUcontext, unsigned long long*))                                                                   \
  X(cuCtxGetDevice, (CUdevice*))                                                                                    \
  X(cuCtxGetCurrent, (CUcontext*))                                                                                  \
  X(cuCtxSetCurrent, (CUcontext))                                                                                   \
  X(cuCtxPushCurrent, (CUcontext))                                                                                  \
  X(cuCtxPopCurrent, (CUcontext*))                                                                                  \
  X(cuCtxSynchronize, ())                                                                                           \
  X(cuModuleLoadData, (CUmodule*, const void*))                                                                     \
  X(cuModuleUnload, (CUmodule))                                                                                     \
  X(cuModuleGetFunction, (CUfunction*, CUmodule, const char*))                                                      \
  X(cuFuncGetAttribute, (int*, CUfunction_attribute, CUfunction))                                                   \
  X(cuFuncSetAttribute, (CUfunction, CUfunction_attribute, int))                                                    \
  X(cuLaunchKernel,                                                                                                 \
    (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void**, void**))   \
  X(cuMemAlloc, (CUdeviceptr*, size_t))                                                                             \
  X(cuMemFree, (CUdeviceptr))                                                                                       \
  X(cuMemcpyHtoD, (CUdeviceptr, const void*, size_t))                                                               \
  X(cuMemcpyDtoH, (void*, CUdeviceptr, size_t))                                                                     \
  X(cuMemsetD32, (CUdeviceptr, unsigned int, size_t))                                                               \
  X(cuMemsetD32Async, (CUdeviceptr, unsigned int, size_t, CUstream))                                                \
  X(cuStreamCreate, (CUstream*, unsigned int))                                                                      \
  X(cuStreamDestroy, (CUstream))                                                                                    \
  X(cuStreamGetCtx, (CUstream, CUcontext*))                                                                         \
  X(cuStreamSynchronize, (CUstream))                                                                                \
  X(cuStreamIsCapturing, (CUstream, CUstreamCaptureStatus*))                                                        \
  X(cuThreadExchangeStreamCaptureMode, (CUstreamCaptureMode*))                                                      \
  X(cuPointerGetAttribute, (void*, CUpointer_attribute, CUdeviceptr))                                               \
  X(cuPointerGetAttributes, (unsigned int, CUpointer_attribute*, void**, CUdeviceptr))                              \
  X(cuEventCreate, (CUevent*, unsigned int))                                                                        \
  X(cuEventDestroy, (CUevent))                                                                                      \
  X(cuEventRecord, (CUevent, CUstream))                                                                             \
  X(cuEventSynchronize, (CUevent))                                                                                  \
  X(cuEventElapsedTime, (float*, CUevent, CUevent))                                                                 \
  X(cuTensorMapEncodeIm2col,                                                                                        \
    (CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*, const int*,        \
     const int*, cuuint32_t, cuuint32_t, const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,              \
     CUtensorMapL2promotion, CUtensorMapFloatOOBfill))                                                              \
  X(cuTensorMapEncodeTiled,                                                                                         \
    (CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*, const cuuint32_t*, \
     const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill))

// Entry points whose 12.0 version is not the signature convjit calls, each requested
// at the CUDA version that has it. cuCtxCreate (tests make a second context with it):
// at 11040 and later the symbol is the exec-affinity cuCtxCreate_v3 (5 arguments), at
// 12050 and later cuCtxCreate_v4 (a params struct; CUDA 13's cuda.h maps the name
// there); 3020 is the 3-argument cuCtxCreate_v2.
#define CONVJIT_DRIVER_PINNED_ENTRY_POINTS(X) X(cuCtxCreate, 3020, (CUcontext*, unsigned int, CUdevice))

// The CUDA version whose entry-point signatures CONVJIT_DRIVER_ENTRY_POINTS spells.
inline constexpr int kDriverAbiVersion = 12000;

class CudaDriver {
 public:
  // The process-wide driver; throws Error(kNoDriver) with dlerror's text when absent.
  static CudaDriver& get();

#define CONVJIT_DECLARE_ENTRY(name, params) CUresult(CUDAAPI* name) params = nullptr;
#define CONVJIT_DECLARE_PINNED_ENTRY(name, version, params) CONVJIT_DECLARE_ENTRY(name, params)
  CONVJIT_DRIVER_ENTRY_POINTS(CONVJIT_DECLARE_ENTRY)
  CONVJIT_DRIVER_PINNED_ENTRY_POINTS(CONVJIT_DECLARE_PINNED_ENTRY)
#undef CONVJIT_DECLARE_PINNED_ENTRY
#undef CONVJIT_DECLARE_ENTRY

  // Entry points a driver may lack (null then): cuFuncLoad came with CUDA 12.4.
  CUresult(CUDAAPI* cuFuncLoad)(CUfunction) = nullptr;

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

// Errors after which the context is unusable: a kernel faulted, and every later call in
// the context returns the same error (the CUDA programming guide's "sticky" errors).
bool is_sticky_error(CUresult result) noexcept;
// Errors that say a module image cannot be used here (damaged, another arch, PTX this
// driver cannot JIT), as opposed to the context or the machine failing.
bool is_image_error(CUresult result) noexcept;
// kContextLost for sticky errors, else kDriver.
ErrorCode error_code_of(CUresult result) noexcept;

// Checks a driver call and throws Error(kDriver, or kContextLost for a sticky error) with
// the call, the context and the driver's own text.
#define CONVJIT_CU_CHECK(call, ...)                                                                                  \
  do {                                                                                                               \
    auto& convjit_drv_ = ::convjit::CudaDriver::get();                                                               \
    const CUresult convjit_res_ = convjit_drv_.call;                                                                 \
    if (convjit_res_ != CUDA_SUCCESS) {                                                                              \
      ::convjit::fail(::convjit::error_code_of(convjit_res_), "{}: {} failed → {}", fmt::format(__VA_ARGS__), #call, \
                      convjit_drv_.describe(convjit_res_));                                                          \
    }                                                                                                                \
  } while (0)

}  // namespace convjit
