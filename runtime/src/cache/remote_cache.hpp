#pragma once
// The remote tier behind the disk cache: one store shared by a fleet of nodes, so a
// kernel compiled on one node is a fetch on every other (sccache's and Triton's Redis
// caches do this, but trust whatever the store holds; whoever can write to it could
// inject machine code into every node). Here every entry is signed with the fleet's
// secret key (remote_entry.hpp) and a node refuses any entry whose MAC does not verify.
//
// The rule of the disk cache holds here too: the remote tier can make a kernel request
// faster, never make it fail. Every call is bounded by the store's timeouts, and after
// a failure the remote is skipped for a back-off (1 s doubling to 30 s) so a dead or
// silent server costs a few bounded waits, not one per kernel.
//
// Keys, for a key text K of cache format F:
//   <prefix>v<F>:<sha256(K)>        the sealed entry, with a TTL
//   <prefix>v<F>:<sha256(K)>:lock   the fleet compile lock, a lease its holder renews
// A new format version never reads the old entries; they expire with their TTL.
// docs/cache.md ("Remote cache") describes the protocol and the operation.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cache/entry_file.hpp"

namespace convjit {

// A key-value server with expiring keys (Redis; an in-memory fake in the tests).
// Calls never throw: they say how they went. Safe to call from several threads.
class RemoteStore {
 public:
  enum class Status {
    kOk,       // done; get: found
    kNo,       // get: no such key; put_if_absent: the key exists; *_if_equals: it holds another value
    kRefused,  // the server answered with an error (no permission, out of memory, read-only replica)
    kTimeout,  // the connect or the command ran past its bound
    kError,    // could not talk to the server: refused, reset, closed, malformed reply
  };
  struct Reply {
    Status status = Status::kError;
    std::string value;  // get: the value; ping: the round trip in ms; info: the server's text
    std::string error;  // what went wrong, for the log
  };

  virtual ~RemoteStore() = default;
  virtual Reply get(std::string_view key) = 0;
  virtual Reply put(std::string_view key, std::string_view value, std::chrono::milliseconds ttl) = 0;
  // Sets the key only when it does not exist (Redis: SET NX PX).
  virtual Reply put_if_absent(std::string_view key, std::string_view value, std::chrono::milliseconds ttl) = 0;
  // Atomically, when the key holds `value`: gives it `ttl` from now (renews a lease).
  virtual Reply expire_if_equals(std::string_view key, std::string_view value, std::chrono::milliseconds ttl) = 0;
  // Atomically, when the key holds `value`: deletes it (releases a lock only if still ours).
  virtual Reply remove_if_equals(std::string_view key, std::string_view value) = 0;
  virtual Reply remove(std::string_view key) = 0;

  // ---- For `convjit cache stats` and tests.
  virtual Reply ping() = 0;
  // "name:value" lines about the server (Redis: INFO); empty when the store has none.
  virtual Reply info() = 0;
  // Every key starting with `prefix` (Redis: SCAN). For maintenance, never on a kernel request.
  virtual Reply keys(std::string_view prefix, std::vector<std::string>& out) = 0;
  // Where the store is, with no secret in it: "redis://cache.internal:6379/0".
  virtual std::string describe() const = 0;
};

struct RemoteCacheOptions {
  // The fleet's secret; every node that shares entries has the same. Required: a
  // RemoteCache with an empty key refuses to be made (it would trust anything).
  std::string mac_key;
  // The cache format version (kCacheFormatVersion), part of every key and of the MAC.
  int format_version = 0;
  // Namespace of every key, so several fleets or formats can share one server.
  std::string prefix = "convjit:";
  // Fetch only: never publish, never take the fleet lock (a node that only a trusted
  // builder's entries reach).
  bool readonly = false;
  // Entries expire this long after their publication; a later miss publishes again.
  std::chrono::seconds ttl{std::chrono::hours(24 * 30)};
  // The fleet lock's lease: its holder renews it every third of this while it compiles,
  // so the lock of a node that died expires within one lease.
  std::chrono::milliseconds lock_lease{std::chrono::seconds(10)};
  // How long a node waits for another node's compile before compiling the key itself
  // (a holder alive, renewing, but hung).
  std::chrono::milliseconds lock_wait{std::chrono::seconds(60)};
  // After a failure (timeout, connection error) the remote is skipped for backoff_min,
  // doubling up to backoff_max while it keeps failing; one request then probes it.
  std::chrono::milliseconds backoff_min{std::chrono::seconds(1)};
  std::chrono::milliseconds backoff_max{std::chrono::seconds(30)};
};

class RemoteCache {
 public:
  // Throws Error(kInvalidArgument) without a MAC key or store.
  RemoteCache(std::unique_ptr<RemoteStore> store, RemoteCacheOptions options);
  ~RemoteCache();
  RemoteCache(const RemoteCache&) = delete;
  RemoteCache& operator=(const RemoteCache&) = delete;

