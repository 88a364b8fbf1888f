#pragma once
// Worker processes for the multi-process cache tests: each runs
// convjit_cache_stress_worker (CONVJIT_CACHE_STRESS_WORKER), whose stdout comes back
// through a pipe (progress lines, then one JSON line of CacheStats), whose stderr goes
// to a file (or a pipe), and whose stdin is a socket the test writes to (the start
// gate; a lock holder blocks on it until killed). Tests synchronize with workers by
// blocking reads of what a worker says and by its exit, never by sleeping. Shared by
// cache_stress_test.cpp (one cache directory) and remote_cache_fleet_test.cpp (one Redis).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace convjit::testing {

using WorkerStats = std::map<std::string, double>;

// One worker process: stdout through a pipe, stderr to a file (or, for an empty
// path, through a pipe too, read with read_error_line), stdin from send_line.
// `extra_env` entries ("NAME=value") come before the inherited environment, so they win.
class Worker {
 public:
  Worker(const std::vector<std::string>& args, const std::filesystem::path& stderr_file,
         const std::vector<std::string>& extra_env = {}) {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    // NOTE: a socket, not a pipe, for stdin: send(MSG_NOSIGNAL) to a worker that has
    // died fails with EPIPE instead of killing the test with SIGPIPE.
    int in_fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_fds) != 0) throw std::runtime_error("socketpair");
    int err_fds[2] = {-1, -1};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, in_fds[1], STDIN_FILENO);
    if (stderr_file.empty()) {
      if (::pipe2(err_fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
      posix_spawn_file_actions_adddup2(&actions, err_fds[1], STDERR_FILENO);
    } else {
      posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                       0600);
    }
    std::vector<std::string> argv_text = {CONVJIT_CACHE_STRESS_WORKER};
    argv_text.insert(argv_text.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_text) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_text = extra_env;
    for (char** e = environ; *e != nullptr; ++e) env_text.emplace_back(*e);
    std::vector<char*> envp;
    for (auto& e : env_text) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    out_fd_ = pipe_fds[0];
    ::close(in_fds[1]);
    in_fd_ = in_fds[0];
    if (err_fds[1] >= 0) ::close(err_fds[1]);
    err_fd_ = err_fds[0];
    if (rc != 0) throw std::runtime_error("posix_spawn: " + std::string(std::strerror(rc)));
    stderr_file_ = stderr_file;
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  Worker(Worker&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)),
        out_fd_(std::exchange(other.out_fd_, -1)),
        err_fd_(std::exchange(other.err_fd_, -1)),
        in_fd_(std::exchange(other.in_fd_, -1)),
        stderr_file_(std::move(other.stderr_file_)),
        buffered_(std::move(other.buffered_)),
        result_line_(std::move(other.result_line_)),
        error_buffered_(std::move(other.error_buffered_)),
        error_seen_(std::move(other.error_seen_)) {}
  ~Worker() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0) ::close(out_fd_);
    if (err_fd_ >= 0) ::close(err_fd_);
    if (in_fd_ >= 0) ::close(in_fd_);
  }

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }
  void kill_now() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  // The next line of stdout (a worker started with --progress prints one per finished
  // descriptor); blocks until it comes; nullopt at the end of the output. The JSON line
  // is kept for finish() whoever reads it.
  std::optional<std::string> read_line() {
    auto line = next_line(out_fd_, buffered_);
    if (line && line->starts_with('{')) result_line_ = *line;
    return line;
  }
  // Writes `line` and a newline to the worker's stdin; false when the worker is gone.
  bool send_line(std::string_view line) {
    const std::string text = std::string(line) + "\n";
    for (std::size_t sent = 0; sent < text.size();) {
      const ssize_t n = ::send(in_fd_, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }
  // The next line of stderr, when it goes through a pipe (the log, e.g. with
  // CONVJIT_LOG_LEVEL=debug); blocks until it comes; nullopt at the end.
  std::optional<std::string> read_error_line() {
    auto line = next_line(err_fd_, error_buffered_);
    if (line) error_seen_ += *line + "\n";
    return line;
  }

  // Waits for the exit; returns the exit status and the JSON line's fields.
  int finish(WorkerStats& stats, std::string& line) {
    while (read_line()) {
    }
    if (err_fd_ >= 0) {
      while (read_error_line()) {
      }
    }
    line = result_line_;
    if (line.empty() && buffered_.starts_with('{')) line = buffered_;
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    stats = parse(line);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  std::string error_text() const {
    if (stderr_file_.empty()) return error_seen_ + error_buffered_;
    std::ifstream in(stderr_file_);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }

 private:
  static std::optional<std::string> next_line(int fd, std::string& buffered) {
    if (fd < 0) return std::nullopt;
    for (;;) {
      if (const std::size_t newline = buffered.find('\n'); newline != std::string::npos) {
        std::string line = buffered.substr(0, newline);
        buffered.erase(0, newline + 1);
        return line;
      }
      char buffer[4096];
      const ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n <= 0) return std::nullopt;
      buffered.append(buffer, static_cast<std::size_t>(n));
    }
  }

  static WorkerStats parse(const std::string& line) {
    WorkerStats stats;
    for (std::size_t pos = line.find('"'); pos != std::string::npos; pos = line.find('"', pos)) {
      const std::size_t end = line.find('"', pos + 1);
      const std::string key = line.substr(pos + 1, end - pos - 1);
      stats[key] = std::atof(line.c_str() + end + 2);
      pos = line.find_first_of(",}", end);
    }
    return stats;
  }

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  int in_fd_ = -1;
  std::filesystem::path stderr_file_;
  std::string buffered_;
  std::string result_line_;  // the last JSON line read
  std::string error_buffered_;
  std::string error_seen_;
};

// Starts workers that were given "--start-gate 1" at once: waits until each has said
// "ready" (started, arguments parsed), then tells every one to go. However slowly a
// loaded machine starts them, their work begins together. False (with a failure
// recorded) when one ended instead.
inline bool start_together(std::vector<Worker>& workers) {
  for (auto& worker : workers) {
    const auto line = worker.read_line();
    if (line != "ready") {
      ADD_FAILURE() << "a worker did not reach its start gate: " << line.value_or("(no output)") << "\n"
                    << worker.error_text();
      return false;
    }
  }
  bool all = true;
  for (auto& worker : workers) all &= worker.send_line("go");
  EXPECT_TRUE(all) << "a worker ended at its start gate";
  return all;
}

// Calls on_line(line) for every line the workers print before their JSON lines, as it
// comes (with --progress 1: one per finished descriptor), one call at a time; returns
// when every worker has closed its output. One reader thread per worker, so no worker
// ever blocks on a full pipe. finish_all then collects the JSON lines.
inline void follow_progress(std::vector<Worker>& workers, const std::function<void(const std::string&)>& on_line) {
  std::mutex one_at_a_time;
  std::vector<std::thread> readers;
  for (auto& worker : workers) {
    readers.emplace_back([&] {
      while (const auto line = worker.read_line()) {
        if (line->starts_with('{')) continue;
        const std::lock_guard lock(one_at_a_time);
        on_line(*line);
      }
    });
  }
  for (auto& reader : readers) reader.join();
}

struct WorkersRun {
  std::vector<WorkerStats> stats;
  WorkerStats sum;
};

// Finishes every worker, expecting success; prints each JSON line and the sums.
inline WorkersRun finish_all(std::vector<Worker>& workers) {
  WorkersRun run;
  for (auto& worker : workers) {
    WorkerStats stats;
    std::string line;
    const int status = worker.finish(stats, line);
    EXPECT_EQ(status, 0) << "worker failed: " << line << "\n" << worker.error_text();
    EXPECT_EQ(stats["failed"], 0) << line;
    std::printf("  %s\n", line.c_str());
    for (const auto& [key, value] : stats) run.sum[key] += value;
    run.stats.push_back(std::move(stats));
  }
  std::printf(
      "  sum: compiles=%.0f misses=%.0f disk_hits=%.0f corrupt_rebuilt=%.0f disk_writes=%.0f "
      "lock_waits=%.0f lock_takeovers=%.0f lock_timeouts=%.0f evictions=%.0f\n",
      run.sum["compiles"], run.sum["misses"], run.sum["disk_hits"], run.sum["corrupt_rebuilt"], run.sum["disk_writes"],
      run.sum["lock_waits"], run.sum["lock_takeovers"], run.sum["lock_timeouts"], run.sum["evictions"]);
  if (run.sum["remote_hits"] + run.sum["remote_misses"] + run.sum["remote_unavailable"] > 0) {
    std::printf(
        "  sum: remote_hits=%.0f remote_misses=%.0f remote_rejects=%.0f remote_unavailable=%.0f "
        "remote_publishes=%.0f remote_lock_waits=%.0f remote_lock_takeovers=%.0f remote_timeouts=%.0f "
        "remote_errors=%.0f\n",
        run.sum["remote_hits"], run.sum["remote_misses"], run.sum["remote_rejects"], run.sum["remote_unavailable"],
        run.sum["remote_publishes"], run.sum["remote_lock_waits"], run.sum["remote_lock_takeovers"],
        run.sum["remote_timeouts"], run.sum["remote_errors"]);
  }
  return run;
}

}  // namespace convjit::testing
