#include "runtime/kernel_store.hpp"

#include <fmt/ranges.h>

#include <chrono>

#include "base/fail.hpp"
#include "base/log.hpp"
#include "compile/nvrtc.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/arch.hpp"

namespace convjit {

CacheStats Counters::snapshot() const {
  CacheStats s;
  s.memory_hits = memory_hits.load(std::memory_order_relaxed);
  s.disk_hits = disk_hits.load(std::memory_order_relaxed);
  s.misses = misses.load(std::memory_order_relaxed);
  s.compiles = compiles.load(std::memory_order_relaxed);
  s.corrupt_rebuilt = corrupt_rebuilt.load(std::memory_order_relaxed);
  s.disk_writes = disk_writes.load(std::memory_order_relaxed);
  s.module_loads = module_loads.load(std::memory_order_relaxed);
  s.compile_ms = compile_ms.load(std::memory_order_relaxed);
  s.autotune_runs = autotune_runs.load(std::memory_order_relaxed);
  s.autotune_reused = autotune_reused.load(std::memory_order_relaxed);
  s.first_tier_runs = first_tier_runs.load(std::memory_order_relaxed);
  s.background_builds = background_builds.load(std::memory_order_relaxed);
  s.background_failures = background_failures.load(std::memory_order_relaxed);
  s.disk_write_errors = disk_write_errors.load(std::memory_order_relaxed);
  s.evictions = evictions.load(std::memory_order_relaxed);
  s.bytes_read = bytes_read.load(std::memory_order_relaxed);
  s.bytes_written = bytes_written.load(std::memory_order_relaxed);
  s.lock_waits = lock_waits.load(std::memory_order_relaxed);
  s.lock_takeovers = lock_takeovers.load(std::memory_order_relaxed);
  s.lock_timeouts = lock_timeouts.load(std::memory_order_relaxed);
  s.compile_ms_saved = compile_ms_saved.load(std::memory_order_relaxed);
  s.key_ms = key_ms.load(std::memory_order_relaxed);
  s.disk_read_ms = disk_read_ms.load(std::memory_order_relaxed);
  s.disk_verify_ms = disk_verify_ms.load(std::memory_order_relaxed);
  s.module_load_ms = module_load_ms.load(std::memory_order_relaxed);
  s.function_load_ms = function_load_ms.load(std::memory_order_relaxed);
  s.disk_mode = disk_mode;
  s.disk_note = disk_note;
  s.remote_hits = remote_hits.load(std::memory_order_relaxed);
  s.remote_misses = remote_misses.load(std::memory_order_relaxed);
  s.remote_rejects = remote_rejects.load(std::memory_order_relaxed);
  s.remote_unavailable = remote_unavailable.load(std::memory_order_relaxed);
  s.remote_timeouts = remote_timeouts.load(std::memory_order_relaxed);
  s.remote_errors = remote_errors.load(std::memory_order_relaxed);
  s.remote_skipped = remote_skipped.load(std::memory_order_relaxed);
  s.remote_publishes = remote_publishes.load(std::memory_order_relaxed);
  s.remote_lock_waits = remote_lock_waits.load(std::memory_order_relaxed);
  s.remote_lock_takeovers = remote_lock_takeovers.load(std::memory_order_relaxed);
  s.remote_lock_timeouts = remote_lock_timeouts.load(std::memory_order_relaxed);
  s.remote_bytes_read = remote_bytes_read.load(std::memory_order_relaxed);
  s.remote_bytes_written = remote_bytes_written.load(std::memory_order_relaxed);
  s.remote_ms = remote_ms.load(std::memory_order_relaxed);
  s.remote_mode = remote_mode;
  s.remote_note = remote_note;
  return s;
}

std::size_t KernelStore::KeyHash::operator()(const Key& key) const noexcept {
  const std::size_t align = key.align.x | key.align.w << 5 | key.align.bias << 10 | key.align.y << 15;
  return Conv2dDescHash{}(key.desc) ^ (std::hash<std::string>{}(key.arch) * 31) ^
         (static_cast<std::size_t>(key.algorithm) << 7) ^ (align << 11);
}

KernelStore::KernelStore(std::optional<DiskCache> disk, Counters& counters, std::unique_ptr<RemoteCache> remote)
    : disk_(std::move(disk)), remote_(std::move(remote)), counters_(counters) {}

void KernelStore::count(const RemoteCache::FetchReport& report) {
  Counters::bump(counters_.remote_hits, report.hit ? 1 : 0);
  Counters::bump(counters_.remote_misses, report.miss ? 1 : 0);
  Counters::bump(counters_.remote_rejects, report.rejected ? 1 : 0);
  Counters::bump(counters_.remote_unavailable, report.unavailable ? 1 : 0);
  Counters::bump(counters_.remote_skipped, report.skipped ? 1 : 0);
  Counters::bump(counters_.remote_timeouts, report.timeouts);
  Counters::bump(counters_.remote_errors, report.errors);
  Counters::bump(counters_.remote_publishes, report.published ? 1 : 0);
  Counters::bump(counters_.remote_lock_waits, report.waited ? 1 : 0);
  Counters::bump(counters_.remote_lock_takeovers, report.took_over ? 1 : 0);
  Counters::bump(counters_.remote_lock_timeouts, report.lock_timed_out ? 1 : 0);
  Counters::bump(counters_.remote_bytes_read, report.bytes_read);
  Counters::bump(counters_.remote_bytes_written, report.bytes_written);
  counters_.remote_ms.fetch_add(report.remote_ms, std::memory_order_relaxed);
  if (report.hit) counters_.compile_ms_saved.fetch_add(report.saved_compile_ms, std::memory_order_relaxed);
}

std::shared_ptr<const KernelArtifact> KernelStore::get(const Conv2dDesc& desc, Algorithm algorithm,
                                                       const std::string& arch, const AlignmentNeeds& align,
                                                       ArtifactOrigin* origin, bool with_ptx) {
  desc.validate();
  parse_arch(arch);
  const Key key{desc, algorithm, arch, align};
  std::promise<std::shared_ptr<const KernelArtifact>> promise;
  {
    std::unique_lock lock(mutex_);
    if (auto it = table_.find(key); it != table_.end()) {
      Future future = it->second;
      lock.unlock();
      auto artifact = future.get();
      if (artifact->has_ptx || !with_ptx) {
        Counters::bump(counters_.memory_hits);
        if (origin != nullptr) *origin = ArtifactOrigin::kMemory;
        return artifact;
      }
      // Loaded for a launch, without its PTX: read the whole entry now. Two such calls at
      // once both read it; the later replacement wins, and both artifacts are whole.
      ArtifactOrigin produced{};
      auto whole = produce(key, /*force_compile=*/false, Read::kRestOfAHit, produced);
      std::promise<std::shared_ptr<const KernelArtifact>> ready;
      ready.set_value(whole);
      lock.lock();
      table_.insert_or_assign(key, ready.get_future().share());
      if (origin != nullptr) *origin = produced;
      return whole;
    }
    table_.emplace(key, promise.get_future().share());
  }
  try {
    ArtifactOrigin produced{};
    auto artifact = produce(key, /*force_compile=*/false, with_ptx ? Read::kWhole : Read::kForLoad, produced);
    promise.set_value(artifact);
    if (origin != nullptr) *origin = produced;
    return artifact;
  } catch (...) {
    // NOTE: waiters get the same error; the key is dropped so a later call tries again.
    promise.set_exception(std::current_exception());
    std::lock_guard lock(mutex_);
    table_.erase(key);
    throw;
  }
}

KernelKey KernelStore::key_of(const Conv2dDesc& desc, const SpecializedSource& source, const std::string& arch) {
  static const std::string nvrtc_version = Nvrtc::version();
  const auto options = Nvrtc::options_for(source.compile_arch.empty() ? arch : source.compile_arch);
  return make_kernel_key(desc, source, arch, options, nvrtc_version);
}

bool KernelStore::cached(const Conv2dDesc& desc, Algorithm algorithm, const std::string& arch,
                         const AlignmentNeeds& align) {
  desc.validate();
  const Key key{desc, algorithm, arch, align};
  {
    std::lock_guard lock(mutex_);
    if (auto it = table_.find(key); it != table_.end()) {
      return it->second.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
    }
  }
  if (!disk_) return false;
  const auto specialization = specialize(desc, algorithm, arch, align);
  const KernelKey kernel_key = key_of(desc, specialization.source, arch);
  std::error_code ec;
  return std::filesystem::exists(disk_->entry_path(CacheKey{kernel_key.text, kernel_key.hash}), ec);
}

std::shared_ptr<const KernelArtifact> KernelStore::rebuild(const Conv2dDesc& desc, Algorithm algorithm,
                                                           const std::string& arch, const AlignmentNeeds& align) {
  ArtifactOrigin origin{};
  const Key key{desc, algorithm, arch, align};
  auto artifact = produce(key, /*force_compile=*/true, Read::kWhole, origin);
  std::promise<std::shared_ptr<const KernelArtifact>> promise;
  promise.set_value(artifact);
  std::lock_guard lock(mutex_);
  table_.insert_or_assign(key, promise.get_future().share());
  return artifact;
}

namespace {
CacheEntry to_cache_entry(const KernelArtifact& artifact, CompiledKernel&& compiled) {
  CacheEntry entry{artifact.key.text,       artifact.source.kernel_name, artifact.source.text,
                   std::move(compiled.ptx), std::move(compiled.cubin),   std::move(compiled.options),
                   std::move(compiled.log)};
  entry.compile_ms = compiled.compile_ms;
  return entry;
}

CompiledKernel from_cache_entry(CacheEntry&& entry) {
  return CompiledKernel{.ptx = std::move(entry.ptx),
                        .cubin = std::move(entry.cubin),
                        .log = std::move(entry.log),
                        .options = std::move(entry.options),
                        .compile_ms = entry.compile_ms};
}
}  // namespace

std::shared_ptr<const KernelArtifact> KernelStore::produce(const Key& key, bool force_compile, Read read,
                                                           ArtifactOrigin& origin) {
  const auto key_start = std::chrono::steady_clock::now();
  const Conv2dDesc& desc = key.desc;
  const std::string& arch = key.arch;
  auto artifact = std::make_shared<KernelArtifact>();
  artifact->desc = desc;
  artifact->algorithm = key.algorithm;
  artifact->arch = arch;
  auto specialization = specialize(desc, key.algorithm, arch, key.align);
  artifact->source = std::move(specialization.source);
  artifact->launch = std::move(specialization.launch);
  const auto options = Nvrtc::options_for(artifact->source.compile_arch.empty() ? arch : artifact->source.compile_arch);
  artifact->key = key_of(desc, artifact->source, arch);
  // The caches see the key as opaque text and its hash.
  const CacheKey cache_key{artifact->key.text, artifact->key.hash};
  if (disk_) artifact->path = disk_->entry_path(cache_key);
  counters_.key_ms.fetch_add(
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - key_start).count(),
      std::memory_order_relaxed);

