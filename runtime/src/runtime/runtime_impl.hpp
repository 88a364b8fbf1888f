#pragma once
// Runtime's private state, shared by runtime.cpp, plan.cpp and device_buffer.cpp.

#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/once_map.hpp"
#include "convjit/runtime.hpp"
#include "driver/device_context.hpp"
#include "driver/device_memory.hpp"
#include "driver/stream_context.hpp"
#include "runtime/background_builds.hpp"
#include "runtime/first_tier.hpp"
#include "runtime/pipeline.hpp"
#include "runtime/tuning_record.hpp"

namespace convjit {

struct Conv2dPlan::Impl {
  Impl(const Conv2dDesc& desc, Algorithm algorithm, std::shared_ptr<DeviceContext> device,
       std::shared_ptr<Pipeline> pipeline, std::shared_ptr<const PlanKernel> primary);

  // NOTE: declared first, so destroyed last: the kernels' modules and the workspaces
  // belong to its context, which it keeps alive.
  std::shared_ptr<DeviceContext> device;
  Conv2dDesc desc;
  Algorithm algorithm = Algorithm::kDirect;
  std::shared_ptr<Pipeline> pipeline;
  // The kernel for pointers aligned to 16 bytes (any allocation); launches with less
  // get a variant compiled for the alignment present.
  std::shared_ptr<const PlanKernel> primary;

  // Checks every argument, then enqueues. `check_binding`: reject, launching nothing, a
  // stream of another context (callers holding the plan); Runtime::conv2d picked the
  // plan by the stream's context and skips it.
  void run(const Conv2dArgs& args, Stream stream, bool check_binding) const;
  void pack_weights(const void* w, void* packed, Stream stream) const;
  void prepare(Stream stream) const;

 private:
  void check_binding(CUstream stream) const;
  void enqueue(const Conv2dArgs& args, CUstream stream) const;
  // The kernel for pointers aligned as `present` says: the primary when it can take
  // them, else a variant built (compiled or read from the cache) on first need.
  std::shared_ptr<const PlanKernel> kernel_for(const AlignmentNeeds& present) const;
  // The plan's own workspace for `stream`, at least `bytes`: made on the stream's first
  // run (or prepare) and kept. Runs on one stream are ordered on the device, so they share
  // it; but a run is several launches (x's transpose, a pack, the kernel, split-K's
  // reduce), and host threads enqueuing on one stream at once would interleave
  // them, one run's kernel reading another's transposed x. The lease holds the workspace's
  // lock until the run's last launch is enqueued. CU_STREAM_PER_THREAD names a different
  // stream on each thread: there each thread has its own workspace.
  struct WorkspaceLease {
    CUdeviceptr address = 0;
    std::unique_lock<std::mutex> enqueuing;
  };
  WorkspaceLease own_workspace(CUstream stream, std::uint64_t bytes) const;

  struct AlignmentHash {
    std::size_t operator()(const AlignmentNeeds& a) const noexcept { return a.x | a.w << 5 | a.bias << 10 | a.y << 15; }
  };
  mutable OnceMap<AlignmentNeeds, const PlanKernel, AlignmentHash> variants_;
  struct Workspace {
    std::mutex enqueuing;  // held by a run from taking the workspace to its last launch
    std::unique_ptr<DeviceAllocation> memory;
  };
  // The stream, and the calling thread where the stream is CU_STREAM_PER_THREAD.
  struct WorkspaceKey {
    CUstream stream = nullptr;
    std::thread::id thread;
    bool operator==(const WorkspaceKey&) const = default;
  };
  struct WorkspaceKeyHash {
    std::size_t operator()(const WorkspaceKey& k) const noexcept {
      return std::hash<CUstream>()(k.stream) ^ (std::hash<std::thread::id>()(k.thread) << 1);
    }
  };
  mutable std::shared_mutex workspaces_mutex_;
  // Entries are never erased while the plan lives: a lease points into one.
  mutable std::unordered_map<WorkspaceKey, std::unique_ptr<Workspace>, WorkspaceKeyHash> workspaces_;
  // Workspaces outgrown by a variant that needed more: kept until the plan goes, since
  // work already enqueued may still use them.
  mutable std::vector<std::unique_ptr<DeviceAllocation>> retired_;
};

struct Runtime::Impl {
  explicit Impl(RuntimeOptions opts);
  // The state behind a Runtime, for convjit's own code (DeviceBuffer, the tooling layer).
  static Impl& of(Runtime& runtime) noexcept { return *runtime.impl_; }

