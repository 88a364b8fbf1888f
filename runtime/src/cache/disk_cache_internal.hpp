#pragma once
// DiskCache's private pieces shared by disk_cache.cpp (kernel requests) and
// disk_cache_admin.cpp (listing, verification, eviction).

#include <sys/stat.h>

#include <array>
#include <atomic>
#include <string>
#include <string_view>
#include <vector>

#include "base/log.hpp"
#include "cache/disk_cache.hpp"

namespace convjit {

// Each cause of trouble is reported once per DiskCache (so once per Runtime), not
// on every kernel: a full disk must not print a line per compile.
enum class CacheTrouble {
  kNotWritable,      // EACCES, EPERM, EROFS while writing
  kNoSpace,          // ENOSPC, EDQUOT
  kWriteFailed,      // any other write error
  kReadFailed,       // an entry or directory that cannot be read
  kNotADirectory,    // a file where a shard directory should be
  kUntrusted,        // an entry or shard directory another user can write
  kLockUnavailable,  // flock refused (ENOLCK on some network filesystems)
  kLockTimeout,      // a live holder kept a key's lock past options.lock_wait
  kIndexLock,        // the cache-wide lock could not be taken: published without evicting
  kUnexpected,       // anything else thrown inside the cache
  kCount,
};

struct DiskCache::Shared {
  std::array<std::atomic<bool>, static_cast<std::size_t>(CacheTrouble::kCount)> warned{};

  template <typename... Args>
  void warn_once(CacheTrouble cause, fmt::format_string<Args...> format, Args&&... args) {
    if (!warned[static_cast<std::size_t>(cause)].exchange(true)) log::warn(format, std::forward<Args>(args)...);
  }
};

struct DiskCache::Scan {
  struct File {
    std::filesystem::path path;
    std::string hash;
    std::uint64_t bytes = 0;
    timespec mtime{};
  };
  // What sits where the layout wants something else: not a regular file in an entry
  // slot, not a directory in a shard slot. Never read, listed through, or removed.
  struct Misplaced {
    std::filesystem::path path;
    mode_t mode = 0;
  };
  std::vector<File> entries;
  std::vector<Misplaced> misplaced;
  std::uint64_t total = 0;
};

// "ab" for a shard directory name: two lowercase hex digits.
bool is_shard_name(std::string_view name);
// A 64-digit lowercase hex sha256, as every entry's file name stem.
bool is_hash_name(std::string_view name);
inline constexpr std::string_view kEntrySuffix = ".entry";
inline constexpr std::string_view kLockSuffix = ".lock";
inline constexpr std::string_view kTempMarker = ".entry.tmp.";
inline constexpr std::string_view kIndexLockName = "cache.lock";
// An entry file larger than this is garbage, not a kernel: never read it whole.
inline constexpr std::size_t kMaxEntryBytes = std::size_t{512} << 20;

inline bool older(const timespec& a, const timespec& b) {
  return a.tv_sec != b.tv_sec ? a.tv_sec < b.tv_sec : a.tv_nsec < b.tv_nsec;
}

}  // namespace convjit
