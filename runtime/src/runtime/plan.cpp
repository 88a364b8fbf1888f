#include <algorithm>

#include "base/fail.hpp"
#include "driver/tensor_map.hpp"
#include "runtime/run_arguments.hpp"
#include "runtime/runtime_impl.hpp"

namespace convjit {

namespace {
// The workspace a run asks its caller for is 16-byte aligned; the wgmma kernel's bulk
// copies of packed weights need that much.
constexpr unsigned kWorkspaceAlign = 16;

CUtensorMapDataType tensor_map_type(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    case DType::kBFloat16:
      return CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
    case DType::kFloat32:
      break;
  }
  // Never TFLOAT32: 3xTF32 splits the exact fp32 value in registers, and TF32 rounds there.
  return CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
}

// The kernel's x map for one run: the specializer's values with this run's x and batch
// (images past it are then out of bounds, read as zeros, as a static plan's tail is).
// A stage row's bytes as the map's swizzle span.
CUtensorMapSwizzle swizzle_of(unsigned row_bytes) {
  return row_bytes == 32   ? CU_TENSOR_MAP_SWIZZLE_32B
         : row_bytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                           : CU_TENSOR_MAP_SWIZZLE_128B;
}

Im2colMapArgs im2col_map_args(const Im2colTensorMap& m, const void* x, int batch) {
  Im2colMapArgs a;
  a.dtype = tensor_map_type(m.dtype);
  a.address = x;
  a.rank = static_cast<unsigned>(m.rank);
  for (int i = 0; i < m.rank; ++i) a.dims[i] = m.dims[i];
  a.dims[m.rank - 1] = static_cast<std::uint64_t>(batch);
  for (int i = 0; i + 1 < m.rank; ++i) a.strides[i] = m.strides[i];
  for (int i = 0; i + 2 < m.rank; ++i) {
    a.lower[i] = m.lower[i];
    a.upper[i] = m.upper[i];
  }
  a.channels_per_pixel = m.channels_per_pixel;
  a.swizzle = swizzle_of(m.swizzle_bytes);
  a.pixels_per_column = m.pixels_per_column;
  for (int i = 0; i < m.rank; ++i) a.element_strides[i] = m.element_strides[i];
  return a;
}

// The kernel's w (or y) map for one run: the specializer's values with this run's pointer
// (and, for y, its batch).
TiledMapArgs tiled_map_args(const TiledTensorMap& m, const void* w, int batch = 1) {
  TiledMapArgs a;
  a.dtype = tensor_map_type(m.dtype);
  a.address = w;
  for (int i = 0; i < 3; ++i) {
    a.dims[i] = m.dims[i];
    a.box[i] = m.box[i];
  }
  if (m.dim1_per_image) a.dims[1] *= static_cast<std::uint64_t>(batch);
  for (int i = 0; i < 2; ++i) a.strides[i] = m.strides[i];
  a.swizzle = swizzle_of(m.swizzle_bytes);
  // Every block reads each filter's rows; wider promotion fetches the next tap's run,
  // which the next stages read.
  a.l2_promotion = CU_TENSOR_MAP_L2_PROMOTION_L2_256B;
  return a;
}
}  // namespace

Conv2dPlan::Impl::Impl(const Conv2dDesc& d, Algorithm a, std::shared_ptr<DeviceContext> dev,
                       std::shared_ptr<Pipeline> p, std::shared_ptr<const PlanKernel> k)
    : device(std::move(dev)), desc(d), algorithm(a), pipeline(std::move(p)), primary(std::move(k)) {}

void Conv2dPlan::Impl::check_binding(CUstream stream) const {
  // The module, the cuBLAS handle and the workspaces exist in one context only; a
  // stream of another would fail in the driver at best, or run on the wrong device.
  // With no context current, a special stream means this plan's own context.
  const ContextRef target = context_of_stream(stream);
  if (target.handle != nullptr && target.id != device->id()) {
    fail(ErrorCode::kInvalidArgument,
         "conv2d {}: this plan is bound to {}, but {} runs in {}; nothing was launched. Make a plan per context "
         "(PlanOptions.stream or PlanOptions.device), or call Runtime::conv2d, which follows the stream",
         desc.to_string(), device->describe(),
         is_special_stream(stream) ? fmt::format("the default stream {}", fmt::ptr(stream))
                                   : fmt::format("stream {}", fmt::ptr(stream)),
         describe_context(target));
  }
}

