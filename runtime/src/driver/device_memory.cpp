#include "driver/device_memory.hpp"

#include "driver/device_context.hpp"
#include "driver/stream_context.hpp"

namespace convjit {

DeviceAllocation::DeviceAllocation(CUcontext context, std::uint64_t bytes) : context_(context), bytes_(bytes) {
  ScopedContext scope(context);
  RelaxedCaptureMode relaxed;
  CONVJIT_CU_CHECK(cuMemAlloc(&ptr_, bytes == 0 ? 1 : bytes), "allocating {} bytes of workspace", bytes);
}

DeviceAllocation::~DeviceAllocation() {
  if (ptr_ == 0) return;
  // NOTE: destructors never throw; a free that fails at exit (driver shutting down) is ignored.
  try {
    ScopedContext scope(context_);
    RelaxedCaptureMode relaxed;
    CudaDriver::get().cuMemFree(ptr_);
  } catch (...) {
  }
}

bool is_device_accessible(const void* pointer) {
  unsigned type = 0;
  const CUresult res = CudaDriver::get().cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                                                               reinterpret_cast<CUdeviceptr>(pointer));
  if (res == CUDA_ERROR_INVALID_VALUE) return false;
  if (res != CUDA_SUCCESS) {
    fail(error_code_of(res), "reading the attributes of pointer {}: cuPointerGetAttribute failed → {}", pointer,
         CudaDriver::get().describe(res));
  }
  return true;
}

}  // namespace convjit
