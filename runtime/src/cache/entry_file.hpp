#pragma once
// One cache entry is one file: a header line, named sections each with its size
// and sha256, and a trailer with the sha256 of everything before it. One file per
// entry keeps inode use low on shared filesystems (triton #11778).

#include <optional>
#include <string>
#include <string_view>

namespace convjit {

struct CacheEntry {
  std::string key_text;  // the full CacheKey text; a load compares it byte for byte
  std::string kernel_name;
  std::string source;
  std::string ptx;
  std::string cubin;
  std::string options;
  std::string log;
  // Wall time NVRTC took to build this entry; a later hit adds it to the time saved.
  double compile_ms = 0;

  bool operator==(const CacheEntry&) const = default;
};

std::string serialize_entry(const CacheEntry& entry);

// Parses and verifies every checksum. On failure returns nullopt and sets `why`.
std::optional<CacheEntry> parse_entry(std::string_view bytes, std::string& why);

// The key text alone, from the start of an entry (the key is its first section), with
// that section's checksum verified; for listing a cache without reading whole files.
std::optional<std::string> peek_entry_key(std::string_view prefix, std::string& why);

// Whether `prefix` (a file's first bytes) starts like an entry of any format version
// convjit has written ("convjit-cache-entry <version>\n"): how cache maintenance tells
// convjit's files from others' before deleting anything.
bool starts_like_an_entry(std::string_view prefix);
// Whether `prefix` could be the start of an entry still being written: empty, or
// agreeing with that header as far as it goes.
bool could_start_an_entry(std::string_view prefix);

}  // namespace convjit
