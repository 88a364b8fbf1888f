#include "driver/device_context.hpp"

#include "core/log.hpp"

namespace convjit {

DeviceContext::DeviceContext(int ordinal) : ordinal_(ordinal) {
  auto& drv = CudaDriver::get();
  int count = 0;
  CONVJIT_CU_CHECK(cuDeviceGetCount(&count), "counting devices");
  if (count == 0) fail(ErrorCode::kNoDevice, "the CUDA driver reports no device");
  if (ordinal < 0 || ordinal >= count) {
    fail(ErrorCode::kInvalidArgument, "RuntimeOptions.device: expected 0..{}, got {}", count - 1, ordinal);
  }
  CONVJIT_CU_CHECK(cuDeviceGet(&device_, ordinal), "getting device {}", ordinal);
  int major = 0;
  int minor = 0;
  CONVJIT_CU_CHECK(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device_),
                   "reading the compute capability of device {}", ordinal);
  CONVJIT_CU_CHECK(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device_),
                   "reading the compute capability of device {}", ordinal);
  arch_ = fmt::format("sm_{}{}", major, minor);
  char name[256] = {};
  if (drv.cuDeviceGetName(name, sizeof(name), device_) == CUDA_SUCCESS) name_ = name;
  CONVJIT_CU_CHECK(cuDevicePrimaryCtxRetain(&context_, device_), "retaining the primary context of device {}",
                   ordinal);
}

DeviceContext::~DeviceContext() {
  if (context_ != nullptr) CudaDriver::get().cuDevicePrimaryCtxRelease(device_);
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
