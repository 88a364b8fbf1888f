#include "convjit/runtime.hpp"

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "base/env_switch.hpp"
#include "base/log.hpp"
#include "compile/nvrtc.hpp"
#include "compile/ptxas_report.hpp"
#include "runtime/cache_config.hpp"
#include "runtime/remote_cache_config.hpp"
#include "runtime/run_arguments.hpp"
#include "runtime/runtime_impl.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/arch.hpp"

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

// The fleet's cache behind the disk one, when configured; like the disk cache, it never
// fails the Runtime (open_remote_cache warns and leaves it off).
std::unique_ptr<RemoteCache> open_remote(const RuntimeOptions& options, Counters& counters) {
  RemoteCacheSetup setup = open_remote_cache(options);
  counters.remote_mode = setup.mode;
  counters.remote_note = setup.cache ? setup.where : setup.note;
  return std::move(setup.cache);
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

// Background compiles: NVRTC runs one problem a thread, and a network's first batch
// brings a few dozen problems; past four threads they would take the cores the caller's
// own work (and the GPU's launches) needs.
std::size_t background_threads() { return std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, 4); }

Runtime::Impl::Impl(RuntimeOptions opts)
    : options(std::move(opts)),
      autotune(options.autotune ? *options.autotune : env_flag("CONVJIT_AUTOTUNE")),
      first_tier(options.first_tier ? *options.first_tier : env_switch_on("CONVJIT_FIRST_TIER")),
      cache_dir(resolve_cache_dir(options)),
      tuning(cache_dir),
      background_(background_threads()) {
  if (options.log_level) log::set_level(*options.log_level);
  Counters opening;
  auto disk = open_disk_cache(options, cache_dir, opening);
  auto remote = open_remote(options, opening);
  pipeline = std::make_shared<Pipeline>(std::move(disk), std::move(remote), resolve_workspace_limit(options));
  pipeline->counters.disk_mode = opening.disk_mode;
  pipeline->counters.disk_note = opening.disk_note;
  pipeline->counters.remote_mode = opening.remote_mode;
  pipeline->counters.remote_note = opening.remote_note;
}

std::shared_ptr<DeviceContext> Runtime::Impl::primary(int ordinal, std::string_view option) {
  if (ordinal < 0) fail(ErrorCode::kInvalidArgument, "{}: expected a device ordinal >= 0, got {}", option, ordinal);
  return primaries_.get(ordinal, [&] {
    try {
      auto dev = std::make_shared<DeviceContext>(ordinal);
      log::info("device {}: {} ({})", dev->ordinal(), dev->name(), dev->arch());
      return dev;
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kInvalidArgument) throw;
      fail(ErrorCode::kInvalidArgument, "{}: {}", option, e.what());
    }
  });
}

std::shared_ptr<DeviceContext> Runtime::Impl::device() { return primary(options.device, "RuntimeOptions.device"); }

std::shared_ptr<DeviceContext> Runtime::Impl::context(const ContextRef& ref) {
  return contexts_.get(ref.id, [&] {
    auto dev = std::make_shared<DeviceContext>(ref.handle);
    log::info("new context: {}", dev->describe());
    return dev;
  });
}

ContextRef Runtime::Impl::context_of(Stream stream) {
  const ContextRef ref = context_of_stream(reinterpret_cast<CUstream>(stream));
  if (ref.handle != nullptr) return ref;
  const auto dev = device();
  return ContextRef{dev->context(), dev->id()};
}

ContextRef Runtime::Impl::bind_target(const PlanOptions& plan_options) {
  if (!plan_options.device) return context_of(plan_options.stream);
  const auto dev = primary(*plan_options.device, "PlanOptions.device");
  const ContextRef ref{dev->context(), dev->id()};
  if (plan_options.stream != nullptr) {
    const ContextRef stream = context_of(plan_options.stream);
    if (stream.id != ref.id) {
      fail(ErrorCode::kInvalidArgument,
           "PlanOptions: stream {} belongs to {}, not to the primary context of PlanOptions.device {} ({}); "
           "give one of the two",
           fmt::ptr(plan_options.stream), describe_context(stream), *plan_options.device, dev->describe());
    }
  }
  return ref;
}

std::shared_ptr<const Conv2dPlan::Impl> Runtime::Impl::plan_for(const Conv2dDesc& desc, Algorithm requested,
                                                                const ContextRef& ref, Stream stream) {
  bool built = false;
  auto plan = plans_.get(
      PlanKey{ref.id, desc, requested},
      [&] {
        auto dev = context(ref);
        // A sticky error anywhere in building (compile, module load, autotuning's own buffers,
        // events and timing runs) leaves the context unusable for every later call.
        try {
          return requested == Algorithm::kAuto && autotune ? tuned_plan(desc, dev, stream)
                                                           : build_plan(desc, requested, dev);
        } catch (const Error& e) {
          if (e.code() == ErrorCode::kContextLost) dev->mark_lost(e.what());
          throw;
        }
      },
      &built);
  if (!built) Counters::bump(pipeline->counters.memory_hits);
  return plan;
}

