#include "cache/file_system.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

namespace convjit {

namespace {

class PosixFileSystem final : public FileSystem {
 public:
  int open(const std::filesystem::path& path, int flags, mode_t mode, int& fd) override {
    do {
      fd = ::open(path.c_str(), flags, mode);
    } while (fd < 0 && errno == EINTR);
    return fd < 0 ? errno : 0;
  }
  int close(int fd) override {
    // NOTE: no retry on EINTR: on Linux the descriptor is gone either way.
    return ::close(fd) == 0 ? 0 : errno;
  }
  int read_all(int fd, std::string& out, std::size_t limit) override {
    out.clear();
    // A warm start reads a whole cache entry: one read into a buffer of the file's size
    // saves the copies and regrowth of reading it in pieces; the loop below still reads
    // whatever follows (a file that grew) up to the limit.
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<std::size_t>(st.st_size) <= limit) {
      out.resize(static_cast<std::size_t>(st.st_size));
      std::size_t filled = 0;
      while (filled < out.size()) {
        const ssize_t n = ::read(fd, out.data() + filled, out.size() - filled);
        if (n < 0) {
          if (errno == EINTR) continue;
          out.clear();
          return errno;
        }
        if (n == 0) break;
        filled += static_cast<std::size_t>(n);
      }
      out.resize(filled);
      if (filled < static_cast<std::size_t>(st.st_size)) return 0;  // shrank while read: what is there
    }
    char buffer[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (n == 0) return 0;
      if (out.size() + static_cast<std::size_t>(n) > limit) return EFBIG;
      out.append(buffer, static_cast<std::size_t>(n));
    }
  }
  int read_prefix(int fd, std::string& out, std::size_t max) override {
    out.assign(max, '\0');
    std::size_t filled = 0;
    while (filled < max) {
      const ssize_t n = ::read(fd, out.data() + filled, max - filled);
      if (n < 0) {
        if (errno == EINTR) continue;
        out.clear();
        return errno;
      }
      if (n == 0) break;
      filled += static_cast<std::size_t>(n);
    }
    out.resize(filled);
    return 0;
  }
  int read_at(int fd, std::uint64_t offset, std::size_t max, std::string& out) override {
    out.resize(max);
    std::size_t filled = 0;
    while (filled < max) {
      const ssize_t n = ::pread(fd, out.data() + filled, max - filled, static_cast<off_t>(offset + filled));
      if (n < 0) {
        if (errno == EINTR) continue;
        out.clear();
        return errno;
      }
      if (n == 0) break;
      filled += static_cast<std::size_t>(n);
    }
    out.resize(filled);
    return 0;
  }
  int write_all(int fd, std::string_view bytes) override {
    while (!bytes.empty()) {
      const ssize_t n = ::write(fd, bytes.data(), bytes.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return 0;
  }
  int fsync(int fd) override { return ::fsync(fd) == 0 ? 0 : errno; }
  int ftruncate(int fd, off_t size) override { return ::ftruncate(fd, size) == 0 ? 0 : errno; }
  int flock(int fd, int operation) override {
    int rc = 0;
    do {
      rc = ::flock(fd, operation);
    } while (rc != 0 && errno == EINTR);
    return rc == 0 ? 0 : errno;
  }
  int fstat(int fd, struct stat& st) override { return ::fstat(fd, &st) == 0 ? 0 : errno; }
  int stat(const std::filesystem::path& path, struct stat& st) override {
    return ::stat(path.c_str(), &st) == 0 ? 0 : errno;
  }
  int lstat(const std::filesystem::path& path, struct stat& st) override {
    return ::lstat(path.c_str(), &st) == 0 ? 0 : errno;
  }
  int mkdir(const std::filesystem::path& path, mode_t mode) override {
    return ::mkdir(path.c_str(), mode) == 0 ? 0 : errno;
  }
  int rename(const std::filesystem::path& from, const std::filesystem::path& to) override {
    return ::rename(from.c_str(), to.c_str()) == 0 ? 0 : errno;
  }
  int unlink(const std::filesystem::path& path) override { return ::unlink(path.c_str()) == 0 ? 0 : errno; }
  int rmdir(const std::filesystem::path& path) override { return ::rmdir(path.c_str()) == 0 ? 0 : errno; }
  int touch(int fd) override {
    const timespec times[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
    return ::futimens(fd, times) == 0 ? 0 : errno;
  }
  int list(const std::filesystem::path& dir, std::vector<std::string>& names) override {
    names.clear();
    DIR* handle = ::opendir(dir.c_str());
    if (handle == nullptr) return errno;
    errno = 0;
    while (const dirent* e = ::readdir(handle)) {
      const std::string_view name = e->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
    }
    const int err = errno;
    ::closedir(handle);
    return err;
  }
};

std::mutex g_default_mutex;
std::shared_ptr<FileSystem> g_default;

}  // namespace

std::shared_ptr<FileSystem> posix_file_system() {
  static const std::shared_ptr<FileSystem> fs = std::make_shared<PosixFileSystem>();
  return fs;
}

std::shared_ptr<FileSystem> default_file_system() {
  std::lock_guard lock(g_default_mutex);
  return g_default ? g_default : posix_file_system();
}

void set_default_file_system(std::shared_ptr<FileSystem> fs) {
  std::lock_guard lock(g_default_mutex);
  g_default = std::move(fs);
}

std::string errno_text(int err) {
  char buffer[256];
  // NOTE: the GNU strerror_r may return a static string instead of filling `buffer`.
  const char* text = ::strerror_r(err, buffer, sizeof buffer);
  return text;
}

}  // namespace convjit
