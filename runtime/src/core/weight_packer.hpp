#pragma once
// Runs a kernel's weight-packing pass (specialized_source.hpp, WeightPack) into a
// workspace before the main kernel, which then reads the workspace as its weights.

#include <memory>
#include <mutex>
#include <unordered_map>

#include "driver/cuda_driver.hpp"
#include "specialize/specialized_source.hpp"

namespace convjit {

class DeviceContext;
class LoadedModule;

class WeightPacker {
 public:
  // `module` holds the pack kernel; `device` is the context it is loaded in.
  WeightPacker(const WeightPack& pack, std::shared_ptr<DeviceContext> device, std::shared_ptr<LoadedModule> module);
  ~WeightPacker();
  WeightPacker(const WeightPacker&) = delete;
  WeightPacker& operator=(const WeightPacker&) = delete;

  // Enqueues the pack of `w` on `stream` and returns the packed copy, valid for the
  // work enqueued after it on the same stream. Call with the context current.
  CUdeviceptr pack(const void* w, CUstream stream) const;
  std::uint64_t workspace_bytes() const noexcept { return pack_.packed_bytes; }

 private:
  // One workspace per stream: runs on different streams must not share one buffer
  // (a pack on one could overwrite weights another is still reading); runs on one
  // stream are ordered by the stream.
  CUdeviceptr workspace_for(CUstream stream) const;

  WeightPack pack_;
  std::shared_ptr<DeviceContext> device_;
  std::shared_ptr<LoadedModule> module_;
  CUfunction kernel_ = nullptr;
  mutable std::mutex mutex_;
  mutable std::unordered_map<CUstream, CUdeviceptr> workspaces_;
};

}  // namespace convjit
