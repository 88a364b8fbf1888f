#include "runtime/cache_config.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "support/scoped_env.hpp"
#include "tests/cache/cache_test_util.hpp"

namespace convjit {
namespace {

using testing::ScopedEnv;

TEST(CacheConfig, ByteSizesAcceptPlainBytesAndBinarySuffixes) {
  EXPECT_EQ(parse_byte_size("0"), 0u);
  EXPECT_EQ(parse_byte_size("123456"), 123456u);
  EXPECT_EQ(parse_byte_size("512K"), 512u << 10);
  EXPECT_EQ(parse_byte_size("64m"), 64u << 20);
  EXPECT_EQ(parse_byte_size("4G"), std::uint64_t{4} << 30);
  EXPECT_EQ(parse_byte_size("4GiB"), std::uint64_t{4} << 30);
  EXPECT_EQ(parse_byte_size("4GB"), std::uint64_t{4} << 30);
  EXPECT_EQ(parse_byte_size(" 2T "), std::uint64_t{2} << 40);
  EXPECT_EQ(parse_byte_size("100B"), 100u);
  for (const char* bad : {"", "G", "-1", "1.5G", "4X", "4 GB x", "99999999999T", "18446744073709551616"}) {
    EXPECT_FALSE(parse_byte_size(bad)) << bad;
  }
}

TEST(CacheConfig, DefaultsAreReadWriteAndFourGiB) {
  ScopedEnv readonly("CONVJIT_CACHE_READONLY", nullptr);
  ScopedEnv size("CONVJIT_CACHE_MAX_SIZE", nullptr);
  const DiskCacheOptions options = disk_cache_options(RuntimeOptions{});
  EXPECT_FALSE(options.readonly);
  EXPECT_EQ(options.max_bytes, std::uint64_t{4} << 30);
}

TEST(CacheConfig, EnvironmentSetsReadOnlyAndMaxSize) {
  ScopedEnv readonly("CONVJIT_CACHE_READONLY", "1");
  ScopedEnv size("CONVJIT_CACHE_MAX_SIZE", "256M");
  const DiskCacheOptions options = disk_cache_options(RuntimeOptions{});
  EXPECT_TRUE(options.readonly);
  EXPECT_EQ(options.max_bytes, 256u << 20);
}

TEST(CacheConfig, RuntimeOptionsOverrideTheEnvironment) {
  ScopedEnv readonly("CONVJIT_CACHE_READONLY", "1");
  ScopedEnv size("CONVJIT_CACHE_MAX_SIZE", "256M");
  const DiskCacheOptions options = disk_cache_options(RuntimeOptions{.cache_readonly = false, .cache_max_bytes = 1000});
  EXPECT_FALSE(options.readonly);
  EXPECT_EQ(options.max_bytes, 1000u);
}

TEST(CacheConfig, UnparsableEnvironmentValuesWarnAndFallBackToDefaults) {
  ScopedEnv readonly("CONVJIT_CACHE_READONLY", "maybe");
  ScopedEnv size("CONVJIT_CACHE_MAX_SIZE", "lots");
  testing::CapturedWarnings warnings;
  const DiskCacheOptions options = disk_cache_options(RuntimeOptions{});
  EXPECT_FALSE(options.readonly);
  EXPECT_EQ(options.max_bytes, kDefaultCacheMaxBytes);
  const std::string text = warnings.text();
  EXPECT_NE(text.find("ignoring CONVJIT_CACHE_READONLY='maybe'"), std::string::npos) << text;
  EXPECT_NE(text.find("ignoring CONVJIT_CACHE_MAX_SIZE='lots': expected bytes or a number with K, M, G or T"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace convjit
