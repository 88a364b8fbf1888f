#pragma once
// A CUBIN loaded into one context, unloaded when the last user lets go.

#include <string>
#include <utility>
#include <vector>

#include "driver/cuda_driver.hpp"

namespace convjit {

// The driver refused the module image itself (damaged, no code for this GPU, PTX it
// cannot JIT): the one load failure that a fresh compile can cure. Every other failure
// (out of memory, a lost context) is an Error of its own code and says nothing about the image.
class ImageError : public Error {
 public:
  using Error::Error;
};

class LoadedModule {
 public:
  // Loads `image` (CUBIN or PTX) into `context`, looks up `kernel_name` and lets it
  // use `dynamic_shared_bytes` of dynamic shared memory (over 48 KiB needs an opt-in).
  // That kernel and `also_load` (other kernels of the image, such as a weight-pack pass)
  // are loaded onto the device now, where the driver can (cuFuncLoad), instead of at
  // their first launch under lazy loading: a launch then costs only the launch.
  // Throws ImageError when the driver refuses the image, Error otherwise. Safe while a
  // stream is capturing (the load runs with the thread's capture mode relaxed).
  LoadedModule(CUcontext context, const std::string& image, const std::string& kernel_name,
               unsigned dynamic_shared_bytes = 0, const std::vector<std::string>& also_load = {});
  ~LoadedModule();
  LoadedModule(const LoadedModule&) = delete;
  LoadedModule& operator=(const LoadedModule&) = delete;

  CUfunction function() const noexcept { return function_; }
  // Another kernel of the same module; throws Error(kDriver) when absent.
  CUfunction lookup(const std::string& kernel_name) const;
  CUcontext context() const noexcept { return context_; }
  int attribute(CUfunction_attribute attribute) const;
  // Wall time of the constructor's steps: loading the image and looking up its kernels,
  // and loading those kernels onto the device.
  double load_ms() const noexcept { return load_ms_; }
  double function_load_ms() const noexcept { return function_load_ms_; }

 private:
  void unload_after_failure() noexcept;

  CUcontext context_;
  CUmodule module_ = nullptr;
  CUfunction function_ = nullptr;
  std::vector<std::pair<std::string, CUfunction>> also_loaded_;
  double load_ms_ = 0;
  double function_load_ms_ = 0;
};

}  // namespace convjit
