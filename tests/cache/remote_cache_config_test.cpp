// Where a Runtime's remote cache settings come from, and the refusals that keep it
// off: no key, a weak key, a key file others can read, a malformed URL.
#include "runtime/remote_cache_config.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "cache/redis_store.hpp"
#include "convjit/error.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"
#include "tests/cache/cache_test_util.hpp"

namespace convjit {
namespace {

using testing::CapturedWarnings;
using testing::ScopedEnv;
using testing::TempDir;

// Clears every remote cache variable for one test.
struct CleanRemoteEnv {
  ScopedEnv url{"CONVJIT_REMOTE_CACHE", nullptr};
  ScopedEnv key{"CONVJIT_REMOTE_CACHE_KEY", nullptr};
  ScopedEnv key_file{"CONVJIT_REMOTE_CACHE_KEY_FILE", nullptr};
  ScopedEnv readonly{"CONVJIT_REMOTE_CACHE_READONLY", nullptr};
  ScopedEnv password{"CONVJIT_REMOTE_CACHE_PASSWORD", nullptr};
  ScopedEnv prefix{"CONVJIT_REMOTE_CACHE_PREFIX", nullptr};
  ScopedEnv ttl{"CONVJIT_REMOTE_CACHE_TTL", nullptr};
};

std::filesystem::path write_key_file(const TempDir& dir, const std::string& text, mode_t mode) {
  const auto path = dir.path() / "fleet.key";
  std::ofstream(path) << text;
  ::chmod(path.c_str(), mode);
  return path;
}

TEST(RemoteCacheConfig, NothingConfiguredMeansOffWithoutAWord) {
  CleanRemoteEnv env;
  CapturedWarnings warnings;
  const RemoteCacheSetup setup = open_remote_cache(RuntimeOptions{});
  EXPECT_FALSE(setup.configured);
  EXPECT_FALSE(setup.cache);
  EXPECT_EQ(setup.mode, RemoteCacheMode::kOff);
  EXPECT_EQ(warnings.text(), "");
}

TEST(RemoteCacheConfig, AUrlWithoutAKeyStaysOffAndSaysWhy) {
  CleanRemoteEnv env;
  ScopedEnv url("CONVJIT_REMOTE_CACHE", "redis://127.0.0.1:1/0");
  CapturedWarnings warnings;
  const RemoteCacheSetup setup = open_remote_cache(RuntimeOptions{});
  EXPECT_TRUE(setup.configured);
  EXPECT_FALSE(setup.cache);
  EXPECT_NE(setup.note.find("no key to authenticate its entries"), std::string::npos) << setup.note;
  EXPECT_NE(warnings.text().find("remote cache disabled: 'redis://127.0.0.1:1/0' is configured but no key"),
            std::string::npos)
      << warnings.text();
}

TEST(RemoteCacheConfig, KeysAreRawBytesOrHexAndAtLeastSixteenBytes) {
  EXPECT_EQ(parse_mac_key("0123456789abcdef", "test"), "0123456789abcdef");
  EXPECT_EQ(parse_mac_key("hex:000102030405060708090a0b0c0d0e0f", "test"),
            std::string("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f", 16));
  EXPECT_THROW(parse_mac_key("short", "test"), Error);
  EXPECT_THROW(parse_mac_key("hex:0011", "test"), Error);
  EXPECT_THROW(parse_mac_key("hex:0g0102030405060708090a0b0c0d0e0f", "test"), Error);
  EXPECT_THROW(parse_mac_key("hex:000102030405060708090a0b0c0d0e0f0", "test"), Error);
}

TEST(RemoteCacheConfig, AKeyFileMustBePrivateToThisUser) {
  TempDir dir;
  const std::string key = "a-key-in-a-file-0123456789";
  const auto path = write_key_file(dir, key + "\n", 0600);
  EXPECT_EQ(read_mac_key_file(path), key);
  ::chmod(path.c_str(), 0400);
  EXPECT_EQ(read_mac_key_file(path), key);

  for (const mode_t mode : {0640, 0604, 0660, 0644, 0666}) {
    ::chmod(path.c_str(), mode);
    try {
      read_mac_key_file(path);
      ADD_FAILURE() << "accepted mode " << std::oct << mode;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("run chmod 600 '" + path.string() + "'"), std::string::npos) << e.what();
    }
  }
  ::chmod(path.c_str(), 0600);
  if (::geteuid() == 0) {  // only root can give a file away
    ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
    try {
      read_mac_key_file(path);
      ADD_FAILURE() << "accepted a key file of another user";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("belongs to uid 65534"), std::string::npos) << e.what();
    }
  }
  const auto link = dir.path() / "link.key";
  std::filesystem::create_symlink(path, link);
  EXPECT_THROW(read_mac_key_file(link), Error);
  EXPECT_THROW(read_mac_key_file(dir.path() / "missing.key"), Error);
}

