#pragma once
// Runtime's private state, shared by runtime.cpp, plan.cpp and device_buffer.cpp.

#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "convjit/runtime.hpp"
#include "core/counters.hpp"
#include "core/kernel_store.hpp"
#include "driver/device_context.hpp"
#include "core/im2col_gemm.hpp"
#include "core/tuning_record.hpp"
#include "driver/loaded_module.hpp"

namespace convjit {

struct Conv2dPlan::Impl {
  Conv2dDesc desc;
  Algorithm algorithm = Algorithm::kDirect;
  std::shared_ptr<const KernelArtifact> artifact;
  std::shared_ptr<DeviceContext> device;  // keeps the context alive as long as the plan
  std::shared_ptr<LoadedModule> module;
  LaunchGeometry geometry;
  std::shared_ptr<const Im2colGemmRunner> gemm;  // set for Algorithm::kIm2colGemm

  void launch(const void* x, const void* w, const void* bias, void* y, Stream stream) const;
};

struct Runtime::Impl {
  explicit Impl(RuntimeOptions opts);

  // The device, made on first use; throws kNoDriver / kNoDevice every time it cannot be.
  std::shared_ptr<DeviceContext> device();
  // Hot path: a shared-lock lookup; builds (compile or load, then module load) on a miss.
  std::shared_ptr<const Conv2dPlan::Impl> plan_for(const Conv2dDesc& desc, Algorithm requested = Algorithm::kAuto);

  RuntimeOptions options;
  std::uint64_t workspace_limit = 0;
  bool autotune = false;
  std::filesystem::path cache_dir;
  Counters counters;
  KernelStore store;
  TuningRecords tuning;

 private:
  std::shared_ptr<const Conv2dPlan::Impl> build_plan(const Conv2dDesc& desc, Algorithm requested);
  // Autotuning's plan for kAuto: the stored choice, else the fastest candidate (autotune.cpp).
  std::shared_ptr<const Conv2dPlan::Impl> tuned_plan(const Conv2dDesc& desc);
  std::shared_ptr<LoadedModule> load(const DeviceContext& device, const KernelArtifact& artifact);

  struct PlanKey {
    Conv2dDesc desc;
    Algorithm requested;
    bool operator==(const PlanKey&) const = default;
  };
  struct PlanKeyHash {
    std::size_t operator()(const PlanKey& key) const noexcept {
      return Conv2dDescHash{}(key.desc) * 7 + static_cast<std::size_t>(key.requested);
    }
  };

  std::mutex device_mutex_;
  std::shared_ptr<DeviceContext> device_;
  std::shared_mutex plans_mutex_;
  std::unordered_map<PlanKey, std::shared_ptr<const Conv2dPlan::Impl>, PlanKeyHash> plans_;
};

}  // namespace convjit
