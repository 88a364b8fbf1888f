#pragma once
// An in-memory RemoteStore for the protocol tests: expiring keys, failures on demand
// (timeouts, a dead server, refused writes) and a hook that sees every call, so a
// test can wait for the code under test to reach a point instead of sleeping.

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "cache/remote_cache.hpp"

namespace convjit::testing {

class FakeRemoteStore final : public RemoteStore {
 public:
  // kRefusePuts: only plain puts are refused, as a full Redis under noeviction
  // refuses the large entry but may still take the small lock.
  enum class Mode { kHealthy, kTimeout, kDown, kRefuseWrites, kRefusePuts };
  using Hook = std::function<void(std::string_view op, std::string_view key, Status status)>;

  void set_mode(Mode mode) {
    std::lock_guard lock(mutex_);
    mode_ = mode;
  }
  void on_call(Hook hook) {
    std::lock_guard lock(mutex_);
    hook_ = std::move(hook);
  }
  // Every call the store answered or failed, and the writes among them.
  int calls() const {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  int writes() const {
    std::lock_guard lock(mutex_);
    return writes_;
  }
  std::optional<std::string> value(const std::string& key) {
    std::lock_guard lock(mutex_);
    expire(key);
    auto it = data_.find(key);
    return it == data_.end() ? std::nullopt : std::optional<std::string>(it->second.value);
  }
  void set_value(const std::string& key, std::string value, std::chrono::milliseconds ttl = std::chrono::hours(1)) {
    std::lock_guard lock(mutex_);
    data_[key] = {std::move(value), Clock::now() + ttl};
  }
  void erase(const std::string& key) {
    std::lock_guard lock(mutex_);
    data_.erase(key);
  }

  Reply get(std::string_view key) override {
    return run("get", key, false, [&](Reply& out) {
      auto it = data_.find(std::string(key));
      if (it == data_.end()) return Status::kNo;
      out.value = it->second.value;
      return Status::kOk;
    });
  }
  Reply put(std::string_view key, std::string_view value, std::chrono::milliseconds ttl) override {
    return run("put", key, true, [&](Reply&) {
      data_[std::string(key)] = {std::string(value), Clock::now() + ttl};
      return Status::kOk;
    });
  }
  Reply put_if_absent(std::string_view key, std::string_view value, std::chrono::milliseconds ttl) override {
    return run("put_if_absent", key, true, [&](Reply&) {
      if (data_.count(std::string(key)) != 0) return Status::kNo;
      data_[std::string(key)] = {std::string(value), Clock::now() + ttl};
      return Status::kOk;
    });
  }
  Reply expire_if_equals(std::string_view key, std::string_view value, std::chrono::milliseconds ttl) override {
    return run("expire_if_equals", key, true, [&](Reply&) {
      auto it = data_.find(std::string(key));
      if (it == data_.end() || it->second.value != value) return Status::kNo;
      it->second.expires = Clock::now() + ttl;
      return Status::kOk;
    });
  }
  Reply remove_if_equals(std::string_view key, std::string_view value) override {
    return run("remove_if_equals", key, true, [&](Reply&) {
      auto it = data_.find(std::string(key));
      if (it == data_.end() || it->second.value != value) return Status::kNo;
      data_.erase(it);
      return Status::kOk;
    });
  }
  Reply remove(std::string_view key) override {
    return run("remove", key, true, [&](Reply&) { return data_.erase(std::string(key)) ? Status::kOk : Status::kNo; });
  }
  Reply ping() override {
    return run("ping", "", false, [](Reply& out) {
      out.value = "PONG";
      return Status::kOk;
    });
  }
  Reply info() override {
    return run("info", "", false, [](Reply& out) {
      out.value = "redis_version:fake\r\nmaxmemory_human:0B\r\nmaxmemory_policy:noeviction\r\n";
      return Status::kOk;
    });
  }
  Reply keys(std::string_view prefix, std::vector<std::string>& out) override {
    return run("keys", prefix, false, [&](Reply&) {
      for (const auto& [k, v] : data_) {
        if (k.starts_with(prefix)) out.push_back(k);
      }
      return Status::kOk;
    });
  }
  std::string describe() const override { return "fake://store"; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Value {
    std::string value;
    Clock::time_point expires;
  };

  void expire(const std::string& key) {
    auto it = data_.find(key);
    if (it != data_.end() && Clock::now() >= it->second.expires) data_.erase(it);
  }

  Reply run(std::string_view op, std::string_view key, bool write, const std::function<Status(Reply&)>& body) {
    Reply reply;
    Hook hook;
    {
      std::lock_guard lock(mutex_);
      ++calls_;
      if (mode_ == Mode::kTimeout) {
        reply = Reply{Status::kTimeout, {}, "fake timeout"};
      } else if (mode_ == Mode::kDown) {
        reply = Reply{Status::kError, {}, "fake: connection refused"};
      } else if ((mode_ == Mode::kRefuseWrites && write) || (mode_ == Mode::kRefusePuts && op == "put")) {
        reply = Reply{Status::kRefused, {}, "fake: NOPERM"};
      } else {
        if (write) ++writes_;
        expire(std::string(key));
        reply.status = body(reply);
      }
      hook = hook_;
    }
    if (hook) hook(op, key, reply.status);
    return reply;
  }

  mutable std::mutex mutex_;
  std::map<std::string, Value> data_;
  Mode mode_ = Mode::kHealthy;
  Hook hook_;
  int calls_ = 0;
  int writes_ = 0;
};

}  // namespace convjit::testing
