#include "cache/entry_file.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <string>

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

// A file of `bytes`, read as a load reads it: in pieces, at offsets.
struct FileReads {
  std::string bytes;
  int calls = 0;
  int error = 0;  // returned by every read when set
  EntryReadAt reader() {
    return [this](std::uint64_t offset, std::size_t max, std::string& out) {
      ++calls;
      if (error != 0) return error;
      out.assign(offset < bytes.size() ? std::string_view(bytes).substr(offset, max) : std::string_view());
      return 0;
    };
  }
};

std::optional<CacheEntry> load(const std::string& bytes, std::string& why, std::uint64_t* read = nullptr) {
  FileReads file{bytes};
  std::uint64_t bytes_read = 0;
  auto entry = read_entry_for_load(bytes.size(), file.reader(), why, bytes_read);
  if (read != nullptr) *read = bytes_read;
  return entry;
}

CacheEntry without_source_and_ptx(CacheEntry entry) {
  entry.source.clear();
  entry.ptx.clear();
  return entry;
}

// Whether byte `i` of `bytes` lies where a load does not look: the source and PTX bodies,
// those sections' digests, and the trailer's digest.
bool load_skips(const std::string& bytes, std::size_t i) {
  for (const std::string_view section : {"source", "ptx"}) {
    const std::size_t header = bytes.find(fmt::format("\n{} ", section)) + 1;
    const std::size_t digest = bytes.find("sha256:", header) + 7;
    const std::size_t body = bytes.find('\n', header) + 1;
    const std::size_t size = std::stoul(bytes.substr(header + section.size() + 1));
    if ((i >= digest && i < digest + 64) || (i >= body && i < body + size)) return true;
  }
  return i >= bytes.size() - 65 && i < bytes.size() - 1;
}

CacheEntry large_sample() {
  CacheEntry entry = sample();
  entry.source = std::string(40000, 's');
  entry.ptx = std::string(60000, 'p');
  entry.cubin = std::string(20000, 'c');
  return entry;
}

TEST(EntryFileLoad, ReadsEverySectionALoadUsesAndLeavesTheSourceAndPtxEmpty) {
  std::string why;
  const auto loaded = load(serialize_entry(sample()), why);
  ASSERT_TRUE(loaded) << why;
  EXPECT_EQ(*loaded, without_source_and_ptx(sample()));
  EXPECT_EQ(loaded->compile_ms, sample().compile_ms);
}

TEST(EntryFileLoad, SkipsTheSourceAndPtxBodiesInAtMostThreeReads) {
  const std::string bytes = serialize_entry(large_sample());
  FileReads file{bytes};
  std::uint64_t read = 0;
  std::string why;
  const auto loaded = read_entry_for_load(bytes.size(), file.reader(), why, read);
  ASSERT_TRUE(loaded) << why;
  EXPECT_EQ(*loaded, without_source_and_ptx(large_sample()));
  EXPECT_LE(file.calls, 3);
  EXPECT_LT(read, bytes.size() - 100000 + 20000) << "the source and PTX bodies were read";
}

TEST(EntryFileLoad, EveryFlipInWhatALoadReadsIsDetectedAndOneInTheSourceOrPtxIsLeftToTheWholeParse) {
  const std::string good = serialize_entry(sample());
  std::size_t skipped = 0;
  for (std::size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    std::string why;
    const auto loaded = load(bad, why);
    if (load_skips(good, i)) {
      ++skipped;
      ASSERT_TRUE(loaded) << "flip at byte " << i << ": " << why;
      EXPECT_EQ(*loaded, without_source_and_ptx(sample())) << "flip at byte " << i;
      EXPECT_FALSE(parse_entry(bad, why)) << "flip at byte " << i << " went unnoticed by the whole parse";
    } else {
      EXPECT_FALSE(loaded) << "flip at byte " << i << " went unnoticed";
      EXPECT_FALSE(why.empty());
    }
  }
  EXPECT_EQ(skipped, sample().source.size() + sample().ptx.size() + 3 * 64);
}

TEST(EntryFileLoad, ADamagedSectionALoadUsesIsNamed) {
  const std::string good = serialize_entry(sample());
  for (const std::string_view section : {"key", "kernel", "cubin", "options"}) {
    std::string bad = good;
    const std::size_t header = bad.find(fmt::format("{} ", section), section == "key" ? 0 : bad.find("\nkey ") + 1);
    bad[bad.find('\n', header) + 1] ^= 0x01;  // the body's first byte
    std::string why;
    EXPECT_FALSE(load(bad, why));
    EXPECT_NE(why.find(fmt::format("checksum mismatch in section '{}'", section)), std::string::npos) << why;
  }
}

TEST(EntryFileLoad, EveryTruncationAndAnyTrailingByteIsDetected) {
  const std::string good = serialize_entry(large_sample());
  for (std::size_t len = 0; len < good.size(); len += len < 300 || good.size() - len < 300 ? 1 : 97) {
    std::string why;
    EXPECT_FALSE(load(good.substr(0, len), why)) << "prefix of " << len << " bytes accepted";
    EXPECT_FALSE(why.empty());
  }
  std::string why;
  EXPECT_FALSE(load(good + "x", why));
  EXPECT_NE(why.find("trailer"), std::string::npos) << why;
}

TEST(EntryFileLoad, EmptyGarbageAnEarlierFormatAndAReadErrorAreRejectedWithAReason) {
  std::string why;
  EXPECT_FALSE(load("", why));
  EXPECT_EQ(why, "empty file");
  EXPECT_FALSE(load(std::string("\x00\x01garbage\xff", 11), why));
  EXPECT_NE(why.find("bad header"), std::string::npos) << why;
  std::string old = serialize_entry(sample());
  old.replace(0, std::string_view("convjit-cache-entry 2").size(), "convjit-cache-entry 1");
  EXPECT_FALSE(load(old, why));
  EXPECT_NE(why.find("bad header"), std::string::npos) << why;
  FileReads failing{serialize_entry(sample()), 0, EIO};
  std::uint64_t read = 0;
  EXPECT_FALSE(read_entry_for_load(failing.bytes.size(), failing.reader(), why, read));
  EXPECT_NE(why.find("read error"), std::string::npos) << why;
}

}  // namespace
}  // namespace convjit
