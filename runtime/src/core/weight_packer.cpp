#include "core/weight_packer.hpp"

#include "driver/device_context.hpp"
#include "driver/loaded_module.hpp"

namespace convjit {

WeightPacker::WeightPacker(const WeightPack& pack, std::shared_ptr<DeviceContext> device,
                           std::shared_ptr<LoadedModule> module)
    : pack_(pack), device_(std::move(device)), module_(std::move(module)) {
  kernel_ = module_->lookup(pack_.kernel_name);
}

WeightPacker::~WeightPacker() {
  // NOTE: the buffers belong to our context; free them with it current.
  try {
    ScopedContext scope(device_->context());
    std::lock_guard lock(mutex_);
    for (const auto& [stream, buffer] : workspaces_) CudaDriver::get().cuMemFree(buffer);
  } catch (...) {
  }
}

CUdeviceptr WeightPacker::workspace_for(CUstream stream) const {
  std::lock_guard lock(mutex_);
  auto& slot = workspaces_[stream];
  if (slot == 0) {
    CUdeviceptr buffer = 0;
    CONVJIT_CU_CHECK(cuMemAlloc(&buffer, pack_.packed_bytes), "allocating {} bytes for the packed weights of {}",
                     pack_.packed_bytes, pack_.kernel_name);
    slot = buffer;
  }
  return slot;
}

CUdeviceptr WeightPacker::pack(const void* w, CUstream stream) const {
  CUdeviceptr packed = workspace_for(stream);
  void* args[] = {&w, &packed};
  CONVJIT_CU_CHECK(cuLaunchKernel(kernel_, pack_.grid_x, 1, 1, pack_.block_x, 1, 1, 0, stream, args, nullptr),
                   "launching {}", pack_.kernel_name);
  return packed;
}

}  // namespace convjit
