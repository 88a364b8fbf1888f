#include "cache/ownership.hpp"

#include <fcntl.h>
#include <fmt/format.h>

#include <algorithm>

#include "cache/disk_cache_internal.hpp"
#include "cache/entry_file.hpp"
#include "cache/file_system.hpp"

namespace convjit {

namespace fs = std::filesystem;

namespace {
// The tag's first line is fixed by the standard (https://bford.info/cachedir/); the
// second says who made it. Both together are what convjit recognizes, so the rest
// of the text may change between releases.
constexpr std::string_view kMarkerHead =
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by convjit.\n";
constexpr std::string_view kMarkerTail =
    "# convjit created this directory; 'convjit cache clear' removes the files it made here.\n"
    "# For information about cache directory tags, see https://bford.info/cachedir/\n";
// Enough to tell a file's kind from its start; more than any header convjit writes.
constexpr std::size_t kPeekBytes = 256;

bool all_of(std::string_view text, bool (*accept)(char)) {
  return !text.empty() && std::all_of(text.begin(), text.end(), accept);
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_lower_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f'); }

// "<pid>.<n>.<hex>", the tail temp_suffix() gives a temp name after ".entry.tmp.".
bool is_temp_tail(std::string_view tail) {
  const std::size_t a = tail.find('.');
  if (a == std::string_view::npos) return false;
  const std::size_t b = tail.find('.', a + 1);
  if (b == std::string_view::npos) return false;
  return all_of(tail.substr(0, a), is_digit) && all_of(tail.substr(a + 1, b - a - 1), is_digit) &&
         all_of(tail.substr(b + 1), is_lower_hex);
}
}  // namespace

int write_version_marker(FileSystem& fs, const fs::path& version_dir) {
  int fd = -1;
  const fs::path path = version_dir / kVersionMarkerName;
  if (const int err = fs.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600, fd); err != 0) {
    return err;
  }
  UniqueFd file(fs, fd);
  int err = fs.write_all(fd, std::string(kMarkerHead) + std::string(kMarkerTail));
  if (err == 0) err = fs.close(file.release());
  // NOTE: a half-written marker would not be recognized anyway; removing it keeps the
  // directory plainly unmarked.
  if (err != 0) fs.unlink(path);
  return err;
}

bool has_version_marker(FileSystem& fs, const fs::path& version_dir) {
  return !not_made_by_convjit(fs, version_dir / kVersionMarkerName, CacheFileKind::kMarker, false);
}

CacheFileKind shard_file_kind(std::string_view name) {
  if (name.size() < 64 || !is_hash_name(name.substr(0, 64))) return CacheFileKind::kUnknown;
  const std::string_view rest = name.substr(64);
  if (rest == kEntrySuffix) return CacheFileKind::kEntry;
  if (rest == kLockSuffix) return CacheFileKind::kKeyLock;
  if (rest.starts_with(kTempMarker) && is_temp_tail(rest.substr(kTempMarker.size()))) return CacheFileKind::kTemp;
  return CacheFileKind::kUnknown;
}

CacheFileKind version_file_kind(std::string_view name) {
  if (name == kIndexLockName) return CacheFileKind::kIndexLock;
  if (name == kVersionMarkerName) return CacheFileKind::kMarker;
  return CacheFileKind::kUnknown;
}

bool is_version_dir_name(std::string_view name) {
  return name.size() >= 2 && name[0] == 'v' && all_of(name.substr(1), is_digit);
}

std::string_view file_type_name(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a regular file";
}

std::optional<std::string> not_made_by_convjit(FileSystem& fs, const fs::path& path, CacheFileKind kind,
                                               bool marked_dir) {
  if (kind == CacheFileKind::kUnknown) return "not made by convjit (none of its file names)";
  struct stat st {};
  if (const int err = fs.lstat(path, st); err != 0) return fmt::format("cannot inspect it: {}", errno_text(err));
  // NOTE: convjit writes regular files only; a link is never followed (its target may be
  // anything of anyone's), and opening a FIFO could block.
  if (!S_ISREG(st.st_mode)) {
    return fmt::format("not made by convjit ({}; convjit writes regular files only)", file_type_name(st.st_mode));
  }
  if (marked_dir && kind != CacheFileKind::kMarker) return std::nullopt;
  if (kind == CacheFileKind::kIndexLock) {
    if (st.st_size == 0) return std::nullopt;
    return std::string("not recognizably convjit's (not empty, unlike its cache.lock)");
  }

  int fd = -1;
  if (const int err = fs.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0, fd); err != 0) {
    return fmt::format("cannot read it: {}", errno_text(err));
  }
  UniqueFd guard(fs, fd);
  std::string prefix;
  if (const int err = fs.read_prefix(fd, prefix, kPeekBytes); err != 0) {
    return fmt::format("cannot read it: {}", errno_text(err));
  }
  switch (kind) {
    case CacheFileKind::kEntry:
      if (starts_like_an_entry(prefix)) return std::nullopt;
      return std::string("not recognizably convjit's (it does not start like a cache entry)");
    case CacheFileKind::kTemp:
      if (could_start_an_entry(prefix)) return std::nullopt;
      return std::string("not recognizably convjit's (it does not start like a cache entry being written)");
    case CacheFileKind::kKeyLock:
      // Empty after a clean release, else the owner record "pid <pid> on host <host> since <time>".
      if (prefix.empty() || prefix.starts_with("pid ")) return std::nullopt;
      return std::string("not recognizably convjit's (it holds no lock owner record)");
    case CacheFileKind::kMarker:
      if (prefix.starts_with(kMarkerHead)) return std::nullopt;
      return std::string("not recognizably convjit's (not its cache directory tag)");
    case CacheFileKind::kIndexLock:
    case CacheFileKind::kUnknown:
      break;
  }
  return std::string("not made by convjit (none of its file names)");
}

}  // namespace convjit
