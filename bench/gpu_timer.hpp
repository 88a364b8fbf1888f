#pragma once
// CUDA streams and events owned by RAII, and the one timing loop every benchmark row
// uses, so that convjit and cuDNN are measured the same way.

#include <cuda.h>

#include <functional>
#include <string>
#include <vector>

namespace convjit {
class Runtime;
}

namespace convjit::bench {

// Makes the Runtime's device context (the primary context, which the CUDA runtime
// inside cuDNN also uses) current on this thread: events and streams belong to the
// context current at their creation. Throws kNoDriver / kNoDevice without a GPU.
void make_runtime_context_current(Runtime& runtime);

class Stream {
 public:
  Stream();  // a blocking stream of the current context; throws Error(kDriver)
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  CUstream get() const noexcept { return stream_; }
  void synchronize() const;

 private:
  CUstream stream_ = nullptr;
};

class Event {
 public:
  Event();
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&&) = delete;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(CUstream stream) const;
  void synchronize() const;
  // Milliseconds from `start` to this event; both must have completed.
  float elapsed_since(const Event& start) const;

 private:
  CUevent event_ = nullptr;
};

struct TimingPlan {
  int warmup = 10;
  int iters = 50;
  // > 0: a launch whose single warm run takes longer than this many ms is timed with
  // `slow_iters` runs and no further warm-up, so that a slow kernel bounds the run time.
  double slow_ms = 0;
  int slow_iters = 5;
};

struct Timing {
  std::vector<double> ms;  // one per timed launch
  bool reduced = false;    // timed with slow_iters because a run exceeded slow_ms
};

// Enqueues `launch` on `stream`: one run timed alone (it decides the slow path), the
// warm-up, then every timed launch between its own pair of events with no host
// synchronization in between; synchronizes once at the end. Each event pair brackets
// everything `launch` enqueues (cuDNN's bias add included).
Timing time_launches(const std::function<void()>& launch, CUstream stream, const TimingPlan& plan);

}  // namespace convjit::bench
