#pragma once
// The filesystem calls the disk cache makes, behind an interface so that tests can
// produce the faults a real disk shows rarely or never to root: ENOSPC, EROFS,
// EACCES. Every call returns 0 or an errno value and never throws; the cache turns
// those values into warnings, never into failed conv calls.

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace convjit {

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // open(2); on success `fd` is the new descriptor.
  virtual int open(const std::filesystem::path& path, int flags, mode_t mode, int& fd) = 0;
  virtual int close(int fd) = 0;
  // Reads from the current offset to end of file into `out`; EFBIG past `limit` bytes.
  virtual int read_all(int fd, std::string& out, std::size_t limit) = 0;
  // Reads at most `max` bytes from the current offset (fewer at end of file).
  virtual int read_prefix(int fd, std::string& out, std::size_t max) = 0;
  // Reads at most `max` bytes at `offset` (fewer at end of file), leaving the file's
  // offset alone (pread).
  virtual int read_at(int fd, std::uint64_t offset, std::size_t max, std::string& out) = 0;
  // Writes every byte (retrying short writes and EINTR).
  virtual int write_all(int fd, std::string_view bytes) = 0;
  virtual int fsync(int fd) = 0;
  virtual int ftruncate(int fd, off_t size) = 0;
  virtual int flock(int fd, int operation) = 0;
  virtual int fstat(int fd, struct stat& st) = 0;
  virtual int stat(const std::filesystem::path& path, struct stat& st) = 0;  // follows symlinks
  virtual int lstat(const std::filesystem::path& path, struct stat& st) = 0;
  virtual int mkdir(const std::filesystem::path& path, mode_t mode) = 0;
  virtual int rename(const std::filesystem::path& from, const std::filesystem::path& to) = 0;
  virtual int unlink(const std::filesystem::path& path) = 0;
  virtual int rmdir(const std::filesystem::path& path) = 0;
  // Sets the file's mtime to now, leaving atime alone: the entry's last-used stamp.
  virtual int touch(int fd) = 0;
  // Names in `dir`, without "." and "..".
  virtual int list(const std::filesystem::path& dir, std::vector<std::string>& names) = 0;
};

// The real thing: plain POSIX calls.
std::shared_ptr<FileSystem> posix_file_system();

// What a DiskCache uses when its options name no file system. Tests swap it to
// inject faults under a whole Runtime; nullptr restores POSIX.
std::shared_ptr<FileSystem> default_file_system();
void set_default_file_system(std::shared_ptr<FileSystem> fs);

// Owns a descriptor from a FileSystem; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  UniqueFd(FileSystem& fs, int fd) noexcept : fs_(&fs), fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fs_(other.fs_), fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fs_ = other.fs_;
      fd_ = other.release();
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset() noexcept {
    if (fd_ >= 0 && fs_ != nullptr) fs_->close(fd_);
    fd_ = -1;
  }

 private:
  FileSystem* fs_ = nullptr;
  int fd_ = -1;
};

// strerror text for an errno value, thread-safe.
std::string errno_text(int err);

}  // namespace convjit
