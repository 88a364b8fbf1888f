#pragma once
// The on-disk kernel cache: content-addressed entries, atomic publication,
// verification before every use.

#include <atomic>
#include <filesystem>
#include <optional>
#include <string>

#include "cache/entry_file.hpp"

namespace convjit {

struct KernelKey;

class DiskCache {
 public:
  // Creates `root` (mode 0700) when missing. Throws Error(kCache) when it cannot.
  explicit DiskCache(std::filesystem::path root);

  enum class Status { kHit, kMiss, kCorrupt };
  struct Lookup {
    Status status = Status::kMiss;
    std::optional<CacheEntry> entry;
    std::string why;  // for kCorrupt: what failed verification
  };

  // Reads and verifies the entry: every section's checksum, the trailer and the full
  // key text. A corrupt entry is removed so the rebuild can publish a good one.
  Lookup load(const KernelKey& key) const;
  // Publishes atomically: temp file in the same directory, fsync, rename. A lost
  // race (another writer published first) is success. Throws Error(kIo) on failure.
  void store(const KernelKey& key, const CacheEntry& entry) const;

  std::filesystem::path entry_path(const KernelKey& key) const;
  const std::filesystem::path& root() const noexcept { return root_; }

 private:
  std::filesystem::path root_;
};

}  // namespace convjit
