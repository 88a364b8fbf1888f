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
  // The plural query, because it reports memory the driver does not know (plain host
  // memory, freed pointers) as type 0 instead of failing: an API error here would be an
  // error in every compute-sanitizer log of a caller that was only being checked.
  unsigned type = 0;
  CUpointer_attribute attribute = CU_POINTER_ATTRIBUTE_MEMORY_TYPE;
  void* data[] = {&type};
  CONVJIT_CU_CHECK(cuPointerGetAttributes(1, &attribute, data, reinterpret_cast<CUdeviceptr>(pointer)),
                   "reading the attributes of pointer {}", pointer);
  return type != 0;
}

}  // namespace convjit