  struct FetchReport {
    // How the request ended; exactly one is true when the remote was asked.
    bool hit = false;          // a verified entry came from the remote (perhaps after waiting)
    bool miss = false;         // the remote had no entry: built here (and published unless read-only)
    bool rejected = false;     // the remote's entry failed verification: built here, and published over it
    bool unavailable = false;  // the remote failed or was backing off: built here
    bool skipped = false;      // unavailable because the remote was backing off: not asked at all
    bool built = false;        // `build` ran here
    bool published = false;
    bool waited = false;          // another node held the fleet lock for this key
    bool took_over = false;       // ... and stopped renewing it before publishing (died, lost its link)
    bool lock_timed_out = false;  // waited options.lock_wait, then built anyway
    std::uint64_t timeouts = 0;   // calls that ran past their bound
    std::uint64_t errors = 0;     // calls that failed otherwise (refused connection, dropped, error reply)
    std::uint64_t bytes_read = 0;
    std::uint64_t bytes_written = 0;
    double remote_ms = 0;         // wall time inside calls to the store (not the pauses between polls)
    double saved_compile_ms = 0;  // the compile time recorded in the entry that hit
  };
  // For one key: fetch and verify; on a miss take the fleet lock (or wait, bounded, for
  // the node that holds it and take its entry), call `build`, publish, release. Never
  // throws because of the remote; only `build` may throw (then the lock is released).
  CacheEntry fetch_or_build(std::string_view key_text, const std::function<CacheEntry()>& build, FetchReport& report);

  struct Health {
    bool reachable = false;
    double ping_ms = 0;
    std::string error;  // why not reachable
    std::string server_version;
    std::string used_memory;  // "1.2M"
    std::string maxmemory;    // "0B" means no limit
    std::string maxmemory_policy;
    bool counted = false;       // entries and bytes below are known
    std::uint64_t entries = 0;  // entries of this format version under the prefix
    std::uint64_t locks = 0;    // fleet locks held now
  };
  // Asks the server directly (not through the back-off), for `convjit cache stats`.
  Health health(bool count_entries) const;

  std::string entry_key(std::string_view key_text) const;
  static std::string lock_key(std::string_view entry_key);
  const RemoteCacheOptions& options() const noexcept { return options_; }
  RemoteStore& store() const noexcept { return *store_; }
  // True while failures keep the remote skipped.
  bool backing_off() const;

 private:
  class Breaker;
  struct Call;
  // Runs `op` unless the request stopped asking (after_refusal: unless it failed) or
  // the remote is backing off; counts the outcome and tells the back-off.
  RemoteStore::Reply call(Call& state, const std::function<RemoteStore::Reply()>& op, bool after_refusal = false);

  std::unique_ptr<RemoteStore> store_;
  RemoteCacheOptions options_;
  std::string owner_suffix_;  // " pid <pid> on host <host>", in every lock value
  std::unique_ptr<Breaker> breaker_;
  std::atomic<bool> refusal_warned_{false};
};

}  // namespace convjit
