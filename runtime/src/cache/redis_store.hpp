#pragma once
// RemoteStore on Redis, through hiredis: a small pool of blocking connections, each
// connect and command bounded by a timeout. When convjit is built without hiredis
// (CONVJIT_REMOTE_CACHE_REDIS=OFF, or libhiredis-dev missing) make_redis_store says so.

#include <chrono>
#include <memory>

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
// Throws Error(kUnsupported) when this build has no hiredis, or no hiredis_ssl for rediss://.
std::unique_ptr<RemoteStore> make_redis_store(RedisStoreOptions options);

// What this build can talk to, for messages and `convjit cache stats`.
bool redis_support_built() noexcept;
bool redis_tls_support_built() noexcept;

}  // namespace convjit
