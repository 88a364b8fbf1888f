#pragma once
// One cache entry is one file: a header line, named sections each with its size
// and sha256, and a trailer with the sha256 of everything before it. One file per
// entry keeps inode use low on shared filesystems (triton #11778).

#include <cstdint>
#include <functional>
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

// Reads at most `max` bytes at `offset` of an entry's file into `out` (fewer only at its
// end); returns 0 or an errno value.
using EntryReadAt = std::function<int(std::uint64_t offset, std::size_t max, std::string& out)>;

// What loading a kernel uses of an entry: every section but the source and the PTX,
// which are most of its bytes. Reads the entry, a file of `file_size` bytes, through
// `read_at` in a few pieces, skipping those two bodies, and checks the header, every
// section header it passes, each section it returns against its own sha256, and that the
// file ends in a trailer where the section sizes say. The skipped bodies and the
// trailer's digest are not checked: parse_entry checks them for whatever reads them.
// Returns the entry with `source` and `ptx` empty; on failure nullopt and `why`.
// `bytes_read`: how many bytes it read.
std::optional<CacheEntry> read_entry_for_load(std::uint64_t file_size, const EntryReadAt& read_at, std::string& why,
                                              std::uint64_t& bytes_read);

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
