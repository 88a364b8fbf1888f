#include "cache/redis_url.hpp"

#include <gtest/gtest.h>

#include "convjit/error.hpp"

namespace convjit {
namespace {

TEST(RedisUrl, HostAloneGetsTheDefaultPortAndDatabase) {
  const RedisUrl url = parse_redis_url("redis://cache.internal");
  EXPECT_FALSE(url.tls);
  EXPECT_EQ(url.host, "cache.internal");
  EXPECT_EQ(url.port, 6379);
  EXPECT_EQ(url.db, 0);
  EXPECT_TRUE(url.user.empty());
  EXPECT_TRUE(url.password.empty());
  EXPECT_EQ(url.redacted(), "redis://cache.internal:6379/0");
}

TEST(RedisUrl, PortDatabasePasswordAndAclUser) {
  RedisUrl url = parse_redis_url("redis://:s3cret@10.0.0.5:6380/3");
  EXPECT_EQ(url.host, "10.0.0.5");
  EXPECT_EQ(url.port, 6380);
  EXPECT_EQ(url.db, 3);
  EXPECT_EQ(url.user, "");
  EXPECT_EQ(url.password, "s3cret");
  EXPECT_EQ(url.redacted(), "redis://:***@10.0.0.5:6380/3");

  url = parse_redis_url("redis://builder:pw@redis:7000/");
  EXPECT_EQ(url.user, "builder");
  EXPECT_EQ(url.password, "pw");
  EXPECT_EQ(url.db, 0);
  EXPECT_EQ(url.redacted(), "redis://builder:***@redis:7000/0");
}

TEST(RedisUrl, PercentEscapesLetAPasswordHoldAnyCharacter) {
  const RedisUrl url = parse_redis_url("redis://u%40corp:p%3Aw%2Fd%40%25@h");
  EXPECT_EQ(url.user, "u@corp");
  EXPECT_EQ(url.password, "p:w/d@%");
}

TEST(RedisUrl, BracketedIpv6AndTls) {
  const RedisUrl url = parse_redis_url("rediss://[::1]:6390/2");
  EXPECT_TRUE(url.tls);
  EXPECT_EQ(url.host, "::1");
  EXPECT_EQ(url.port, 6390);
  EXPECT_EQ(url.db, 2);
  EXPECT_EQ(url.redacted(), "rediss://[::1]:6390/2");
}

TEST(RedisUrl, MalformedUrlsAreRefusedWithoutRepeatingThePassword) {
  for (const char* bad : {"http://h:1", "h:6379", "redis://", "redis://:pw@", "redis://h:0", "redis://h:65536",
                          "redis://h:port", "redis://h:", "redis://h/x", "redis://h/-1", "redis://[::1",
                          "redis://[::1]x", "redis://h?timeout=1", "redis://u:p%zz@h", "redis://u:p%4@h"}) {
    try {
      parse_redis_url(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << bad;
      EXPECT_EQ(std::string(e.what()).find("pw@"), std::string::npos) << e.what();
    }
  }
  try {
    parse_redis_url("redis://user:hunter2@h:notaport");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("port"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace convjit
