#include "driver/stream_context.hpp"

#include "driver/device_context.hpp"

namespace convjit {

bool is_special_stream(CUstream stream) noexcept {
  return stream == nullptr || stream == CU_STREAM_LEGACY || stream == CU_STREAM_PER_THREAD;
}

ContextRef context_of_stream(CUstream stream) {
  ContextRef ref;
  if (is_special_stream(stream)) {
    CONVJIT_CU_CHECK(cuCtxGetCurrent(&ref.handle), "reading the current context");
    if (ref.handle == nullptr) return {};
  } else {
    CONVJIT_CU_CHECK(cuStreamGetCtx(stream, &ref.handle), "finding the context of stream {}", fmt::ptr(stream));
  }
  ref.id = context_id(ref.handle);
  return ref;
}

bool is_capturing(CUstream stream) {
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  CONVJIT_CU_CHECK(cuStreamIsCapturing(stream, &status), "asking whether stream {} is capturing", fmt::ptr(stream));
  return status != CU_STREAM_CAPTURE_STATUS_NONE;
}

RelaxedCaptureMode::RelaxedCaptureMode() {
  previous_ = CU_STREAM_CAPTURE_MODE_RELAXED;
  CONVJIT_CU_CHECK(cuThreadExchangeStreamCaptureMode(&previous_), "relaxing this thread's stream-capture mode");
  exchanged_ = true;
}

RelaxedCaptureMode::~RelaxedCaptureMode() {
  if (!exchanged_) return;
  // NOTE: destructors never throw; restoring a mode cannot fail once exchanging it worked.
  CUstreamCaptureMode mode = previous_;
  CudaDriver::get().cuThreadExchangeStreamCaptureMode(&mode);
}

std::uint64_t context_id(CUcontext context) {
  unsigned long long id = 0;
  CONVJIT_CU_CHECK(cuCtxGetId(context, &id), "reading the id of context {}", fmt::ptr(context));
  return id;
}

int device_ordinal(CUdevice device) {
  int count = 0;
  CONVJIT_CU_CHECK(cuDeviceGetCount(&count), "counting devices");
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    CUdevice candidate = 0;
    if (CudaDriver::get().cuDeviceGet(&candidate, ordinal) == CUDA_SUCCESS && candidate == device) return ordinal;
  }
  fail(ErrorCode::kInternal, "device handle {} matches no device ordinal", static_cast<int>(device));
}

std::string describe_context(const ContextRef& context) {
  std::string device = "device ?";
  try {
    ScopedContext scope(context.handle);
    CUdevice handle = 0;
    CONVJIT_CU_CHECK(cuCtxGetDevice(&handle), "reading the device of a context");
    device = fmt::format("device {}", device_ordinal(handle));
  } catch (const Error&) {
    // NOTE: best effort: the message is already about a misuse; do not replace it with another.
  }
  return fmt::format("{}, context {} (id {})", device, fmt::ptr(context.handle), context.id);
}

}  // namespace convjit
