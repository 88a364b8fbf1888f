// No code from strangers: a cache directory or entry another user can write is
// never loaded (cudf PR #4857: a world-writable shared JIT cache let any user inject
// code). This suite runs as root, so "another user" is shown by modes and by chown
// to uid 65534 (nobody); ownership rules treat root as trusted.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "cache/disk_cache.hpp"
#include "convjit/convjit.hpp"
#include "support/temp_dir.hpp"
#include "tests/cache/cache_test_util.hpp"

namespace convjit {
namespace {

using testing::count_of;
using testing::test_entry;
using testing::test_key;
namespace fs = std::filesystem;

const Conv2dDesc kDesc{.n = 1, .c = 2, .h = 9, .w = 5, .k = 2, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};

std::string refusal_of(const fs::path& root) {
  try {
    DiskCache cache(root);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCache);
    return e.what();
  }
  return {};
}

class WritableByOthers : public ::testing::TestWithParam<mode_t> {};

TEST_P(WritableByOthers, CacheDirectoryIsRefusedWithWhyAndHowToFix) {
  testing::TempDir dir;
  const fs::path root = dir.path() / "shared";
  fs::create_directory(root);
  ASSERT_EQ(::chmod(root.c_str(), GetParam()), 0);
  const std::string message = refusal_of(root);
  EXPECT_EQ(message, fmt::format("cache directory '{}' is writable by other users (mode {:04o}); refusing to load "
                                 "code from it: run chmod 700 '{}' or set CONVJIT_CACHE_DIR to a private directory",
                                 root.string(), GetParam(), root.string()));
  struct stat st {};
  ::stat(root.c_str(), &st);
  EXPECT_EQ(st.st_mode & 07777, GetParam()) << "the runtime must not quietly chmod a directory it did not create";
  std::printf("refusal shown: %s\n", message.c_str());
}
INSTANTIATE_TEST_SUITE_P(Trust, WritableByOthers, ::testing::Values(0777, 0757, 0770, 0720, 01777),
                         [](const auto& info) { return fmt::format("mode{:04o}", info.param); });

TEST(Trust, RuntimeOnARefusedCacheWarnsOnceLoadsNothingFromItAndStillWorks) {
  testing::TempDir dir;
  const fs::path root = dir.path() / "cache";
  // A valid entry sits in the cache; then the directory becomes world-writable.
  const fs::path planted = Runtime(RuntimeOptions{.cache_dir = root}).inspect(kDesc, "sm_90").cache_path;
  ASSERT_TRUE(fs::exists(planted));
  ASSERT_EQ(::chmod(root.c_str(), 0777), 0);

  testing::CapturedWarnings warnings;
  Runtime rt(RuntimeOptions{.cache_dir = root});
  const auto info = rt.inspect(kDesc, "sm_90");
  rt.prewarm(std::vector<Conv2dDesc>{kDesc}, "sm_90");
  const CacheStats stats = rt.stats();
  EXPECT_EQ(stats.disk_hits, 0u) << "loaded code from a directory others can write";
  EXPECT_EQ(stats.compiles, 1u);
  EXPECT_EQ(stats.disk_mode, DiskCacheMode::kOff);
  EXPECT_NE(info.ptx.find(".entry " + info.kernel_name), std::string::npos);
  const std::string expected = fmt::format(
      "disk cache disabled: cache directory '{}' is writable by other users (mode 0777); refusing to load code "
      "from it: run chmod 700 '{}' or set CONVJIT_CACHE_DIR to a private directory; kernels stay in memory only",
      root.string(), root.string());
  const std::string text = warnings.text();
  EXPECT_EQ(count_of(text, "[convjit warn]"), 1u) << text;
  EXPECT_NE(text.find(expected), std::string::npos) << text;
  EXPECT_EQ(stats.disk_note,
            expected.substr(std::string("disk cache disabled: ").size(),
                            expected.find("; kernels stay") - std::string("disk cache disabled: ").size()));
  std::printf("warning shown: %s", text.c_str());
}

TEST(Trust, CacheDirectoryOwnedByAnotherUserIsRefused) {
  testing::TempDir dir;
  const fs::path root = dir.path() / "theirs";
  fs::create_directory(root);
  ASSERT_EQ(::chmod(root.c_str(), 0700), 0);
  ASSERT_EQ(::chown(root.c_str(), 65534, 65534), 0);
  const std::string message = refusal_of(root);
  EXPECT_NE(message.find(fmt::format("cache directory '{}' belongs to uid 65534, not to you (uid {}) nor root; "
                                     "refusing to load code from it",
                                     root.string(), ::geteuid())),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("set CONVJIT_CACHE_DIR to a directory you own"), std::string::npos) << message;
}

TEST(Trust, CacheInsideADirectoryOthersCanWriteIsRefusedUnlessItIsSticky) {
  testing::TempDir dir;
  const fs::path parent = dir.path() / "open";
  const fs::path root = parent / "cache";
  fs::create_directories(root);
  ASSERT_EQ(::chmod(root.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(parent.c_str(), 0777), 0);  // anyone could rename "cache" away and put their own there
  const std::string message = refusal_of(root);
  EXPECT_NE(message.find(fmt::format("cache directory '{}' is inside '{}', which other users can write (mode 0777)",
                                     root.string(), parent.string())),
            std::string::npos)
      << message;
  EXPECT_NE(message.find(fmt::format("run chmod go-w '{}'", parent.string())), std::string::npos) << message;
  ASSERT_EQ(::chmod(parent.c_str(), 01777), 0);  // like /tmp: others cannot rename what is ours
  EXPECT_EQ(refusal_of(root), "");
}

TEST(Trust, EntryWritableByOthersIsNotLoadedButRebuiltPrivate) {
  testing::TempDir dir;
  const RuntimeOptions options{.cache_dir = dir.path() / "cache"};
  const fs::path entry = Runtime(options).inspect(kDesc, "sm_90").cache_path;
  ASSERT_EQ(::chmod(entry.c_str(), 0666), 0);
  testing::CapturedWarnings warnings;
  Runtime rt(options);
  rt.inspect(kDesc, "sm_90");
  EXPECT_EQ(rt.stats().disk_hits, 0u);
  EXPECT_EQ(rt.stats().corrupt_rebuilt, 1u);
  EXPECT_EQ(rt.stats().compiles, 1u);
  const std::string text = warnings.text();
  EXPECT_NE(text.find(fmt::format("cache entry '{}' is writable by other users (mode 0666); not loading code from it",
                                  entry.string())),
            std::string::npos)
      << text;
  struct stat st {};
  ASSERT_EQ(::stat(entry.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "the rebuilt entry replaced the untrusted one";
  Runtime third(options);
  third.inspect(kDesc, "sm_90");
  EXPECT_EQ(third.stats().disk_hits, 1u);
}

TEST(Trust, EntryOwnedByAnotherUserIsNotLoaded) {
  testing::TempDir dir;
  const RuntimeOptions options{.cache_dir = dir.path() / "cache"};
  const fs::path entry = Runtime(options).inspect(kDesc, "sm_90").cache_path;
  ASSERT_EQ(::chown(entry.c_str(), 65534, 65534), 0);
  testing::CapturedWarnings warnings;
  Runtime rt(options);
  rt.inspect(kDesc, "sm_90");
  EXPECT_EQ(rt.stats().disk_hits, 0u);
  EXPECT_EQ(rt.stats().compiles, 1u);
  EXPECT_NE(warnings.text().find("belongs to uid 65534"), std::string::npos);
}

TEST(Trust, ShardDirectoryWritableByOthersIsNeitherReadNorWritten) {
  testing::TempDir dir;
  const RuntimeOptions options{.cache_dir = dir.path() / "cache"};
  const fs::path entry = Runtime(options).inspect(kDesc, "sm_90").cache_path;
  ASSERT_EQ(::chmod(entry.parent_path().c_str(), 0777), 0);
  const auto before = fs::last_write_time(entry);
  testing::CapturedWarnings warnings;
  Runtime rt(options);
  const auto info = rt.inspect(kDesc, "sm_90");
  EXPECT_EQ(rt.stats().disk_hits, 0u);
  EXPECT_EQ(rt.stats().compiles, 1u);
  EXPECT_NE(info.ptx.find(".entry"), std::string::npos);
  EXPECT_EQ(fs::last_write_time(entry), before) << "wrote into a directory others can write";
  const std::string text = warnings.text();
  EXPECT_EQ(count_of(text, "[convjit warn]"), 1u) << text;
  EXPECT_NE(text.find(fmt::format("cache directory '{}' is writable by other users (mode 0777)",
                                  entry.parent_path().string())),
            std::string::npos)
      << text;
}

TEST(Trust, SymbolicLinkInPlaceOfAnEntryIsNotFollowed) {
  testing::TempDir dir;
  DiskCache cache(dir.path() / "cache");
  const CacheKey k = test_key("linked");
  cache.store(k, test_entry(k));
  const fs::path elsewhere = dir.path() / "elsewhere.entry";
  fs::rename(cache.entry_path(k), elsewhere);
  fs::create_symlink(elsewhere, cache.entry_path(k));
  testing::CapturedWarnings warnings;
  const auto lookup = cache.load(k);
  EXPECT_EQ(lookup.status, DiskCache::Status::kUntrusted);
  EXPECT_NE(lookup.why.find("is a symbolic link"), std::string::npos) << lookup.why;
}

}  // namespace
}  // namespace convjit