std::shared_ptr<const PlanKernel> Conv2dPlan::Impl::kernel_for(const AlignmentNeeds& present) const {
  if (satisfies(present, primary->needs)) return primary;
  return variants_.get(present, [&] {
    auto variant = pipeline->kernel(desc, algorithm, device, present);
    if (!satisfies(present, variant->needs)) {
      fail(ErrorCode::kInternal, "conv2d {}: the kernel {} built for the pointers' alignment still needs more",
           desc.to_string(), variant->name());
    }
    return variant;
  });
}

Conv2dPlan::Impl::WorkspaceLease Conv2dPlan::Impl::own_workspace(CUstream stream, std::uint64_t bytes) const {
  const WorkspaceKey key{stream, stream == CU_STREAM_PER_THREAD ? std::this_thread::get_id() : std::thread::id{}};
  Workspace* entry = nullptr;
  {
    std::shared_lock lock(workspaces_mutex_);
    if (auto it = workspaces_.find(key); it != workspaces_.end()) entry = it->second.get();
  }
  if (entry == nullptr) {
    std::unique_lock lock(workspaces_mutex_);
    auto& slot = workspaces_[key];
    if (!slot) slot = std::make_unique<Workspace>();
    entry = slot.get();
  }
  std::unique_lock enqueuing(entry->enqueuing);
  if (!entry->memory || entry->memory->size() < bytes) {
    // NOTE: allocated before anything is replaced: a failed allocation (out of memory)
    // leaves the entry as it was.
    auto made = std::make_unique<DeviceAllocation>(device->context(), bytes);
    if (entry->memory) {
      std::unique_lock lock(workspaces_mutex_);
      retired_.push_back(std::move(entry->memory));
    }
    entry->memory = std::move(made);
  }
  return WorkspaceLease{entry->memory->get(), std::move(enqueuing)};
}

void Conv2dPlan::Impl::prepare(Stream stream) const {
  // A sticky error from the allocation is remembered, as run() and pack_weights() do.
  try {
    check_binding(reinterpret_cast<CUstream>(stream));
    device->check_usable();
    if (primary->workspace_bytes > 0) own_workspace(reinterpret_cast<CUstream>(stream), primary->workspace_bytes);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kContextLost) device->mark_lost(e.what());
    throw;
  }
}

void Conv2dPlan::Impl::run(const Conv2dArgs& args, Stream stream, bool check) const {
  const auto s = reinterpret_cast<CUstream>(stream);
  try {
    if (check) check_binding(s);
    device->check_usable();
    enqueue(args, s);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kContextLost) device->mark_lost(e.what());
    throw;
  }
}

