// The host converters every 16-bit test, the convjit command and the benchmarks rely
// on: round to nearest even at every edge (ties, subnormals, overflow, NaN).
#include "base/float16.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace convjit {
namespace {

TEST(Float16, HalfRoundsToNearestEvenAcrossNormalsSubnormalsAndOverflow) {
  struct Case {
    float value;
    std::uint16_t bits;
  };
  const Case cases[] = {
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {1.0f, 0x3c00},
      {-2.0f, 0xc000},
      {65504.0f, 0x7bff},                          // largest half
      {65519.99f, 0x7bff},                         // just below the tie: stays finite
      {65520.0f, 0x7c00},                          // the tie rounds to even, which is infinity
      {1.0f + std::ldexp(1.0f, -11), 0x3c00},      // tie between 1 and 1+2^-10: even is 1
      {1.0f + 3 * std::ldexp(1.0f, -11), 0x3c02},  // tie: even is 1+2^-9
      {std::ldexp(1.0f, -14), 0x0400},             // smallest normal
      {std::ldexp(1.0f, -24), 0x0001},             // smallest subnormal
      {std::ldexp(1.0f, -25), 0x0000},             // tie with zero: even is zero
      {3 * std::ldexp(1.0f, -25), 0x0002},         // tie between 1 and 2 units: even is 2
      {std::ldexp(1023.5f, -24), 0x0400},          // rounds up out of the subnormals
      {std::numeric_limits<float>::infinity(), 0x7c00},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(float_to_half(c.value), c.bits) << c.value;
  }
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(std::nanf("")))));
}

TEST(Float16, HalfRoundTripsEveryFiniteBitPattern) {
  for (std::uint32_t bits = 0; bits < 0x10000; ++bits) {
    const auto h = static_cast<std::uint16_t>(bits);
    if ((h & 0x7c00) == 0x7c00) continue;  // inf and NaN
    ASSERT_EQ(float_to_half(half_to_float(h)), h) << std::hex << bits;
  }
}

TEST(Float16, Bf16RoundsToNearestEvenAndKeepsNaNQuiet) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // tie: even is 1
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // tie: even is 1+2^-6
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -7) + std::ldexp(1.0f, -20)), 0x3f81);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // overflows to inf
  EXPECT_EQ(float_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  const std::uint16_t nan = float_to_bf16(std::bit_cast<float>(0x7f800001u));  // a NaN a truncation would make inf
  EXPECT_TRUE(std::isnan(bf16_to_float(nan)));
  for (std::uint32_t bits = 0; bits < 0x10000; ++bits) {
    const auto b = static_cast<std::uint16_t>(bits);
    if ((b & 0x7f80) == 0x7f80) continue;
    ASSERT_EQ(float_to_bf16(bf16_to_float(b)), b) << std::hex << bits;
  }
}

TEST(Float16, NaNFillPatternsDecodeAsNaNInTheirType) {
  const std::uint32_t half2 = nan_fill_pattern(DType::kFloat16);
  const std::uint32_t bf2 = nan_fill_pattern(DType::kBFloat16);
  EXPECT_TRUE(std::isnan(half_to_float(static_cast<std::uint16_t>(half2))));
  EXPECT_TRUE(std::isnan(half_to_float(static_cast<std::uint16_t>(half2 >> 16))));
  EXPECT_TRUE(std::isnan(bf16_to_float(static_cast<std::uint16_t>(bf2))));
  EXPECT_TRUE(std::isnan(bf16_to_float(static_cast<std::uint16_t>(bf2 >> 16))));
  EXPECT_TRUE(std::isnan(std::bit_cast<float>(nan_fill_pattern(DType::kFloat32))));
}

TEST(Float16, StorageHoldsEachTypesBytesAndReadsBackTheRoundedValues) {
  const std::vector<float> values = {1.0f, -2.5f, 0.1f, 65504.0f, 3.0e-5f};
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    const auto bytes = to_storage(values, dtype);
    ASSERT_EQ(bytes.size(), values.size() * size_of(dtype));
    const auto back = from_storage(bytes, dtype);
    ASSERT_EQ(back.size(), values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
      EXPECT_EQ(back[i], rounded_to(dtype, values[i])) << to_string(dtype) << " element " << i;
      EXPECT_EQ(load_element(bytes.data(), i, dtype), back[i]);
    }
  }
  // Half of 0.1 is not 0.1: the bytes really are 16-bit.
  EXPECT_NE(from_storage(to_storage({0.1f}, DType::kFloat16), DType::kFloat16)[0], 0.1f);
}

}  // namespace
}  // namespace convjit
