// The per-key compile lock. flock(2) locks belong to an open file description, so
// separate DiskCache objects (each opening the lock file itself) contend exactly
// like separate processes; cache_stress_test.cpp repeats this across processes.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <thread>
#include <vector>

#include "cache/disk_cache.hpp"
#include "cache/file_system.hpp"
#include "cache/lock_file.hpp"
#include "support/log_watch.hpp"
#include "support/temp_dir.hpp"
#include "tests/cache/cache_test_util.hpp"

namespace convjit {
namespace {

using testing::test_entry;
using testing::test_key;
namespace fs = std::filesystem;

TEST(KeyLock, SecondHolderIsBusyUntilTheFirstReleasesAndReleaseRemovesTheFile) {
  testing::TempDir dir;
  FileSystem& posix = *posix_file_system();
  const fs::path path = dir.path() / "k.lock";
  KeyLock first = KeyLock::try_acquire(posix, path);
  ASSERT_TRUE(first.held());
  EXPECT_FALSE(first.took_over());
  EXPECT_NE(read_lock_owner(posix, path).find("pid " + std::to_string(::getpid()) + " on host "), std::string::npos);
  KeyLock second = KeyLock::try_acquire(posix, path);
  EXPECT_FALSE(second.held());
  EXPECT_EQ(second.error(), 0) << "busy is not an error";
  first.release();
  EXPECT_FALSE(fs::exists(path));
  KeyLock third = KeyLock::try_acquire(posix, path);
  EXPECT_TRUE(third.held());
  EXPECT_FALSE(third.took_over()) << "a clean release leaves nothing to take over";
}

TEST(KeyLock, LockFileLeftWithAnOwnerRecordIsTakenOver) {
  // What a process killed while compiling leaves behind: its record, and no flock
  // (the kernel dropped it). flashinfer #972: such a lock must not block anyone.
  testing::TempDir dir;
  const fs::path path = dir.path() / "k.lock";
  std::ofstream(path) << "pid 999999 on host elsewhere since 1700000000.000\n";
  KeyLock lock = KeyLock::try_acquire(*posix_file_system(), path);
  ASSERT_TRUE(lock.held());
  EXPECT_TRUE(lock.took_over());
  EXPECT_EQ(lock.previous_owner(), "pid 999999 on host elsewhere since 1700000000.000");
}

TEST(KeyLock, HolderThatLockedARemovedLockFileTriesAgain) {
  testing::TempDir dir;
  FileSystem& posix = *posix_file_system();
  const fs::path path = dir.path() / "k.lock";
  KeyLock first = KeyLock::try_acquire(posix, path);
  ASSERT_TRUE(first.held());
  // A waiter that opened the file before the holder removed it must not believe it holds the lock.
  fs::remove(path);
  KeyLock newer = KeyLock::try_acquire(posix, path);  // creates a new file
  ASSERT_TRUE(newer.held());
  first.release();
  EXPECT_TRUE(fs::exists(path)) << "the old holder removed the new holder's file";
}

TEST(KeyLock, SeparateCachesFetchingOneKeyAtOnceBuildItOnceAndTheRestWait) {
  testing::TempDir dir;
  const CacheKey k = test_key("one-compile");
  constexpr int kThreads = 8;
  testing::LogWatch log;
  std::atomic<int> builds{0};
  std::atomic<int> waits{0};
  std::atomic<int> hits{0};
  std::atomic<bool> all_waited{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      DiskCache cache(dir.path());  // one per thread: like one per process
      DiskCache::FetchReport report;
      const CacheEntry got = cache.fetch_or_build(
          k,
          [&] {
            ++builds;
            // The build lasts until every other thread has said it waits for this one:
            // none can have found the entry (it is not published yet) or the lock (held),
            // so all of them wait, whatever the scheduler does. The limit only keeps a
            // broken lock from hanging the test; the counts below then fail.
            all_waited = log.wait_for("to compile '" + k.hash + "'", kThreads - 1, std::chrono::seconds(30));
            return test_entry(k);
          },
          report);
      EXPECT_EQ(got, test_entry(k));
      waits += report.waited;
      hits += report.hit;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(all_waited.load()) << log.text();
  EXPECT_EQ(builds.load(), 1);
  EXPECT_EQ(hits.load(), kThreads - 1);
  // Every other thread waited (was >= 1 while a 200 ms build only made waiting likely).
  EXPECT_EQ(waits.load(), kThreads - 1);
  EXPECT_FALSE(fs::exists(DiskCache(dir.path()).entry_path(k).parent_path() / (k.hash + ".lock")));
}

TEST(KeyLock, WaitForALiveButHungHolderIsBoundedThenBuildsAnyway) {
  testing::TempDir dir;
  const CacheKey k = test_key("hung-holder");
  DiskCache cache(dir.path(), DiskCacheOptions{.lock_wait = std::chrono::milliseconds(300)});
  const fs::path lock_path = cache.entry_path(k).parent_path() / (k.hash + ".lock");
  fs::create_directories(lock_path.parent_path());
  KeyLock hung = KeyLock::try_acquire(*posix_file_system(), lock_path);
  ASSERT_TRUE(hung.held());

  testing::CapturedWarnings warnings;
  const auto start = std::chrono::steady_clock::now();
  DiskCache::FetchReport report;
  int builds = 0;
  cache.fetch_or_build(
      k,
      [&] {
        ++builds;
        return test_entry(k);
      },
      report);
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(builds, 1);
  EXPECT_TRUE(report.waited);
  EXPECT_TRUE(report.lock_timed_out);
  EXPECT_TRUE(report.bytes_written > 0) << "published without the lock (rename wins)";
  EXPECT_GE(waited, std::chrono::milliseconds(300));
  EXPECT_LT(waited, std::chrono::seconds(5));
  const std::string text = warnings.text();
  EXPECT_NE(text.find("waited 300 ms for pid " + std::to_string(::getpid())), std::string::npos) << text;
  EXPECT_NE(text.find("compiling it here too"), std::string::npos) << text;
}

TEST(KeyLock, WaiterTakesTheHoldersEntryAsSoonAsItIsPublished) {
  testing::TempDir dir;
  const CacheKey k = test_key("published-while-waiting");
  DiskCache holder(dir.path());
  const fs::path lock_path = holder.entry_path(k).parent_path() / (k.hash + ".lock");
  fs::create_directories(lock_path.parent_path());
  KeyLock lock = KeyLock::try_acquire(*posix_file_system(), lock_path);
  ASSERT_TRUE(lock.held());
  testing::LogWatch log;
  DiskCache waiter(dir.path());
  const auto start = std::chrono::steady_clock::now();
  auto fetched = std::async(std::launch::async, [&] {
    DiskCache::FetchReport report;
    waiter.fetch_or_build(
        k,
        [&]() -> CacheEntry {
          ADD_FAILURE() << "built although the holder published";
          return {};
        },
        report);
    return report;
  });
  // Published once the waiter waits, while still holding the lock; the lock is held
  // until the waiter has returned, so it can only have returned on the entry.
  const bool waiting = log.wait_for("waiting for pid " + std::to_string(::getpid()), 1, std::chrono::seconds(30));
  holder.store(k, test_entry(k));
  const bool returned = fetched.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  const auto took = std::chrono::steady_clock::now() - start;
  lock.release();  // NOTE: before any assertion can return: a waiter still waiting then finishes
  EXPECT_TRUE(waiting) << "the waiter never waited for the lock\n" << log.text();
  ASSERT_TRUE(returned) << "the waiter did not return while the holder held the lock: it waited for the lock, "
                           "not the entry";
  const DiskCache::FetchReport report = fetched.get();
  EXPECT_LT(took, std::chrono::seconds(1)) << "waited for the lock, not the entry";
  EXPECT_TRUE(report.waited);
  EXPECT_TRUE(report.hit);
}

}  // namespace
}  // namespace convjit
