#pragma once
// Progress of a batch of jobs run by several threads: a redrawn bar on a terminal,
// one plain line per finished job otherwise (logs, CI, pipes).

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace convjit::cli {

enum class Outcome { kCompiled, kCached, kFailed, kUnsupported };

struct ProgressCounts {
  std::size_t compiled = 0;
  std::size_t cached = 0;
  std::size_t failed = 0;
  std::size_t unsupported = 0;
  std::size_t done() const { return compiled + cached + failed + unsupported; }
};

class Progress {
 public:
  // `bar`: draw a bar (stdout is a terminal); otherwise print plain lines.
  Progress(std::size_t total, bool bar);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Thread-safe. `detail` is the first line of the error for failures.
  void started(std::string_view label);
  void finished(std::string_view label, Outcome outcome, double ms, std::string_view detail);
  // Ends the bar's line; the destructor does it too.
  void close();

  ProgressCounts counts() const;

 private:
  void redraw_locked();
  void tick();

  const std::size_t total_;
  const bool bar_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool closed_ = false;
  ProgressCounts counts_;
  std::vector<std::string> running_;  // labels in flight, shown on the bar
  std::thread ticker_;                // keeps the elapsed time moving during long compiles
};

// Whether stdout is a terminal (isatty); CONVJIT_PROGRESS=bar|plain overrides.
bool stdout_wants_bar();

}  // namespace convjit::cli
