#pragma once
// Which CUDA context a launch on a stream runs in, found with a couple of cheap
// driver calls on every launch (no table, no lock).

#include <cstdint>
#include <string>

#include "driver/cuda_driver.hpp"

namespace convjit {

// A context as the launch path sees it: the handle to launch in and the id that
// per-context tables are keyed by (handles are reused, ids never are).
struct ContextRef {
  CUcontext handle = nullptr;
  std::uint64_t id = 0;
};

// The null stream, CU_STREAM_LEGACY and CU_STREAM_PER_THREAD name no context of
// their own: they run in whatever context is current on the calling thread.
bool is_special_stream(CUstream stream) noexcept;

// The context `stream` was created in; for a special stream the calling thread's
// current one, or {} when none is current.
ContextRef context_of_stream(CUstream stream);

std::uint64_t context_id(CUcontext context);

// The ordinal of a device handle (they coincide in practice; this does not assume it).
int device_ordinal(CUdevice device);

// Whether work enqueued on `stream` now would be captured into a CUDA graph.
bool is_capturing(CUstream stream);

// Switches this thread's stream-capture mode to relaxed for the scope, so that the
// allocations, module loads and handle creations convjit makes on first use neither fail
// nor invalidate a capture in progress (on this thread in global or thread-local mode,
// or on another thread in global mode). They are not stream work: nothing is captured.
class RelaxedCaptureMode {
 public:
  RelaxedCaptureMode();
  ~RelaxedCaptureMode();
  RelaxedCaptureMode(const RelaxedCaptureMode&) = delete;
  RelaxedCaptureMode& operator=(const RelaxedCaptureMode&) = delete;

 private:
  CUstreamCaptureMode previous_ = CU_STREAM_CAPTURE_MODE_RELAXED;
  bool exchanged_ = false;
};

// "device 0, context 0x5581… (id 7)": a context we may know nothing else about, for
// error messages. Never throws.
std::string describe_context(const ContextRef& context);

}  // namespace convjit
