// DiskCache maintenance: the scan behind eviction, and listing, verification,
// pruning and clearing for the `convjit cache` command and tests.
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <map>

#include "cache/disk_cache.hpp"
#include "cache/disk_cache_internal.hpp"
#include "cache/file_system.hpp"
#include "cache/lock_file.hpp"
#include "cache/trust.hpp"
#include "core/fail.hpp"
#include "hash/sha256.hpp"

namespace convjit {

namespace fs = std::filesystem;

namespace {
// A temp file this old was left by a process that died while writing it.
constexpr auto kStaleTempAge = std::chrono::hours(1);
// How long maintenance waits for the cache lock held by a publisher.
constexpr auto kAdminLockWait = std::chrono::seconds(60);
// Enough of an entry's start to hold its header and key section.
constexpr std::size_t kKeyPeekBytes = 64 * 1024;

std::string key_field(std::string_view key_text, std::string_view field) {
  std::size_t pos = 0;
  while (pos < key_text.size()) {
    std::size_t end = key_text.find('\n', pos);
    if (end == std::string_view::npos) end = key_text.size();
    const std::string_view line = key_text.substr(pos, end - pos);
    if (line.size() > field.size() && line.starts_with(field) && line[field.size()] == ' ') {
      return std::string(line.substr(field.size() + 1));
    }
    pos = end + 1;
  }
  return {};
}

fs::file_time_type to_file_time(const timespec& ts) {
  const auto since_epoch = std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
  return fs::file_time_type::clock::from_sys(
      std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(since_epoch)));
}

bool is_stale(const timespec& mtime) {
  const auto age = std::chrono::system_clock::now() - std::chrono::system_clock::from_time_t(mtime.tv_sec);
  return age > kStaleTempAge;
}

// Removes `dir` and everything under it through the cache's file system.
void remove_tree(FileSystem& fs, const fs::path& dir) {
  std::vector<std::string> names;
  if (fs.list(dir, names) == 0) {
    for (const auto& name : names) {
      struct stat st {};
      const fs::path child = dir / name;
      if (fs.lstat(child, st) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        remove_tree(fs, child);
      } else {
        fs.unlink(child);
      }
    }
  }
  fs.rmdir(dir);
}
}  // namespace

DiskCache::Scan DiskCache::scan(bool clean_stale_temps) const {
  Scan out;
  std::vector<std::string> shards;
  if (fs_->list(version_dir(), shards) != 0) return out;
  std::sort(shards.begin(), shards.end());
  std::vector<std::string> names;
  for (const auto& shard : shards) {
    if (!is_shard_name(shard)) continue;
    const fs::path dir = version_dir() / shard;
    if (fs_->list(dir, names) != 0) continue;
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      const std::string_view view = name;
      struct stat st {};
      if (view.ends_with(kEntrySuffix) && is_hash_name(view.substr(0, view.size() - kEntrySuffix.size()))) {
        if (fs_->lstat(dir / name, st) != 0 || !S_ISREG(st.st_mode)) continue;
        out.entries.push_back(Scan::File{dir / name, std::string(view.substr(0, 64)),
                                         static_cast<std::uint64_t>(st.st_size), st.st_mtim});
        out.total += static_cast<std::uint64_t>(st.st_size);
      } else if (clean_stale_temps && view.find(kTempMarker) != std::string_view::npos) {
        if (fs_->lstat(dir / name, st) == 0 && is_stale(st.st_mtim)) fs_->unlink(dir / name);
      }
    }
  }
  return out;
}

