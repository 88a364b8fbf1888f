#pragma once
// The disk cache's two locks, both flock(2) on a small file:
//  - KeyLock, "<hash>.lock" beside the entry: one process compiles a key while the
//    others wait for its entry (DeepGEMM #301, triton #2688: without it every rank
//    compiles). The kernel drops a flock when its holder dies, so a killed compiler
//    never blocks anyone (flashinfer #972); the owner record the holder writes into
//    the file tells the next holder that it took over from a dead one, because a
//    clean release empties and removes the file.
//  - IndexLock, "cache.lock" in the version directory: held while a publisher evicts
//    and renames, so the size limit holds with many publishers at once.

#include <chrono>
#include <filesystem>
#include <string>

namespace convjit {

class FileSystem;

class KeyLock {
 public:
  // One non-blocking attempt. When !held(): error() == 0 means another holder has it
  // (or it was just released and removed: try again), else it is the errno that
  // stopped us (ENOLCK, EROFS, ...).
  static KeyLock try_acquire(FileSystem& fs, std::filesystem::path path);

  KeyLock() = default;
  KeyLock(KeyLock&& other) noexcept;
  KeyLock& operator=(KeyLock&& other) noexcept;
  KeyLock(const KeyLock&) = delete;
  KeyLock& operator=(const KeyLock&) = delete;
  ~KeyLock() { release(); }

  bool held() const noexcept { return fd_ >= 0; }
  int error() const noexcept { return error_; }
  // The previous holder died holding the lock; previous_owner() is its record.
  bool took_over() const noexcept { return !previous_owner_.empty(); }
  const std::string& previous_owner() const noexcept { return previous_owner_; }
  const std::filesystem::path& path() const noexcept { return path_; }

  // Empties and removes the file, then unlocks. Never throws.
  void release() noexcept;

 private:
  FileSystem* fs_ = nullptr;
  int fd_ = -1;
  int error_ = 0;
  std::filesystem::path path_;
  std::string previous_owner_;
};

// The owner record of the lock at `path` as one line ("pid 12 on host h since ..."),
// empty when there is none; for messages about a holder we waited on.
std::string read_lock_owner(FileSystem& fs, const std::filesystem::path& path);

class IndexLock {
 public:
  // Polls for up to `wait`. A shared lock opens an existing file only, so it works
  // on a read-only cache; an exclusive one creates the file.
  static IndexLock acquire(FileSystem& fs, const std::filesystem::path& path, bool exclusive,
                           std::chrono::milliseconds wait);

  IndexLock() = default;
  IndexLock(IndexLock&& other) noexcept;
  IndexLock& operator=(IndexLock&& other) noexcept;
  IndexLock(const IndexLock&) = delete;
  IndexLock& operator=(const IndexLock&) = delete;
  ~IndexLock() { release(); }

  bool held() const noexcept { return fd_ >= 0; }
  int error() const noexcept { return error_; }  // ETIMEDOUT when the wait ran out
  void release() noexcept;

 private:
  FileSystem* fs_ = nullptr;
  int fd_ = -1;
  int error_ = 0;
};

}  // namespace convjit
