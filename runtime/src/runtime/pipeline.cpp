#include "runtime/pipeline.hpp"

#include <algorithm>

#include "base/fail.hpp"
#include "base/log.hpp"
#include "driver/stream_context.hpp"

namespace convjit {

Pipeline::Pipeline(std::optional<DiskCache> disk, std::unique_ptr<RemoteCache> remote, std::uint64_t limit)
    : store(std::move(disk), counters, std::move(remote)), workspace_limit(limit) {}

std::shared_ptr<LoadedModule> Pipeline::module_for(const DeviceContext& dev, const KernelArtifact& artifact) {
  return modules_.get(ModuleKey{dev.id(), artifact.key.hash}, [&] {
    const std::string& name = artifact.source.kernel_name;
    std::vector<std::string> also_load;
    if (artifact.launch.weight_pack) also_load.push_back(artifact.launch.weight_pack->kernel_name);
    if (artifact.launch.y_fill) also_load.push_back(artifact.launch.y_fill->kernel_name);
    if (artifact.launch.x_to_nhwc) also_load.push_back(artifact.launch.x_to_nhwc->kernel_name);
    if (artifact.algorithm == Algorithm::kIm2colGemm) also_load.push_back(name + "_bias_act");
    auto module = std::make_shared<LoadedModule>(dev.context(), artifact.compiled.cubin,
                                                 artifact.algorithm == Algorithm::kIm2colGemm ? name + "_im2col" : name,
                                                 artifact.launch.geometry.shared_bytes, also_load);
    Counters::bump(counters.module_loads);
    counters.module_load_ms.fetch_add(module->load_ms(), std::memory_order_relaxed);
    counters.function_load_ms.fetch_add(module->function_load_ms(), std::memory_order_relaxed);
    return module;
  });
}

std::shared_ptr<SharedCublas> Pipeline::blas_for(const DeviceContext& dev) {
  return blas_.get(dev.id(), [&] {
    ScopedContext scope(dev.context());
    return std::make_shared<SharedCublas>();
  });
}

std::shared_ptr<const PlanKernel> Pipeline::kernel(const Conv2dDesc& desc, Algorithm algorithm,
                                                   const std::shared_ptr<DeviceContext>& dev,
                                                   const AlignmentNeeds& align) {
  dev->check_usable();
  // Before any compile: a problem whose columns cannot fit the limit fails here.
  std::optional<Im2colChunking> chunking;
  const std::uint64_t blas_workspace = cublas_workspace_bytes(dev->arch(), workspace_limit);
  if (algorithm == Algorithm::kIm2colGemm) {
    // The whole workspace stays under the limit: the columns get what cuBLAS leaves.
    const std::uint64_t overhead = Im2colGemmRunner::overhead_bytes(blas_workspace);
    chunking = plan_im2col_chunks(desc, workspace_limit > overhead ? workspace_limit - overhead : 0);
  }
  auto k = std::make_shared<PlanKernel>();
  // Each context's own arch: devices of different compute capabilities get their own entries.
  auto artifact = store.get(desc, algorithm, dev->arch(), align);
  try {
    k->module = module_for(*dev, *artifact);
  } catch (const ImageError& e) {
    // A CUBIN the driver refuses (damaged in a way the checksum cannot see, built for
    // another GPU) is rebuilt from source, never served (vllm #41871). Only then: a load
    // that failed for any other reason (out of memory, a lost context) says nothing about
    // the entry, and rewriting a good entry for it would be wrong.
    log::warn("the driver refused the cached CUBIN of {} in {} ({}); recompiling", artifact->source.kernel_name,
              dev->describe(), e.what());
    Counters::bump(counters.corrupt_rebuilt);
    artifact = store.rebuild(desc, algorithm, dev->arch(), align);
    k->module = module_for(*dev, *artifact);
  }
  const LaunchSpec& launch = artifact->launch;
  k->kernel_name = artifact->source.kernel_name;
  k->needs = launch.needs;
  k->geometry = launch.geometry;
  k->a_map = launch.a_map;
  k->b_map = launch.b_map;
  k->y_map = launch.y_map;
  if (k->geometry.persistent) {
    const std::uint64_t per_item = std::uint64_t{k->geometry.grid_y} * k->geometry.grid_z;
    const std::uint64_t blocks = std::max<std::uint64_t>(1, dev->multiprocessors() / per_item);
    k->geometry.grid_x = std::min(k->geometry.grid_x, blocks);
    k->persistent_blocks = blocks;
  }
  if (const auto& pack = launch.weight_pack) {
    auto packer = std::make_shared<WeightPacker>(*pack, k->module);
    k->workspace_bytes = packer->packed_bytes();
    k->packer = std::move(packer);
  }
  // The route's x region starts on a kRegionAlign boundary past the packed weights (whole
  // 128-byte rows of kBN channels, so whole boundaries) and is a whole number of them long,
  // so that x's copy can start a tensor map, and so that a run with packed weights needs
  // workspace_bytes() - packed_weight_bytes(), as the public header says.
  if (const auto& to_nhwc = launch.x_to_nhwc) {
    if (k->workspace_bytes % kRegionAlign != 0) {
      fail(ErrorCode::kInternal, "{}: the route needs packed weights of whole {}-byte blocks",
           artifact->source.kernel_name, kRegionAlign);
    }
    k->x_to_nhwc = PlanKernel::TransposePass{.spec = *to_nhwc, .function = k->module->lookup(to_nhwc->kernel_name)};
    k->workspace_bytes += to_nhwc->region_bytes;
  }
  if (const auto& fill = launch.y_fill) {
    k->y_fill = PlanKernel::FillPass{.spec = *fill, .function = k->module->lookup(fill->kernel_name)};
  }
  if (const auto& split = launch.split_reduce) {
    k->split = PlanKernel::SplitPass{.spec = *split, .function = k->module->lookup(split->kernel_name)};
    k->workspace_bytes += split->partial_bytes;
  }
  if (launch.stream_k) {
    k->stream_k = launch.stream_k;
    k->workspace_bytes += launch.stream_k->bytes();
  }
  if (chunking) {
    auto gemm = std::make_shared<Im2colGemmRunner>(desc, *chunking, k->module, artifact->source.kernel_name,
                                                   blas_for(*dev), blas_workspace);
    k->workspace_bytes = gemm->workspace_bytes();
    k->gemm = std::move(gemm);
  }
  return k;
}

}  // namespace convjit