std::shared_ptr<const Conv2dPlan::Impl> Runtime::Impl::build_plan(const Conv2dDesc& desc, Algorithm requested,
                                                                  const std::shared_ptr<DeviceContext>& dev) {
  desc.validate();
  const Algorithm algorithm = resolve_algorithm(desc, requested, dev->arch());
  return std::make_shared<Conv2dPlan::Impl>(desc, algorithm, dev, pipeline,
                                            pipeline->kernel(desc, algorithm, dev, kFullAlignment));
}

Runtime::Runtime(RuntimeOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Runtime::~Runtime() = default;

void Runtime::conv2d(const Conv2dDesc& desc, const void* x, const void* w, const void* bias, void* y, Stream stream) {
  conv2d(desc, Conv2dArgs{.x = x, .w = w, .bias = bias, .y = y}, stream);
}

void Runtime::conv2d(const Conv2dDesc& desc, const Conv2dArgs& args, Stream stream) {
  // The plan is looked up by the stream's own context, so it cannot be a foreign one.
  const ContextRef context = impl_->context_of(stream);
  // With the first tier, a plan not built yet may be stood in for instead of built here.
  auto plan = impl_->first_tier ? impl_->find_plan(desc, Algorithm::kAuto, context) : nullptr;
  if (plan == nullptr) {
    if (impl_->first_tier && impl_->serve_first_tier(desc, args, context, stream)) return;
    plan = impl_->plan_for(desc, Algorithm::kAuto, context, stream);
  }
  plan->run(args, stream, /*check_binding=*/false);
}

std::shared_ptr<const Conv2dPlan::Impl> Runtime::Impl::find_plan(const Conv2dDesc& desc, Algorithm requested,
                                                                 const ContextRef& ref) {
  auto plan = plans_.find(PlanKey{ref.id, desc, requested});
  if (plan != nullptr) Counters::bump(pipeline->counters.memory_hits);
  return plan;
}

bool Runtime::Impl::serve_first_tier(const Conv2dDesc& desc, const Conv2dArgs& args, const ContextRef& ref,
                                     Stream stream) {
  const PlanKey key{ref.id, desc, Algorithm::kAuto};
  // Packed weights are the plan's kernel's layout; autotuning times on the device, which
  // a background thread should not do beside the caller's work.
  if (args.packed_w != nullptr || autotune) return false;
  bool queued = false;
  {
    std::lock_guard lock(tier_mutex_);
    if (failed_.contains(key)) return false;
    queued = building_.contains(key);
  }
  auto dev = context(ref);
  {
    // A graph keeps the kernels it captures: it gets the specialized one. (A null stream
    // means the plan's context where no context is current.)
    ScopedContext scope(dev->context());
    if (is_capturing(reinterpret_cast<CUstream>(stream))) return false;
  }
  // A queued problem's descriptor was validated when it was queued. Bad arguments are
  // reported before anything is queued: they compile nothing.
  if (!queued) desc.validate();
  try {
    const RunArguments checked =
        check_run_arguments(desc, args, *dev, fmt::format("conv2d {} (first tier)", desc.to_string()));
    if (!queued) {
      const Algorithm algorithm = resolve_algorithm(desc, Algorithm::kAuto, dev->arch());
      if (FirstTier::predicted_ms(desc, *dev) > FirstTier::kMostPredictedMs) return false;
      if (pipeline->store.cached(desc, algorithm, dev->arch())) return false;
      queue_build(key, ref);
    }
    dev->check_usable();
    tier_.run(desc, args, checked, reinterpret_cast<CUstream>(stream), dev);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kContextLost) dev->mark_lost(e.what());
    throw;
  }
  Counters::bump(pipeline->counters.first_tier_runs);
  return true;
}

void Runtime::Impl::queue_build(const PlanKey& key, const ContextRef& ref) {
  std::lock_guard lock(tier_mutex_);
  if (!building_.insert(key).second) return;  // another thread queued it first
  background_.submit([this, key, ref] {
    try {
      plan_for(key.desc, key.requested, ref);
      Counters::bump(pipeline->counters.background_builds);
    } catch (const std::exception& e) {
      log::warn("building conv2d {} behind the first tier failed: {}; its next call builds it again",
                key.desc.to_string(), e.what());
      Counters::bump(pipeline->counters.background_failures);
      std::lock_guard failed_lock(tier_mutex_);
      failed_.insert(key);
    }
    std::lock_guard done_lock(tier_mutex_);
    building_.erase(key);
  });
}

