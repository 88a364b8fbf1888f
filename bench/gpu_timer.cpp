#include "gpu_timer.hpp"

#include <utility>

#include "convjit/runtime.hpp"
#include "tooling/tooling.hpp"

namespace convjit::bench {

void make_runtime_context_current(Runtime& runtime) {
  const auto device = tooling::runtime_device(runtime);
  CONVJIT_CU_CHECK(cuCtxSetCurrent(device.context), "making device {}'s primary context current", device.ordinal);
}

Stream::Stream() { CONVJIT_CU_CHECK(cuStreamCreate(&stream_, CU_STREAM_DEFAULT), "creating a stream"); }

Stream::~Stream() {
  // NOTE: destructors never throw; a failure at exit (driver shutting down) is ignored.
  if (stream_ != nullptr) CudaDriver::get().cuStreamDestroy(stream_);
}

void Stream::synchronize() const { CONVJIT_CU_CHECK(cuStreamSynchronize(stream_), "synchronizing the bench stream"); }

Event::Event() { CONVJIT_CU_CHECK(cuEventCreate(&event_, CU_EVENT_DEFAULT), "creating a timing event"); }

Event::~Event() {
  if (event_ != nullptr) CudaDriver::get().cuEventDestroy(event_);
}

Event::Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}

void Event::record(CUstream stream) const { CONVJIT_CU_CHECK(cuEventRecord(event_, stream), "recording an event"); }

void Event::synchronize() const { CONVJIT_CU_CHECK(cuEventSynchronize(event_), "waiting for an event"); }

float Event::elapsed_since(const Event& start) const {
  float ms = 0;
  CONVJIT_CU_CHECK(cuEventElapsedTime(&ms, start.event_, event_), "reading an event pair");
  return ms;
}

Timing time_launches(const std::function<void()>& launch, CUstream stream, const TimingPlan& plan) {
  Timing out;
  int warmup = plan.warmup;
  int iters = plan.iters;
  {
    const Event start, stop;
    start.record(stream);
    launch();
    stop.record(stream);
    stop.synchronize();
    if (plan.slow_ms > 0 && stop.elapsed_since(start) > plan.slow_ms) {
      out.reduced = true;
      warmup = 0;  // the run above already warmed caches and clocks
      iters = std::min(iters, plan.slow_iters);
    }
  }
  for (int i = 0; i < warmup; ++i) launch();

  std::vector<Event> starts, stops;
  starts.reserve(static_cast<std::size_t>(iters));
  stops.reserve(static_cast<std::size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    starts.emplace_back();
    stops.emplace_back();
  }
  for (int i = 0; i < iters; ++i) {
    starts[i].record(stream);
    launch();
    stops[i].record(stream);
  }
  if (iters > 0) stops.back().synchronize();
  for (int i = 0; i < iters; ++i) out.ms.push_back(stops[i].elapsed_since(starts[i]));
  return out;
}

}  // namespace convjit::bench
