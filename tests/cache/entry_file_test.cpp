#include "cache/entry_file.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace convjit {
namespace {

CacheEntry sample() {
  CacheEntry entry{"convjit 0.1.0\nformat 2\nproblem n1c3\n",
                   "conv2d_direct_x",
                   "extern \"C\" __global__ void k() {}\n",
                   ".version 9.0\n.target sm_90\n",
                   std::string("\x7f"
                               "ELF\0\1\2\n\n",
                               10),
                   "--gpu-architecture=sm_90",
                   ""};
  entry.compile_ms = 87.25;
  return entry;
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

TEST(EntryFile, ADamagedSectionIsNamedThoughAGoodEntryIsHashedOnlyOnce) {
  // A load checks the whole-entry digest alone; when it fails, the sections' own digests
  // say where the damage is.
  const std::string good = serialize_entry(sample());
  for (const std::string_view section : {"source", "ptx", "cubin"}) {
    std::string bad = good;
    const std::size_t header = bad.find(fmt::format("\n{} ", section)) + 1;
    bad[bad.find('\n', header) + 1] ^= 0x01;  // the body's first byte
    std::string why;
    EXPECT_FALSE(parse_entry(bad, why));
    EXPECT_NE(why.find(fmt::format("checksum mismatch in section '{}'", section)), std::string::npos) << why;
  }
  std::string bad_trailer = good;
  bad_trailer[bad_trailer.size() - 2] = bad_trailer[bad_trailer.size() - 2] == '0' ? '1' : '0';
  std::string why;
  EXPECT_FALSE(parse_entry(bad_trailer, why));
  EXPECT_NE(why.find("over the whole entry"), std::string::npos) << why;
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

TEST(EntryFile, CompileTimeRoundTripsExactly) {
  CacheEntry entry = sample();
  entry.compile_ms = 0.1 + 0.2;  // not exactly representable in decimal: must still round-trip
  std::string why;
  const auto parsed = parse_entry(serialize_entry(entry), why);
  ASSERT_TRUE(parsed) << why;
  EXPECT_EQ(parsed->compile_ms, entry.compile_ms);
}

TEST(EntryFile, EntryOfTheEarlierFormatIsRejectedAsAnotherFormat) {
  std::string old = serialize_entry(sample());
  old.replace(0, std::string_view("convjit-cache-entry 2").size(), "convjit-cache-entry 1");
  std::string why;
  EXPECT_FALSE(parse_entry(old, why));
  EXPECT_NE(why.find("bad header"), std::string::npos) << why;
}

TEST(EntryFile, PeekReadsTheKeyFromTheStartOfAnEntryOnly) {
  const std::string bytes = serialize_entry(sample());
  std::string why;
  const auto key = peek_entry_key(std::string_view(bytes).substr(0, bytes.find("kernel ")), why);
  ASSERT_TRUE(key) << why;
  EXPECT_EQ(*key, sample().key_text);
  std::string flipped = bytes;
  flipped[bytes.find("problem")] ^= 1;  // inside the key text
  EXPECT_FALSE(peek_entry_key(flipped, why));
  EXPECT_NE(why.find("checksum mismatch in section 'key'"), std::string::npos) << why;
}

}  // namespace
}  // namespace convjit
