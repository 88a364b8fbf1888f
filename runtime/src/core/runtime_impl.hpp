#pragma once
// Runtime's private state, shared by runtime.cpp, plan.cpp and device_buffer.cpp.

#include <memory>
#include <string>

#include "convjit/runtime.hpp"
#include "core/counters.hpp"
#include "core/im2col_gemm.hpp"
#include "core/kernel_store.hpp"
#include "core/once_map.hpp"
#include "core/tuning_record.hpp"
#include "core/weight_packer.hpp"
#include "driver/device_context.hpp"
#include "driver/loaded_module.hpp"
#include "driver/stream_context.hpp"

namespace convjit {

struct Conv2dPlan::Impl {
  Conv2dDesc desc;
  Algorithm algorithm = Algorithm::kDirect;
  std::shared_ptr<const KernelArtifact> artifact;
  // The one context the plan launches in; keeps a primary context alive as long as the plan.
  std::shared_ptr<DeviceContext> device;
  std::shared_ptr<LoadedModule> module;  // loaded into `device`
  LaunchGeometry geometry;
  std::shared_ptr<const Im2colGemmRunner> gemm;  // set for Algorithm::kIm2colGemm
  std::shared_ptr<const WeightPacker> packer;     // set for kernels that read packed weights (wgmma)

  // For callers holding the plan (Conv2dPlan::run): rejects, before anything is
  // enqueued, a stream of another context, then enqueues.
  void launch(const void* x, const void* w, const void* bias, void* y, Stream stream) const;
  // For callers that picked this plan by the stream's context (Runtime::conv2d, autotune).
  void enqueue(const void* x, const void* w, const void* bias, void* y, Stream stream) const;
};

struct Runtime::Impl {
  explicit Impl(RuntimeOptions opts);

  // The default device's primary context (RuntimeOptions::device), made on first use;
  // throws kNoDriver / kNoDevice every time it cannot be.
  std::shared_ptr<DeviceContext> device();
  // The context a launch on `stream` runs in: a created stream's own; for the special
  // streams (null, legacy, per-thread) the current context, else the default device's.
  ContextRef context_of(Stream stream);
  // The context a plan made with `options` is bound to.
  ContextRef bind_target(const PlanOptions& options);
  // Hot path: a shared-lock lookup by (context id, problem, algorithm); builds
  // (compile or load, then module load into that context) on a miss.
  std::shared_ptr<const Conv2dPlan::Impl> plan_for(const Conv2dDesc& desc, Algorithm requested,
                                                   const ContextRef& context);

  RuntimeOptions options;
  std::uint64_t workspace_limit = 0;
  bool autotune = false;
  std::filesystem::path cache_dir;
  Counters counters;
  KernelStore store;
  TuningRecords tuning;

 private:
  std::shared_ptr<DeviceContext> primary(int ordinal, std::string_view option);
  std::shared_ptr<DeviceContext> context(const ContextRef& ref);
  std::shared_ptr<const Conv2dPlan::Impl> build_plan(const Conv2dDesc& desc, Algorithm requested,
                                                     const std::shared_ptr<DeviceContext>& context);
  // Autotuning's plan for kAuto: the stored choice, else the fastest candidate (autotune.cpp).
  std::shared_ptr<const Conv2dPlan::Impl> tuned_plan(const Conv2dDesc& desc,
                                                     const std::shared_ptr<DeviceContext>& context);
  // The artifact's CUBIN in `context`: loaded once per context, whatever plans share it.
  std::shared_ptr<LoadedModule> module_for(const DeviceContext& context, const KernelArtifact& artifact);

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
  struct PlanKey {
    std::uint64_t context_id;
    Conv2dDesc desc;
    Algorithm requested;
    bool operator==(const PlanKey&) const = default;
  };
  struct PlanKeyHash {
    std::size_t operator()(const PlanKey& key) const noexcept {
      return (Conv2dDescHash{}(key.desc) * 7 + static_cast<std::size_t>(key.requested)) * 31 +
             std::hash<std::uint64_t>{}(key.context_id);
    }
  };

  // NOTE: declared in teardown order reversed: plans and modules are destroyed (and
  // unloaded) before the contexts that hold the primary-context references.
  OnceMap<int, DeviceContext> primaries_;              // by device ordinal
  OnceMap<std::uint64_t, DeviceContext> contexts_;     // by context id
  OnceMap<ModuleKey, LoadedModule, ModuleKeyHash> modules_;
  OnceMap<PlanKey, const Conv2dPlan::Impl, PlanKeyHash> plans_;
};

}  // namespace convjit
