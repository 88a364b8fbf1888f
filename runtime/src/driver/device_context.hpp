#pragma once
// One CUDA device's primary context (the one the CUDA runtime also uses), retained
// for the Runtime's lifetime, and a guard that makes it current for a scope.

#include <string>

#include "driver/cuda_driver.hpp"

namespace convjit {

class DeviceContext {
 public:
  // Throws kNoDriver / kNoDevice / kDriver.
  explicit DeviceContext(int ordinal);
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  CUcontext context() const noexcept { return context_; }
  int ordinal() const noexcept { return ordinal_; }
  const std::string& arch() const noexcept { return arch_; }  // "sm_90"
  const std::string& name() const noexcept { return name_; }

 private:
  int ordinal_;
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  std::string arch_;
  std::string name_;
};

// Makes `context` current on this thread for the scope, restoring the caller's
// context afterwards; a no-op when it already is current.
class ScopedContext {
 public:
  explicit ScopedContext(CUcontext context);
  ~ScopedContext();
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;

 private:
  bool pushed_ = false;
};

}  // namespace convjit
