#pragma once
// Worker threads that build plans behind the first tier (RuntimeOptions::first_tier):
// started at the first job, joined when the owner goes. Jobs still queued then are
// dropped (whoever needs their plan builds it on its own thread); a job already running
// is waited for, since NVRTC cannot be interrupted.

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace convjit {

class BackgroundBuilds {
 public:
  explicit BackgroundBuilds(std::size_t threads);
  ~BackgroundBuilds();
  BackgroundBuilds(const BackgroundBuilds&) = delete;
  BackgroundBuilds& operator=(const BackgroundBuilds&) = delete;

  // Queues `job`, which must not throw (a build's error is the job's to keep).
  void submit(std::function<void()> job);
  // Returns once no job is queued or running.
  void wait_idle();

 private:
  void work();

  const std::size_t most_threads_;
  std::mutex mutex_;
  std::condition_variable wake_;  // a job was queued, or stop
  std::condition_variable idle_;  // the queue emptied and the last job finished
  std::deque<std::function<void()>> queue_;
  std::size_t running_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace convjit
