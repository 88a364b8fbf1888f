#pragma once
// The on-disk kernel cache: content-addressed entries, atomic publication,
// verification before every use, one compile per key across processes, a byte
// limit with least-recently-used eviction, and graceful degradation: a fault of the
// cache (unwritable, full, tampered, insecure) never fails a kernel request.
// docs/cache.md describes the layout, the entry format and the locking protocol.
//
// Layout under the root (one file per entry keeps inode use low, triton #11778):
//   v<format>/cache.lock            cache-wide lock: publication and eviction
//   v<format>/<h0h1>/<hash>.entry   one entry, named by the sha256 of its full key
//   v<format>/<h0h1>/<hash>.lock    per-key compile lock, present while held
//   v<format>/<h0h1>/<hash>.entry.tmp.*  an entry being written

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/cache_key.hpp"
#include "cache/entry_file.hpp"

namespace convjit {

class FileSystem;

inline constexpr std::uint64_t kDefaultCacheMaxBytes = std::uint64_t{4} << 30;

// While one lives, every entry any DiskCache of this process fails to publish (full
// disk, permissions, I/O error, an entry over the size limit, a read-only cache) is
// counted here with its reason, whether or not a warning was printed for it (warnings
// come once per cause). CacheStats::disk_write_errors counts the same failures but
// cannot carry their cause, and a Runtime's DiskCache is not reachable from outside;
// `convjit prewarm` needs both to say why it fails. Watches nest (the innermost one
// collects) and must end in the reverse order of their start.
class StoreFailureWatch {
 public:
  StoreFailureWatch();
  ~StoreFailureWatch();
  StoreFailureWatch(const StoreFailureWatch&) = delete;
  StoreFailureWatch& operator=(const StoreFailureWatch&) = delete;

  std::uint64_t count() const;
  std::string first_reason() const;  // empty while count() == 0

  // Called by DiskCache for each entry it could not publish.
  static void note(std::string reason);

 private:
  StoreFailureWatch* outer_ = nullptr;
  std::uint64_t count_ = 0;
  std::string first_reason_;
};

struct DiskCacheOptions {
  // Serve existing entries only: never create, write, stamp, lock or evict. For a
  // cache prewarmed into an image (CONVJIT_CACHE_READONLY=1).
  bool readonly = false;
  // Entries' total size stays at or below this; least recently used go first. 0: no limit.
  std::uint64_t max_bytes = kDefaultCacheMaxBytes;
  // How long a miss waits for another process compiling the same key before it
  // compiles the key itself (a hung, not dead, holder).
  std::chrono::milliseconds lock_wait{std::chrono::seconds(60)};
  // A hit refreshes the entry's last-used stamp (its mtime) when older than this,
  // so hot entries cost no write per hit.
  std::chrono::seconds stamp_interval{60};
  // nullptr: default_file_system().
  std::shared_ptr<FileSystem> fs;
};

class DiskCache {
 public:
  // Opens the cache at `root`. Read-write: creates missing directories with mode
  // 0700; an existing root this process cannot write opens read-only, with one
  // warning. Throws Error(kCache), with why and how to fix, when the cache cannot be
  // used at all: the root or a directory above it is writable by other users or owned
  // by another one, a file is where the directory should be, the root cannot be
  // created, or (read-only) it does not exist.
  explicit DiskCache(std::filesystem::path root, DiskCacheOptions options = {});
  ~DiskCache();
  DiskCache(DiskCache&&) noexcept;
  DiskCache& operator=(DiskCache&&) noexcept;

  // ---- Kernel requests: these never throw because of the disk (only `build` may throw).

  enum class Status {
    kHit,
    kMiss,
    kCorrupt,    // failed verification: checksum, truncation, garbage, or another key
    kUntrusted,  // the file or its directory is writable by, or belongs to, another user
  };
  struct Lookup {
    Status status = Status::kMiss;
    std::optional<CacheEntry> entry;
    std::string why;  // kCorrupt / kUntrusted: what failed
    std::uint64_t bytes = 0;
    double read_ms = 0;    // opening and reading the file
    double verify_ms = 0;  // parsing and checking what was read
  };
  // What a load reads of an entry.
  enum class Parts {
    kWhole,    // every section; the trailer's checksum covers them all
    kForLoad,  // what loading the kernel uses: no source, no PTX (read_entry_for_load)
  };
  // Reads and verifies the entry (kWhole: the trailer's checksum, over every section;
  // kForLoad: each section read, against its own checksum) and the full key text, after
  // checking who can write it. A bad entry is left for the rebuild to replace (under the
  // key's lock). A hit refreshes the last-used stamp.
  Lookup load(const CacheKey& key, Parts parts = Parts::kWhole) const;

  struct StoreReport {
    bool published = false;
    std::uint64_t bytes = 0;
    std::uint64_t evicted_entries = 0;
    std::uint64_t evicted_bytes = 0;
    int error = 0;  // errno of the failure when !published and the cache is writable
  };
  // Publishes atomically: temp file in the entry's directory, fsync, then, holding the
  // cache lock, evict down to the limit and rename. A lost race (another writer
  // published the same key) is success. A failure warns once per cause.
  StoreReport store(const CacheKey& key, const CacheEntry& entry) const;

