#include "driver/loaded_module.hpp"

#include "driver/device_context.hpp"

namespace convjit {

LoadedModule::LoadedModule(CUcontext context, const std::string& image, const std::string& kernel_name,
                           unsigned dynamic_shared_bytes)
    : context_(context) {
  ScopedContext scope(context);
  CONVJIT_CU_CHECK(cuModuleLoadData(&module_, image.data()), "loading the module of {}", kernel_name);
  const CUresult res = CudaDriver::get().cuModuleGetFunction(&function_, module_, kernel_name.c_str());
  if (res != CUDA_SUCCESS) {
    CudaDriver::get().cuModuleUnload(module_);
    fail(ErrorCode::kDriver, "looking up kernel {} in its module failed → {}", kernel_name,
         CudaDriver::get().describe(res));
  }
  if (dynamic_shared_bytes > 48 * 1024) {
    const CUresult attr = CudaDriver::get().cuFuncSetAttribute(
        function_, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, static_cast<int>(dynamic_shared_bytes));
    if (attr != CUDA_SUCCESS) {
      CudaDriver::get().cuModuleUnload(module_);
      fail(ErrorCode::kDriver, "{} needs {} bytes of shared memory, which this device refuses → {}", kernel_name,
           dynamic_shared_bytes, CudaDriver::get().describe(attr));
    }
  }
}

LoadedModule::~LoadedModule() {
  if (module_ == nullptr) return;
  // NOTE: destructors never throw; an unload failure at exit (driver shutting down) is ignored.
  auto& drv = CudaDriver::get();
  CUcontext current = nullptr;
  drv.cuCtxGetCurrent(&current);
  const bool push = current != context_;
  if (push && drv.cuCtxPushCurrent(context_) != CUDA_SUCCESS) return;
  drv.cuModuleUnload(module_);
  if (push) {
    CUcontext popped = nullptr;
    drv.cuCtxPopCurrent(&popped);
  }
}

CUfunction LoadedModule::lookup(const std::string& kernel_name) const {
  CUfunction function = nullptr;
  CONVJIT_CU_CHECK(cuModuleGetFunction(&function, module_, kernel_name.c_str()), "looking up kernel {}", kernel_name);
  return function;
}

int LoadedModule::attribute(CUfunction_attribute attribute) const {
  int value = 0;
  CONVJIT_CU_CHECK(cuFuncGetAttribute(&value, attribute, function_), "reading a kernel attribute");
  return value;
}

}  // namespace convjit
