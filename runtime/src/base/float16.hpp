#pragma once
// IEEE half and bfloat16 on the host, round to nearest even, for the programs that
// make and check 16-bit data without a GPU (tests, the convjit command, benchmarks).
// Header-only: the library itself never converts, its kernels do.

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "convjit/conv2d_desc.hpp"

namespace convjit {

inline std::uint16_t float_to_half(float value) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u);  // NaN stays a (quiet) NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;                                  // 65520 and up round to inf
  if (abs < 0x38800000u) {                                                        // below 2^-14: subnormal
    if (abs < 0x33000000u) return sign;                                           // below 2^-25: zero
    const std::uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);
    std::uint32_t q = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;  // may carry into the smallest normal: still right
    return static_cast<std::uint16_t>(sign | q);
  }
  std::uint32_t r = abs - (112u << 23);  // exponent bias 127 -> 15
  r += 0x0fffu + ((r >> 13) & 1u);       // to nearest even; a carry moves into the exponent
  return static_cast<std::uint16_t>(sign | (r >> 13));
}

inline float half_to_float(std::uint16_t bits) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exp = (bits >> 10) & 0x1fu;
  const std::uint32_t mant = bits & 0x3ffu;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline std::uint16_t float_to_bf16(float value) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x0040u);  // quiet NaN
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float bf16_to_float(std::uint16_t bits) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

// The 16-bit pattern of `value` in `dtype` (kFloat16 or kBFloat16).
inline std::uint16_t to_bits16(DType dtype, float value) noexcept {
  return dtype == DType::kBFloat16 ? float_to_bf16(value) : float_to_half(value);
}
inline float from_bits16(DType dtype, std::uint16_t bits) noexcept {
  return dtype == DType::kBFloat16 ? bf16_to_float(bits) : half_to_float(bits);
}
// `value` as `dtype` stores it; unchanged for kFloat32.
inline float rounded_to(DType dtype, float value) noexcept {
  return dtype == DType::kFloat32 ? value : from_bits16(dtype, to_bits16(dtype, value));
}

// Element i of a buffer of `dtype` (4 or 2 bytes an element), as the GPU stores it.
inline void store_element(unsigned char* bytes, std::size_t i, DType dtype, float value) noexcept {
  if (dtype == DType::kFloat32) {
    std::memcpy(bytes + i * 4, &value, 4);
  } else {
    const std::uint16_t bits = to_bits16(dtype, value);
    std::memcpy(bytes + i * 2, &bits, 2);
  }
}
inline float load_element(const unsigned char* bytes, std::size_t i, DType dtype) noexcept {
  if (dtype == DType::kFloat32) {
    float value;
    std::memcpy(&value, bytes + i * 4, 4);
    return value;
  }
  std::uint16_t bits;
  std::memcpy(&bits, bytes + i * 2, 2);
  return from_bits16(dtype, bits);
}
// Whole buffers: floats to the bytes a `dtype` buffer holds, and back.
inline std::vector<unsigned char> to_storage(const std::vector<float>& values, DType dtype) {
  std::vector<unsigned char> out(values.size() * size_of(dtype));
  for (std::size_t i = 0; i < values.size(); ++i) store_element(out.data(), i, dtype, values[i]);
  return out;
}
inline std::vector<float> from_storage(const std::vector<unsigned char>& bytes, DType dtype) {
  std::vector<float> out(bytes.size() / size_of(dtype));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = load_element(bytes.data(), i, dtype);
  return out;
}

// A 32-bit pattern that fills a buffer of `dtype` with quiet NaNs.
inline std::uint32_t nan_fill_pattern(DType dtype) noexcept {
  switch (dtype) {
    case DType::kFloat32:
      return 0x7fc00000u;
    case DType::kFloat16:
      return 0x7e007e00u;
    case DType::kBFloat16:
      return 0x7fc07fc0u;
  }
  return 0xffffffffu;
}

}  // namespace convjit
