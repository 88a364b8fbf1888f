#pragma once
// What convjit made in a cache directory, so that maintenance (clear, prune, verify
// --remove, stale temp cleanup) deletes only that: the cache root is a user's
// directory too, and a `v1/` in it may hold anything (issue 12: `cache clear` took a
// user's `v1/checkpoints/model.pt`).
//
// A file is convjit's when it is a regular file (never a link, which is not followed)
// with one of convjit's names and contents that start as convjit writes them. A
// version directory convjit created holds a marker (CACHEDIR.TAG, the cache directory
// tagging standard, so backup tools skip it too); inside a marked directory a
// convjit name on a regular file suffices, so a corrupt entry is still cleared.
// Directories of earlier releases have no marker: their files must pass the content
// check, and everything else in them is left where it is.

#include <sys/stat.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace convjit {

class FileSystem;

inline constexpr std::string_view kVersionMarkerName = "CACHEDIR.TAG";

// Writes the marker into `version_dir`, which this process has just created. Returns
// 0 or an errno; failing leaves the directory unmarked (its files are then cleared
// only after the content check), never broken.
int write_version_marker(FileSystem& fs, const std::filesystem::path& version_dir);
// Whether `version_dir` holds convjit's marker: a regular file with exactly its text.
bool has_version_marker(FileSystem& fs, const std::filesystem::path& version_dir);

enum class CacheFileKind {
  kEntry,      // <sha256>.entry, in a shard directory
  kTemp,       // <sha256>.entry.tmp.<pid>.<n>.<hex>, an entry being written
  kKeyLock,    // <sha256>.lock, a per-key compile lock
  kIndexLock,  // cache.lock, in a version directory
  kMarker,     // CACHEDIR.TAG, in a version directory
  kUnknown,    // no name convjit gives
};

// The kind a file of this name is in a shard directory, or in a version directory.
CacheFileKind shard_file_kind(std::string_view name);
CacheFileKind version_file_kind(std::string_view name);
// Whether `name` is a version directory's: "v" and digits, as "v2".
bool is_version_dir_name(std::string_view name);

// Why the file at `path` is not one convjit made as a `kind`, or nullopt when it is
// (see the top of this file). `marked_dir`: its version directory holds the marker.
// Never follows a link and never blocks on a FIFO.
std::optional<std::string> not_made_by_convjit(FileSystem& fs, const std::filesystem::path& path, CacheFileKind kind,
                                               bool marked_dir);

// "a symbolic link", "a directory", "a FIFO", "a socket", "a device", "a regular file".
std::string_view file_type_name(mode_t mode);

}  // namespace convjit