DiskCache::EvictReport DiskCache::evict_locked(std::uint64_t max_bytes, const fs::path& keep,
                                               std::uint64_t incoming) const {
  EvictReport report;
  Scan files = scan(/*clean_stale_temps=*/true);
  std::uint64_t total = files.total + incoming;
  for (const auto& file : files.entries) {
    if (file.path == keep) total -= file.bytes;  // replaced by the incoming entry
  }
  if (total <= max_bytes) return report;
  std::stable_sort(files.entries.begin(), files.entries.end(),
                   [](const Scan::File& a, const Scan::File& b) { return older(a.mtime, b.mtime); });
  for (const auto& file : files.entries) {
    if (total <= max_bytes) break;
    if (file.path == keep) continue;
    // NOTE: a reader may have stamped this entry since the scan; then it is in use
    // again and the next oldest goes instead. A reader that already opened it keeps
    // reading the unlinked file to its end.
    struct stat st {};
    if (fs_->lstat(file.path, st) != 0) {
      total -= file.bytes;  // already gone
      continue;
    }
    if (older(file.mtime, st.st_mtim)) continue;
    if (fs_->unlink(file.path) == 0) {
      total -= file.bytes;
      ++report.entries;
      report.bytes += file.bytes;
      log::debug("evicted cache entry '{}' ({} bytes)", file.path.string(), file.bytes);
    }
  }
  return report;
}

void DiskCache::require_writable(std::string_view what) const {
  if (readonly_) fail(ErrorCode::kCache, "cannot {} the cache at '{}': {}", what, root_.string(), readonly_reason_);
}

std::vector<DiskCache::EntryInfo> DiskCache::list() const {
  Scan files = scan(/*clean_stale_temps=*/false);
  std::stable_sort(files.entries.begin(), files.entries.end(),
                   [](const Scan::File& a, const Scan::File& b) { return older(a.mtime, b.mtime); });
  std::vector<EntryInfo> out;
  out.reserve(files.entries.size());
  for (const auto& file : files.entries) {
    EntryInfo info{file.path, file.hash, {}, {}, {}, file.bytes, to_file_time(file.mtime)};
    std::string why;
    int fd = -1;
    if (const int err = fs_->open(file.path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0, fd); err != 0) {
      why = errno_text(err);
    } else {
      UniqueFd guard(*fs_, fd);
      std::string prefix;
      if (const int err = fs_->read_prefix(fd, prefix, kKeyPeekBytes); err != 0) {
        why = errno_text(err);
      } else if (auto key = peek_entry_key(prefix, why)) {
        info.key_text = std::move(*key);
      }
    }
    if (info.key_text.empty()) {
      info.problem = fmt::format("(unreadable: {})", why);
    } else {
      info.problem = key_field(info.key_text, "problem");
      info.arch = key_field(info.key_text, "arch");
    }
    out.push_back(std::move(info));
  }
  return out;
}

std::vector<DiskCache::BadEntry> DiskCache::verify_all() const {
  std::vector<BadEntry> bad;
  std::map<fs::path, std::optional<std::string>> shard_trust;
  for (const auto& file : scan(/*clean_stale_temps=*/false).entries) {
    const fs::path shard = file.path.parent_path();
    auto [it, inserted] = shard_trust.try_emplace(shard);
    if (inserted) {
      struct stat st {};
      if (const int err = fs_->lstat(shard, st); err != 0) {
        it->second = errno_text(err);
      } else {
        it->second = untrusted_cache_subdir(shard, st);
      }
    }
    if (it->second) {
      bad.push_back({file.path, *it->second});
      continue;
    }
    int fd = -1;
    if (const int err = fs_->open(file.path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0, fd); err != 0) {
      if (err != ENOENT) bad.push_back({file.path, fmt::format("cannot open: {}", errno_text(err))});
      continue;
    }
    UniqueFd guard(*fs_, fd);
    struct stat st {};
    if (const int err = fs_->fstat(fd, st); err != 0) {
      bad.push_back({file.path, fmt::format("cannot inspect: {}", errno_text(err))});
      continue;
    }
    if (auto why = untrusted_entry_file(file.path, st)) {
      bad.push_back({file.path, *why});
      continue;
    }
    std::string bytes;
    if (const int err = fs_->read_all(fd, bytes, kMaxEntryBytes); err != 0) {
      bad.push_back({file.path, fmt::format("cannot read: {}", errno_text(err))});
      continue;
    }
    std::string why;
    const auto entry = parse_entry(bytes, why);
    if (!entry) {
      bad.push_back({file.path, why});
    } else if (sha256_hex(entry->key_text) != file.hash) {
      bad.push_back({file.path, "the stored key does not hash to the file's name (moved or tampered with)"});
    } else if (shard.filename() != file.hash.substr(0, 2)) {
      bad.push_back({file.path, "the entry is in the wrong shard directory"});
    }
  }
  return bad;
}

