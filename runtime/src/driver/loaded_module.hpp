#pragma once
// A CUBIN loaded into one context, unloaded when the last user lets go.

#include <string>

#include "driver/cuda_driver.hpp"

namespace convjit {

class LoadedModule {
 public:
  // Loads `image` (CUBIN or PTX) into `context` and looks up `kernel_name`.
  LoadedModule(CUcontext context, const std::string& image, const std::string& kernel_name);
  ~LoadedModule();
  LoadedModule(const LoadedModule&) = delete;
  LoadedModule& operator=(const LoadedModule&) = delete;

  CUfunction function() const noexcept { return function_; }
  CUcontext context() const noexcept { return context_; }
  int attribute(CUfunction_attribute attribute) const;

 private:
  CUcontext context_;
  CUmodule module_ = nullptr;
  CUfunction function_ = nullptr;
};

}  // namespace convjit
