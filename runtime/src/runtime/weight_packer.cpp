#include "runtime/weight_packer.hpp"

#include "driver/loaded_module.hpp"

namespace convjit {

WeightPacker::WeightPacker(const WeightPack& pack, std::shared_ptr<LoadedModule> module)
    : pack_(pack), module_(std::move(module)) {
  kernel_ = module_->lookup(pack_.kernel_name);
}

void WeightPacker::pack(const void* w, CUdeviceptr packed, CUstream stream) const {
  void* args[] = {&w, &packed};
  CONVJIT_CU_CHECK(cuLaunchKernel(kernel_, pack_.grid_x, 1, 1, pack_.block_x, 1, 1, 0, stream, args, nullptr),
                   "launching {}", pack_.kernel_name);
}

}  // namespace convjit
