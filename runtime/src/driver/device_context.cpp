#include "driver/device_context.hpp"

#include "driver/stream_context.hpp"

namespace convjit {

DeviceContext::DeviceContext(int ordinal) : ordinal_(ordinal), primary_(true) {
  auto& drv = CudaDriver::get();
  int count = 0;
  CONVJIT_CU_CHECK(cuDeviceGetCount(&count), "counting devices");
  if (count == 0) fail(ErrorCode::kNoDevice, "the CUDA driver reports no device");
  if (ordinal < 0 || ordinal >= count) {
    fail(ErrorCode::kInvalidArgument, "device ordinal: expected 0..{}, got {}", count - 1, ordinal);
  }
  CONVJIT_CU_CHECK(cuDeviceGet(&device_, ordinal), "getting device {}", ordinal);
  read_device(device_);
  CONVJIT_CU_CHECK(cuDevicePrimaryCtxRetain(&context_, device_), "retaining the primary context of device {}", ordinal);
  retained_ = true;
  try {
    id_ = context_id(context_);
  } catch (...) {
    drv.cuDevicePrimaryCtxRelease(device_);
    throw;
  }
}

DeviceContext::DeviceContext(CUcontext context) : context_(context) {
  auto& drv = CudaDriver::get();
  id_ = context_id(context);
  {
    ScopedContext scope(context);
    CONVJIT_CU_CHECK(cuCtxGetDevice(&device_), "reading the device of context {}", fmt::ptr(context));
  }
  ordinal_ = device_ordinal(device_);
  read_device(device_);
  // Only an active primary context is looked at: retaining an inactive one would
  // create it (hundreds of MiB) on a device the application reaches through its own.
  unsigned flags = 0;
  int active = 0;
  CONVJIT_CU_CHECK(cuDevicePrimaryCtxGetState(device_, &flags, &active), "reading the primary context of device {}",
                   ordinal_);
  if (active != 0) {
    CUcontext primary = nullptr;
    CONVJIT_CU_CHECK(cuDevicePrimaryCtxRetain(&primary, device_), "retaining the primary context of device {}",
                     ordinal_);
    primary_ = primary == context;
    if (primary_) {
      retained_ = true;
    } else {
      drv.cuDevicePrimaryCtxRelease(device_);
    }
  }
}

void DeviceContext::read_device(CUdevice device) {
  auto& drv = CudaDriver::get();
  int major = 0;
  int minor = 0;
  CONVJIT_CU_CHECK(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device),
                   "reading the compute capability of device {}", ordinal_);
  CONVJIT_CU_CHECK(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device),
                   "reading the compute capability of device {}", ordinal_);
  arch_ = fmt::format("sm_{}{}", major, minor);
  CONVJIT_CU_CHECK(cuDeviceGetAttribute(&multiprocessors_, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device),
                   "reading the multiprocessor count of device {}", ordinal_);
  int pageable = 0;
  CONVJIT_CU_CHECK(cuDeviceGetAttribute(&pageable, CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS, device),
                   "reading whether device {} reads pageable host memory", ordinal_);
  pageable_memory_access_ = pageable != 0;
  char name[256] = {};
  if (drv.cuDeviceGetName(name, sizeof(name), device) == CUDA_SUCCESS) name_ = name;
}

DeviceContext::~DeviceContext() {
  if (retained_) CudaDriver::get().cuDevicePrimaryCtxRelease(device_);
}

std::string DeviceContext::describe() const {
  return fmt::format("device {} ({}, {}), {} context {} (id {})", ordinal_, name_, arch_,
                     primary_ ? "primary" : "created", fmt::ptr(context_), id_);
}

void DeviceContext::mark_lost(const std::string& why) noexcept {
  try {
    std::lock_guard lock(lost_mutex_);
    if (lost_why_.empty()) lost_why_ = why;
  } catch (...) {
    // NOTE: noexcept: the flag below is what matters; the message is best effort.
  }
  lost_.store(true, std::memory_order_release);
}

void DeviceContext::check_usable() const {
  if (!lost()) return;
  std::lock_guard lock(lost_mutex_);
  fail(ErrorCode::kContextLost,
       "{} is unusable: an earlier error left it in a sticky error state ({}); nothing more can run in it, and "
       "convjit compiles, loads and caches nothing for it. Restart the process (or destroy and recreate the "
       "context)",
       describe(), lost_why_);
}

ScopedContext::ScopedContext(CUcontext context) {
  auto& drv = CudaDriver::get();
  CUcontext current = nullptr;
  drv.cuCtxGetCurrent(&current);
  if (current != context) {
    CONVJIT_CU_CHECK(cuCtxPushCurrent(context), "making the device context current");
    pushed_ = true;
  }
}

ScopedContext::~ScopedContext() {
  if (pushed_) {
    CUcontext popped = nullptr;
    CudaDriver::get().cuCtxPopCurrent(&popped);
  }
}

}  // namespace convjit
