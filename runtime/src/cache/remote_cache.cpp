#include "cache/remote_cache.hpp"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <optional>
#include <random>
#include <stop_token>
#include <thread>

#include "base/fail.hpp"
#include "base/log.hpp"
#include "base/sha256.hpp"
#include "cache/remote_entry.hpp"

namespace convjit {

namespace {

using Clock = std::chrono::steady_clock;
using Status = RemoteStore::Status;
using Reply = RemoteStore::Reply;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// The "problem" line of a key text, to name the kernel in a warning.
std::string_view problem_of(std::string_view key_text) {
  constexpr std::string_view kField = "problem ";
  for (std::size_t pos = 0; pos < key_text.size();) {
    const std::size_t end = std::min(key_text.find('\n', pos), key_text.size());
    const std::string_view line = key_text.substr(pos, end - pos);
    if (line.starts_with(kField)) return line.substr(kField.size());
    pos = end + 1;
  }
  return "a kernel";
}

std::string random_hex() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}{:016x}", rng(), rng());
}

std::string now_text() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// The owner part of a lock value ("<random> pid 12 on host h since ..."), for messages.
std::string_view owner_of(std::string_view lock_value) {
  const std::size_t space = lock_value.find(' ');
  return space == std::string_view::npos ? lock_value : lock_value.substr(space + 1);
}

// The fleet lock while this node holds it. A thread renews the lease every third of
// its length while the kernel compiles, so a holder that dies (or loses its link)
// loses the lock within one lease, and a live one keeps it however long it compiles.
class FleetLease {
 public:
  FleetLease() = default;
  FleetLease(const FleetLease&) = delete;
  FleetLease& operator=(const FleetLease&) = delete;
  ~FleetLease() { abandon(); }

  void hold(RemoteStore& store, std::string key, std::string token, std::chrono::milliseconds lease) {
    store_ = &store;
    key_ = std::move(key);
    token_ = std::move(token);
    renewer_ = std::jthread([this, lease](std::stop_token stop) {
      std::mutex mutex;
      std::condition_variable_any wake;
      std::unique_lock lock(mutex);
      while (!wake.wait_for(lock, stop, lease / 3, [] { return false; }) && !stop.stop_requested()) {
        Reply reply;
        try {
          reply = store_->expire_if_equals(key_, token_, lease);
        } catch (...) {
          return;  // out of memory: the lease runs out, as a dead holder's would
        }
        if (reply.status == Status::kNo) {
          log::info("lost the fleet compile lock '{}' (its lease ran out); another node may compile it too", key_);
          return;
        }
        // NOTE: other failures are left to the next renewal: the request's own calls
        // decide whether the remote is usable, and the lease outlives two misses.
      }
    });
  }
  bool held() const noexcept { return store_ != nullptr; }
  const std::string& key() const noexcept { return key_; }
  const std::string& token() const noexcept { return token_; }

  // Stops renewing; the caller releases the lock (through its accounting) afterwards.
  void stop_renewing() noexcept {
    if (renewer_.joinable()) {
      renewer_.request_stop();
      renewer_.join();
    }
  }
  void forget() noexcept { store_ = nullptr; }

 private:
  // On the way out by an exception from the build: release without accounting.
  void abandon() noexcept {
    stop_renewing();
    if (store_ == nullptr) return;
    try {
      store_->remove_if_equals(key_, token_);
    } catch (...) {
      // Out of memory on the way out: the lease expires by itself.
    }
  }

  RemoteStore* store_ = nullptr;
  std::string key_;
  std::string token_;
  std::jthread renewer_;
};

}  // namespace

// Skips the remote after a failure, for a back-off that doubles while it keeps
// failing; when a back-off ends, one request probes the server while the others keep
// skipping it, so a silent server costs one timeout per back-off, not one per thread.
class RemoteCache::Breaker {
 public:
  Breaker(std::string where, std::chrono::milliseconds min, std::chrono::milliseconds max)
      : where_(std::move(where)), min_(min), max_(max) {}

  bool allow() {
    std::lock_guard lock(mutex_);
    if (failures_ == 0) return true;
    if (probing_ || Clock::now() < retry_at_) return false;
    probing_ = true;
    return true;
  }
  void success() {
    std::lock_guard lock(mutex_);
    // NOTE: a call that began before the back-off started may succeed after it: only
    // the probe's answer says whether the server is back.
    if (failures_ == 0 || !probing_) return;
    log::info("the remote cache {} answers again; using it", where_);
    failures_ = 0;
    probing_ = false;
  }
  void failure(const std::string& why) {
    std::lock_guard lock(mutex_);
    if (failures_ > 0 && !probing_) return;  // another call already started this back-off
    const int doublings = std::min(failures_, 20);
    const auto delay = std::min<std::chrono::milliseconds>(min_ * (std::int64_t{1} << doublings), max_);
    ++failures_;
    probing_ = false;
    retry_at_ = Clock::now() + delay;
    if (failures_ == 1) {
      log::warn("the remote cache {} failed ({}); compiling locally, and trying it again in {} ms", where_, why,
                delay.count());
    } else {
      log::info("the remote cache {} failed again ({}); next try in {} ms", where_, why, delay.count());
    }
  }
  bool backing_off() const {
    std::lock_guard lock(mutex_);
    return failures_ > 0;
  }

