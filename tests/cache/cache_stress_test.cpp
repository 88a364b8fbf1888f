// Many processes on one cache directory, for real: each runs
// convjit_cache_stress_worker (a Runtime prewarming or inspecting from 4 threads).
// Peers fail exactly here: 8 ranks on a cold cache each compile, or die on the
// loser's side of a rename (DeepGEMM #301, DeepEP #683, triton #2688); a lock left by
// a killed process hangs every later start (flashinfer #972).
// Run ten in a row with tests/cache/stress_10x.sh.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <utility>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "cache/disk_cache.hpp"
#include "cache/cache_key.hpp"
#include "support/temp_dir.hpp"
#include "tests/cache/worker_process.hpp"

namespace convjit {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Stats = testing::WorkerStats;
using testing::finish_all;
using testing::start_in;
using testing::Worker;
using testing::WorkersRun;

// Every entry verifies, there are `expected` of them, and nothing is left half done.
void expect_clean(const fs::path& root, std::size_t expected) {
  const DiskCache cache(root);
  const auto bad = cache.verify_all();
  for (const auto& b : bad) ADD_FAILURE() << b.path << ": " << b.why;
  EXPECT_EQ(cache.list().size(), expected);
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    EXPECT_EQ(name.find(".tmp."), std::string::npos) << "temp file left: " << e.path();
    if (e.path().extension() == ".lock") {
      EXPECT_EQ(name, "cache.lock") << "compile lock left: " << e.path();
    }
  }
  std::printf("  verified: %zu entries, 0 bad\n", cache.list().size());
}

// 8 processes x 4 threads, windows of 36 over 64 descriptors; even workers prewarm,
// odd ones inspect and check what they got; two passes (the second from disk).
std::vector<Worker> start_overlapping(const fs::path& root, const fs::path& logs, std::uint64_t max_bytes = 0) {
  std::vector<Worker> workers;
  const std::string start = start_in(std::chrono::milliseconds(300));
  for (int w = 0; w < 8; ++w) {
    std::vector<std::string> args = {"--cache", root.string(), "--first", std::to_string(w * 4), "--count", "36",
                                     "--threads", "4", "--passes", "2", "--seed", std::to_string(w + 1),
                                     "--mode", w % 2 == 0 ? "prewarm" : "read", "--start-at", start};
    if (max_bytes != 0) args.insert(args.end(), {"--max-bytes", std::to_string(max_bytes)});
    workers.emplace_back(args, logs / fmt::format("worker{}.err", w));
  }
  return workers;
}
constexpr std::size_t kOverlappingUnion = 7 * 4 + 36;  // 64 distinct descriptors

TEST(CacheStress, EightProcessesPrewarmingTheSame50DescriptorsCompileEachExactlyOnce) {
  testing::TempDir dir;
  const fs::path root = dir.path() / "cache";
  const std::string start = start_in(std::chrono::milliseconds(300));
  std::vector<Worker> workers;
  for (int w = 0; w < 8; ++w) {
    workers.emplace_back(std::vector<std::string>{"--cache", root.string(), "--count", "50", "--threads", "4",
                                                  "--seed", std::to_string(w + 1), "--start-at", start},
                         dir.path() / fmt::format("worker{}.err", w));
  }
  const WorkersRun run = finish_all(workers);
  EXPECT_EQ(run.sum.at("compiles"), 50) << "one compile per key across all processes";
  EXPECT_EQ(run.sum.at("misses"), 50);
  EXPECT_EQ(run.sum.at("disk_writes"), 50);
  EXPECT_EQ(run.sum.at("disk_hits"), 7 * 50) << "every other process read each entry from disk";
  EXPECT_EQ(run.sum.at("lock_timeouts"), 0);
  EXPECT_GT(run.sum.at("lock_waits"), 0) << "the processes never met: not a concurrency test";
  expect_clean(root, 50);
}

