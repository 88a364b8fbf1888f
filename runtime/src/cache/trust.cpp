#include "cache/trust.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include "cache/file_system.hpp"

namespace convjit {

namespace {
bool trusted_owner(uid_t owner) { return owner == ::geteuid() || owner == 0; }

// Mode bits as chmod prints them, sticky/setgid included: "0777", "1777".
unsigned mode_bits(const struct stat& st) { return static_cast<unsigned>(st.st_mode & 07777); }

std::optional<std::string> check_dir(const std::filesystem::path& dir, const struct stat& st, std::string_view what) {
  if (!S_ISDIR(st.st_mode)) return fmt::format("{} '{}' is not a directory", what, dir.string());
  if (!trusted_owner(st.st_uid)) {
    return fmt::format(
        "{} '{}' belongs to uid {}, not to you (uid {}) nor root; refusing to load code from it: "
        "set CONVJIT_CACHE_DIR to a directory you own, or chown it to yourself",
        what, dir.string(), st.st_uid, ::geteuid());
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return fmt::format(
        "{} '{}' is writable by other users (mode {:04o}); refusing to load code from it: "
        "run chmod 700 '{}' or set CONVJIT_CACHE_DIR to a private directory",
        what, dir.string(), mode_bits(st), dir.string());
  }
  return std::nullopt;
}
}  // namespace

std::optional<std::string> untrusted_cache_root(FileSystem& fs, const std::filesystem::path& root) {
  struct stat st {};
  if (const int err = fs.stat(root, st); err != 0) {
    return fmt::format("cannot inspect cache directory '{}': {}", root.string(), errno_text(err));
  }
  if (auto why = check_dir(root, st, "cache directory")) return why;
  // NOTE: ancestors are checked for writability only, not ownership: a root-owned
  // process under another user's home is common (containers) and not by itself unsafe.
  std::error_code ec;
  const std::filesystem::path real = std::filesystem::canonical(root, ec);
  if (ec) return fmt::format("cannot resolve cache directory '{}': {}", root.string(), ec.message());
  for (std::filesystem::path dir = real.parent_path(); !dir.empty(); dir = dir.parent_path()) {
    struct stat up {};
    if (fs.stat(dir, up) == 0 && (up.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (up.st_mode & S_ISVTX) == 0) {
      return fmt::format(
          "cache directory '{}' is inside '{}', which other users can write (mode {:04o}) and so replace the "
          "cache; refusing to load code from it: run chmod go-w '{}' or set CONVJIT_CACHE_DIR to a private "
          "directory",
          root.string(), dir.string(), mode_bits(up), dir.string());
    }
    if (dir == dir.root_path()) break;
  }
  return std::nullopt;
}

std::optional<std::string> untrusted_cache_subdir(const std::filesystem::path& dir, const struct stat& st) {
  return check_dir(dir, st, "cache directory");
}

std::optional<std::string> untrusted_entry_file(const std::filesystem::path& file, const struct stat& st) {
  if (!S_ISREG(st.st_mode)) return fmt::format("cache entry '{}' is not a regular file", file.string());
  if (!trusted_owner(st.st_uid)) {
    return fmt::format("cache entry '{}' belongs to uid {}, not to you (uid {}) nor root; not loading code from it",
                       file.string(), st.st_uid, ::geteuid());
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return fmt::format(
        "cache entry '{}' is writable by other users (mode {:04o}); not loading code from it: it is rebuilt "
        "(run chmod -R go-w on the cache directory to keep its other entries)",
        file.string(), mode_bits(st));
  }
  return std::nullopt;
}

}  // namespace convjit