std::uint64_t DiskCache::total_size() const {
  // NOTE: a shared lock: publishers evict and rename under the exclusive one, so the
  // scan never sees an eviction without its publication or the reverse. A read-only
  // cache without a lock file has no publishers to wait for.
  const IndexLock index =
      IndexLock::acquire(*fs_, version_dir() / kIndexLockName, /*exclusive=*/false, kAdminLockWait);
  return scan(/*clean_stale_temps=*/false).total;
}

DiskCache::EvictReport DiskCache::evict_to(std::uint64_t max_bytes) const {
  require_writable("prune");
  const IndexLock index =
      IndexLock::acquire(*fs_, version_dir() / kIndexLockName, /*exclusive=*/true, kAdminLockWait);
  if (!index.held()) {
    fail(ErrorCode::kCache, "cannot lock the cache at '{}' for pruning: {}", root_.string(), errno_text(index.error()));
  }
  return evict_locked(max_bytes, {}, 0);
}

bool DiskCache::remove_entry(const fs::path& path) const {
  require_writable("remove entries from");
  const std::string name = path.filename().string();
  const std::string_view view = name;
  // Only ever an entry file of this cache: never a path a caller made up.
  if (path.parent_path().parent_path() != version_dir() || !view.ends_with(kEntrySuffix) ||
      !is_hash_name(view.substr(0, view.size() - kEntrySuffix.size()))) {
    fail(ErrorCode::kInvalidArgument, "'{}' is not an entry of the cache at '{}'", path.string(), root_.string());
  }
  const int err = fs_->unlink(path);
  if (err == ENOENT) return false;
  if (err != 0) fail(ErrorCode::kIo, "cannot remove '{}': {}", path.string(), errno_text(err));
  return true;
}

DiskCache::EvictReport DiskCache::clear() const {
  require_writable("clear");
  EvictReport report;
  {
    const IndexLock index =
        IndexLock::acquire(*fs_, version_dir() / kIndexLockName, /*exclusive=*/true, kAdminLockWait);
    if (!index.held()) {
      fail(ErrorCode::kCache, "cannot lock the cache at '{}' for clearing: {}", root_.string(),
           errno_text(index.error()));
    }
    for (const auto& file : scan(/*clean_stale_temps=*/true).entries) {
      if (fs_->unlink(file.path) == 0) {
        ++report.entries;
        report.bytes += file.bytes;
      }
    }
  }
  // Lock files nobody holds were left by dead processes: taking one and releasing it
  // removes it. A held one belongs to a live compile and stays.
  std::vector<std::string> shards;
  std::vector<std::string> names;
  if (fs_->list(version_dir(), shards) == 0) {
    for (const auto& shard : shards) {
      if (!is_shard_name(shard) || fs_->list(version_dir() / shard, names) != 0) continue;
      for (const auto& name : names) {
        if (std::string_view(name).ends_with(kLockSuffix)) KeyLock::try_acquire(*fs_, version_dir() / shard / name);
      }
    }
  }
  // Directories of other format versions are never read by this one.
  const std::string current = version_dir().filename().string();
  if (fs_->list(root_, names) == 0) {
    for (const auto& name : names) {
      if (name.size() < 2 || name[0] != 'v' || name == current ||
          !std::all_of(name.begin() + 1, name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        continue;
      }
      struct stat st {};
      if (fs_->lstat(root_ / name, st) == 0 && S_ISDIR(st.st_mode)) remove_tree(*fs_, root_ / name);
    }
  }
  return report;
}

}  // namespace convjit
