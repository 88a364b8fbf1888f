#include "driver/loaded_module.hpp"

#include "driver/device_context.hpp"
#include "driver/stream_context.hpp"

namespace convjit {

LoadedModule::LoadedModule(CUcontext context, const std::string& image, const std::string& kernel_name,
                           unsigned dynamic_shared_bytes)
    : context_(context) {
  ScopedContext scope(context);
  RelaxedCaptureMode relaxed;
  auto& drv = CudaDriver::get();
  const CUresult load = drv.cuModuleLoadData(&module_, image.data());
  if (load != CUDA_SUCCESS) {
    module_ = nullptr;
    const std::string what =
        fmt::format("loading the module of {}: cuModuleLoadData failed → {}", kernel_name, drv.describe(load));
    if (is_image_error(load)) throw ImageError(ErrorCode::kDriver, what);
    throw Error(error_code_of(load), what);
  }
  const CUresult res = drv.cuModuleGetFunction(&function_, module_, kernel_name.c_str());
  if (res != CUDA_SUCCESS) {
    drv.cuModuleUnload(module_);
    module_ = nullptr;
    const std::string what =
        fmt::format("looking up kernel {} in its module failed → {}", kernel_name, drv.describe(res));
    if (is_image_error(res)) throw ImageError(ErrorCode::kDriver, what);
    throw Error(error_code_of(res), what);
  }
  if (dynamic_shared_bytes > 48 * 1024) {
    const CUresult attr = CudaDriver::get().cuFuncSetAttribute(
        function_, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, static_cast<int>(dynamic_shared_bytes));
    if (attr != CUDA_SUCCESS) {
      CudaDriver::get().cuModuleUnload(module_);
      module_ = nullptr;
      fail(error_code_of(attr), "{} needs {} bytes of shared memory, which this device refuses → {}", kernel_name,
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
