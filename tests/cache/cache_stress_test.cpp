// Many processes on one cache directory, for real: each runs
// convjit_cache_stress_worker (a Runtime prewarming or inspecting from 4 threads).
// Peers fail exactly here: 8 ranks on a cold cache each compile, or die on the
// loser's side of a rename (DeepGEMM #301, DeepEP #683, triton #2688); a lock left by
// a killed process hangs every later start (flashinfer #972).
// Run ten in a row with tests/cache/stress_10x.sh.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "cache/cache_key.hpp"
#include "cache/disk_cache.hpp"
#include "support/temp_dir.hpp"
#include "tests/cache/worker_process.hpp"

namespace convjit {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Stats = testing::WorkerStats;
using testing::finish_all;
using testing::follow_progress;
using testing::start_together;
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
// odd ones inspect and check what they got; two passes (the second from disk). With
// `progress`, each says "done <i>" after every descriptor (follow_progress).
std::vector<Worker> start_overlapping(const fs::path& root, const fs::path& logs, bool progress,
                                      std::uint64_t max_bytes = 0) {
  std::vector<Worker> workers;
  for (int w = 0; w < 8; ++w) {
    std::vector<std::string> args = {"--cache",      root.string(),
                                     "--first",      std::to_string(w * 4),
                                     "--count",      "36",
                                     "--threads",    "4",
                                     "--passes",     "2",
                                     "--seed",       std::to_string(w + 1),
                                     "--mode",       w % 2 == 0 ? "prewarm" : "read",
                                     "--start-gate", "1",
                                     "--progress",   progress ? "1" : "0"};
    if (max_bytes != 0) args.insert(args.end(), {"--max-bytes", std::to_string(max_bytes)});
    workers.emplace_back(args, logs / fmt::format("worker{}.err", w));
  }
  start_together(workers);
  return workers;
}
constexpr std::size_t kOverlappingUnion = 7 * 4 + 36;      // 64 distinct descriptors
constexpr int kOverlappingProgressLines = 8 * 2 * 4 * 36;  // workers x passes x threads x window

TEST(CacheStress, EightProcessesPrewarmingTheSame50DescriptorsCompileEachExactlyOnce) {
  testing::TempDir dir;
  const fs::path root = dir.path() / "cache";
  std::vector<Worker> workers;
  for (int w = 0; w < 8; ++w) {
    workers.emplace_back(std::vector<std::string>{"--cache", root.string(), "--count", "50", "--threads", "4", "--seed",
                                                  std::to_string(w + 1), "--start-gate", "1"},
                         dir.path() / fmt::format("worker{}.err", w));
  }
  start_together(workers);
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
  std::vector<Worker> workers = start_overlapping(root, dir.path(), /*progress=*/false);
  const WorkersRun run = finish_all(workers);
  EXPECT_EQ(run.sum.at("compiles"), kOverlappingUnion);
  EXPECT_EQ(run.sum.at("corrupt_rebuilt"), 0);
  expect_clean(root, kOverlappingUnion);
}

TEST(CacheStress, RandomCorruptionWhileRunningIsRebuiltAndTheFinalCacheVerifiesClean) {
  testing::TempDir dir;
  const fs::path root = dir.path() / "cache";
  std::vector<Worker> workers = start_overlapping(root, dir.path(), /*progress=*/true);
  // One entry damaged every fourth time a worker finishes a descriptor: while they run,
  // at a pace set by their progress (576 times, about what a 15 ms timer did). Every
  // line comes after a publication, so there is always something to damage.
  int corrupted = 0;
  int lines = 0;
  std::mt19937_64 rng(std::random_device{}());
  follow_progress(workers, [&](const std::string&) {
    if (++lines % 4 != 0) return;
    std::vector<fs::path> entries;
    std::error_code ec;
    for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().extension() == ".entry") entries.push_back(it->path());
    }
    if (entries.empty()) return;
    const fs::path victim = entries[rng() % entries.size()];
    const int fd = ::open(victim.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
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
  });
  const WorkersRun run = finish_all(workers);  // every call succeeded (checked inside), whatever was corrupted
  EXPECT_EQ(lines, kOverlappingProgressLines);
  std::printf("  corrupted %d entries while the workers ran; they detected %.0f\n", corrupted,
              run.sum.at("corrupt_rebuilt"));
  EXPECT_GT(corrupted, 0);

