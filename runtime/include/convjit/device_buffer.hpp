#pragma once
// Device memory owned by RAII, allocated through the runtime's driver so that
// programs need not link the CUDA runtime just to try convjit.

#include <cstddef>
#include <cstdint>

namespace convjit {

class Runtime;

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Runtime& runtime, std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const noexcept { return reinterpret_cast<void*>(ptr_); }
  std::size_t size() const noexcept { return bytes_; }

  void upload(const void* host, std::size_t bytes);
  void download(void* host, std::size_t bytes) const;
  // Fills with a 32-bit pattern (e.g. a NaN bit pattern to poison outputs).
  void fill_u32(std::uint32_t pattern);

 private:
  Runtime* runtime_ = nullptr;
  std::uintptr_t ptr_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace convjit
