#include "convjit/runtime.hpp"

#include <cstdlib>

#include "cache/cache_config.hpp"
#include "compiler/nvrtc.hpp"
#include "compiler/ptxas_report.hpp"
#include "specialize/algorithm.hpp"
#include "core/log.hpp"
#include "core/runtime_impl.hpp"

namespace convjit {

namespace {
// A cache that cannot be used (insecure, not a directory, ...) never fails the Runtime:
// it warns once and compiles into memory. `counters` records the mode and why.
std::optional<DiskCache> open_disk_cache(const RuntimeOptions& options, const std::filesystem::path& dir,
                                         Counters& counters) {
  counters.disk_mode = DiskCacheMode::kOff;
  if (!options.disk_cache) {
    counters.disk_note = "disabled by RuntimeOptions::disk_cache";
    return std::nullopt;
  }
  try {
    DiskCache cache(dir, disk_cache_options(options));
    counters.disk_mode = cache.readonly() ? DiskCacheMode::kReadOnly : DiskCacheMode::kReadWrite;
    counters.disk_note = cache.readonly_reason();
    return cache;
  } catch (const Error& e) {
    log::warn("disk cache disabled: {}; kernels stay in memory only", e.what());
    counters.disk_note = e.what();
    return std::nullopt;
  }
}

std::filesystem::path resolve_cache_dir(const RuntimeOptions& options) {
  return options.cache_dir.empty() ? default_cache_dir() : options.cache_dir;
}
}  // namespace

namespace {
bool env_flag(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && std::string_view(value) == "1";
}

std::uint64_t resolve_workspace_limit(const RuntimeOptions& options) {
  if (options.workspace_limit_bytes > 0) return options.workspace_limit_bytes;
  if (const char* env = std::getenv("CONVJIT_WORKSPACE_LIMIT"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const unsigned long long value = std::strtoull(env, &end, 10);
    if (end != env && *end == '\0' && value > 0) return value;
    log::warn("CONVJIT_WORKSPACE_LIMIT='{}' is not a byte count; using 256 MiB", env);
  }
  return std::uint64_t{256} << 20;
}
}  // namespace

Runtime::Impl::Impl(RuntimeOptions opts)
    : options(std::move(opts)),
      workspace_limit(resolve_workspace_limit(options)),
      autotune(options.autotune ? *options.autotune : env_flag("CONVJIT_AUTOTUNE")),
      cache_dir(resolve_cache_dir(options)),
      store(open_disk_cache(options, cache_dir, counters), counters),
      tuning(cache_dir) {
  if (options.log_level) log::set_level(*options.log_level);
}

std::shared_ptr<DeviceContext> Runtime::Impl::device() {
  std::lock_guard lock(device_mutex_);
  if (!device_) {
    device_ = std::make_shared<DeviceContext>(options.device);
    log::info("device {}: {} ({})", device_->ordinal(), device_->name(), device_->arch());
  }
  return device_;
}

std::shared_ptr<const Conv2dPlan::Impl> Runtime::Impl::plan_for(const Conv2dDesc& desc, Algorithm requested) {
  const PlanKey key{desc, requested};
  {
    std::shared_lock lock(plans_mutex_);
    if (auto it = plans_.find(key); it != plans_.end()) {
      Counters::bump(counters.memory_hits);
      return it->second;
    }
  }
  auto plan = requested == Algorithm::kAuto && autotune ? tuned_plan(desc) : build_plan(desc, requested);
  std::unique_lock lock(plans_mutex_);
  // NOTE: two threads may build the same plan at once; the first inserted wins and
  // the other's module is unloaded when its last reference goes.
  return plans_.try_emplace(key, std::move(plan)).first->second;
}

std::shared_ptr<LoadedModule> Runtime::Impl::load(const DeviceContext& dev, const KernelArtifact& artifact) {
  const std::string& name = artifact.source.kernel_name;
  return std::make_shared<LoadedModule>(dev.context(), artifact.entry.cubin,
                                        artifact.algorithm == Algorithm::kIm2colGemm ? name + "_im2col" : name,
                                        artifact.source.geometry.shared_bytes);
}

std::shared_ptr<const Conv2dPlan::Impl> Runtime::Impl::build_plan(const Conv2dDesc& desc, Algorithm requested) {
  desc.validate();
  const Algorithm algorithm = resolve_algorithm(desc, requested);
  std::optional<Im2colChunking> chunking;
  if (algorithm == Algorithm::kIm2colGemm) chunking = plan_im2col_chunks(desc, workspace_limit);
  auto dev = device();
  auto plan = std::make_shared<Conv2dPlan::Impl>();
  plan->desc = desc;
  plan->algorithm = algorithm;
  plan->device = dev;
  plan->artifact = store.get(desc, algorithm, dev->arch());
  try {
    plan->module = load(*dev, *plan->artifact);
  } catch (const Error& e) {
    // A CUBIN the driver rejects (another arch, damaged in a way the checksum cannot see)
    // is rebuilt from source, never served (vllm #41871).
    log::warn("cannot load the cached CUBIN of {} ({}); recompiling", plan->artifact->source.kernel_name, e.what());
    Counters::bump(counters.corrupt_rebuilt);
    plan->artifact = store.rebuild(desc, algorithm, dev->arch());
    plan->module = load(*dev, *plan->artifact);
  }
  Counters::bump(counters.module_loads);
  plan->geometry = plan->artifact->source.geometry;
  if (chunking) {
    plan->gemm = std::make_shared<Im2colGemmRunner>(desc, *chunking, dev, plan->module,
                                                    plan->artifact->source.kernel_name);
  }
  return plan;
}

Runtime::Runtime(RuntimeOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Runtime::~Runtime() = default;

void Runtime::conv2d(const Conv2dDesc& desc, const void* x, const void* w, const void* bias, void* y,
                     Stream stream) {
  impl_->plan_for(desc)->launch(x, w, bias, y, stream);
}

Conv2dPlan Runtime::plan(const Conv2dDesc& desc, PlanOptions options) {
  return Conv2dPlan(impl_->plan_for(desc, options.algorithm));
}

PrewarmResult Runtime::prewarm(std::span<const Conv2dDesc> descs, std::optional<std::string> arch) {
  const std::string target = arch ? *arch : device_arch();
  parse_arch(target);
  PrewarmResult result;
  for (const auto& desc : descs) {
    try {
      ArtifactOrigin origin{};
      desc.validate();
      impl_->store.get(desc, resolve_algorithm(desc, Algorithm::kAuto), target, &origin);
      ++(origin == ArtifactOrigin::kCompiled ? result.compiled : result.already_cached);
    } catch (const Error& e) {
      ++result.failed;
      result.errors.push_back(fmt::format("{}: {}", desc.to_string(), e.what()));
    }
  }
  return result;
}

std::string Runtime::source(const Conv2dDesc& desc) const {
  desc.validate();
  return specialize(desc, resolve_algorithm(desc, Algorithm::kAuto)).text;
}

std::string Runtime::ptx(const Conv2dDesc& desc, std::optional<std::string> arch) {
  return inspect(desc, std::move(arch)).ptx;
}

KernelInfo Runtime::inspect(const Conv2dDesc& desc, std::optional<std::string> arch, PlanOptions options) {
  desc.validate();
  const Algorithm algorithm = resolve_algorithm(desc, options.algorithm);
  const std::string target = arch ? *arch : device_arch();
  auto artifact = impl_->store.get(desc, algorithm, target);
  const auto& src = artifact->source;
  KernelInfo info;
  info.algorithm = src.algorithm;
  info.tile = src.tile;
  info.grid_blocks = src.geometry.grid_x;
  info.block_threads = src.geometry.block_x;
  info.dynamic_shared_bytes = src.geometry.shared_bytes;
  info.resources = parse_ptxas_report(artifact->entry.log, src.kernel_name);
  info.kernel_name = src.kernel_name;
  info.arch = artifact->arch;
  info.key_hash = artifact->key.hash;
  info.source = artifact->entry.source;
  info.ptx = artifact->entry.ptx;
  info.cubin_bytes = artifact->entry.cubin.size();
  info.cubin = artifact->entry.cubin;
  info.options = artifact->entry.options;
  info.log = artifact->entry.log;
  info.cache_path = artifact->path;
  return info;
}

void Runtime::synchronize(Stream stream) {
  auto dev = impl_->device();
  ScopedContext scope(dev->context());
  CONVJIT_CU_CHECK(cuStreamSynchronize(reinterpret_cast<CUstream>(stream)), "synchronizing a stream");
}

CacheStats Runtime::stats() const { return impl_->counters.snapshot(); }
const std::filesystem::path& Runtime::cache_dir() const noexcept { return impl_->cache_dir; }
std::string Runtime::device_arch() { return impl_->device()->arch(); }

}  // namespace convjit
