// The byte limit and least-recently-used eviction (no peer bounds its cache:
// DeepGEMM, Triton, FlashInfer). The multi-process version is in cache_stress_test.cpp.
#include <gtest/gtest.h>
#include <utime.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "cache/disk_cache.hpp"
#include "support/temp_dir.hpp"
#include "tests/cache/cache_test_util.hpp"

namespace convjit {
namespace {

using testing::test_entry;
using testing::test_key;
namespace fs = std::filesystem;

constexpr std::size_t kCubin = 10'000;  // each entry is a little over 10 kB

void set_mtime(const fs::path& path, std::time_t when) {
  const utimbuf times{when, when};
  ASSERT_EQ(::utime(path.c_str(), &times), 0);
}

std::uint64_t entry_bytes() {
  const CacheKey k = test_key("key-00");
  return serialize_entry(test_entry(k, kCubin)).size();
}

DiskCacheOptions limited(std::uint64_t max_bytes) {
  return DiskCacheOptions{.max_bytes = max_bytes, .stamp_interval = std::chrono::seconds(0)};
}

TEST(Eviction, PublishingPastTheLimitEvictsTheLeastRecentlyUsedEntries) {
  testing::TempDir dir;
  DiskCache cache(dir.path(), limited(5 * entry_bytes()));
  std::vector<CacheKey> keys;
  for (int i = 0; i < 5; ++i) {
    keys.push_back(test_key(fmt::format("key-{:02}", i)));
    cache.store(keys.back(), test_entry(keys.back(), kCubin));
    set_mtime(cache.entry_path(keys.back()), 1'000'000'000 + i * 100);
  }
  EXPECT_EQ(cache.total_size(), 5 * entry_bytes());
  // Use key 0 (the oldest): its stamp moves to now, so key 1 is the oldest.
  ASSERT_EQ(cache.load(keys[0]).status, DiskCache::Status::kHit);

  const CacheKey extra = test_key("key-05");
  const auto report = cache.store(extra, test_entry(extra, kCubin));
  EXPECT_TRUE(report.published);
  EXPECT_EQ(report.evicted_entries, 1u);
  EXPECT_EQ(report.evicted_bytes, entry_bytes());
  EXPECT_FALSE(fs::exists(cache.entry_path(keys[1]))) << "the least recently used entry goes first";
  EXPECT_TRUE(fs::exists(cache.entry_path(keys[0]))) << "a recent hit protects an old entry";
  EXPECT_LE(cache.total_size(), 5 * entry_bytes());
}

TEST(Eviction, FileConvjitCannotRecognizeIsNeitherEvictedNorCounted) {
  testing::TempDir dir;
  DiskCache cache(dir.path(), limited(0));
  const CacheKey k = test_key("key-00");
  cache.store(k, test_entry(k, kCubin));
  // A cache made before convjit marked its directories: file names alone prove nothing there.
  fs::remove(cache.version_dir() / "CACHEDIR.TAG");
  const fs::path stranger = cache.entry_path(k).parent_path() / (std::string(64, 'f') + ".entry");
  std::ofstream(stranger) << std::string(3 * kCubin, 'x');
  set_mtime(stranger, 1'000'000'000);  // the oldest: the first to go, were it convjit's

  const auto report = cache.evict_to(entry_bytes());
  EXPECT_EQ(report.entries, 0u) << "the entry alone fits; the stranger's file does not count";
  EXPECT_EQ(cache.evict_to(0).entries, 1u);
  EXPECT_TRUE(fs::exists(stranger));
  EXPECT_FALSE(fs::exists(cache.entry_path(k)));
}

TEST(Eviction, EvictToRemovesOldestFirstUntilUnderTheTarget) {
  testing::TempDir dir;
  DiskCache cache(dir.path(), limited(0));
  std::vector<CacheKey> keys;
  for (int i = 0; i < 6; ++i) {
    keys.push_back(test_key(fmt::format("key-{:02}", i)));
    cache.store(keys.back(), test_entry(keys.back(), kCubin));
    set_mtime(cache.entry_path(keys.back()), 1'000'000'000 + (5 - i) * 100);  // key 5 is the oldest
  }
  const auto report = cache.evict_to(3 * entry_bytes() + 1);
  EXPECT_EQ(report.entries, 3u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(fs::exists(cache.entry_path(keys[i])), i < 3) << i;
  EXPECT_EQ(cache.evict_to(0).entries, 3u);
  EXPECT_EQ(cache.total_size(), 0u);
}

TEST(Eviction, ReaderThatOpenedAnEntryBeforeItWasEvictedReadsItFully) {
  testing::TempDir dir;
  DiskCache cache(dir.path(), limited(0));
  const CacheKey k = test_key("being-read");
  cache.store(k, test_entry(k, 1 << 20));
  std::ifstream reader(cache.entry_path(k), std::ios::binary);
  ASSERT_TRUE(reader);
  EXPECT_EQ(cache.evict_to(0).entries, 1u);
  EXPECT_FALSE(fs::exists(cache.entry_path(k)));
  std::ostringstream bytes;
  bytes << reader.rdbuf();
  std::string why;
  const auto entry = parse_entry(bytes.str(), why);
  ASSERT_TRUE(entry) << why;
  EXPECT_EQ(*entry, test_entry(k, 1 << 20));
}

TEST(Eviction, EntryLargerThanTheWholeLimitIsNotCached) {
  testing::TempDir dir;
  DiskCache cache(dir.path(), limited(1000));
  const CacheKey k = test_key("huge");
  const auto report = cache.store(k, test_entry(k, 5000));
  EXPECT_FALSE(report.published);
  EXPECT_EQ(report.error, 0) << "not a failure: the limit says so";
  EXPECT_EQ(cache.total_size(), 0u);
}

TEST(Eviction, SeparateCachesPublishingAtOnceNeverShowMoreThanTheLimit) {
  testing::TempDir dir;
  const std::uint64_t limit = 8 * entry_bytes();
  // The monitor measures after publications, when the size can have changed, at most
  // once per publication, and otherwise waits. (It used to measure every millisecond.)
  // A publication takes exclusively the lock a measurement shares, so measuring only
  // after one can never keep the publishers out.
  std::mutex mutex;
  std::condition_variable changed;
  int publications = 0;  // guarded by mutex
  bool done = false;     // guarded by mutex
  std::atomic<std::uint64_t> largest{0};
  std::atomic<int> samples{0};
  std::thread monitor([&] {
    DiskCache cache(dir.path(), limited(limit));
    int seen = 0;
    for (;;) {
      {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return publications != seen || done; });
        if (publications == seen) return;  // done, and nothing new since the last sample
        seen = publications;
      }
      const std::uint64_t size = cache.total_size();
      std::uint64_t before = largest.load();
      while (size > before && !largest.compare_exchange_weak(before, size)) {
      }
      ++samples;
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < 6; ++t) {
    writers.emplace_back([&, t] {
      DiskCache cache(dir.path(), limited(limit));  // one per thread: like one per process
      for (int i = 0; i < 30; ++i) {
        const CacheKey k = test_key(fmt::format("writer-{}-{}", t, i));
        DiskCache::FetchReport report;
        cache.fetch_or_build(
            k, [&] { return test_entry(k, kCubin); }, report);
        {
          const std::lock_guard lock(mutex);
          ++publications;
        }
        changed.notify_one();
        cache.load(test_key(fmt::format("writer-{}-{}", (t + 1) % 6, i)));  // and read others' entries
      }
    });
  }
  for (auto& w : writers) w.join();
  {
    const std::lock_guard lock(mutex);
    done = true;
  }
  changed.notify_one();
  monitor.join();
  EXPECT_GT(samples.load(), 0) << "the monitor never measured";
  const DiskCache cache(dir.path(), limited(limit));
  EXPECT_LE(largest.load(), limit);
  EXPECT_LE(cache.total_size(), limit);
  EXPECT_GE(cache.total_size(), limit - entry_bytes()) << "eviction removed more than it had to";
  EXPECT_TRUE(cache.verify_all().empty());
}

}  // namespace
}  // namespace convjit