void Conv2dPlan::Impl::enqueue(const Conv2dArgs& a, CUstream stream) const {
  // Every check comes before anything is enqueued: a bad call launches nothing.
  const std::string where = fmt::format("conv2d {}", desc.to_string());
  const bool packed = a.packed_w != nullptr;
  const RunArguments checked = check_run_arguments(desc, a, *device, where);
  const int batch = checked.batch;
  const AlignmentNeeds& present = checked.present;
  if (packed && !primary->packer) {
    fail(ErrorCode::kInvalidArgument,
         "{}: packed weights were given, but {} reads the weights as they are (packed_weight_bytes() is 0)", where,
         primary->name());
  }
  check_run_pointer(*device, where, "packed_w", a.packed_w, kWorkspaceAlign, "packed");
  const auto kernel = kernel_for(present);
  const bool use_packed = packed && kernel->packer;
  if (packed && !use_packed && a.w == nullptr) {
    fail(ErrorCode::kInvalidArgument,
         "{}: the pointers' alignment needs {}, which reads the weights as they are; give w beside packed_w", where,
         kernel->name());
  }
  // The route's x region and split-K's partial sums come after the packed weights, or
  // alone with packed_w.
  const std::uint64_t needed = use_packed ? kernel->run_bytes() : kernel->workspace_bytes;
  CUdeviceptr workspace = 0;
  WorkspaceLease lease;  // its lock held until the last launch below is enqueued
  if (needed > 0) {
    if (a.workspace != nullptr) {
      if (a.workspace_bytes < needed) {
        fail(ErrorCode::kInvalidArgument, "{}: the workspace holds {} bytes, {} needs {} (workspace_bytes())", where,
             a.workspace_bytes, kernel->name(), needed);
      }
      if (pointer_alignment(a.workspace) < kWorkspaceAlign) {
        fail(ErrorCode::kInvalidArgument, "{}: workspace = {} is not {}-byte aligned", where, a.workspace,
             kWorkspaceAlign);
      }
      workspace = reinterpret_cast<CUdeviceptr>(a.workspace);
    } else {
      lease = own_workspace(stream, needed);
      workspace = lease.address;
    }
  }

  // NCHW through the NHWC kernel: the main kernel reads x's NHWC copy in the workspace
  // (after the packed weights), which a transpose fills from the caller's x; it, or
  // split-K's reduce pass, stores the caller's NCHW y itself.
  const bool via = kernel->x_to_nhwc.has_value();
  void* x_nhwc = via ? reinterpret_cast<void*>(workspace + (needed - kernel->run_bytes())) : nullptr;

  ScopedContext scope(device->context());
  // Encoded before the pack kernel is enqueued: a map the driver refuses launches nothing.
  // A host-only call, so it is as safe inside a graph capture as the launch (the map is a
  // parameter, copied into the graph's node).
  CUtensorMap a_map{};
  if (kernel->a_map) {
    a_map = encode_im2col_map(im2col_map_args(*kernel->a_map, via ? x_nhwc : a.x, batch),
                              fmt::format("{} ({})", where, kernel->name()));
  }
  CUtensorMap b_map{};
  if (kernel->b_map) {
    b_map = encode_tiled_map(tiled_map_args(*kernel->b_map, a.w), fmt::format("{} ({})", where, kernel->name()));
  }
  CUtensorMap y_map{};
  if (kernel->y_map) {
    y_map = encode_tiled_map(tiled_map_args(*kernel->y_map, a.y, batch), fmt::format("{} ({})", where, kernel->name()));
  }
  if (kernel->gemm) {
    kernel->gemm->run(a.x, a.w, a.bias, a.y, workspace, stream, batch);
    return;
  }
  if (via) {
    const PlanKernel::TransposePass& pass = *kernel->x_to_nhwc;
    const void* from = a.x;
    void* params[] = {&from, &x_nhwc};
    CONVJIT_CU_CHECK(
        cuLaunchKernel(pass.function, pass.spec.grid_x, 1, 1, pass.spec.block_x, 1, 1, 0, stream, params, nullptr),
        "launching {}", pass.spec.kernel_name);
  }
  if (kernel->y_fill) {
    // Every output the bias alone; the main kernel then stores its phase's over them.
    const OutputFill& f = kernel->y_fill->spec;
    const void* fill_bias = a.bias;
    void* fill_y = a.y;
    void* fill_params[] = {&fill_bias, &fill_y};
    CONVJIT_CU_CHECK(
        cuLaunchKernel(kernel->y_fill->function, f.grid_x, 1, 1, f.block_x, 1, 1, 0, stream, fill_params, nullptr),
        "launching {}", f.kernel_name);
  }
  const void* w = a.w;
  if (kernel->packer) {
    if (use_packed) {
      w = a.packed_w;
    } else {
      kernel->packer->pack(a.w, workspace, stream);
      w = reinterpret_cast<const void*>(workspace);
    }
  }
  const void* x = via ? x_nhwc : a.x;
  const void* bias = a.bias;
  void* y = a.y;
  // A split kernel writes its partial sums where y would go; its second pass writes y.
  // Split-K's partial sums, or stream-K's slots and counters: the workspace's tail.
  void* partial = kernel->split ? reinterpret_cast<void*>(workspace + (needed - kernel->partial_bytes())) : nullptr;
  void* stream_workspace =
      kernel->stream_k ? reinterpret_cast<void*>(workspace + (needed - kernel->stream_bytes())) : nullptr;
  if (kernel->stream_k) {
    // Every item's count starts at zero (a memset node under capture).
    CONVJIT_CU_CHECK(cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(stream_workspace) + kernel->stream_k->slot_bytes, 0,
                                      kernel->stream_k->counters, stream),
                     "zeroing {}'s stream-K counters", kernel->name());
  }
  void* main_y = kernel->split ? partial : y;
  // A dynamic-batch kernel (and its reduce pass) takes the batch as its last parameter
  // (convjit_device.cuh); a static one declares one fewer, and the driver reads no further.
  int batch_param = batch;
  // In the kernel's declared order: x, w, bias, y, the maps it takes (x's, w's, y's), then
  // stream-K's workspace (stream-K kernels are static-batch ones) or the batch.
  void* params[8] = {&x, &w, &bias, &main_y};
  std::size_t count = 4;
  if (kernel->a_map) params[count++] = &a_map;
  if (kernel->b_map) params[count++] = &b_map;
  if (kernel->y_map) params[count++] = &y_map;
  params[count] = kernel->stream_k ? static_cast<void*>(&stream_workspace) : static_cast<void*>(&batch_param);
  const LaunchGeometry& g = kernel->geometry;
  std::uint64_t grid_x = g.grid_x;
  if (desc.dynamic_batch) {
    grid_x = g.grid_x_for(batch);
    if (g.persistent) grid_x = std::min(grid_x, kernel->persistent_blocks);
  }
  CONVJIT_CU_CHECK(cuLaunchKernel(kernel->module->function(), static_cast<unsigned>(grid_x), g.grid_y, g.grid_z,
                                  g.block_x, 1, 1, g.shared_bytes, stream, params, nullptr),
                   "launching {}", kernel->name());
  if (kernel->split) {
    const SplitReduce& r = kernel->split->spec;
    void* reduce_params[] = {&partial, &bias, &y, &batch_param};
    CONVJIT_CU_CHECK(
        cuLaunchKernel(kernel->split->function, r.grid_x, 1, 1, r.block_x, 1, 1, 0, stream, reduce_params, nullptr),
        "launching {}", r.kernel_name);
  }
}

