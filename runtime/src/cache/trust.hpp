#pragma once
// Who may have written the code we are about to load. convjit loads a kernel only
// from a directory and file that no other user can write: a world-writable shared
// JIT cache lets anyone inject code into every process that uses it (cudf PR #4857).

#include <sys/stat.h>

#include <filesystem>
#include <optional>
#include <string>

namespace convjit {

class FileSystem;

// Why the cache root `root` must not be trusted, or nullopt when it may be:
// it must be a directory owned by this user or root and writable by nobody else,
// and no directory above it may be writable by others without the sticky bit
// (else they could replace the whole cache). The text says how to fix it.
std::optional<std::string> untrusted_cache_root(FileSystem& fs, const std::filesystem::path& root);

// Why a directory inside the cache must not be trusted (same owner and mode rules).
std::optional<std::string> untrusted_cache_subdir(const std::filesystem::path& dir, const struct stat& st);

// Why an entry file must not be loaded: not a regular file, another owner, or
// writable by group or others.
std::optional<std::string> untrusted_entry_file(const std::filesystem::path& file, const struct stat& st);

}  // namespace convjit
