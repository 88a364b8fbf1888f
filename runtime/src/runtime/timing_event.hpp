#pragma once
// A CUDA event for timing work on a stream (the autotuner's runs, cuBLASLt's candidate
// algorithms): created with timing on, destroyed with its owner.

#include <utility>

#include "driver/cuda_driver.hpp"

namespace convjit {

class TimingEvent {
 public:
  TimingEvent() { CONVJIT_CU_CHECK(cuEventCreate(&event_, CU_EVENT_DEFAULT), "creating a timing event"); }
  ~TimingEvent() {
    if (event_ != nullptr) CudaDriver::get().cuEventDestroy(event_);
  }
  TimingEvent(const TimingEvent&) = delete;
  TimingEvent& operator=(const TimingEvent&) = delete;

  void record(CUstream stream) { CONVJIT_CU_CHECK(cuEventRecord(event_, stream), "recording a timing event"); }
  // Milliseconds from `start` to this event, once this one has completed (waits for it).
  float since(const TimingEvent& start) const {
    CONVJIT_CU_CHECK(cuEventSynchronize(event_), "waiting for a timing event");
    float ms = 0;
    CONVJIT_CU_CHECK(cuEventElapsedTime(&ms, start.event_, event_), "reading a timing event");
    return ms;
  }

 private:
  CUevent event_ = nullptr;
};

}  // namespace convjit
