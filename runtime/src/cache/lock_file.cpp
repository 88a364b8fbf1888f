#include "cache/lock_file.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <thread>
#include <utility>

#include "cache/file_system.hpp"

namespace convjit {

namespace {
constexpr std::size_t kMaxOwnerRecord = 4096;

std::string this_host() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown";
  return name;
}

std::string owner_record() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now).count();
  return fmt::format("pid {} on host {} since {}.{:03d}\n", ::getpid(), this_host(), ms / 1000,
                     static_cast<int>(ms % 1000));
}

std::string first_line(std::string text) {
  if (const auto end = text.find('\n'); end != std::string::npos) text.resize(end);
  return text;
}
}  // namespace

KeyLock KeyLock::try_acquire(FileSystem& fs, std::filesystem::path path) {
  KeyLock lock;
  lock.fs_ = &fs;
  lock.path_ = std::move(path);
  int fd = -1;
  if (const int err = fs.open(lock.path_, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600, fd); err != 0) {
    lock.error_ = err;
    return lock;
  }
  UniqueFd guard(fs, fd);
  if (const int err = fs.flock(fd, LOCK_EX | LOCK_NB); err != 0) {
    lock.error_ = err == EWOULDBLOCK ? 0 : err;
    return lock;
  }
  // NOTE: a holder removes the file before it unlocks, so we may have locked an inode
  // that no longer has this name while a newer lock file exists under it: then we hold
  // nothing anyone else sees, and must try again.
  struct stat held {};
  struct stat named {};
  if (fs.fstat(fd, held) != 0 || fs.lstat(lock.path_, named) != 0 || held.st_ino != named.st_ino ||
      held.st_dev != named.st_dev) {
    return lock;  // error_ == 0: busy, try again
  }
  std::string previous;
  if (fs.read_all(fd, previous, kMaxOwnerRecord) == 0 && !previous.empty()) {
    // The file holds a record but nobody holds the flock: its owner died (a clean release empties it).
    lock.previous_owner_ = first_line(std::move(previous));
    if (lock.previous_owner_.empty()) lock.previous_owner_ = "an unknown process";
  }
  const std::string record = owner_record();
  // NOTE: the record is advisory (for messages and takeover detection), so failing to
  // write it does not give the lock up.
  if (fs.ftruncate(fd, 0) == 0) {
    ::lseek(fd, 0, SEEK_SET);
    fs.write_all(fd, record);
  }
  lock.fd_ = guard.release();
  return lock;
}

KeyLock::KeyLock(KeyLock&& other) noexcept
    : fs_(other.fs_),
      fd_(std::exchange(other.fd_, -1)),
      error_(other.error_),
      path_(std::move(other.path_)),
      previous_owner_(std::move(other.previous_owner_)) {}

KeyLock& KeyLock::operator=(KeyLock&& other) noexcept {
  if (this != &other) {
    release();
    fs_ = other.fs_;
    fd_ = std::exchange(other.fd_, -1);
    error_ = other.error_;
    path_ = std::move(other.path_);
    previous_owner_ = std::move(other.previous_owner_);
  }
  return *this;
}

void KeyLock::release() noexcept {
  if (fd_ < 0) return;
  // NOTE: empty first, so that a process that locks this inode after us (it opened the
  // file before we removed it) does not mistake our record for a dead holder's; then
  // remove while still holding the lock, then unlock by closing.
  fs_->ftruncate(fd_, 0);
  // NOTE: only our own file: if someone removed it meanwhile, the name may now be
  // another holder's lock.
  struct stat held {};
  struct stat named {};
  if (fs_->fstat(fd_, held) == 0 && fs_->lstat(path_, named) == 0 && held.st_ino == named.st_ino &&
      held.st_dev == named.st_dev) {
    fs_->unlink(path_);
  }
  fs_->close(fd_);
  fd_ = -1;
}

std::string read_lock_owner(FileSystem& fs, const std::filesystem::path& path) {
  int fd = -1;
  if (fs.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0, fd) != 0) return {};
  UniqueFd guard(fs, fd);
  std::string record;
  if (fs.read_all(fd, record, kMaxOwnerRecord) != 0) return {};
  return first_line(std::move(record));
}

IndexLock IndexLock::acquire(FileSystem& fs, const std::filesystem::path& path, bool exclusive,
                             std::chrono::milliseconds wait) {
  IndexLock lock;
  lock.fs_ = &fs;
  int fd = -1;
  const int flags = exclusive ? O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW : O_RDONLY | O_CLOEXEC | O_NOFOLLOW;
  if (const int err = fs.open(path, flags, 0600, fd); err != 0) {
    lock.error_ = err;
    return lock;
  }
  UniqueFd guard(fs, fd);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    const int err = fs.flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB);
    if (err == 0) break;
    if (err != EWOULDBLOCK) {
      lock.error_ = err;
      return lock;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      lock.error_ = ETIMEDOUT;
      return lock;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
  lock.fd_ = guard.release();
  return lock;
}

IndexLock::IndexLock(IndexLock&& other) noexcept
    : fs_(other.fs_), fd_(std::exchange(other.fd_, -1)), error_(other.error_) {}

IndexLock& IndexLock::operator=(IndexLock&& other) noexcept {
  if (this != &other) {
    release();
    fs_ = other.fs_;
    fd_ = std::exchange(other.fd_, -1);
    error_ = other.error_;
  }
  return *this;
}

void IndexLock::release() noexcept {
  if (fd_ < 0) return;
  fs_->flock(fd_, LOCK_UN);
  fs_->close(fd_);
  fd_ = -1;
}

}  // namespace convjit