TEST(CacheStress, ProcessesPrewarmingAndReadingOverlappingSetsLeaveEveryEntryVerified) {
  testing::TempDir dir;
  const fs::path root = dir.path() / "cache";
  std::vector<Worker> workers = start_overlapping(root, dir.path());
  const WorkersRun run = finish_all(workers);
  EXPECT_EQ(run.sum.at("compiles"), kOverlappingUnion);
  EXPECT_EQ(run.sum.at("corrupt_rebuilt"), 0);
  expect_clean(root, kOverlappingUnion);
}

TEST(CacheStress, RandomCorruptionWhileRunningIsRebuiltAndTheFinalCacheVerifiesClean) {
  testing::TempDir dir;
  const fs::path root = dir.path() / "cache";
  std::vector<Worker> workers = start_overlapping(root, dir.path());
  std::atomic<bool> done{false};
  std::atomic<int> corrupted{0};
  std::thread corrupter([&] {
    std::mt19937_64 rng(std::random_device{}());
    while (!done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(15));
      std::vector<fs::path> entries;
      std::error_code ec;
      for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->path().extension() == ".entry") entries.push_back(it->path());
      }
      if (entries.empty()) continue;
      const fs::path victim = entries[rng() % entries.size()];
      const int fd = ::open(victim.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) continue;
      struct stat st {};
      ::fstat(fd, &st);
      const off_t size = st.st_size;
      switch (rng() % 4) {
        case 0: {  // flip a byte somewhere
          if (size == 0) break;
          const char junk = static_cast<char>(rng() | 1);
          if (::pwrite(fd, &junk, 1, static_cast<off_t>(rng() % static_cast<std::uint64_t>(size))) == 1) ++corrupted;
          break;
        }
        case 1:  // truncate
          if (::ftruncate(fd, size / 2) == 0) ++corrupted;
          break;
        case 2:  // empty
          if (::ftruncate(fd, 0) == 0) ++corrupted;
          break;
        default: {  // garbage over the header
          const char garbage[] = "\x89garbage\0\xff not an entry";
          if (::pwrite(fd, garbage, sizeof garbage, 0) > 0) ++corrupted;
          break;
        }
      }
      ::close(fd);
    }
  });
  const WorkersRun run = finish_all(workers);  // every call succeeded (checked inside), whatever was corrupted
  done = true;
  corrupter.join();
  std::printf("  corrupted %d entries while the workers ran; they detected %.0f\n", corrupted.load(),
              run.sum.at("corrupt_rebuilt"));
  EXPECT_GT(corrupted.load(), 0);

  // A last prewarm pass rebuilds whatever the corrupter damaged after the workers read it.
  std::vector<Worker> last;
  last.emplace_back(std::vector<std::string>{"--cache", root.string(), "--count",
                                             std::to_string(kOverlappingUnion), "--threads", "4"},
                    dir.path() / "last.err");
  finish_all(last);
  expect_clean(root, kOverlappingUnion);
}

