#include <gtest/gtest.h>

#include "cache/entry_file.hpp"

namespace convjit {
namespace {

CacheEntry sample() {
  return CacheEntry{"convjit 0.1.0\nformat 1\n", "conv2d_direct_x", "extern \"C\" __global__ void k() {}\n",
                    ".version 9.0\n.target sm_90\n", std::string("\x7f" "ELF\0\1\2\n\n", 10), "--gpu-architecture=sm_90",
                    ""};
}

TEST(EntryFile, RoundTripsEverySectionIncludingBinaryAndEmpty) {
  std::string why;
  const auto parsed = parse_entry(serialize_entry(sample()), why);
  ASSERT_TRUE(parsed) << why;
  EXPECT_EQ(*parsed, sample());
}

TEST(EntryFile, EverySingleByteFlipIsDetected) {
  const std::string good = serialize_entry(sample());
  for (std::size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    std::string why;
    EXPECT_FALSE(parse_entry(bad, why)) << "flip at byte " << i << " went unnoticed";
  }
}

TEST(EntryFile, EveryTruncationIsDetected) {
  const std::string good = serialize_entry(sample());
  for (std::size_t len = 0; len < good.size(); ++len) {
    std::string why;
    EXPECT_FALSE(parse_entry(std::string_view(good).substr(0, len), why)) << "prefix of " << len << " bytes accepted";
    EXPECT_FALSE(why.empty());
  }
}

TEST(EntryFile, EmptyAndGarbageAreRejectedWithAReason) {
  std::string why;
  EXPECT_FALSE(parse_entry("", why));
  EXPECT_EQ(why, "empty file");
  EXPECT_FALSE(parse_entry(std::string("\x00\x01garbage\xff", 11), why));
  EXPECT_NE(why.find("bad header"), std::string::npos);
  EXPECT_FALSE(parse_entry(serialize_entry(sample()) + "trailing", why));
}

}  // namespace
}  // namespace convjit
