#pragma once
// From a problem to a kernel loaded in a context: the kernel store (memory, disk,
// NVRTC), the modules loaded per context and the cuBLAS handles per context. Shared by
// the Runtime and by every plan it made, so that a plan can still build the kernel for
// pointers it has not seen before (less-aligned ones) after the Runtime is gone.

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "base/once_map.hpp"
#include "driver/cublas.hpp"
#include "driver/device_context.hpp"
#include "driver/loaded_module.hpp"
#include "runtime/counters.hpp"
#include "runtime/im2col_gemm.hpp"
#include "runtime/kernel_store.hpp"
#include "runtime/weight_packer.hpp"

namespace convjit {

// One kernel of a plan, loaded in the plan's context, with what a launch of it needs.
// The earlier stages (source, PTX, CUBIN) stay with the kernel store: a plan holds only
// the loaded module and how to launch it.
struct PlanKernel {
  std::string kernel_name;
  std::shared_ptr<LoadedModule> module;
  LaunchGeometry geometry;                       // grid_x already cut to the device for persistent kernels
  std::uint64_t persistent_blocks = 0;           // persistent kernels: the most blocks worth launching here
  AlignmentNeeds needs;                          // what the kernel needs of each pointer
  std::shared_ptr<const WeightPacker> packer;    // kernels that read packed weights (wgmma)
  std::shared_ptr<const Im2colGemmRunner> gemm;  // Algorithm::kIm2colGemm
  // Split-K (wgmma): the second pass, which adds the partial sums into y.
  struct SplitPass {
    SplitReduce spec;
    CUfunction function = nullptr;
  };
  std::optional<SplitPass> split;
  // The wgmma kernel's TMA variant reads x through an im2col map, encoded for each run
  // (x and the batch are the run's) and passed after y.
  std::optional<Im2colTensorMap> a_map;
  // And (kBMap) its weights through a tiled map, encoded per run with the run's w, passed
  // after the x map; such a kernel has no packer.
  std::optional<TiledTensorMap> b_map;
  // And (kYMap) its outputs through a tiled map of y, encoded per run, after the w map.
  std::optional<TiledTensorMap> y_map;
  // Stream-K: its slots and counters, the workspace's tail (a parameter after the maps).
  std::optional<StreamKWorkspace> stream_k;
  std::uint64_t stream_bytes() const noexcept { return stream_k ? stream_k->bytes() : 0; }
  // NCHW through the NHWC kernel: the transpose of x into its workspace region.
  struct TransposePass {
    LayoutTranspose spec;
    CUfunction function = nullptr;
  };
  std::optional<TransposePass> x_to_nhwc;
  // A strided transposed problem's phase: y filled with the bias before the main kernel.
  struct FillPass {
    OutputFill spec;
    CUfunction function = nullptr;
  };
  std::optional<FillPass> y_fill;
  // Scratch a run with unpacked weights needs: the packed weights, the route's x region
  // and then split-K's partial sums, or im2col's columns and cuBLAS workspace.
  std::uint64_t workspace_bytes = 0;
  std::uint64_t partial_bytes() const noexcept { return split ? split->spec.partial_bytes : 0; }
  std::uint64_t region_bytes() const noexcept { return x_to_nhwc ? x_to_nhwc->spec.region_bytes : 0; }
  // Of which a run with packed weights still needs (the region and the partial sums), the
  // workspace's tail.
  std::uint64_t run_bytes() const noexcept { return region_bytes() + partial_bytes() + stream_bytes(); }

  const std::string& name() const noexcept { return kernel_name; }
};

class Pipeline {
 public:
  Pipeline(std::optional<DiskCache> disk, std::unique_ptr<RemoteCache> remote, std::uint64_t workspace_limit);
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // The kernel that computes `desc` with the resolved `algorithm` in `context`, compiled
  // for pointers aligned as `align` says: from this process's table, the disk or NVRTC,
  // then loaded once per context. An image the driver refuses is compiled again (never
  // served); any other failure leaves the cache alone. Safe inside a stream capture.
  std::shared_ptr<const PlanKernel> kernel(const Conv2dDesc& desc, Algorithm algorithm,
                                           const std::shared_ptr<DeviceContext>& context, const AlignmentNeeds& align);

  Counters counters;
  KernelStore store;
  const std::uint64_t workspace_limit;

 private:
  std::shared_ptr<LoadedModule> module_for(const DeviceContext& context, const KernelArtifact& artifact);
  std::shared_ptr<SharedCublas> blas_for(const DeviceContext& context);

  struct ModuleKey {
    std::uint64_t context_id;
    std::string kernel_hash;  // KernelKey::hash: problem, algorithm, arch, source, options
    bool operator==(const ModuleKey&) const = default;
  };
  struct ModuleKeyHash {
    std::size_t operator()(const ModuleKey& key) const noexcept {
      return std::hash<std::string>{}(key.kernel_hash) * 31 + std::hash<std::uint64_t>{}(key.context_id);
    }
  };
  OnceMap<ModuleKey, LoadedModule, ModuleKeyHash> modules_;
  OnceMap<std::uint64_t, SharedCublas> blas_;  // by context id
};

}  // namespace convjit
