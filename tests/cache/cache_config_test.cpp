#include "cache/cache_config.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "tests/cache/cache_test_util.hpp"

namespace convjit {
namespace {

// Sets an environment variable for one scope, restoring the old value after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    value ? ::setenv(name, value, 1) : ::unsetenv(name);
  }
  ~ScopedEnv() { old_ ? ::setenv(name_, old_->c_str(), 1) : ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

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
  const DiskCacheOptions options =
      disk_cache_options(RuntimeOptions{.cache_readonly = false, .cache_max_bytes = 1000});
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
