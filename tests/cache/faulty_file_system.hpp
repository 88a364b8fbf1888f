#pragma once
// A FileSystem that behaves like POSIX until told to fail: each rule makes one kind
// of call, on paths containing a given text, return a given errno. Lets tests
// produce ENOSPC, EROFS and EACCES, which a root test process cannot get from chmod.

#include <fcntl.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cache/file_system.hpp"

namespace convjit::testing {

class FaultyFileSystem final : public FileSystem {
 public:
  enum class Op { kOpenRead, kOpenWrite, kWrite, kFsync, kFlock, kRename, kMkdir, kUnlink, kTouch, kList, kStat };

  // Every later `op` on a path containing `path_part` ("" = any path) fails with `err`.
  void fail(Op op, int err, std::string path_part = "") {
    std::lock_guard lock(mutex_);
    rules_.push_back({op, err, std::move(path_part)});
  }
  void heal() {
    std::lock_guard lock(mutex_);
    rules_.clear();
  }
  int failures() const { return failures_.load(); }

  int open(const std::filesystem::path& path, int flags, mode_t mode, int& fd) override {
    const bool writes = (flags & (O_WRONLY | O_RDWR | O_CREAT)) != 0;
    if (const int err = check(writes ? Op::kOpenWrite : Op::kOpenRead, path)) return err;
    const int err = real_->open(path, flags, mode, fd);
    if (err == 0) {
      std::lock_guard lock(mutex_);
      paths_[fd] = path.string();
    }
    return err;
  }
  int close(int fd) override { return real_->close(fd); }
  int read_all(int fd, std::string& out, std::size_t limit) override { return real_->read_all(fd, out, limit); }
  int read_prefix(int fd, std::string& out, std::size_t max) override { return real_->read_prefix(fd, out, max); }
  int read_at(int fd, std::uint64_t offset, std::size_t max, std::string& out) override {
    return real_->read_at(fd, offset, max, out);
  }
  int write_all(int fd, std::string_view bytes) override {
    if (const int err = check(Op::kWrite, path_of(fd))) return err;
    return real_->write_all(fd, bytes);
  }
  int fsync(int fd) override {
    if (const int err = check(Op::kFsync, path_of(fd))) return err;
    return real_->fsync(fd);
  }
  int ftruncate(int fd, off_t size) override { return real_->ftruncate(fd, size); }
  int flock(int fd, int operation) override {
    if (const int err = check(Op::kFlock, path_of(fd))) return err;
    return real_->flock(fd, operation);
  }
  int fstat(int fd, struct stat& st) override { return real_->fstat(fd, st); }
  int stat(const std::filesystem::path& path, struct stat& st) override {
    if (const int err = check(Op::kStat, path)) return err;
    return real_->stat(path, st);
  }
  int lstat(const std::filesystem::path& path, struct stat& st) override {
    if (const int err = check(Op::kStat, path)) return err;
    return real_->lstat(path, st);
  }
  int mkdir(const std::filesystem::path& path, mode_t mode) override {
    if (const int err = check(Op::kMkdir, path)) return err;
    return real_->mkdir(path, mode);
  }
  int rename(const std::filesystem::path& from, const std::filesystem::path& to) override {
    if (const int err = check(Op::kRename, to)) return err;
    return real_->rename(from, to);
  }
  int unlink(const std::filesystem::path& path) override {
    if (const int err = check(Op::kUnlink, path)) return err;
    return real_->unlink(path);
  }
  int rmdir(const std::filesystem::path& path) override { return real_->rmdir(path); }
  int touch(int fd) override {
    if (const int err = check(Op::kTouch, path_of(fd))) return err;
    return real_->touch(fd);
  }
  int list(const std::filesystem::path& dir, std::vector<std::string>& names) override {
    if (const int err = check(Op::kList, dir)) return err;
    return real_->list(dir, names);
  }

 private:
  struct Rule {
    Op op;
    int err;
    std::string path_part;
  };

  int check(Op op, const std::filesystem::path& path) {
    std::lock_guard lock(mutex_);
    for (const auto& rule : rules_) {
      if (rule.op == op && path.string().find(rule.path_part) != std::string::npos) {
        ++failures_;
        return rule.err;
      }
    }
    return 0;
  }
  std::string path_of(int fd) {
    std::lock_guard lock(mutex_);
    const auto it = paths_.find(fd);
    return it == paths_.end() ? std::string() : it->second;
  }

  std::shared_ptr<FileSystem> real_ = posix_file_system();
  std::mutex mutex_;
  std::vector<Rule> rules_;
  std::map<int, std::string> paths_;
  std::atomic<int> failures_{0};
};

// Makes every DiskCache that names no file system (so every Runtime's) use `fs`
// for the life of this object.
class ScopedDefaultFileSystem {
 public:
  explicit ScopedDefaultFileSystem(std::shared_ptr<FileSystem> fs) { set_default_file_system(std::move(fs)); }
  ~ScopedDefaultFileSystem() { set_default_file_system(nullptr); }
  ScopedDefaultFileSystem(const ScopedDefaultFileSystem&) = delete;
  ScopedDefaultFileSystem& operator=(const ScopedDefaultFileSystem&) = delete;
};

}  // namespace convjit::testing