  // A last prewarm pass rebuilds whatever the corrupter damaged after the workers read it.
  std::vector<Worker> last;
  last.emplace_back(std::vector<std::string>{"--cache", root.string(), "--count", std::to_string(kOverlappingUnion),
                                             "--threads", "4"},
                    dir.path() / "last.err");
  finish_all(last);
  expect_clean(root, kOverlappingUnion);
}

TEST(CacheStress, KilledLockHolderIsTakenOverByAnotherProcess) {
  testing::TempDir dir;
  const fs::path root = dir.path() / "cache";
  const std::vector<std::string> one = {"--cache", root.string(), "--count", "1", "--threads", "1"};
  // The holder takes descriptor 0's compile lock as a compiling process does, says so,
  // and keeps it until it is killed: no timer decides how long it holds.
  std::vector<std::string> hold = one;
  hold.insert(hold.end(), {"--mode", "hold"});
  Worker holder(hold, dir.path() / "holder.err");
  const auto holding = holder.read_line();
  ASSERT_TRUE(holding && holding->starts_with("holding ")) << "the holder never took the lock\n" << holder.error_text();
  const fs::path lock_file = holding->substr(std::string_view("holding ").size());
  const std::string record = fmt::format("pid {} on host ", holder.pid());

  const auto start = Clock::now();
  // Debug logging, through a pipe, says when the waiter starts waiting: the holder dies
  // only after that, however slowly a loaded machine starts the waiter.
  Worker waiter(one, /*stderr: pipe*/ {}, {"CONVJIT_LOG_LEVEL=debug"});
  bool waiting = false;
  while (!waiting) {
    const auto line = waiter.read_error_line();
    if (!line) break;
    waiting = line->find("waiting for " + record) != std::string::npos;
  }
  ASSERT_TRUE(waiting) << "the waiter ended without waiting for the holder\n" << waiter.error_text();
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
    probe.emplace_back(
        std::vector<std::string>{"--cache", (dir.path() / "probe").string(), "--count", "1", "--threads", "1"},
        dir.path() / "probe.err");
    finish_all(probe);
  }
  const std::uint64_t one = DiskCache(dir.path() / "probe").total_size();
  const std::uint64_t limit = 12 * one;
  const fs::path root = dir.path() / "cache";
  std::printf("  limit %llu bytes (about 12 of %llu-byte entries) over %zu descriptors\n",
              static_cast<unsigned long long>(limit), static_cast<unsigned long long>(one), kOverlappingUnion);

  std::vector<Worker> workers = start_overlapping(root, dir.path(), /*progress=*/true, limit);
  // The size, measured each time a worker finishes a descriptor: while they run, at a
  // pace set by their progress (it used to be a timer). The first line comes after a
  // worker opened the cache, so the monitor never creates it.
  std::unique_ptr<const DiskCache> monitor;
  std::uint64_t largest = 0;
  int samples = 0;
  follow_progress(workers, [&](const std::string&) {
    if (!monitor) monitor = std::make_unique<const DiskCache>(root, DiskCacheOptions{.max_bytes = limit});
    largest = std::max(largest, monitor->total_size());
    ++samples;
  });
  const WorkersRun run = finish_all(workers);
  const DiskCache cache(root, DiskCacheOptions{.max_bytes = limit});
  std::printf("  %d samples of the cache size while running: largest %llu, final %llu, limit %llu\n", samples,
              static_cast<unsigned long long>(largest), static_cast<unsigned long long>(cache.total_size()),
              static_cast<unsigned long long>(limit));
  EXPECT_GT(run.sum.at("evictions"), 0);
  EXPECT_GT(samples, 10);
  EXPECT_EQ(samples, kOverlappingProgressLines) << "one measurement per finished descriptor";
  EXPECT_LE(largest, limit);
  EXPECT_LE(cache.total_size(), limit);
  for (const auto& b : cache.verify_all()) ADD_FAILURE() << b.path << ": " << b.why;
}

}  // namespace
}  // namespace convjit
