#pragma once
// SHA-256 for cache keys and entry checksums: content addressed, never mtimes.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace convjit {

class Sha256 {
 public:
  Sha256();
  // `portable`: never the CPU's SHA instructions (for testing one path against the other).
  explicit Sha256(bool portable) : Sha256() { portable_ = portable; }
  Sha256& update(std::string_view bytes);
  std::array<std::uint8_t, 32> digest();
  std::string hex_digest();

 private:
  std::array<std::uint32_t, 8> state_;
  std::array<std::uint8_t, 64> buffer_{};
  std::uint64_t total_bytes_ = 0;
  std::size_t buffered_ = 0;
  bool portable_ = false;
};

// Whether Sha256 uses the CPU's SHA instructions here (x86 SHA extensions).
bool sha256_accelerated() noexcept;

std::string sha256_hex(std::string_view bytes);

}  // namespace convjit
