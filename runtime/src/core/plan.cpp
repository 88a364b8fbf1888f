#include "core/fail.hpp"
#include "core/runtime_impl.hpp"

namespace convjit {

void Conv2dPlan::Impl::launch(const void* x, const void* w, const void* bias, void* y, Stream stream) const {
  // The module, the cuBLAS handles and the workspaces exist in one context only; a
  // stream of another would fail in the driver at best, or run on the wrong device.
  // With no context current, a special stream means this plan's own context.
  const ContextRef target = context_of_stream(reinterpret_cast<CUstream>(stream));
  if (target.handle != nullptr && target.id != device->id()) {
    fail(ErrorCode::kInvalidArgument,
         "conv2d {}: this plan is bound to {}, but {} runs in {}; nothing was launched. Make a plan per context "
         "(PlanOptions.stream or PlanOptions.device), or call Runtime::conv2d, which follows the stream",
         desc.to_string(), device->describe(),
         is_special_stream(reinterpret_cast<CUstream>(stream)) ? fmt::format("the default stream {}", fmt::ptr(stream))
                                                                : fmt::format("stream {}", fmt::ptr(stream)),
         describe_context(target));
  }
  enqueue(x, w, bias, y, stream);
}

void Conv2dPlan::Impl::enqueue(const void* x, const void* w, const void* bias, void* y, Stream stream) const {
  // Checked before anything is enqueued: a bad call launches nothing.
  if (x == nullptr) fail(ErrorCode::kInvalidArgument, "conv2d {}: x is null, expected a device pointer", desc.to_string());
  if (w == nullptr) fail(ErrorCode::kInvalidArgument, "conv2d {}: w is null, expected a device pointer", desc.to_string());
  if (y == nullptr) fail(ErrorCode::kInvalidArgument, "conv2d {}: y is null, expected a device pointer", desc.to_string());
  if (desc.bias && bias == nullptr) {
    fail(ErrorCode::kInvalidArgument, "conv2d {}: bias is null but the descriptor has bias=1", desc.to_string());
  }
  if (!desc.bias && bias != nullptr) {
    fail(ErrorCode::kInvalidArgument, "conv2d {}: a bias pointer was given but the descriptor has bias=0",
         desc.to_string());
  }
  if (gemm) {
    gemm->run(x, w, bias, y, reinterpret_cast<CUstream>(stream));
    return;
  }
  ScopedContext scope(device->context());
  if (packer) {
    // The wgmma kernel copies 16-bit rows as 4-byte pixel pairs.
    if (desc.dtype != DType::kFloat32 && reinterpret_cast<std::uintptr_t>(x) % 4 != 0) {
      fail(ErrorCode::kInvalidArgument, "conv2d {}: x must be 4-byte aligned for the {} kernel, got {}",
           desc.to_string(), artifact->source.kernel_name, x);
    }
    w = reinterpret_cast<const void*>(packer->pack(w, reinterpret_cast<CUstream>(stream)));
  }
  void* args[] = {&x, &w, &bias, &y};
  CONVJIT_CU_CHECK(cuLaunchKernel(module->function(), static_cast<unsigned>(geometry.grid_x), geometry.grid_y,
                                  geometry.grid_z, geometry.block_x, 1, 1, geometry.shared_bytes,
                                  reinterpret_cast<CUstream>(stream), args, nullptr),
                   "launching {}", artifact->source.kernel_name);
}

Conv2dPlan::Conv2dPlan(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
const Conv2dDesc& Conv2dPlan::desc() const noexcept { return impl_->desc; }
Algorithm Conv2dPlan::algorithm() const noexcept { return impl_->algorithm; }
std::uint64_t Conv2dPlan::workspace_bytes() const noexcept {
  if (impl_->packer) return impl_->packer->workspace_bytes();
  return impl_->gemm ? impl_->gemm->chunking().workspace_bytes : 0;
}
const std::string& Conv2dPlan::kernel_name() const noexcept { return impl_->artifact->source.kernel_name; }
int Conv2dPlan::device() const noexcept { return impl_->device->ordinal(); }
void Conv2dPlan::run(const void* x, const void* w, const void* bias, void* y, Stream stream) const {
  impl_->launch(x, w, bias, y, stream);
}
void Conv2dPlan::run(const Conv2dArgs& args, Stream stream) const {
  if (args.packed_w != nullptr || args.workspace != nullptr) {
    fail(ErrorCode::kUnsupported, "conv2d {}: packed weights and caller workspaces are not wired yet",
         impl_->desc.to_string());
  }
  impl_->launch(args.x, args.w, args.bias, args.y, stream);
}
std::uint64_t Conv2dPlan::packed_weight_bytes() const noexcept {
  return impl_->packer ? impl_->packer->workspace_bytes() : 0;
}
void Conv2dPlan::pack_weights(const void*, void*, Stream) const {
  fail(ErrorCode::kUnsupported, "conv2d {}: pack_weights is not wired yet", impl_->desc.to_string());
}
AlignmentNeeds Conv2dPlan::alignment() const noexcept { return {}; }
void Conv2dPlan::prepare(Stream) const {}

}  // namespace convjit
