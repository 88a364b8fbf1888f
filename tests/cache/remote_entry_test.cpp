#include "cache/remote_entry.hpp"

#include <gtest/gtest.h>

#include "base/hmac_sha256.hpp"
#include "tests/cache/cache_test_util.hpp"

namespace convjit {
namespace {

using testing::test_entry;
using testing::test_key;

constexpr std::string_view kKey = "fleet-secret-0123456789";
constexpr int kFormat = 2;

TEST(RemoteEntry, SealedEntryOpensToTheSameEntry) {
  const CacheKey key = test_key("problem a\narch sm_90\n");
  const CacheEntry entry = test_entry(key, 300);
  const std::string sealed = seal_remote_entry(kKey, kFormat, entry);
  std::string why;
  const auto opened = open_remote_entry(kKey, kFormat, key.text, sealed, why);
  ASSERT_TRUE(opened) << why;
  EXPECT_EQ(*opened, entry);
}

TEST(RemoteEntry, EveryFlippedByteIsRefused) {
  const CacheKey key = test_key("problem b\n");
  const std::string sealed = seal_remote_entry(kKey, kFormat, test_entry(key, 64));
  for (std::size_t i = 0; i < sealed.size(); ++i) {
    std::string tampered = sealed;
    tampered[i] = static_cast<char>(tampered[i] ^ 0x01);
    std::string why;
    EXPECT_FALSE(open_remote_entry(kKey, kFormat, key.text, tampered, why)) << "byte " << i;
    EXPECT_FALSE(why.empty());
  }
}

TEST(RemoteEntry, TruncatedOrExtendedValuesAreRefused) {
  const CacheKey key = test_key("problem c\n");
  const std::string sealed = seal_remote_entry(kKey, kFormat, test_entry(key));
  std::string why;
  for (std::size_t size : {std::size_t{0}, std::size_t{10}, sealed.size() / 2, sealed.size() - 1}) {
    EXPECT_FALSE(open_remote_entry(kKey, kFormat, key.text, sealed.substr(0, size), why)) << size;
  }
  EXPECT_FALSE(open_remote_entry(kKey, kFormat, key.text, sealed + "x", why));
  EXPECT_FALSE(open_remote_entry(kKey, kFormat, key.text, "garbage", why));
}

TEST(RemoteEntry, AnEntryMacedWithAnotherKeyIsRefused) {
  const CacheKey key = test_key("problem d\n");
  const std::string forged = seal_remote_entry("someone-elses-key-0123", kFormat, test_entry(key));
  std::string why;
  EXPECT_FALSE(open_remote_entry(kKey, kFormat, key.text, forged, why));
  EXPECT_NE(why.find("MAC does not verify"), std::string::npos) << why;
}

TEST(RemoteEntry, AnAuthenticEntryOfAnotherKeyIsRefused) {
  const CacheKey a = test_key("problem e\narch sm_90\n");
  const CacheKey b = test_key("problem e\narch sm_80\n");
  const std::string sealed_for_a = seal_remote_entry(kKey, kFormat, test_entry(a));
  std::string why;
  EXPECT_FALSE(open_remote_entry(kKey, kFormat, b.text, sealed_for_a, why));
  EXPECT_NE(why.find("another key"), std::string::npos) << why;
}

TEST(RemoteEntry, AnEntryOfAnotherFormatVersionIsRefused) {
  const CacheKey key = test_key("problem f\n");
  const std::string old = seal_remote_entry(kKey, kFormat - 1, test_entry(key));
  std::string why;
  EXPECT_FALSE(open_remote_entry(kKey, kFormat, key.text, old, why));
  EXPECT_NE(why.find("cache format 1"), std::string::npos) << why;
}

TEST(RemoteEntry, AnAuthenticEnvelopeAroundACorruptEntryIsRefused) {
  // Someone with the key signs a broken entry (a bug, not an attack): its own checksums catch it.
  const CacheKey key = test_key("problem g\n");
  std::string bytes = serialize_entry(test_entry(key, 32));
  bytes[bytes.size() / 2] ^= 0x20;
  std::string value = "convjit-remote-entry 1\nformat 2\nkey " + std::to_string(key.text.size()) + "\n" + key.text +
                      "\nentry " + std::to_string(bytes.size()) + "\n" + bytes + "\n";
  value += "hmac-sha256 " + hmac_sha256_hex(kKey, value) + "\n";
  std::string why;
  EXPECT_FALSE(open_remote_entry(kKey, kFormat, key.text, value, why));
  EXPECT_NE(why.find("corrupt"), std::string::npos) << why;
}

}  // namespace
}  // namespace convjit
