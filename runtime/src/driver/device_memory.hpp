#pragma once
// Device memory convjit itself owns (per-stream workspaces), and the checks a launch
// makes of the pointers it is given.

#include <cstdint>

#include "driver/cuda_driver.hpp"

namespace convjit {

// cuMemAlloc'd bytes in one context, freed (in that context) with the object. Made with
// the thread's capture mode relaxed, so a first run inside a graph capture can make it.
class DeviceAllocation {
 public:
  DeviceAllocation(CUcontext context, std::uint64_t bytes);
  ~DeviceAllocation();
  DeviceAllocation(const DeviceAllocation&) = delete;
  DeviceAllocation& operator=(const DeviceAllocation&) = delete;

  CUdeviceptr get() const noexcept { return ptr_; }
  std::uint64_t size() const noexcept { return bytes_; }

 private:
  CUcontext context_;
  CUdeviceptr ptr_ = 0;
  std::uint64_t bytes_ = 0;
};

// Whether the driver knows `pointer` as memory a kernel may read (device, managed,
// mapped, or registered host memory). False for plain host memory and freed pointers.
bool is_device_accessible(const void* pointer);

// The largest power of two, at most 16, that divides the address.
inline unsigned pointer_alignment(const void* pointer) noexcept {
  const auto address = reinterpret_cast<std::uintptr_t>(pointer);
  for (unsigned align = 16; align > 1; align /= 2) {
    if (address % align == 0) return align;
  }
  return 1;
}

}  // namespace convjit
