#pragma once
// The remote cache's settings for a Runtime, the remote counterpart of cache_config:
// RuntimeOptions first, else the environment, else defaults (docs/cache.md lists the
// variables). Misconfiguration never fails a Runtime: it warns once and leaves the
// remote cache off, and a remote cache without a MAC key is never used.

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cache/remote_cache.hpp"
#include "convjit/runtime.hpp"

namespace convjit {

struct RemoteCacheSetup {
  std::unique_ptr<RemoteCache> cache;  // null: off
  bool configured = false;             // a URL was given (by RuntimeOptions or the environment)
  RemoteCacheMode mode = RemoteCacheMode::kOff;
  std::string where;       // the URL without its password; empty when none was given
  std::string key_source;  // where the MAC key came from, e.g. "CONVJIT_REMOTE_CACHE_KEY"
  std::string note;        // why it is off; empty when it is on or not configured
};

// Reads the configuration and makes the cache; warns (once, here) about anything that
// keeps it off. Connects lazily: a server that is down costs nothing here.
RemoteCacheSetup open_remote_cache(const RuntimeOptions& options);

// A MAC key from its text: the bytes as they are, or "hex:" and an even number of hex
// digits. Throws Error(kCache) for a key shorter than 16 bytes or malformed hex.
std::string parse_mac_key(std::string_view text, std::string_view source);

// A MAC key file: a regular file of this user that nobody else can read or write (mode
// 0600 or 0400), holding a key as parse_mac_key reads it (one trailing newline is
// ignored). Throws Error(kCache) saying why and how to fix it.
std::string read_mac_key_file(const std::filesystem::path& path);

// "3600" (seconds), "90s", "30m", "12h", "7d"; nullopt for anything else or zero.
std::optional<std::chrono::seconds> parse_duration(std::string_view text);

}  // namespace convjit