void Conv2dPlan::Impl::pack_weights(const void* w, void* packed, Stream stream) const {
  const auto s = reinterpret_cast<CUstream>(stream);
  const std::string where = fmt::format("conv2d {}: pack_weights", desc.to_string());
  if (!primary->packer) {
    fail(ErrorCode::kInvalidArgument, "{}: {} reads the weights as they are; there is nothing to pack", where,
         primary->name());
  }
  if (w == nullptr || packed == nullptr) fail(ErrorCode::kInvalidArgument, "{}: w and packed must be given", where);
  if (pointer_alignment(w) < size_of(desc.dtype)) {
    fail(ErrorCode::kInvalidArgument, "{}: w = {} is not aligned to its {}-byte elements", where, w,
         size_of(desc.dtype));
  }
  if (pointer_alignment(packed) < kWorkspaceAlign) {
    fail(ErrorCode::kInvalidArgument, "{}: packed = {} is not {}-byte aligned", where, packed, kWorkspaceAlign);
  }
  try {
    check_binding(s);
    device->check_usable();
    for (const void* p : {w, static_cast<const void*>(packed)}) {
      if (!device->pageable_memory_access() && !is_device_accessible(p)) {
        fail(ErrorCode::kInvalidArgument, "{}: {} is not memory the GPU can read; nothing was launched", where, p);
      }
    }
    ScopedContext scope(device->context());
    primary->packer->pack(w, reinterpret_cast<CUdeviceptr>(packed), s);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kContextLost) device->mark_lost(e.what());
    throw;
  }
}

Conv2dPlan::Conv2dPlan(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
const Conv2dDesc& Conv2dPlan::desc() const noexcept { return impl_->desc; }
Algorithm Conv2dPlan::algorithm() const noexcept { return impl_->algorithm; }
std::uint64_t Conv2dPlan::workspace_bytes() const noexcept { return impl_->primary->workspace_bytes; }
std::uint64_t Conv2dPlan::packed_weight_bytes() const noexcept {
  return impl_->primary->packer ? impl_->primary->packer->packed_bytes() : 0;
}
AlignmentNeeds Conv2dPlan::alignment() const noexcept { return impl_->primary->needs; }
const std::string& Conv2dPlan::kernel_name() const noexcept { return impl_->primary->name(); }
int Conv2dPlan::device() const noexcept { return impl_->device->ordinal(); }
void Conv2dPlan::pack_weights(const void* w, void* packed, Stream stream) const {
  impl_->pack_weights(w, packed, stream);
}
void Conv2dPlan::prepare(Stream stream) const { impl_->prepare(stream); }
void Conv2dPlan::run(const Conv2dArgs& args, Stream stream) const { impl_->run(args, stream, /*check_binding=*/true); }
void Conv2dPlan::run(const void* x, const void* w, const void* bias, void* y, Stream stream) const {
  run(Conv2dArgs{.x = x, .w = w, .bias = bias, .y = y}, stream);
}

}  // namespace convjit