 private:
  const std::string where_;
  const std::chrono::milliseconds min_;
  const std::chrono::milliseconds max_;
  mutable std::mutex mutex_;
  int failures_ = 0;
  bool probing_ = false;
  Clock::time_point retry_at_{};
};

// One request's view of the remote: after any failure it stops asking.
// One request's view of the remote: after any failure it stops asking, except that
// a lock it holds is still released after a refusal (the server is up).
struct RemoteCache::Call {
  FetchReport& report;
  bool usable = true;   // false after a failure or a refusal
  bool failed = false;  // a timeout or an error: the server may be gone
};

RemoteCache::RemoteCache(std::unique_ptr<RemoteStore> store, RemoteCacheOptions options)
    : store_(std::move(store)), options_(std::move(options)) {
  if (!store_) fail(ErrorCode::kInvalidArgument, "remote cache: no store");
  if (options_.mac_key.empty()) {
    fail(ErrorCode::kInvalidArgument, "remote cache: no MAC key; refusing to trust entries nobody can authenticate");
  }
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  owner_suffix_ = fmt::format(" pid {} on host {}", ::getpid(), host[0] != '\0' ? host : "?");
  breaker_ = std::make_unique<Breaker>(store_->describe(), options_.backoff_min, options_.backoff_max);
}

RemoteCache::~RemoteCache() = default;

std::string RemoteCache::entry_key(std::string_view key_text) const {
  return fmt::format("{}v{}:{}", options_.prefix, options_.format_version, sha256_hex(key_text));
}

std::string RemoteCache::lock_key(std::string_view entry_key) { return std::string(entry_key) + ":lock"; }

bool RemoteCache::backing_off() const { return breaker_->backing_off(); }

Reply RemoteCache::call(Call& state, const std::function<Reply()>& op, bool after_refusal) {
  if (state.failed || (!state.usable && !after_refusal)) {
    return Reply{Status::kError, {}, "not asked after an earlier failure"};
  }
  if (!breaker_->allow()) {
    state.usable = false;
    state.report.skipped = true;
    return Reply{Status::kError, {}, "backing off after failures"};
  }
  const auto start = Clock::now();
  Reply reply = op();
  state.report.remote_ms += ms_since(start);
  switch (reply.status) {
    case Status::kTimeout:
      ++state.report.timeouts;
      state.usable = false;
      state.failed = true;
      breaker_->failure(reply.error);
      break;
    case Status::kError:
      ++state.report.errors;
      state.usable = false;
      state.failed = true;
      breaker_->failure(reply.error);
      break;
    case Status::kRefused:
      // The server is up but says no (ACL, maxmemory with noeviction, a replica):
      // backing off would not help, so only this request stops asking.
      ++state.report.errors;
      state.usable = false;
      breaker_->success();
      if (!refusal_warned_.exchange(true)) {
        log::warn("the remote cache {} refused a command ({}); such kernels are compiled locally", store_->describe(),
                  reply.error);
      } else {
        log::debug("the remote cache {} refused a command ({})", store_->describe(), reply.error);
      }
      break;
    default:
      breaker_->success();
  }
  return reply;
}

