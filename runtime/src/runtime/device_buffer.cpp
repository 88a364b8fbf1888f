#include "convjit/device_buffer.hpp"

#include <utility>

#include "runtime/runtime_impl.hpp"

namespace convjit {

DeviceBuffer::DeviceBuffer(Runtime& runtime, std::size_t bytes) : runtime_(&runtime), bytes_(bytes) {
  auto dev = Runtime::Impl::of(runtime).device();
  ScopedContext scope(dev->context());
  CUdeviceptr ptr = 0;
  CONVJIT_CU_CHECK(cuMemAlloc(&ptr, bytes == 0 ? 1 : bytes), "allocating {} bytes on device {}", bytes, dev->ordinal());
  ptr_ = ptr;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ == 0) return;
  // NOTE: never throws; cuMemFree needs no current context for a primary-context pointer
  // in practice, but we make it current to be exact.
  try {
    ScopedContext scope(Runtime::Impl::of(*runtime_).device()->context());
    CudaDriver::get().cuMemFree(static_cast<CUdeviceptr>(ptr_));
  } catch (...) {
  }
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : runtime_(other.runtime_), ptr_(std::exchange(other.ptr_, 0)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    DeviceBuffer old(std::move(*this));
    runtime_ = other.runtime_;
    ptr_ = std::exchange(other.ptr_, 0);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::upload(const void* host, std::size_t bytes) {
  if (bytes > bytes_) fail(ErrorCode::kInvalidArgument, "upload: {} bytes into a buffer of {}", bytes, bytes_);
  ScopedContext scope(Runtime::Impl::of(*runtime_).device()->context());
  CONVJIT_CU_CHECK(cuMemcpyHtoD(static_cast<CUdeviceptr>(ptr_), host, bytes), "uploading {} bytes", bytes);
}

void DeviceBuffer::download(void* host, std::size_t bytes) const {
  if (bytes > bytes_) fail(ErrorCode::kInvalidArgument, "download: {} bytes from a buffer of {}", bytes, bytes_);
  ScopedContext scope(Runtime::Impl::of(*runtime_).device()->context());
  CONVJIT_CU_CHECK(cuMemcpyDtoH(host, static_cast<CUdeviceptr>(ptr_), bytes), "downloading {} bytes", bytes);
}

void DeviceBuffer::fill_u32(std::uint32_t pattern) {
  ScopedContext scope(Runtime::Impl::of(*runtime_).device()->context());
  CONVJIT_CU_CHECK(cuMemsetD32(static_cast<CUdeviceptr>(ptr_), pattern, bytes_ / 4), "filling {} bytes", bytes_);
}

}  // namespace convjit
