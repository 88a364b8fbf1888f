#pragma once
// Runs a kernel's weight-packing pass (specialized_source.hpp, WeightPack): the weights
// rearranged into the layout the main kernel reads (the wgmma kernel's core matrices),
// into memory the caller names: a run's workspace, or the caller's own buffer when the
// weights are packed once for many runs (Conv2dPlan::pack_weights).

#include <memory>

#include "driver/cuda_driver.hpp"
#include "specialize/specialized_source.hpp"

namespace convjit {

class LoadedModule;

class WeightPacker {
 public:
  // `module` holds the pack kernel.
  WeightPacker(const WeightPack& pack, std::shared_ptr<LoadedModule> module);

  // Enqueues the pack of `w` into `packed` (packed_bytes(), 16-byte aligned) on `stream`.
  // Call with the module's context current.
  void pack(const void* w, CUdeviceptr packed, CUstream stream) const;
  std::uint64_t packed_bytes() const noexcept { return pack_.packed_bytes; }

 private:
  WeightPack pack_;
  std::shared_ptr<LoadedModule> module_;
  CUfunction kernel_ = nullptr;
};

}  // namespace convjit