  // The caches hold the compiled stage in their own entry format; it is converted at
  // this boundary only.
  const auto compile = [&] {
    auto compiled = Nvrtc::compile(artifact->source.text, artifact->source.kernel_name + ".cu", options);
    Counters::bump(counters_.compiles);
    counters_.compile_ms.fetch_add(compiled.compile_ms, std::memory_order_relaxed);
    log::info("compiled {} for {} in {:.1f} ms", artifact->source.kernel_name, arch, compiled.compile_ms);
    return to_cache_entry(*artifact, std::move(compiled));
  };
  // The remote tier sits behind the disk: it runs inside the disk cache's build step,
  // so under the key's local lock, and one process per host asks the fleet for a key.
  RemoteCache::FetchReport remote_report;
  const auto fetch_or_compile = [&] {
    if (!remote_) return compile();
    CacheEntry entry;
    try {
      entry = remote_->fetch_or_build(artifact->key.text, compile, remote_report);
    } catch (...) {
      count(remote_report);  // the compile failed; what the remote did still counts
      throw;
    }
    count(remote_report);
    if (remote_report.hit) log::debug("remote cache hit for {}", desc.to_string());
    return entry;
  };
  if (!disk_ || force_compile) {
    // NOTE: a forced rebuild (a CUBIN the driver refused) compiles here and skips the
    // remote, whose copy is the same binary.
    CacheEntry entry = force_compile ? compile() : fetch_or_compile();
    origin = remote_report.hit ? ArtifactOrigin::kRemote : ArtifactOrigin::kCompiled;
    if (!force_compile && !remote_report.hit) Counters::bump(counters_.misses);
    if (disk_) {
      const auto stored = disk_->store(cache_key, entry);
      Counters::bump(stored.published ? counters_.disk_writes : counters_.disk_write_errors);
      Counters::bump(counters_.bytes_written, stored.bytes);
      Counters::bump(counters_.evictions, stored.evicted_entries);
    }
    artifact->compiled = from_cache_entry(std::move(entry));
    return artifact;
  }
  // Disk faults never throw from here: the cache warns once and the kernel stays in memory.
  DiskCache::FetchReport report;
  // A launch needs the CUBIN, not the PTX and source (most of an entry's bytes): they
  // are read, and checked, only for whoever asks for them.
  artifact->compiled = from_cache_entry(
      disk_->fetch_or_build(cache_key, fetch_or_compile, report,
                            read == Read::kForLoad ? DiskCache::Parts::kForLoad : DiskCache::Parts::kWhole));
  artifact->has_ptx = read != Read::kForLoad || report.built;
  origin = !report.built       ? ArtifactOrigin::kDisk
           : remote_report.hit ? ArtifactOrigin::kRemote
                               : ArtifactOrigin::kCompiled;
  counters_.disk_read_ms.fetch_add(report.read_ms, std::memory_order_relaxed);
  counters_.disk_verify_ms.fetch_add(report.verify_ms, std::memory_order_relaxed);
  Counters::bump(counters_.bytes_read, report.bytes_read);
  if (report.hit && read != Read::kRestOfAHit) {
    Counters::bump(counters_.disk_hits);
    counters_.compile_ms_saved.fetch_add(report.saved_compile_ms, std::memory_order_relaxed);
    log::debug("disk cache hit for {} ({})", desc.to_string(), artifact->path.string());
  }
  if (report.corrupt || report.untrusted) {
    Counters::bump(counters_.corrupt_rebuilt);
  } else if (report.built && !remote_report.hit) {
    Counters::bump(counters_.misses);
  }
  if (report.waited) Counters::bump(counters_.lock_waits);
  if (report.took_over) Counters::bump(counters_.lock_takeovers);
  if (report.lock_timed_out) Counters::bump(counters_.lock_timeouts);
  if (report.bytes_written != 0) Counters::bump(counters_.disk_writes);
  if (report.store_failed) Counters::bump(counters_.disk_write_errors);
  Counters::bump(counters_.bytes_written, report.bytes_written);
  Counters::bump(counters_.evictions, report.evicted_entries);
  return artifact;
}

}  // namespace convjit