void Runtime::Impl::wait_for_compiles() { background_.wait_idle(); }
void Runtime::wait_for_compiles() { impl_->wait_for_compiles(); }

Conv2dPlan Runtime::plan(const Conv2dDesc& desc, PlanOptions options) {
  // The stream goes along so that autotuning sees a capture on it and refuses, instead of
  // timing (allocating, synchronizing) inside it.
  return Conv2dPlan(impl_->plan_for(desc, options.algorithm, impl_->bind_target(options), options.stream));
}

PrewarmResult Runtime::prewarm(std::span<const Conv2dDesc> descs, std::optional<std::string> arch) {
  const std::string target = arch ? *arch : device_arch();
  parse_arch(target);
  PrewarmResult result;
  for (const auto& desc : descs) {
    try {
      ArtifactOrigin origin{};
      desc.validate();
      // Whole entries: prewarming fills or repairs a cache (one shipped in an image, say),
      // so a damaged PTX or source is found and rebuilt here, not left for inspect.
      impl_->pipeline->store.get(desc, resolve_algorithm(desc, Algorithm::kAuto, target), target, kFullAlignment,
                                 &origin, /*with_ptx=*/true);
      ++(origin == ArtifactOrigin::kCompiled ? result.compiled : result.already_cached);
    } catch (const Error& e) {
      ++result.failed;
      result.errors.push_back(fmt::format("{}: {}", desc.to_string(), e.what()));
    }
  }
  return result;
}

std::string Runtime::source(const Conv2dDesc& desc, std::optional<std::string> arch) {
  desc.validate();
  const std::string target = arch ? *arch : device_arch();
  parse_arch(target);
  return specialize(desc, resolve_algorithm(desc, Algorithm::kAuto, target), target).source.text;
}

std::string Runtime::ptx(const Conv2dDesc& desc, std::optional<std::string> arch) {
  return inspect(desc, std::move(arch)).ptx;
}

KernelInfo Runtime::inspect(const Conv2dDesc& desc, std::optional<std::string> arch, PlanOptions options) {
  desc.validate();
  const std::string target = arch ? *arch : device_arch();
  const Algorithm algorithm = resolve_algorithm(desc, options.algorithm, target);
  auto artifact = impl_->pipeline->store.get(desc, algorithm, target, kFullAlignment, nullptr, /*with_ptx=*/true);
  const auto& src = artifact->source;
  const auto& launch = artifact->launch;
  KernelInfo info;
  info.algorithm = launch.algorithm;
  info.tile = launch.tile;
  info.grid_blocks = launch.geometry.grid_x;
  info.block_threads = launch.geometry.block_x;
  info.dynamic_shared_bytes = launch.geometry.shared_bytes;
  info.resources = parse_ptxas_report(artifact->compiled.log, src.kernel_name);
  if (info.resources.registers == 0) {
    // Some NVRTC builds (the pip wheel PyTorch loads first, in a Python process) leave
    // ptxas's report out of the log; the driver knows the loaded kernel's resources.
    try {
      const auto dev = impl_->device();
      if (artifact->arch.rfind(dev->arch(), 0) == 0) {
        const auto module = impl_->pipeline->kernel(desc, algorithm, dev, kFullAlignment)->module;
        info.resources.registers = module->attribute(CU_FUNC_ATTRIBUTE_NUM_REGS);
        info.resources.static_shared_bytes = module->attribute(CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES);
        info.resources.stack_bytes = module->attribute(CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES);
      }
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kNoDriver && e.code() != ErrorCode::kNoDevice) throw;
    }
  }
  info.kernel_name = src.kernel_name;
  info.arch = artifact->arch;
  info.key_hash = artifact->key.hash;
  info.source = src.text;
  info.ptx = artifact->compiled.ptx;
  info.cubin_bytes = artifact->compiled.cubin.size();
  info.cubin = artifact->compiled.cubin;
  info.options = artifact->compiled.options;
  info.log = artifact->compiled.log;
  info.cache_path = artifact->path;
  info.alignment = launch.needs;
  return info;
}

void Runtime::synchronize(Stream stream) {
  ScopedContext scope(impl_->context_of(stream).handle);
  CONVJIT_CU_CHECK(cuStreamSynchronize(reinterpret_cast<CUstream>(stream)), "synchronizing a stream");
}

CacheStats Runtime::stats() const { return impl_->pipeline->counters.snapshot(); }
const std::filesystem::path& Runtime::cache_dir() const noexcept { return impl_->cache_dir; }
std::string Runtime::device_arch() { return impl_->device()->arch(); }

}  // namespace convjit