  struct FetchReport {
    bool hit = false;             // served from disk, perhaps after waiting
    bool built = false;           // `build` ran here
    bool corrupt = false;         // a bad entry was found (and so rebuilt, here or by the lock holder)
    bool untrusted = false;       // an entry others can write was found and not loaded
    bool waited = false;          // another process held the key's compile lock
    bool took_over = false;       // the lock was left by a process that died holding it
    bool lock_timed_out = false;  // waited options.lock_wait, then built anyway
    bool store_failed = false;    // built but could not publish (the entry stays in memory)
    std::uint64_t bytes_read = 0;
    std::uint64_t bytes_written = 0;
    std::uint64_t evicted_entries = 0;
    double saved_compile_ms = 0;  // the compile time recorded in the entry that hit
    double read_ms = 0;           // every load's Lookup::read_ms, summed
    double verify_ms = 0;         // every load's Lookup::verify_ms, summed
  };
  // The cache protocol for one key: load; on a miss take the key's compile lock
  // (waiting, bounded, while another process compiles it, and re-checking for its
  // entry), load again, else call `build` and publish. Returns the entry either way: a
  // hit's as `parts` says, a build's whole.
  CacheEntry fetch_or_build(const CacheKey& key, const std::function<CacheEntry()>& build, FetchReport& report,
                            Parts parts = Parts::kWhole) const;

  // ---- Maintenance, for `convjit cache ls|stats|verify|prune|clear` and tests.
  // These cover this format version's directory (v<kCacheFormatVersion>) and may
  // throw Error(kCache) when the cache cannot be read or is read-only.

  struct EntryInfo {
    std::filesystem::path path;
    std::string hash;      // the file name's stem: sha256 of the key text
    std::string key_text;  // empty when the entry's key section is unreadable
    std::string problem;   // the key's "problem" line, or "(unreadable: why)"
    std::string arch;      // the key's "arch" line
    std::uint64_t bytes = 0;
    std::filesystem::file_time_type last_used;  // the stamp eviction orders by
  };
  // Every entry file, oldest last-use first. Reads only the start of each file.
  std::vector<EntryInfo> list() const;

  struct BadEntry {
    std::filesystem::path path;
    std::string why;
    // Why remove_entry() would leave it, empty when convjit made it (a corrupt entry
    // included): e.g. a symbolic link, FIFO or directory where an entry belongs.
    std::string not_convjits;
    // Not a regular file where an entry belongs, or not a directory where a shard does:
    // list() does not count it.
    bool misplaced = false;
  };
  // Reads and verifies every entry in full (checksums, key text against its file
  // name, ownership and mode), and reports anything but a regular file where an entry
  // belongs, or anything but a directory where a shard belongs; returns what fails.
  // Changes nothing.
  std::vector<BadEntry> verify_all() const;

  // Sum of the entry files' sizes, read under the cache lock so it never shows a
  // publication half done. Lock and temp files are not counted.
  std::uint64_t total_size() const;

  struct EvictReport {
    std::uint64_t entries = 0;
    std::uint64_t bytes = 0;
  };
  // Removes least recently used entries until the total is at most `max_bytes`.
  // Safe while other processes use the cache: a reader that opened an entry keeps
  // reading it; a later request for it is a miss that rebuilds.
  EvictReport evict_to(std::uint64_t max_bytes) const;
  // Removes one entry file (e.g. one verify_all reported). False when it was not there.
  // Throws Error(kInvalidArgument) for a path that is not an entry slot of this cache,
  // and Error(kCache) for a file convjit did not make (BadEntry::not_convjits).
  bool remove_entry(const std::filesystem::path& path) const;

  struct ClearReport {
    std::uint64_t entries = 0;                        // entry files removed, of this format version and of others
    std::uint64_t bytes = 0;                          // their total size
    std::uint64_t other_files = 0;                    // temp, lock and marker files removed
    std::vector<std::filesystem::path> removed_dirs;  // directories of other versions, emptied and removed
    struct Left {
      std::filesystem::path path;
      std::string why;
      bool error = false;  // convjit's own, but removing it failed
    };
    std::vector<Left> left;  // what stays: not convjit's, in use, or not removable
  };
  // Removes what convjit made and nothing else (cache/ownership.hpp): every entry,
  // stale temp file and unheld lock file of this version; in the directories of other
  // format versions, convjit's files, then those directories when nothing else is in
  // them. Never follows a symbolic link. Everything it leaves is in `left`, with why.
  ClearReport clear() const;

  // ---- Identity.

  std::filesystem::path entry_path(const CacheKey& key) const;
  const std::filesystem::path& root() const noexcept { return root_; }
  std::filesystem::path version_dir() const;
  const DiskCacheOptions& options() const noexcept { return options_; }
  // Read-only by option or because the directory is not writable; readonly_reason() says which.
  bool readonly() const noexcept { return readonly_; }
  const std::string& readonly_reason() const noexcept { return readonly_reason_; }

 private:
  struct Shared;
  struct Scan;

  Lookup load_impl(const CacheKey& key, bool warn, Parts parts) const;
  Scan scan(bool clean_stale_temps) const;
  void clear_version_dir(const std::filesystem::path& vdir, bool current, ClearReport& report) const;
  EvictReport evict_locked(std::uint64_t max_bytes, const std::filesystem::path& keep, std::uint64_t incoming) const;
  void require_writable(std::string_view what) const;

  std::filesystem::path root_;
  DiskCacheOptions options_;
  std::shared_ptr<FileSystem> fs_;
  bool readonly_ = false;
  std::string readonly_reason_;
  // NOTE: warn-once flags live behind a pointer so DiskCache stays movable.
  std::unique_ptr<Shared> shared_;
};

}  // namespace convjit
