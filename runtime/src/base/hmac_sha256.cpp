#include "base/hmac_sha256.hpp"

#include "base/sha256.hpp"

namespace convjit {

namespace {
constexpr std::size_t kBlockBytes = 64;

std::string_view as_text(const std::array<std::uint8_t, 32>& digest) {
  return {reinterpret_cast<const char*>(digest.data()), digest.size()};
}
}  // namespace

std::array<std::uint8_t, 32> hmac_sha256(std::string_view key, std::string_view message) {
  // A key longer than the block is replaced by its hash (RFC 2104, section 2).
  std::array<std::uint8_t, 32> hashed_key{};
  if (key.size() > kBlockBytes) {
    hashed_key = Sha256().update(key).digest();
    key = as_text(hashed_key);
  }
  std::array<char, kBlockBytes> inner_pad{};
  std::array<char, kBlockBytes> outer_pad{};
  for (std::size_t i = 0; i < kBlockBytes; ++i) {
    const auto byte = static_cast<unsigned char>(i < key.size() ? key[i] : 0);
    inner_pad[i] = static_cast<char>(byte ^ 0x36);
    outer_pad[i] = static_cast<char>(byte ^ 0x5c);
  }
  const auto inner = Sha256().update({inner_pad.data(), inner_pad.size()}).update(message).digest();
  return Sha256().update({outer_pad.data(), outer_pad.size()}).update(as_text(inner)).digest();
}

std::string hmac_sha256_hex(std::string_view key, std::string_view message) {
  constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(64);
  for (const std::uint8_t byte : hmac_sha256(key, message)) {
    out += kHex[byte >> 4];
    out += kHex[byte & 15];
  }
  return out;
}

bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  // NOTE: volatile keeps the compiler from turning the loop into an early-exit memcmp.
  volatile unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = diff | static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

}  // namespace convjit
