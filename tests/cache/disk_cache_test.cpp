#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <thread>

#include "cache/disk_cache.hpp"
#include "convjit/error.hpp"
#include "specialize/kernel_key.hpp"
#include "support/temp_dir.hpp"

namespace convjit {
namespace {

KernelKey key(const std::string& text) {
  return KernelKey{text, std::string(64, 'a').replace(0, std::min<std::size_t>(text.size(), 8), text.substr(0, 8))};
}

CacheEntry entry_for(const KernelKey& k) { return CacheEntry{k.text, "kernel", "source", "ptx", "cubin", "opts", "log"}; }

TEST(DiskCache, MissThenStoreThenVerifiedHit) {
  testing::TempDir dir;
  DiskCache cache(dir.path() / "c");
  const KernelKey k = key("key-one");
  EXPECT_EQ(cache.load(k).status, DiskCache::Status::kMiss);
  cache.store(k, entry_for(k));
  const auto hit = cache.load(k);
  ASSERT_EQ(hit.status, DiskCache::Status::kHit);
  EXPECT_EQ(*hit.entry, entry_for(k));
}

TEST(DiskCache, CreatesItsDirectoryPrivate) {
  testing::TempDir dir;
  DiskCache cache(dir.path() / "private");
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() / "private").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(DiskCache, EntryWithAnotherKeyUnderTheSameNameIsCorrupt) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const KernelKey stored = key("key-two");
  cache.store(stored, entry_for(stored));
  KernelKey other = stored;
  other.text = "a different full key with the same hash";
  const auto lookup = cache.load(other);
  EXPECT_EQ(lookup.status, DiskCache::Status::kCorrupt);
  EXPECT_NE(lookup.why.find("stored key differs"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(cache.entry_path(stored))) << "corrupt entry left in place";
}

TEST(DiskCache, CorruptedFileIsReportedAndRemoved) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const KernelKey k = key("key-three");
  cache.store(k, entry_for(k));
  {
    std::fstream f(cache.entry_path(k), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('#');
  }
  const auto lookup = cache.load(k);
  EXPECT_EQ(lookup.status, DiskCache::Status::kCorrupt);
  EXPECT_FALSE(lookup.why.empty());
  EXPECT_EQ(cache.load(k).status, DiskCache::Status::kMiss);
}

TEST(DiskCache, StoreLeavesNoTemporaryFiles) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  for (int i = 0; i < 10; ++i) {
    const KernelKey k = key("k" + std::to_string(i) + "-xxxxxx");
    cache.store(k, entry_for(k));
  }
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
  }
}

TEST(DiskCache, ConcurrentWritersAndReadersOfOneKeyNeverSeeATornEntry) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  KernelKey k = key("shared-key");
  CacheEntry big = entry_for(k);
  big.cubin.assign(1 << 20, 'x');  // a write large enough to be caught half-way if it were not atomic
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        if (t % 2 == 0) {
          cache.store(k, big);
        } else {
          const auto lookup = cache.load(k);
          if (lookup.status == DiskCache::Status::kCorrupt) ++bad;
          if (lookup.status == DiskCache::Status::kHit && !(*lookup.entry == big)) ++bad;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(cache.load(k).status, DiskCache::Status::kHit);
}

TEST(DiskCache, FileWhereTheDirectoryShouldBeIsAClearError) {
  testing::TempDir dir;
  std::ofstream(dir.path() / "occupied") << "not a directory";
  try {
    DiskCache cache(dir.path() / "occupied");
    FAIL() << "accepted a file as the cache directory";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCache);
    EXPECT_NE(std::string(e.what()).find("occupied"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace convjit
