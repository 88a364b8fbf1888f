#include "cache/disk_cache.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "base/fail.hpp"
#include "cache/cache_key.hpp"
#include "cache/disk_cache_internal.hpp"
#include "cache/file_system.hpp"
#include "cache/lock_file.hpp"
#include "cache/ownership.hpp"
#include "cache/trust.hpp"

namespace convjit {

namespace fs = std::filesystem;

namespace {

bool is_write_denied(int err) { return err == EACCES || err == EPERM || err == EROFS; }
bool is_out_of_space(int err) { return err == ENOSPC || err == EDQUOT; }

// Creates every missing directory of `dir` with mode 0700 (a new cache is private).
// Existing ones are left alone: their modes are checked, never silently changed.
void create_private_dirs(FileSystem& fs, const fs::path& dir) {
  std::vector<fs::path> missing;
  for (fs::path p = dir; !p.empty(); p = p.parent_path()) {
    struct stat st {};
    if (fs.lstat(p, st) == 0) break;
    missing.push_back(p);
    if (p == p.root_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    const int err = fs.mkdir(*it, 0700);
    if (err != 0 && err != EEXIST) {
      fail(ErrorCode::kCache, "cannot create cache directory '{}': {}", it->string(), errno_text(err));
    }
  }
}

// A temp name unique across processes and threads of this host.
std::string temp_suffix() {
  static std::atomic<unsigned> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{}.{}.{:x}", kTempMarker.substr(kEntrySuffix.size()), ::getpid(), counter.fetch_add(1), rng());
}

// The innermost live StoreFailureWatch; its fields are guarded by the same mutex.
std::mutex g_watch_mutex;
StoreFailureWatch* g_watch = nullptr;

}  // namespace

StoreFailureWatch::StoreFailureWatch() {
  const std::lock_guard lock(g_watch_mutex);
  outer_ = std::exchange(g_watch, this);
}

StoreFailureWatch::~StoreFailureWatch() {
  const std::lock_guard lock(g_watch_mutex);
  g_watch = outer_;
}

std::uint64_t StoreFailureWatch::count() const {
  const std::lock_guard lock(g_watch_mutex);
  return count_;
}

std::string StoreFailureWatch::first_reason() const {
  const std::lock_guard lock(g_watch_mutex);
  return first_reason_;
}

void StoreFailureWatch::note(std::string reason) {
  const std::lock_guard lock(g_watch_mutex);
  if (g_watch == nullptr) return;
  if (g_watch->count_++ == 0) g_watch->first_reason_ = std::move(reason);
}

bool is_shard_name(std::string_view name) {
  return name.size() == 2 && std::isxdigit(static_cast<unsigned char>(name[0])) &&
         std::isxdigit(static_cast<unsigned char>(name[1])) && !std::isupper(static_cast<unsigned char>(name[0])) &&
         !std::isupper(static_cast<unsigned char>(name[1]));
}

bool is_hash_name(std::string_view name) {
  if (name.size() != 64) return false;
  for (const char c : name) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

DiskCache::DiskCache(fs::path root, DiskCacheOptions options)
    : root_(std::move(root)),
      options_(std::move(options)),
      fs_(options_.fs ? options_.fs : default_file_system()),
      readonly_(options_.readonly),
      shared_(std::make_unique<Shared>()) {
  if (root_.empty()) fail(ErrorCode::kCache, "the cache directory path is empty");
  std::error_code ec;
  if (const fs::path absolute = fs::absolute(root_, ec); !ec) root_ = absolute;
  if (readonly_) readonly_reason_ = "read-only by request";

  struct stat st {};
  int err = fs_->stat(root_, st);
  if (err == ENOENT && readonly_) {
    fail(ErrorCode::kCache, "read-only cache directory '{}' does not exist", root_.string());
  }
  if (err == ENOENT) {
    create_private_dirs(*fs_, root_);
    err = fs_->stat(root_, st);
  }
  if (err != 0) fail(ErrorCode::kCache, "cannot use cache directory '{}': {}", root_.string(), errno_text(err));
  if (!S_ISDIR(st.st_mode)) {
    fail(ErrorCode::kCache, "cache path '{}' exists and is not a directory; remove it or set CONVJIT_CACHE_DIR",
         root_.string());
  }
  if (auto why = untrusted_cache_root(*fs_, root_)) fail(ErrorCode::kCache, "{}", *why);

  const fs::path vdir = version_dir();
  err = fs_->lstat(vdir, st);
  if (err == ENOENT && !readonly_) {
    err = fs_->mkdir(vdir, 0700);
    // Made here, so marked as convjit's: maintenance may then clear every file of
    // convjit's names in it, corrupt ones included (cache/ownership.hpp).
    if (err == 0) {
      if (const int marker_err = write_version_marker(*fs_, vdir); marker_err != 0) {
        log::debug("cannot mark '{}' as made by convjit: {}", vdir.string(), errno_text(marker_err));
      }
    }
    if (err == 0 || err == EEXIST) err = fs_->lstat(vdir, st);
  }
  if (err == 0) {
    if (auto why = untrusted_cache_subdir(vdir, st)) fail(ErrorCode::kCache, "{}", *why);
  } else if (!(err == ENOENT && readonly_)) {
    if (!is_write_denied(err)) {
      fail(ErrorCode::kCache, "cannot use cache directory '{}': {}", vdir.string(), errno_text(err));
    }
  }

  if (!readonly_) {
    // NOTE: a real create is the only honest writability test: access(W_OK) says yes
    // to root on a read-only mount.
    int fd = -1;
    if (err == 0) err = fs_->open(vdir / kIndexLockName, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600, fd);
    if (fd >= 0) fs_->close(fd);
    if (err != 0 && !is_out_of_space(err)) {
      readonly_ = true;
      readonly_reason_ = fmt::format("cache directory '{}' is not writable ({})", root_.string(), errno_text(err));
      log::warn("{}; using its entries read-only, new kernels stay in memory", readonly_reason_);
    }
  }
}

DiskCache::~DiskCache() = default;
DiskCache::DiskCache(DiskCache&&) noexcept = default;
DiskCache& DiskCache::operator=(DiskCache&&) noexcept = default;

fs::path DiskCache::version_dir() const { return root_ / fmt::format("v{}", kCacheFormatVersion); }

fs::path DiskCache::entry_path(const CacheKey& key) const {
  // Keys are hashes, so no path is ever built from a user's string.
  if (!is_hash_name(key.hash)) fail(ErrorCode::kInternal, "cache key hash '{}' is not a sha256 hex digest", key.hash);
  return version_dir() / key.hash.substr(0, 2) / (key.hash + std::string(kEntrySuffix));
}

DiskCache::Lookup DiskCache::load(const CacheKey& key, Parts parts) const {
  return load_impl(key, /*warn=*/true, parts);
}

DiskCache::Lookup DiskCache::load_impl(const CacheKey& key, bool warn, Parts parts) const {
  const fs::path path = entry_path(key);
  const fs::path shard = path.parent_path();
  Lookup out;
  struct stat st {};
  if (int err = fs_->lstat(shard, st); err != 0) {
    if (err != ENOENT) {
      shared_->warn_once(CacheTrouble::kReadFailed, "cannot read cache directory '{}' ({}); compiling instead",
                         shard.string(), errno_text(err));
    }
    return out;
  }
  if (!S_ISDIR(st.st_mode)) {
    shared_->warn_once(CacheTrouble::kNotADirectory,
                       "'{}' is not a directory, so the cache can neither read nor write entries under it; "
                       "remove it (kernels compile in memory meanwhile)",
                       shard.string());
    return out;
  }
  if (auto why = untrusted_cache_subdir(shard, st)) {
    if (warn) shared_->warn_once(CacheTrouble::kUntrusted, "{}", *why);
    return Lookup{Status::kUntrusted, std::nullopt, *why, 0};
  }

  const auto since = [](std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  };
  const auto read_start = std::chrono::steady_clock::now();
  int fd = -1;
  if (const int err = fs_->open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0, fd); err != 0) {
    if (err == ELOOP) {
      std::string why = fmt::format("cache entry '{}' is a symbolic link; not loading code through it", path.string());
      if (warn) shared_->warn_once(CacheTrouble::kUntrusted, "{}", why);
      return Lookup{Status::kUntrusted, std::nullopt, std::move(why), 0};
    }
    if (err != ENOENT && err != ENOTDIR) {
      shared_->warn_once(CacheTrouble::kReadFailed, "cannot read cache entry '{}' ({}); compiling instead",
                         path.string(), errno_text(err));
    }
    return out;
  }
  UniqueFd file(*fs_, fd);
  if (const int err = fs_->fstat(fd, st); err != 0) {
    shared_->warn_once(CacheTrouble::kReadFailed, "cannot read cache entry '{}' ({}); compiling instead", path.string(),
                       errno_text(err));
    return out;
  }
  if (auto why = untrusted_entry_file(path, st)) {
    if (warn) shared_->warn_once(CacheTrouble::kUntrusted, "{}", *why);
    return Lookup{Status::kUntrusted, std::nullopt, *why, 0};
  }

  std::string why;
  std::optional<CacheEntry> entry;
  std::uint64_t bytes_read = 0;
  double read_ms = 0;
  auto verify_start = std::chrono::steady_clock::now();
  if (parts == Parts::kWhole) {
    std::string bytes;
    const int read_err = fs_->read_all(fd, bytes, kMaxEntryBytes);
    read_ms = since(read_start);
    verify_start = std::chrono::steady_clock::now();
    bytes_read = bytes.size();
    if (read_err != 0) {
      why = read_err == EFBIG ? fmt::format("larger than {} MiB", kMaxEntryBytes >> 20)
                              : fmt::format("read error: {}", errno_text(read_err));
    } else {
      entry = parse_entry(bytes, why);
    }
  } else if (static_cast<std::uint64_t>(st.st_size) > kMaxEntryBytes) {
    read_ms = since(read_start);
    verify_start = std::chrono::steady_clock::now();
    why = fmt::format("larger than {} MiB", kMaxEntryBytes >> 20);
  } else {
    // The reads interleave with the checks: their time counts as reading, the rest as verifying.
    double reading_ms = 0;
    const EntryReadAt read_at = [&](std::uint64_t offset, std::size_t max, std::string& out) {
      const auto start = std::chrono::steady_clock::now();
      const int err = fs_->read_at(fd, offset, max, out);
      reading_ms += since(start);
      return err;
    };
    const double opening_ms = since(read_start);
    verify_start = std::chrono::steady_clock::now();
    entry = read_entry_for_load(static_cast<std::uint64_t>(st.st_size), read_at, why, bytes_read);
    read_ms = opening_ms + reading_ms;
    verify_start += std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double, std::milli>(reading_ms));
  }
  if (entry && entry->key_text != key.text) {
    entry.reset();
    why =
        "the stored key differs from the requested one (another arch, compiler or convjit version, a hash "
        "collision, or tampering)";
  }
  if (!entry) {
    if (warn) {
      log::warn("cache entry '{}' is corrupt ({}); {}", path.string(), why,
                readonly_ ? "compiling it in memory (the cache is read-only)" : "rebuilding it");
    }
    return Lookup{Status::kCorrupt, std::nullopt, std::move(why), 0, read_ms, since(verify_start)};
  }
  const double verify_ms = since(verify_start);
  if (!readonly_) {
    // The last-used stamp is the mtime, set explicitly (atime is often off: noatime).
    const auto now = std::chrono::system_clock::now();
    const auto stamp = std::chrono::system_clock::from_time_t(st.st_mtim.tv_sec);
    if (now - stamp >= options_.stamp_interval) fs_->touch(fd);
  }
  return Lookup{Status::kHit, std::move(entry), {}, bytes_read, read_ms, verify_ms};
}

DiskCache::StoreReport DiskCache::store(const CacheKey& key, const CacheEntry& entry) const {
  StoreReport report;
  if (readonly_) {
    StoreFailureWatch::note(readonly_reason_);
    return report;
  }
  const fs::path path = entry_path(key);
  const fs::path shard = path.parent_path();
  const std::string bytes = serialize_entry(entry);
  if (options_.max_bytes != 0 && bytes.size() > options_.max_bytes) {
    log::info("not caching '{}': its {} bytes exceed the cache limit of {} bytes", path.string(), bytes.size(),
              options_.max_bytes);
    StoreFailureWatch::note(fmt::format("'{}' is {} bytes, over the cache limit of {} bytes", path.string(),
                                        bytes.size(), options_.max_bytes));
    return report;
  }

  const auto failed = [&](int err, std::string_view doing, const fs::path& where) {
    report.error = err;
    StoreFailureWatch::note(err == ENOTDIR ? fmt::format("'{}' is not a directory", shard.string())
                                           : fmt::format("{} while {} '{}'", errno_text(err), doing, where.string()));
    if (is_out_of_space(err)) {
      shared_->warn_once(CacheTrouble::kNoSpace,
                         "the disk cache at '{}' is full ({} while {} '{}'); new kernels stay in memory until "
                         "space frees up",
                         root_.string(), errno_text(err), doing, where.string());
    } else if (is_write_denied(err)) {
      shared_->warn_once(CacheTrouble::kNotWritable,
                         "cannot write to the disk cache at '{}' ({} while {} '{}'); new kernels stay in memory, "
                         "existing entries are still read",
                         root_.string(), errno_text(err), doing, where.string());
    } else if (err == ENOTDIR) {
      shared_->warn_once(CacheTrouble::kNotADirectory,
                         "'{}' is not a directory, so the cache can neither read nor write entries under it; "
                         "remove it (kernels compile in memory meanwhile)",
                         shard.string());
    } else {
      shared_->warn_once(CacheTrouble::kWriteFailed,
                         "cannot write the disk cache ({} while {} '{}'); the kernel stays in memory", errno_text(err),
                         doing, where.string());
    }
    return report;
  };

  if (const int err = fs_->mkdir(shard, 0700); err != 0 && err != EEXIST) return failed(err, "creating", shard);
  struct stat st {};
  if (const int err = fs_->lstat(shard, st); err != 0) return failed(err, "inspecting", shard);
  if (!S_ISDIR(st.st_mode)) return failed(ENOTDIR, "creating", shard);
  if (auto why = untrusted_cache_subdir(shard, st)) {
    shared_->warn_once(CacheTrouble::kUntrusted, "{}", *why);
    StoreFailureWatch::note(*why);
    report.error = EPERM;
    return report;
  }

  const fs::path temp = path.string() + temp_suffix();
  int fd = -1;
  if (const int err = fs_->open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600, fd); err != 0) {
    return failed(err, "creating", temp);
  }
  {
    UniqueFd file(*fs_, fd);
    int err = fs_->write_all(fd, bytes);
    const char* doing = "writing";
    if (err == 0) {
      err = fs_->fsync(fd);
      doing = "syncing";
    }
    if (err == 0) {
      // NOTE: close can report a deferred write error (NFS); it counts as a failed write.
      err = fs_->close(file.release());
      doing = "closing";
    }
    if (err != 0) {
      fs_->unlink(temp);
      return failed(err, doing, temp);
    }
  }

