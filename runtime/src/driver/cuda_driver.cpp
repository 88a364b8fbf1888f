#include "driver/cuda_driver.hpp"

#include <dlfcn.h>

#include <atomic>
#include <mutex>

namespace convjit {

namespace {
// cuGetProcAddress as exported since CUDA 12 (the _v2 symbol carries the status argument).
using GetProcAddress = CUresult(CUDAAPI*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);
}  // namespace

void CudaDriver::LibraryCloser::operator()(void* handle) const noexcept {
  if (handle != nullptr) dlclose(handle);
}

CudaDriver& CudaDriver::get() {
  // Every driver call goes through here, from every thread: once loaded, the driver is
  // read from an atomic, so threads launching on different GPUs share no lock.
  static std::atomic<CudaDriver*> loaded{nullptr};
  if (CudaDriver* driver = loaded.load(std::memory_order_acquire)) return *driver;
  // NOTE: a failed load is not cached in a static: the exception propagates on every call,
  // so a process without a GPU keeps getting the same clear error.
  static std::mutex mutex;
  static std::unique_ptr<CudaDriver> instance;
  std::lock_guard lock(mutex);
  if (!instance) instance.reset(new CudaDriver());
  loaded.store(instance.get(), std::memory_order_release);
  return *instance;
}

CudaDriver::CudaDriver() {
  void* handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    fail(ErrorCode::kNoDriver,
         "cannot load the CUDA driver (libcuda.so.1): {}; launching needs an NVIDIA GPU and driver, "
         "compiling and caching do not",
         why != nullptr ? why : "unknown reason");
  }
  library_.reset(handle);
  auto get_proc = reinterpret_cast<GetProcAddress>(dlsym(handle, "cuGetProcAddress_v2"));
  if (get_proc == nullptr) {
    fail(ErrorCode::kNoDriver, "libcuda.so.1 has no cuGetProcAddress_v2: the driver is older than CUDA 12");
  }
  auto resolve = [&](const char* name, void** slot, int version) {
    CUdriverProcAddressQueryResult status{};
    const CUresult res = get_proc(name, slot, version, CU_GET_PROC_ADDRESS_DEFAULT, &status);
    if (res != CUDA_SUCCESS || *slot == nullptr) {
      fail(ErrorCode::kNoDriver, "cuGetProcAddress({}, {}) failed: result {}, status {}", name, version,
           static_cast<int>(res), static_cast<int>(status));
    }
  };
  // NOTE: #name is the name as written (cuCtxCreate), before cuda.h's macros rename it.
#define CONVJIT_RESOLVE_ENTRY(name, params) resolve(#name, reinterpret_cast<void**>(&name), kDriverAbiVersion);
#define CONVJIT_RESOLVE_PINNED_ENTRY(name, version, params) resolve(#name, reinterpret_cast<void**>(&name), version);
  CONVJIT_DRIVER_ENTRY_POINTS(CONVJIT_RESOLVE_ENTRY)
  CONVJIT_DRIVER_PINNED_ENTRY_POINTS(CONVJIT_RESOLVE_PINNED_ENTRY)
#undef CONVJIT_RESOLVE_PINNED_ENTRY
#undef CONVJIT_RESOLVE_ENTRY
  {
    CUdriverProcAddressQueryResult status{};
    if (get_proc("cuFuncLoad", reinterpret_cast<void**>(&cuFuncLoad), 12040, CU_GET_PROC_ADDRESS_DEFAULT, &status) !=
        CUDA_SUCCESS) {
      cuFuncLoad = nullptr;
    }
  }
  const CUresult init = cuInit(0);
  if (init == CUDA_ERROR_NO_DEVICE) {
    fail(ErrorCode::kNoDevice, "cuInit: the CUDA driver found no device ({})", describe(init));
  }
  if (init != CUDA_SUCCESS) fail(ErrorCode::kDriver, "cuInit(0) failed → {}", describe(init));
  cuDriverGetVersion(&version_);
}

std::string CudaDriver::describe(CUresult result) const {
  const char* name = nullptr;
  const char* text = nullptr;
  if (cuGetErrorName == nullptr || cuGetErrorName(result, &name) != CUDA_SUCCESS) name = "unknown";
  if (cuGetErrorString == nullptr || cuGetErrorString(result, &text) != CUDA_SUCCESS) text = "no description";
  return fmt::format("{} ({}: {})", static_cast<int>(result), name, text);
}

bool is_sticky_error(CUresult result) noexcept {
  switch (result) {
    case CUDA_ERROR_ILLEGAL_ADDRESS:
    case CUDA_ERROR_MISALIGNED_ADDRESS:
    case CUDA_ERROR_LAUNCH_FAILED:
    case CUDA_ERROR_LAUNCH_TIMEOUT:
    case CUDA_ERROR_HARDWARE_STACK_ERROR:
    case CUDA_ERROR_ILLEGAL_INSTRUCTION:
    case CUDA_ERROR_INVALID_ADDRESS_SPACE:
    case CUDA_ERROR_INVALID_PC:
    case CUDA_ERROR_ASSERT:
    case CUDA_ERROR_ECC_UNCORRECTABLE:
    case CUDA_ERROR_CONTEXT_IS_DESTROYED:
    case CUDA_ERROR_TENSOR_MEMORY_LEAK:
      return true;
    default:
      return false;
  }
}

bool is_image_error(CUresult result) noexcept {
  switch (result) {
    case CUDA_ERROR_INVALID_IMAGE:
    case CUDA_ERROR_NO_BINARY_FOR_GPU:
    case CUDA_ERROR_INVALID_PTX:
    case CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
    case CUDA_ERROR_INVALID_SOURCE:
    case CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND:
    case CUDA_ERROR_NOT_FOUND:
      return true;
    default:
      return false;
  }
}

ErrorCode error_code_of(CUresult result) noexcept {
  return is_sticky_error(result) ? ErrorCode::kContextLost : ErrorCode::kDriver;
}

}  // namespace convjit