  // The default device's primary context (RuntimeOptions::device), made on first use;
  // throws kNoDriver / kNoDevice every time it cannot be.
  std::shared_ptr<DeviceContext> device();
  // The context a launch on `stream` runs in: a created stream's own; for the special
  // streams (null, legacy, per-thread) the current context, else the default device's.
  ContextRef context_of(Stream stream);
  // The context a plan made with `options` is bound to.
  ContextRef bind_target(const PlanOptions& options);
  // Hot path: a shared-lock lookup by (context id, problem, algorithm); builds
  // (compile or load, then module load into that context) on a miss. `stream`: where
  // the plan will run first, checked for a capture only on a miss (autotuning cannot run
  // inside one).
  std::shared_ptr<const Conv2dPlan::Impl> plan_for(const Conv2dDesc& desc, Algorithm requested,
                                                   const ContextRef& context, Stream stream = nullptr);

  // The plan already built for (desc, requested) in that context, counted as a memory
  // hit; null when there is none yet (nothing is built).
  std::shared_ptr<const Conv2dPlan::Impl> find_plan(const Conv2dDesc& desc, Algorithm requested,
                                                    const ContextRef& context);
  // The first tier (RuntimeOptions::first_tier), for a problem find_plan found no plan
  // for: runs `desc` with the generic kernel and queues the build of its plan when that
  // would need a compile. False, nothing launched, when the plan should serve the call
  // instead (a plan built meanwhile is found in memory by the cache check).
  bool serve_first_tier(const Conv2dDesc& desc, const Conv2dArgs& args, const ContextRef& context, Stream stream);
  // Until no plan build the first tier queued is left.
  void wait_for_compiles();

  RuntimeOptions options;
  bool autotune = false;
  bool first_tier = false;
  std::filesystem::path cache_dir;
  TuningRecords tuning;

 private:
  std::shared_ptr<DeviceContext> primary(int ordinal, std::string_view option);
  std::shared_ptr<DeviceContext> context(const ContextRef& ref);
  std::shared_ptr<const Conv2dPlan::Impl> build_plan(const Conv2dDesc& desc, Algorithm requested,
                                                     const std::shared_ptr<DeviceContext>& context);
  // Autotuning's plan for kAuto: the stored choice, else the fastest candidate (autotune.cpp).
  std::shared_ptr<const Conv2dPlan::Impl> tuned_plan(const Conv2dDesc& desc,
                                                     const std::shared_ptr<DeviceContext>& context, Stream stream);
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
  // Queues the build of `key`'s plan behind the first tier, unless it is queued already.
  void queue_build(const PlanKey& key, const ContextRef& ref);

  // NOTE: declared in teardown order reversed: plans, then the pipeline (modules and
  // cuBLAS handles, unless plans the caller still holds keep it) go before the contexts
  // that hold the primary-context references.
  OnceMap<int, DeviceContext> primaries_;           // by device ordinal
  OnceMap<std::uint64_t, DeviceContext> contexts_;  // by context id

 public:
  // Shared with every plan: the kernel store (and so the counters) and the loaded modules.
  std::shared_ptr<Pipeline> pipeline;

 private:
  OnceMap<PlanKey, const Conv2dPlan::Impl, PlanKeyHash> plans_;

  FirstTier tier_;
  std::mutex tier_mutex_;
  std::unordered_set<PlanKey, PlanKeyHash> building_;  // queued or being built behind the first tier
  std::unordered_set<PlanKey, PlanKeyHash> failed_;    // built behind it and failed: the next call builds
  // NOTE: declared last, so destroyed first: its jobs use everything above.
  BackgroundBuilds background_;
};

}  // namespace convjit
