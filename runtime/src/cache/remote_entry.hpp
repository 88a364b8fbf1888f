#pragma once
// One entry of the shared remote cache, as stored in Redis: the disk cache's own
// serialized entry (entry_file.hpp), the full key text it is for, the cache format
// version, and an HMAC-SHA256 over all of it. A checksum only proves an entry is
// intact; anyone who can write to a shared store can also compute checksums, so a
// node trusts a remote entry only when its MAC verifies under the fleet's secret key.
//
//   convjit-remote-entry 1\n
//   format <cache format version>\n
//   key <size>\n<key text>\n
//   entry <size>\n<serialize_entry bytes>\n
//   hmac-sha256 <64 hex digits over every byte above>\n

#include <optional>
#include <string>
#include <string_view>

#include "cache/entry_file.hpp"

namespace convjit {

std::string seal_remote_entry(std::string_view mac_key, int format_version, const CacheEntry& entry);

// Verifies, in this order: the MAC (constant-time compare), the format version, that
// the embedded key is `key_text` byte for byte (an authentic entry copied under another
// key's name is refused), and the entry's own checksums. On failure returns nullopt
// and says why.
std::optional<CacheEntry> open_remote_entry(std::string_view mac_key, int format_version, std::string_view key_text,
                                            std::string_view value, std::string& why);

}  // namespace convjit