TEST(RemoteCacheConfig, AnInsecureKeyFileKeepsTheRemoteCacheOff) {
  CleanRemoteEnv env;
  TempDir dir;
  const auto path = write_key_file(dir, "a-key-in-a-file-0123456789", 0644);
  ScopedEnv url("CONVJIT_REMOTE_CACHE", "redis://127.0.0.1:1/0");
  ScopedEnv file("CONVJIT_REMOTE_CACHE_KEY_FILE", path.c_str());
  CapturedWarnings warnings;
  const RemoteCacheSetup setup = open_remote_cache(RuntimeOptions{});
  EXPECT_FALSE(setup.cache);
  EXPECT_NE(warnings.text().find("can be read or written by other users (mode 0644)"), std::string::npos)
      << warnings.text();
}

TEST(RemoteCacheConfig, AMalformedUrlKeepsTheRemoteCacheOff) {
  CleanRemoteEnv env;
  ScopedEnv url("CONVJIT_REMOTE_CACHE", "redis://h:notaport");
  ScopedEnv key("CONVJIT_REMOTE_CACHE_KEY", "0123456789abcdef0123");
  CapturedWarnings warnings;
  EXPECT_FALSE(open_remote_cache(RuntimeOptions{}).cache);
  EXPECT_NE(warnings.text().find("remote cache disabled: remote cache URL"), std::string::npos) << warnings.text();
}

TEST(RemoteCacheConfig, EnvironmentConfiguresAndRuntimeOptionsWin) {
  if (const std::string missing = redis_unavailable_reason(); !missing.empty()) GTEST_SKIP() << missing;
  CleanRemoteEnv env;
  ScopedEnv url("CONVJIT_REMOTE_CACHE", "redis://user:pw@127.0.0.1:1/4");
  ScopedEnv key("CONVJIT_REMOTE_CACHE_KEY", "0123456789abcdef0123");
  ScopedEnv readonly("CONVJIT_REMOTE_CACHE_READONLY", "1");
  ScopedEnv prefix("CONVJIT_REMOTE_CACHE_PREFIX", "team-a:");
  ScopedEnv ttl("CONVJIT_REMOTE_CACHE_TTL", "7d");
  RemoteCacheSetup setup = open_remote_cache(RuntimeOptions{});
  ASSERT_TRUE(setup.cache);
  EXPECT_EQ(setup.mode, RemoteCacheMode::kReadOnly);
  EXPECT_EQ(setup.where, "redis://user:***@127.0.0.1:1/4");
  EXPECT_EQ(setup.key_source, "CONVJIT_REMOTE_CACHE_KEY");
  EXPECT_EQ(setup.cache->options().mac_key, "0123456789abcdef0123");
  EXPECT_EQ(setup.cache->options().prefix, "team-a:");
  EXPECT_EQ(setup.cache->options().ttl, std::chrono::hours(24 * 7));
  EXPECT_EQ(setup.cache->store().describe(), "redis://user:***@127.0.0.1:1/4");

  RuntimeOptions options;
  options.remote_cache = "redis://other:6380";
  options.remote_cache_key = "another-key-0123456789";
  options.remote_cache_readonly = false;
  setup = open_remote_cache(options);
  ASSERT_TRUE(setup.cache);
  EXPECT_EQ(setup.mode, RemoteCacheMode::kReadWrite);
  EXPECT_EQ(setup.where, "redis://other:6380/0");
  EXPECT_EQ(setup.key_source, "RuntimeOptions::remote_cache_key");

  options.remote_cache = "off";
  EXPECT_FALSE(open_remote_cache(options).configured);
}

TEST(RemoteCacheConfig, AUserWithoutAPasswordIsRefused) {
  CleanRemoteEnv env;
  RuntimeOptions options;
  options.remote_cache = "redis://builder@127.0.0.1:1";
  options.remote_cache_key = "0123456789abcdef0123";
  CapturedWarnings warnings;
  const RemoteCacheSetup setup = open_remote_cache(options);
  EXPECT_FALSE(setup.cache);
  EXPECT_NE(setup.note.find("names the user 'builder' but no password"), std::string::npos) << setup.note;
}

TEST(RemoteCacheConfig, DurationsTakeSecondsOrAUnit) {
  EXPECT_EQ(parse_duration("3600"), std::chrono::seconds(3600));
  EXPECT_EQ(parse_duration("90s"), std::chrono::seconds(90));
  EXPECT_EQ(parse_duration("30m"), std::chrono::minutes(30));
  EXPECT_EQ(parse_duration("12h"), std::chrono::hours(12));
  EXPECT_EQ(parse_duration("7d"), std::chrono::hours(24 * 7));
  for (const char* bad : {"", "0", "d", "5w", "-1", "1.5h", "99999999999999d"})
    EXPECT_FALSE(parse_duration(bad)) << bad;
}

}  // namespace
}  // namespace convjit
