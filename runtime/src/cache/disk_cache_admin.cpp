// DiskCache maintenance: the scan behind eviction, and listing, verification,
// pruning and clearing for the `convjit cache` command and tests.
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <map>

#include "base/fail.hpp"
#include "base/sha256.hpp"
#include "cache/disk_cache.hpp"
#include "cache/disk_cache_internal.hpp"
#include "cache/file_system.hpp"
#include "cache/lock_file.hpp"
#include "cache/ownership.hpp"
#include "cache/trust.hpp"

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
  return fs::file_time_type::clock::from_sys(std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(since_epoch)));
}

bool is_stale(const timespec& mtime) {
  const auto age = std::chrono::system_clock::now() - std::chrono::system_clock::from_time_t(mtime.tv_sec);
  return age > kStaleTempAge;
}
}  // namespace

DiskCache::Scan DiskCache::scan(bool clean_stale_temps) const {
  Scan out;
  std::vector<std::string> shards;
  if (fs_->list(version_dir(), shards) != 0) return out;
  std::sort(shards.begin(), shards.end());
  std::optional<bool> marked;  // looked up once, and only when a stale temp file is found
  std::vector<std::string> names;
  for (const auto& shard : shards) {
    if (!is_shard_name(shard)) continue;
    const fs::path dir = version_dir() / shard;
    struct stat st {};
    if (fs_->lstat(dir, st) != 0) continue;
    // NOTE: never listed through a link: eviction would delete files wherever it points.
    if (!S_ISDIR(st.st_mode)) {
      out.misplaced.push_back({dir, st.st_mode});
      continue;
    }
    if (fs_->list(dir, names) != 0) continue;
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      const CacheFileKind kind = shard_file_kind(name);
      if (kind == CacheFileKind::kEntry) {
        if (fs_->lstat(dir / name, st) != 0) continue;
        if (!S_ISREG(st.st_mode)) {
          out.misplaced.push_back({dir / name, st.st_mode});
          continue;
        }
        out.entries.push_back(
            Scan::File{dir / name, name.substr(0, 64), static_cast<std::uint64_t>(st.st_size), st.st_mtim});
        out.total += static_cast<std::uint64_t>(st.st_size);
      } else if (clean_stale_temps && kind == CacheFileKind::kTemp) {
        if (fs_->lstat(dir / name, st) != 0 || !is_stale(st.st_mtim)) continue;
        if (!marked) marked = has_version_marker(*fs_, version_dir());
        if (!not_made_by_convjit(*fs_, dir / name, kind, *marked)) fs_->unlink(dir / name);
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
  const bool marked = has_version_marker(*fs_, version_dir());
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
    if (const auto why = not_made_by_convjit(*fs_, file.path, CacheFileKind::kEntry, marked)) {
      // Not ours to evict, and so not part of the cache's size either.
      log::debug("not evicting '{}': {}", file.path.string(), *why);
      total -= file.bytes;
      continue;
    }
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
  const Scan files = scan(/*clean_stale_temps=*/false);
  for (const auto& m : files.misplaced) {
    const bool shard = m.path.parent_path() == version_dir();
    bad.push_back(
        {m.path,
         fmt::format("{} where {} belongs", file_type_name(m.mode), shard ? "a shard directory" : "a cache entry"),
         fmt::format("not made by convjit ({}; convjit makes {} there)", file_type_name(m.mode),
                     shard ? "a directory" : "a regular file"),
         /*misplaced=*/true});
  }
  const std::size_t first_entry = bad.size();
  std::map<fs::path, std::optional<std::string>> shard_trust;
  for (const auto& file : files.entries) {
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
  // What --remove would leave: a corrupt entry is still convjit's, a stranger's file is not.
  if (bad.size() > first_entry) {
    const bool marked = has_version_marker(*fs_, version_dir());
    for (std::size_t i = first_entry; i < bad.size(); ++i) {
      if (auto why = not_made_by_convjit(*fs_, bad[i].path, CacheFileKind::kEntry, marked)) bad[i].not_convjits = *why;
    }
  }
  return bad;
}

std::uint64_t DiskCache::total_size() const {
  // NOTE: a shared lock: publishers evict and rename under the exclusive one, so the
  // scan never sees an eviction without its publication or the reverse. A read-only
  // cache without a lock file has no publishers to wait for.
  const IndexLock index = IndexLock::acquire(*fs_, version_dir() / kIndexLockName, /*exclusive=*/false, kAdminLockWait);
  return scan(/*clean_stale_temps=*/false).total;
}

DiskCache::EvictReport DiskCache::evict_to(std::uint64_t max_bytes) const {
  require_writable("prune");
  const IndexLock index = IndexLock::acquire(*fs_, version_dir() / kIndexLockName, /*exclusive=*/true, kAdminLockWait);
  if (!index.held()) {
    fail(ErrorCode::kCache, "cannot lock the cache at '{}' for pruning: {}", root_.string(), errno_text(index.error()));
  }
  return evict_locked(max_bytes, {}, 0);
}

bool DiskCache::remove_entry(const fs::path& path) const {
  require_writable("remove entries from");
  const std::string name = path.filename().string();
  const fs::path shard = path.parent_path();
  // Only ever an entry file of this cache: never a path a caller made up.
  if (shard.parent_path() != version_dir() || !is_shard_name(shard.filename().string()) ||
      shard_file_kind(name) != CacheFileKind::kEntry) {
    fail(ErrorCode::kInvalidArgument, "'{}' is not an entry of the cache at '{}'", path.string(), root_.string());
  }
  struct stat st {};
  if (const int err = fs_->lstat(shard, st); err != 0 || !S_ISDIR(st.st_mode)) {
    if (err == ENOENT) return false;
    fail(ErrorCode::kCache, "not removing '{}': its shard directory is {}", path.string(),
         err != 0 ? errno_text(err) : std::string(file_type_name(st.st_mode)));
  }
  if (const int err = fs_->lstat(path, st); err == ENOENT) return false;
  if (auto why = not_made_by_convjit(*fs_, path, CacheFileKind::kEntry, has_version_marker(*fs_, version_dir()))) {
    fail(ErrorCode::kCache, "not removing '{}': {}", path.string(), *why);
  }
  const int err = fs_->unlink(path);
  if (err == ENOENT) return false;
  if (err != 0) fail(ErrorCode::kIo, "cannot remove '{}': {}", path.string(), errno_text(err));
  return true;
}

void DiskCache::clear_version_dir(const fs::path& vdir, bool current, ClearReport& report) const {
  const bool marked = has_version_marker(*fs_, vdir);
  // An unmarked directory of another version is removed only when convjit's files were
  // found in it: an empty `v7/` with nothing of convjit's is a stranger's.
  bool found_convjit_files = false;
  const auto leave = [&](const fs::path& path, std::string why, bool error = false) {
    report.left.push_back({path, std::move(why), error});
  };
  const auto remove = [&](const fs::path& path, bool entry, std::uint64_t bytes) {
    found_convjit_files = true;
    if (const int err = fs_->unlink(path); err != 0) {
      if (err != ENOENT) leave(path, fmt::format("cannot remove it: {}", errno_text(err)), /*error=*/true);
      return;
    }
    if (entry) {
      ++report.entries;
      report.bytes += bytes;
    } else {
      ++report.other_files;
    }
  };

  // NOTE: publishers evict and rename under the cache lock, so while clear holds it no
  // entry of this version appears or goes.
  IndexLock index;
  if (current) {
    index = IndexLock::acquire(*fs_, vdir / kIndexLockName, /*exclusive=*/true, kAdminLockWait);
    if (!index.held()) {
      fail(ErrorCode::kCache, "cannot lock the cache at '{}' for clearing: {}", root_.string(),
           errno_text(index.error()));
    }
  }
  std::vector<std::string> names;
  if (const int err = fs_->list(vdir, names); err != 0) {
    leave(vdir, fmt::format("cannot list it: {}", errno_text(err)), /*error=*/true);
    return;
  }
  std::sort(names.begin(), names.end());
  std::vector<std::string> files;
  for (const auto& name : names) {
    const fs::path path = vdir / name;
    struct stat st {};
    if (fs_->lstat(path, st) != 0) continue;
    if (!is_shard_name(name)) {
      const CacheFileKind kind = version_file_kind(name);
      if (current && (kind == CacheFileKind::kIndexLock || kind == CacheFileKind::kMarker)) continue;
      if (kind == CacheFileKind::kMarker) {
        if (!marked) leave(path, "not recognizably convjit's (not its cache directory tag)");
        continue;  // convjit's own goes last, with its directory
      }
      if (auto why = not_made_by_convjit(*fs_, path, kind, marked)) {
        leave(path, std::move(*why));
      } else {
        remove(path, /*entry=*/false, 0);
      }
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      leave(path, fmt::format("{} where a shard directory belongs", file_type_name(st.st_mode)));
      continue;
    }
    if (const int err = fs_->list(path, files); err != 0) {
      leave(path, fmt::format("cannot list it: {}", errno_text(err)), /*error=*/true);
      continue;
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      const fs::path file_path = path / file;
      const CacheFileKind kind = shard_file_kind(file);
      if (auto why = not_made_by_convjit(*fs_, file_path, kind, marked)) {
        leave(file_path, std::move(*why));
        continue;
      }
      struct stat fst {};
      if (fs_->lstat(file_path, fst) != 0) continue;
      switch (kind) {
        case CacheFileKind::kEntry:
          remove(file_path, /*entry=*/true, static_cast<std::uint64_t>(fst.st_size));
          break;
        case CacheFileKind::kTemp:
          // A young temp file is being written by a live process; its rename would fail.
          if (is_stale(fst.st_mtim)) {
            remove(file_path, /*entry=*/false, 0);
          } else {
            found_convjit_files = true;
            leave(file_path, "being written (less than an hour old)");
          }
          break;
        case CacheFileKind::kKeyLock: {
          // Taking an unheld lock and releasing it removes its file; a held one belongs to a live compile.
          found_convjit_files = true;
          KeyLock lock = KeyLock::try_acquire(*fs_, file_path);
          if (lock.held()) {
            lock.release();
            ++report.other_files;
          } else {
            leave(file_path, lock.error() == 0 ? std::string("held by a running compile")
                                               : fmt::format("cannot lock it: {}", errno_text(lock.error())));
          }
          break;
        }
        default:
          break;
      }
    }
    // NOTE: rmdir removes an empty directory only. The current version keeps its shards:
    // a publisher may be about to create a temp file in one.
    if (!current && fs_->rmdir(path) == 0) found_convjit_files = true;
  }
  if (current) return;
  if (!marked && !found_convjit_files) {
    if (names.empty()) leave(vdir, "an empty directory without convjit's marker");
    return;
  }
  std::vector<std::string> rest;
  if (fs_->list(vdir, rest) != 0) return;
  if (marked && rest.size() == 1 && rest[0] == kVersionMarkerName) {
    remove(vdir / kVersionMarkerName, /*entry=*/false, 0);
    rest.clear();
  }
  if (rest.empty() && fs_->rmdir(vdir) == 0) report.removed_dirs.push_back(vdir);
}

DiskCache::ClearReport DiskCache::clear() const {
  require_writable("clear");
  ClearReport report;
  clear_version_dir(version_dir(), /*current=*/true, report);
  // Directories of other format versions are never read by this one. Other names in
  // the root are not the cache's to mention.
  std::vector<std::string> names;
  if (fs_->list(root_, names) == 0) {
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      const fs::path dir = root_ / name;
      if (!is_version_dir_name(name) || dir == version_dir()) continue;
      struct stat st {};
      if (fs_->lstat(dir, st) != 0) continue;
      if (!S_ISDIR(st.st_mode)) {
        report.left.push_back({dir, fmt::format("{}, not a directory convjit made", file_type_name(st.st_mode))});
        continue;
      }
      clear_version_dir(dir, /*current=*/false, report);
    }
  }
  return report;
}

}  // namespace convjit
