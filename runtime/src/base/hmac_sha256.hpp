#pragma once
// HMAC-SHA256 (RFC 2104) on top of Sha256, for authenticating entries of the shared
// remote cache: a checksum proves an entry is intact, only a MAC proves who wrote it.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace convjit {

std::array<std::uint8_t, 32> hmac_sha256(std::string_view key, std::string_view message);
// Lowercase hex of hmac_sha256.
std::string hmac_sha256_hex(std::string_view key, std::string_view message);

// Compares without an early exit, so the time taken says nothing about where two
// MACs first differ. Different sizes compare unequal (sizes are not secret).
bool constant_time_equal(std::string_view a, std::string_view b) noexcept;

}  // namespace convjit
