#pragma once
// convjit's log lines as they are written, through the log's sink (base/log.hpp): a
// test waits for the library to say it has reached a point ("waiting for pid ... to
// compile") instead of sleeping and hoping it got there. Debug level while it lives,
// so that such lines are written at all; the previous sink and level come back after.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/log.hpp"

namespace convjit::testing {

class LogWatch {
 public:
  LogWatch() : saved_level_(log::level()) {
    saved_sink_ = log::set_sink([this](LogLevel, std::string_view message) {
      {
        const std::lock_guard lock(mutex_);
        lines_.emplace_back(message);
      }
      changed_.notify_all();
    });
    log::set_level(LogLevel::kDebug);
  }
  ~LogWatch() {
    log::set_level(saved_level_);
    // NOTE: set_sink returns once no call of ours is running, so `this` may go.
    log::set_sink(std::move(saved_sink_));
  }
  LogWatch(const LogWatch&) = delete;
  LogWatch& operator=(const LogWatch&) = delete;

  // Blocks until `count` lines containing `part` have been written, or `limit` has
  // passed; true when they were.
  bool wait_for(std::string_view part, std::size_t count, std::chrono::milliseconds limit) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, limit, [&] { return count_locked(part) >= count; });
  }

  std::size_t count(std::string_view part) const {
    const std::lock_guard lock(mutex_);
    return count_locked(part);
  }

  // Every line so far, one per line of text, for failure messages.
  std::string text() const {
    const std::lock_guard lock(mutex_);
    std::string all;
    for (const auto& line : lines_) all += line + "\n";
    return all;
  }

 private:
  std::size_t count_locked(std::string_view part) const {
    std::size_t n = 0;
    for (const auto& line : lines_) n += line.find(part) != std::string::npos ? 1 : 0;
    return n;
  }

  LogLevel saved_level_;
  log::Sink saved_sink_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> lines_;
};

}  // namespace convjit::testing