  IndexLock index;
  if (options_.max_bytes != 0) {
    index = IndexLock::acquire(*fs_, version_dir() / kIndexLockName, /*exclusive=*/true, std::chrono::seconds(10));
    if (index.held()) {
      const EvictReport evicted = evict_locked(options_.max_bytes, path, bytes.size());
      report.evicted_entries = evicted.entries;
      report.evicted_bytes = evicted.bytes;
    } else {
      shared_->warn_once(CacheTrouble::kIndexLock,
                         "cannot take the cache lock '{}' ({}); publishing without evicting, so the cache may "
                         "exceed its limit until the next publication",
                         (version_dir() / kIndexLockName).string(), errno_text(index.error()));
    }
  }
  // NOTE: rename replaces atomically: readers see the old file or the new one, never a
  // mix. When another process published the same key first, ours (same content) wins
  // or loses the race: both are success.
  if (const int err = fs_->rename(temp, path); err != 0) {
    fs_->unlink(temp);
    return failed(err, "publishing", path);
  }
  int dir_fd = -1;
  if (fs_->open(shard, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, dir_fd) == 0) {
    fs_->fsync(dir_fd);
    fs_->close(dir_fd);
  }
  report.published = true;
  report.bytes = bytes.size();
  return report;
}

CacheEntry DiskCache::fetch_or_build(const CacheKey& key, const std::function<CacheEntry()>& build, FetchReport& report,
                                     Parts parts) const {
  report = FetchReport{};
  KeyLock lock;  // NOTE: released after the publication below, so waiters find the entry
  bool disk_usable = true;
  const auto timed = [&](Lookup lookup) {
    report.read_ms += lookup.read_ms;
    report.verify_ms += lookup.verify_ms;
    return lookup;
  };
  const auto take_hit = [&](Lookup& lookup) {
    report.hit = true;
    report.bytes_read += lookup.bytes;
    report.saved_compile_ms = lookup.entry->compile_ms;
    return std::move(*lookup.entry);
  };
  try {
    Lookup first = timed(load_impl(key, /*warn=*/true, parts));
    if (first.status == Status::kHit) return take_hit(first);
    report.corrupt = first.status == Status::kCorrupt;
    report.untrusted = first.status == Status::kUntrusted;
    if (!readonly_) {
      const fs::path path = entry_path(key);
      const fs::path lock_path = path.parent_path() / (key.hash + std::string(kLockSuffix));
      int mkdir_err = fs_->mkdir(path.parent_path(), 0700);
      if (struct stat st{}; mkdir_err == EEXIST && (fs_->lstat(path.parent_path(), st) != 0 || !S_ISDIR(st.st_mode))) {
        mkdir_err = ENOTDIR;  // load_impl has warned; store will fail quietly
      }
      const auto deadline = std::chrono::steady_clock::now() + options_.lock_wait;
      auto pause = std::chrono::milliseconds(2);
      while (mkdir_err == 0 || mkdir_err == EEXIST) {
        KeyLock attempt = KeyLock::try_acquire(*fs_, lock_path);
        if (attempt.held()) {
          if (attempt.took_over()) {
            report.took_over = true;
            log::warn("took over the compile lock '{}' from {}, which died holding it", lock_path.string(),
                      attempt.previous_owner());
          }
          lock = std::move(attempt);
          // The previous holder may have published between our first look and our lock.
          Lookup again = timed(load_impl(key, /*warn=*/false, parts));
          if (again.status == Status::kHit) return take_hit(again);
          report.corrupt |= again.status == Status::kCorrupt;  // damaged after it was published
          break;
        }
        if (attempt.error() != 0) {
          shared_->warn_once(CacheTrouble::kLockUnavailable,
                             "cannot take the compile lock '{}' ({}); compiling without it, so other processes "
                             "may compile the same kernel at the same time",
                             lock_path.string(), errno_text(attempt.error()));
          break;
        }
        // Another process is compiling this key: wait for its entry, not for its lock.
        if (!report.waited) {
          log::debug("waiting for {} to compile '{}' (lock '{}')", read_lock_owner(*fs_, lock_path), key.hash,
                     lock_path.string());
        }
        report.waited = true;
        Lookup seen = timed(load_impl(key, /*warn=*/false, parts));
        if (seen.status == Status::kHit) return take_hit(seen);
        if (std::chrono::steady_clock::now() >= deadline) {
          report.lock_timed_out = true;
          std::string owner = read_lock_owner(*fs_, lock_path);
          shared_->warn_once(
              CacheTrouble::kLockTimeout, "waited {} ms for {} to compile '{}' (lock '{}'); compiling it here too",
              options_.lock_wait.count(), owner.empty() ? "another process" : owner, key.hash, lock_path.string());
          break;
        }
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::milliseconds(50));
      }
    }
  } catch (const std::exception& e) {
    shared_->warn_once(CacheTrouble::kUnexpected, "the disk cache at '{}' failed ({}); compiling in memory",
                       root_.string(), e.what());
    disk_usable = false;
  }

  CacheEntry entry = build();
  report.built = true;
  if (disk_usable && !readonly_) {
    try {
      const StoreReport stored = store(key, entry);
      report.store_failed = !stored.published;
      report.bytes_written = stored.bytes;
      report.evicted_entries = stored.evicted_entries;
    } catch (const std::exception& e) {
      shared_->warn_once(CacheTrouble::kUnexpected, "the disk cache at '{}' failed ({}); compiling in memory",
                         root_.string(), e.what());
      StoreFailureWatch::note(e.what());
      report.store_failed = true;
    }
  }
  return entry;
}

}  // namespace convjit
