#pragma once
// RemoteStore on Redis, through hiredis: a small pool of blocking connections, each
// connect and command bounded by a timeout. hiredis is dlopen'd by make_redis_store
// (cache/hiredis_library.hpp), so only a process that configures a remote cache needs
// it. When convjit is built without hiredis's headers (CONVJIT_REMOTE_CACHE_REDIS=OFF,
// or libhiredis-dev missing), or the library does not load, make_redis_store says so.

#include <chrono>
#include <memory>
#include <string>

#include "cache/redis_url.hpp"
#include "cache/remote_cache.hpp"

namespace convjit {

struct RedisStoreOptions {
  RedisUrl url;
  std::chrono::milliseconds connect_timeout{200};
  std::chrono::milliseconds command_timeout{1000};
  // rediss:// only: CA bundle (file) or directory to verify the server with; empty: the system's.
  std::string tls_ca;
  // rediss:// only: a client certificate and its key, for servers that require one.
  std::string tls_cert;
  std::string tls_key;
};

// Connects lazily (on the first call), so a server that is down costs nothing here.
// Throws Error(kUnsupported) when this build has no hiredis, or no hiredis_ssl for rediss://,
// or when the library (libhiredis, and libhiredis_ssl for rediss://) cannot be loaded.
std::unique_ptr<RemoteStore> make_redis_store(RedisStoreOptions options);

// What this build can talk to, for messages and `convjit cache stats`.
bool redis_support_built() noexcept;
bool redis_tls_support_built() noexcept;
// Why this process cannot talk to Redis (built without hiredis, or the library does not
// load: the error's text); empty when it can. Loads hiredis when it was not yet.
std::string redis_unavailable_reason();

}  // namespace convjit
