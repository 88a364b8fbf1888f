#include "base/sha256.hpp"

#include <gtest/gtest.h>

namespace convjit {
namespace {

TEST(Sha256, MatchesFipsTestVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalUpdatesEqualOneShot) {
  const std::string text = "the quick brown fox jumps over the lazy dog, many times over";
  Sha256 h;
  for (char c : text) h.update(std::string_view(&c, 1));
  EXPECT_EQ(h.hex_digest(), sha256_hex(text));
}

TEST(Sha256, CpuInstructionsAgreeWithThePortableRoundsAtEveryLengthAndSplit) {
  // Lengths across block and padding boundaries, fed whole and in uneven pieces: the
  // accelerated path (when the CPU has one) must give the portable digest bit for bit.
  std::string text;
  for (int i = 0; i < 700; ++i) text.push_back(static_cast<char>((i * 131 + 7) & 0xff));
  for (std::size_t len = 0; len <= text.size(); len += len < 130 ? 1 : 37) {
    const std::string_view part(text.data(), len);
    Sha256 portable(/*portable=*/true);
    Sha256 split;
    for (std::size_t at = 0; at < len; at += 23) split.update(part.substr(at, 23));
    const std::string expected = portable.update(part).hex_digest();
    EXPECT_EQ(sha256_hex(part), expected) << "length " << len;
    EXPECT_EQ(split.hex_digest(), expected) << "length " << len << " in pieces of 23";
  }
  EXPECT_EQ(Sha256(/*portable=*/true).update(std::string(1000000, 'a')).hex_digest(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  if (!sha256_accelerated()) GTEST_SKIP() << "this CPU has no SHA instructions: only the portable path ran";
}

}  // namespace
}  // namespace convjit
