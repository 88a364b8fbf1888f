#include "runtime/background_builds.hpp"

#include <algorithm>

namespace convjit {

BackgroundBuilds::BackgroundBuilds(std::size_t threads) : most_threads_(std::max<std::size_t>(1, threads)) {}

BackgroundBuilds::~BackgroundBuilds() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    queue_.clear();
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

void BackgroundBuilds::submit(std::function<void()> job) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(job));
    // One more worker while every one is busy, up to the bound: compiles are CPU-bound
    // and independent, so distinct problems compile side by side.
    if (threads_.size() < most_threads_ && running_ + queue_.size() > threads_.size()) {
      threads_.emplace_back([this] { work(); });
    }
  }
  wake_.notify_one();
}

void BackgroundBuilds::wait_idle() {
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [&] { return queue_.empty() && running_ == 0; });
}

void BackgroundBuilds::work() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    auto job = std::move(queue_.front());
    queue_.pop_front();
    ++running_;
    lock.unlock();
    job();
    lock.lock();
    --running_;
    if (queue_.empty() && running_ == 0) idle_.notify_all();
  }
}

}  // namespace convjit