TEST(CacheStress, KilledLockHolderIsTakenOverByAnotherProcess) {
  testing::TempDir dir;
  const fs::path root = dir.path() / "cache";
  const std::vector<std::string> one = {"--cache", root.string(), "--count", "1", "--threads", "1"};
  // The holder sleeps a minute holding the compile lock: long enough to be killed there.
  Worker holder(one, dir.path() / "holder.err", {"CONVJIT_TEST_HOLD_LOCK_MS=60000"});
  fs::path lock_file;
  const std::string record = fmt::format("pid {} on host ", holder.pid());
  for (const auto deadline = Clock::now() + std::chrono::seconds(60); lock_file.empty() && Clock::now() < deadline;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::error_code ec;
    for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().extension() != ".lock" || it->path().filename() == "cache.lock") continue;
      std::ifstream in(it->path());
      std::string line;
      std::getline(in, line);
      if (line.starts_with(record)) lock_file = it->path();
    }
  }
  ASSERT_FALSE(lock_file.empty()) << "the holder never took the lock\n" << holder.error_text();

  const auto start = Clock::now();
  // Debug logging says when the waiter starts waiting: the holder dies only after that,
  // however slowly a loaded machine starts the waiter.
  Worker waiter(one, dir.path() / "waiter.err", {"CONVJIT_LOG_LEVEL=debug"});
  bool waiting = false;
  for (const auto deadline = Clock::now() + std::chrono::seconds(30); !waiting && Clock::now() < deadline;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    waiting = waiter.error_text().find("waiting for pid ") != std::string::npos;
  }
  EXPECT_TRUE(waiting) << "the waiter never waited for the holder\n" << waiter.error_text();
  EXPECT_TRUE(waiter.running()) << "the waiter did not wait for the holder";
  holder.kill_now();  // SIGKILL while holding the lock: no cleanup runs

  Stats stats;
  std::string line;
  EXPECT_EQ(waiter.finish(stats, line), 0) << waiter.error_text();
  const auto took = Clock::now() - start;
  std::printf("  waiter: %s\n  finished %.1f s after it started\n", line.c_str(),
              std::chrono::duration<double>(took).count());
  EXPECT_EQ(stats["compiles"], 1) << "the waiter finished the work";
  EXPECT_EQ(stats["lock_waits"], 1);
  EXPECT_EQ(stats["lock_takeovers"], 1);
  EXPECT_EQ(stats["lock_timeouts"], 0) << "took over because the holder died, not because the wait ran out";
  EXPECT_LT(took, std::chrono::seconds(30));
  const std::string text = waiter.error_text();
  EXPECT_NE(text.find(fmt::format("took over the compile lock '{}' from {}", lock_file.string(), record)),
            std::string::npos)
      << text;
  std::printf("  waiter's warning: %s", text.c_str());
  expect_clean(root, 1);
}

TEST(CacheStress, EvictionKeepsTheCacheUnderItsLimitWhileProcessesReadAndWrite) {
  testing::TempDir dir;
  // The size of one entry, from a scratch cache.
  {
    std::vector<Worker> probe;
    probe.emplace_back(std::vector<std::string>{"--cache", (dir.path() / "probe").string(), "--count", "1",
                                                "--threads", "1"},
                       dir.path() / "probe.err");
    finish_all(probe);
  }
  const std::uint64_t one = DiskCache(dir.path() / "probe").total_size();
  const std::uint64_t limit = 12 * one;
  const fs::path root = dir.path() / "cache";
  std::printf("  limit %llu bytes (about 12 of %llu-byte entries) over %zu descriptors\n",
              static_cast<unsigned long long>(limit), static_cast<unsigned long long>(one), kOverlappingUnion);

  std::vector<Worker> workers = start_overlapping(root, dir.path(), limit);
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> largest{0};
  std::atomic<int> samples{0};
  std::thread monitor([&] {
    while (!fs::exists(root / fmt::format("v{}", kCacheFormatVersion) / "cache.lock") && !done) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const DiskCache cache(root, DiskCacheOptions{.max_bytes = limit});
    while (!done) {
      largest = std::max(largest.load(), cache.total_size());
      ++samples;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  const WorkersRun run = finish_all(workers);
  done = true;
  monitor.join();
  const DiskCache cache(root, DiskCacheOptions{.max_bytes = limit});
  std::printf("  %d samples of the cache size while running: largest %llu, final %llu, limit %llu\n", samples.load(),
              static_cast<unsigned long long>(largest.load()), static_cast<unsigned long long>(cache.total_size()),
              static_cast<unsigned long long>(limit));
  EXPECT_GT(run.sum.at("evictions"), 0);
  EXPECT_GT(samples.load(), 10);
  EXPECT_LE(largest.load(), limit);
  EXPECT_LE(cache.total_size(), limit);
  for (const auto& b : cache.verify_all()) ADD_FAILURE() << b.path << ": " << b.why;
}

}  // namespace
}  // namespace convjit
