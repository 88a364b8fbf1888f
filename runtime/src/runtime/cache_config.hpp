#pragma once
// The disk cache's settings for a Runtime: RuntimeOptions first, else the
// environment (CONVJIT_CACHE_READONLY, CONVJIT_CACHE_MAX_SIZE), else defaults.

#include <cstdint>
#include <optional>
#include <string_view>

#include "cache/disk_cache.hpp"
#include "convjit/runtime.hpp"

namespace convjit {

// "1073741824", "512K", "64M", "4G", "1T" (binary multiples; "MiB", "MB", "GiB"... too).
// nullopt for anything else, or on overflow.
std::optional<std::uint64_t> parse_byte_size(std::string_view text);

// Warns once about an environment value it cannot parse, then uses the default.
DiskCacheOptions disk_cache_options(const RuntimeOptions& options);

}  // namespace convjit
