#pragma once
// One CUDA context the Runtime launches in: a device's primary context (the one the
// CUDA runtime uses) or a context the application made with cuCtxCreate. Tables are
// keyed by id(), never by the handle: a destroyed context's handle can come back as
// a new context's, with none of the old one's modules.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "driver/cuda_driver.hpp"

namespace convjit {

class DeviceContext {
 public:
  // The primary context of device `ordinal`, retained for this object's lifetime.
  // Throws kNoDriver / kNoDevice / kInvalidArgument (no such device) / kDriver.
  explicit DeviceContext(int ordinal);
  // An existing context (a stream's, or the thread's current one). A device's active
  // primary context is retained as above; any other belongs to the application,
  // which keeps it alive as long as convjit may use it.
  explicit DeviceContext(CUcontext context);
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  CUcontext context() const noexcept { return context_; }
  std::uint64_t id() const noexcept { return id_; }  // cuCtxGetId: unique for the process's life
  int ordinal() const noexcept { return ordinal_; }
  bool primary() const noexcept { return primary_; }
  const std::string& arch() const noexcept { return arch_; }  // "sm_90"
  const std::string& name() const noexcept { return name_; }
  int multiprocessors() const noexcept { return multiprocessors_; }
  // Whether kernels may read plain (pageable) host memory: HMM or ATS systems.
  bool pageable_memory_access() const noexcept { return pageable_memory_access_; }
  // "device 0 (NVIDIA H100, sm_90), primary context 0x5581… (id 1)", for messages.
  std::string describe() const;

  // A sticky error (a kernel faulted) leaves the context unusable for the rest of the
  // process. It is remembered, so that later calls fail at once with the first error
  // instead of compiling, loading or blaming the cache.
  void mark_lost(const std::string& why) noexcept;
  bool lost() const noexcept { return lost_.load(std::memory_order_acquire); }
  // Throws Error(kContextLost) with the remembered error when the context is lost.
  void check_usable() const;

 private:
  void read_device(CUdevice device);

  int ordinal_ = -1;
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  std::uint64_t id_ = 0;
  bool primary_ = false;
  bool retained_ = false;  // we hold a primary-context reference to release
  std::string arch_;
  std::string name_;
  int multiprocessors_ = 1;
  bool pageable_memory_access_ = false;
  std::atomic<bool> lost_{false};
  mutable std::mutex lost_mutex_;
  std::string lost_why_;  // guarded by lost_mutex_
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