CacheEntry RemoteCache::fetch_or_build(std::string_view key_text, const std::function<CacheEntry()>& build,
                                       FetchReport& report) {
  report = FetchReport{};
  Call state{report};
  const std::string key = entry_key(key_text);
  const std::string lock = lock_key(key);

  // One GET: the verified entry, or nullopt (absent, refused, or the call failed).
  const auto fetch = [&]() -> std::optional<CacheEntry> {
    Reply reply = call(state, [&] { return store_->get(key); });
    if (reply.status != Status::kOk) return std::nullopt;
    std::string why;
    auto entry = open_remote_entry(options_.mac_key, options_.format_version, key_text, reply.value, why);
    if (!entry) {
      if (!report.rejected) {
        log::warn("remote cache entry '{}' ({}) is refused: {}; {}", key, problem_of(key_text), why,
                  options_.readonly ? "compiling it locally (read-only: the entry is left alone)"
                                    : "compiling it locally and publishing the good entry over it");
      }
      report.rejected = true;
      return std::nullopt;
    }
    report.bytes_read += reply.value.size();
    return entry;
  };
  const auto take_hit = [&](CacheEntry& entry) {
    report.hit = true;
    report.saved_compile_ms = entry.compile_ms;
    return std::move(entry);
  };

  if (auto entry = fetch()) return take_hit(*entry);
  const bool answered = state.usable;  // the server said "no such entry", or gave a bad one

  FleetLease lease;
  if (state.usable) {
    const auto deadline = Clock::now() + options_.lock_wait;
    auto pause = std::chrono::milliseconds(2);
    std::string owner;
    const std::string token = random_hex() + owner_suffix_ + " since " + now_text();
    for (;;) {
      bool busy = false;
      if (options_.readonly) {
        // A read-only node never takes the lock, but waits for a writer that holds it.
        Reply reply = call(state, [&] { return store_->get(lock); });
        busy = reply.status == Status::kOk;
        if (busy && owner.empty()) owner = std::string(owner_of(reply.value));
      } else {
        Reply reply = call(state, [&] { return store_->put_if_absent(lock, token, options_.lock_lease); });
        if (reply.status == Status::kOk) lease.hold(*store_, lock, token, options_.lock_lease);
        busy = reply.status == Status::kNo;
        if (busy && owner.empty()) {
          Reply holder = call(state, [&] { return store_->get(lock); });
          if (holder.status == Status::kOk) owner = std::string(owner_of(holder.value));
        }
      }
      if (!busy || !state.usable) break;  // ours, free (read-only), or the remote failed
      if (!report.waited) {
        log::debug("waiting for {} to compile '{}' (fleet lock '{}')", owner.empty() ? "another node" : owner, key,
                   lock);
      }
      report.waited = true;
      if (Clock::now() >= deadline) {
        report.lock_timed_out = true;
        log::warn("waited {} ms for {} to compile '{}' (fleet lock '{}'); compiling it here too",
                  options_.lock_wait.count(), owner.empty() ? "another node" : owner, key, lock);
        break;
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(50));
      if (auto entry = fetch()) return take_hit(*entry);
      if (!state.usable) break;
    }
    if (state.usable && (lease.held() || report.waited) && !report.lock_timed_out) {
      // The previous holder may have published between our look and our lock.
      if (auto entry = fetch()) {
        lease.stop_renewing();
        if (lease.held())
          call(
              state, [&] { return store_->remove_if_equals(lock, token); }, /*after_refusal=*/true);
        lease.forget();
        return take_hit(*entry);
      }
      if (lease.held() && report.waited) {
        report.took_over = true;
        log::warn(
            "took over the fleet compile lock '{}' from {}, which let it go without publishing (it died, lost "
            "its connection or failed)",
            lock, owner.empty() ? "another node" : owner);
      }
    }
  }

  CacheEntry entry = build();  // NOTE: the lease is renewed meanwhile; an exception releases it
  report.built = true;
  if (!options_.readonly && state.usable) {
    const std::string sealed = seal_remote_entry(options_.mac_key, options_.format_version, entry);
    const auto ttl = std::chrono::duration_cast<std::chrono::milliseconds>(options_.ttl);
    if (call(state, [&] { return store_->put(key, sealed, ttl); }).status == Status::kOk) {
      report.published = true;
      report.bytes_written = sealed.size();
    }
  }
  // Published first, released after: a waiter polls for the entry, not for the lock.
  // NOTE: released even when the publication was refused (say, Redis full under
  // noeviction), or the other nodes would wait a lease for an entry that never comes.
  lease.stop_renewing();
  if (lease.held()) {
    call(
        state, [&] { return store_->remove_if_equals(lease.key(), lease.token()); }, /*after_refusal=*/true);
  }
  lease.forget();

  report.miss = answered && !report.rejected;
  report.unavailable = !answered;
  return entry;
}

RemoteCache::Health RemoteCache::health(bool count_entries) const {
  Health health;
  const auto start = Clock::now();
  const Reply pong = store_->ping();
  if (pong.status != Status::kOk && pong.status != Status::kRefused) {
    health.error = pong.error.empty() ? "no answer" : pong.error;
    return health;
  }
  health.reachable = true;
  health.ping_ms = ms_since(start);
  if (pong.status == Status::kRefused) health.error = pong.error;
  const Reply info = store_->info();
  if (info.status == Status::kOk) {
    for (std::size_t pos = 0; pos < info.value.size();) {
      const std::size_t end = std::min(info.value.find('\n', pos), info.value.size());
      std::string_view line = std::string_view(info.value).substr(pos, end - pos);
      if (line.ends_with('\r')) line.remove_suffix(1);
      const auto field = [&](std::string_view name, std::string& out) {
        if (line.starts_with(name) && line.size() > name.size() && line[name.size()] == ':') {
          out = std::string(line.substr(name.size() + 1));
        }
      };
      field("redis_version", health.server_version);
      field("used_memory_human", health.used_memory);
      field("maxmemory_human", health.maxmemory);
      field("maxmemory_policy", health.maxmemory_policy);
      pos = end + 1;
    }
  }
  if (count_entries) {
    std::vector<std::string> keys;
    const Reply listed = store_->keys(fmt::format("{}v{}:", options_.prefix, options_.format_version), keys);
    if (listed.status == Status::kOk) {
      health.counted = true;
      for (const auto& k : keys) ++(k.ends_with(":lock") ? health.locks : health.entries);
    } else if (health.error.empty()) {
      health.error = listed.error;
    }
  }
  return health;
}

}  // namespace convjit
