#include "cache/disk_cache.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "core/fail.hpp"
#include "core/log.hpp"
#include "specialize/kernel_key.hpp"

namespace convjit {

namespace fs = std::filesystem;

namespace {
std::string errno_text(int err) { return std::strerror(err); }

void make_private_dirs(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(ErrorCode::kCache, "cannot create cache directory '{}': {}", dir.string(), ec.message());
  if (!fs::is_directory(dir)) fail(ErrorCode::kCache, "cache path '{}' exists and is not a directory", dir.string());
}

// A temp name unique across processes and threads of this host.
std::string temp_suffix() {
  static std::atomic<unsigned> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format(".tmp.{}.{}.{:x}", ::getpid(), counter.fetch_add(1), rng());
}

void write_all(int fd, std::string_view bytes, const fs::path& path) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(ErrorCode::kIo, "cannot write '{}': {}", path.string(), errno_text(errno));
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}
}  // namespace

DiskCache::DiskCache(fs::path root) : root_(std::move(root)) {
  make_private_dirs(root_);
  ::chmod(root_.c_str(), 0700);
}

fs::path DiskCache::entry_path(const KernelKey& key) const {
  return root_ / fmt::format("v{}", kCacheFormatVersion) / key.hash.substr(0, 2) / (key.hash + ".entry");
}

DiskCache::Lookup DiskCache::load(const KernelKey& key) const {
  const fs::path path = entry_path(key);
  std::ifstream in(path, std::ios::binary);
  if (!in) return {Status::kMiss, std::nullopt, {}};
  std::ostringstream bytes;
  bytes << in.rdbuf();
  std::string why;
  auto entry = parse_entry(bytes.str(), why);
  if (entry && entry->key_text != key.text) {
    entry.reset();
    why = "the stored key differs from the requested key (hash collision or tampering)";
  }
  if (!entry) {
    log::warn("cache entry '{}' is corrupt ({}); rebuilding it", path.string(), why);
    std::error_code ec;
    fs::remove(path, ec);
    return {Status::kCorrupt, std::nullopt, why};
  }
  return {Status::kHit, std::move(entry), {}};
}

void DiskCache::store(const KernelKey& key, const CacheEntry& entry) const {
  const fs::path path = entry_path(key);
  make_private_dirs(path.parent_path());
  const fs::path temp = path.string() + temp_suffix();
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) fail(ErrorCode::kIo, "cannot create '{}': {}", temp.string(), errno_text(errno));
  try {
    write_all(fd, serialize_entry(entry), temp);
    if (::fsync(fd) != 0) fail(ErrorCode::kIo, "cannot fsync '{}': {}", temp.string(), errno_text(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(temp.c_str());
    throw;
  }
  ::close(fd);
  // NOTE: rename replaces atomically; when another process published the same key
  // first, ours (identical content) simply wins or loses the race: both are success.
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    fail(ErrorCode::kIo, "cannot publish '{}': {}", path.string(), errno_text(err));
  }
  const int dir_fd = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

}  // namespace convjit
