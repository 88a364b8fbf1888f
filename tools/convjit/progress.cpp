#include "progress.hpp"

#include <fmt/format.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace convjit::cli {

namespace {
int terminal_width() {
  winsize size{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col >= 40) return size.ws_col;
  return 100;
}

std::string_view outcome_word(Outcome outcome) {
  switch (outcome) {
    case Outcome::kCompiled:
      return "compiled";
    case Outcome::kCached:
      return "cached";
    case Outcome::kFailed:
      return "FAILED";
    case Outcome::kUnsupported:
      return "UNSUPPORTED";
  }
  return "?";
}

std::string elapsed_text(std::chrono::steady_clock::duration d) {
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

constexpr std::string_view kClearLine = "\r\033[2K";
}  // namespace

bool stdout_wants_bar() {
  if (const char* mode = std::getenv("CONVJIT_PROGRESS"); mode != nullptr) {
    if (std::string_view(mode) == "bar") return true;
    if (std::string_view(mode) == "plain") return false;
  }
  return ::isatty(STDOUT_FILENO) == 1;
}

Progress::Progress(std::size_t total, bool bar) : total_(total), bar_(bar) {
  if (bar_) {
    std::lock_guard lock(mutex_);
    redraw_locked();
    ticker_ = std::thread([this] { tick(); });
  }
}

Progress::~Progress() { close(); }

void Progress::tick() {
  std::unique_lock lock(mutex_);
  while (!closed_) {
    wake_.wait_for(lock, std::chrono::milliseconds(250));
    if (!closed_) redraw_locked();
  }
}

void Progress::started(std::string_view label) {
  std::lock_guard lock(mutex_);
  running_.emplace_back(label);
  if (bar_) redraw_locked();
}

void Progress::finished(std::string_view label, Outcome outcome, double ms, std::string_view detail) {
  std::lock_guard lock(mutex_);
  if (auto it = std::find(running_.begin(), running_.end(), label); it != running_.end()) running_.erase(it);
  switch (outcome) {
    case Outcome::kCompiled:
      ++counts_.compiled;
      break;
    case Outcome::kCached:
      ++counts_.cached;
      break;
    case Outcome::kFailed:
      ++counts_.failed;
      break;
    case Outcome::kUnsupported:
      ++counts_.unsupported;
      break;
  }
  const bool bad = outcome == Outcome::kFailed || outcome == Outcome::kUnsupported;
  if (bar_) {
    // Failures stay on screen above the bar; successes only move the bar.
    if (bad) fmt::print("{}{} {}: {}\n", kClearLine, outcome_word(outcome), label, detail);
    redraw_locked();
    return;
  }
  const int width = fmt::formatted_size("{}", total_);
  fmt::print("[{:>{}}/{}] {:<11} {:>8}  {}{}{}\n", counts_.done(), width, total_, outcome_word(outcome),
             fmt::format("{:.0f} ms", ms), label, bad ? ": " : "", bad ? detail : "");
  std::fflush(stdout);
}

void Progress::close() {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
    if (bar_) {
      redraw_locked();
      fmt::print("\n");
      std::fflush(stdout);
    }
  }
  wake_.notify_all();
  if (ticker_.joinable()) ticker_.join();
}

ProgressCounts Progress::counts() const {
  std::lock_guard lock(mutex_);
  return counts_;
}

void Progress::redraw_locked() {
  const int width = terminal_width();
  constexpr int kBarCells = 30;
  const std::size_t done = counts_.done();
  const int filled = total_ == 0 ? kBarCells : static_cast<int>(done * kBarCells / total_);
  std::string line =
      fmt::format("[{}{}] {}/{}  compiled {}  cached {}  failed {}  {}", std::string(filled, '#'),
                  std::string(kBarCells - filled, '.'), done, total_, counts_.compiled, counts_.cached,
                  counts_.failed + counts_.unsupported, elapsed_text(std::chrono::steady_clock::now() - start_));
  if (!running_.empty() && !closed_) {
    // The count first: a long label is what the terminal's width cuts.
    line += running_.size() == 1 ? fmt::format("  {}", running_.front())
                                 : fmt::format("  {} running: {}", running_.size(), running_.front());
  }
  if (static_cast<int>(line.size()) >= width) line.resize(static_cast<std::size_t>(width - 1));
  fmt::print("{}{}", kClearLine, line);
  std::fflush(stdout);
}

}  // namespace convjit::cli
