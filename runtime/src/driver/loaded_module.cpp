#include "driver/loaded_module.hpp"

#include <chrono>

#include "driver/device_context.hpp"
#include "driver/stream_context.hpp"

namespace convjit {

LoadedModule::LoadedModule(CUcontext context, const std::string& image, const std::string& kernel_name,
                           unsigned dynamic_shared_bytes, const std::vector<std::string>& also_load)
    : context_(context) {
  const auto start = std::chrono::steady_clock::now();
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
  // A kernel the image lacks, or one the driver cannot load, is the image's fault.
  const auto check = [&](CUresult res, std::string_view doing, const std::string& name) {
    if (res == CUDA_SUCCESS) return;
    unload_after_failure();
    const std::string what = fmt::format("{} kernel {} of its module failed → {}", doing, name, drv.describe(res));
    if (is_image_error(res)) throw ImageError(ErrorCode::kDriver, what);
    throw Error(error_code_of(res), what);
  };
  check(drv.cuModuleGetFunction(&function_, module_, kernel_name.c_str()), "looking up", kernel_name);
  for (const auto& name : also_load) {
    CUfunction other = nullptr;
    check(drv.cuModuleGetFunction(&other, module_, name.c_str()), "looking up", name);
    also_loaded_.emplace_back(name, other);
  }
  if (dynamic_shared_bytes > 48 * 1024) {
    const CUresult attr = drv.cuFuncSetAttribute(function_, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                 static_cast<int>(dynamic_shared_bytes));
    if (attr != CUDA_SUCCESS) {
      unload_after_failure();
      fail(error_code_of(attr), "{} needs {} bytes of shared memory, which this device refuses → {}", kernel_name,
           dynamic_shared_bytes, drv.describe(attr));
    }
  }
  const auto looked_up = std::chrono::steady_clock::now();
  load_ms_ = std::chrono::duration<double, std::milli>(looked_up - start).count();
  if (drv.cuFuncLoad != nullptr) {
    check(drv.cuFuncLoad(function_), "loading", kernel_name);
    for (const auto& [name, other] : also_loaded_) check(drv.cuFuncLoad(other), "loading", name);
  }
  function_load_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - looked_up).count();
}

void LoadedModule::unload_after_failure() noexcept {
  CudaDriver::get().cuModuleUnload(module_);
  module_ = nullptr;
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
  for (const auto& [name, loaded] : also_loaded_) {
    if (name == kernel_name) return loaded;
  }
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
