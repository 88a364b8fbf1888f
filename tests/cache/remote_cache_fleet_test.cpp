// A fleet of processes on one Redis, for real: each runs convjit_cache_stress_worker
// with a cache directory of its own (separate machines, as far as the disk cache
// knows) and the remote cache from the environment. A cold fleet compiles each kernel
// once (vLLM and SGLang users report minutes of JIT at every cold start); a Redis that
// dies mid-prewarm fails no request; a fleet lock whose holder died is taken over.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cache/cache_key.hpp"
#include "cache/disk_cache.hpp"
#include "convjit/convjit.hpp"
#include "support/temp_dir.hpp"
#include "tests/cache/redis_test_util.hpp"
#include "tests/cache/worker_process.hpp"

namespace convjit {
namespace {

namespace fs = std::filesystem;
using testing::finish_all;
using testing::kTestMacKey;
using testing::RedisClient;
using testing::start_together;
using testing::Worker;
using testing::WorkersRun;
using Stats = testing::WorkerStats;

std::vector<std::string> remote_env(const std::string& url, const std::string& prefix) {
  return {"CONVJIT_REMOTE_CACHE=" + url, std::string("CONVJIT_REMOTE_CACHE_KEY=") + kTestMacKey,
          "CONVJIT_REMOTE_CACHE_PREFIX=" + prefix};
}

// Descriptor i of the worker's set (cache_stress_worker.cpp).
Conv2dDesc worker_desc(int i) {
  return Conv2dDesc{.n = 1, .c = 1 + i % 4, .h = 6 + i / 4, .w = 5, .k = 2, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
}

void expect_directory_holds(const fs::path& root, std::size_t expected) {
  const DiskCache cache(root);
  for (const auto& bad : cache.verify_all()) ADD_FAILURE() << bad.path << ": " << bad.why;
  EXPECT_EQ(cache.list().size(), expected) << root;
}

TEST(RemoteCacheFleet, EightProcessesOnEightEmptyDirectoriesCompileEachOf50ProblemsOnce) {
  CONVJIT_SHARED_REDIS_OR_SKIP(url);
  testing::TempDir dir;
  const std::string prefix = testing::unique_prefix("cold-fleet");
  RedisClient client(url);
  std::vector<Worker> workers;
  for (int w = 0; w < 8; ++w) {
    workers.emplace_back(
        std::vector<std::string>{"--cache", (dir.path() / fmt::format("node{}", w)).string(), "--count", "50",
                                 "--threads", "4", "--seed", std::to_string(w + 1), "--start-gate", "1"},
        dir.path() / fmt::format("node{}.err", w), remote_env(url, prefix));
  }
  start_together(workers);
  const WorkersRun run = finish_all(workers);
  EXPECT_EQ(run.sum.at("compiles"), 50) << "one compile per problem across the fleet";
  EXPECT_EQ(run.sum.at("remote_publishes"), 50);
  EXPECT_EQ(run.sum.at("remote_misses"), 50);
  EXPECT_EQ(run.sum.at("remote_hits"), 7 * 50) << "every other node fetched each kernel from Redis";
  EXPECT_EQ(run.sum.at("remote_rejects"), 0);
  EXPECT_EQ(run.sum.at("remote_unavailable"), 0);
  EXPECT_EQ(run.sum.at("remote_lock_timeouts"), 0);
  EXPECT_EQ(run.sum.at("remote_lock_takeovers"), 0);
  EXPECT_GT(run.sum.at("remote_lock_waits"), 0) << "the nodes never met: not a concurrency test";
  for (int w = 0; w < 8; ++w) expect_directory_holds(dir.path() / fmt::format("node{}", w), 50);
  const auto keys = client.keys(prefix);
  EXPECT_EQ(keys.size(), 50u) << "50 entries and no fleet lock left behind";
  client.remove_all(prefix);
}

TEST(RemoteCacheFleet, RedisKilledMidPrewarmFailsNoProblemAndCostsABoundedTime) {
  CONVJIT_REDIS_SERVER_OR_SKIP();
  testing::RedisServer server;
  testing::TempDir dir;
  const std::string prefix = testing::unique_prefix("killed");
  const auto env = remote_env(server.url(), prefix);

  // A builder publishes problems 0..19.
  {
    std::vector<Worker> builder;
    builder.emplace_back(
        std::vector<std::string>{"--cache", (dir.path() / "builder").string(), "--count", "20", "--threads", "2"},
        dir.path() / "builder.err", env);
    const WorkersRun run = finish_all(builder);
    ASSERT_EQ(run.sum.at("remote_publishes"), 20);
  }
  // A fresh node prewarms 0..39, one problem at a time: the first 20 are in Redis.
  // Redis is killed (SIGKILL) once 10 are done, in the middle of whatever it was doing.
  Worker node({"--cache", (dir.path() / "node").string(), "--count", "40", "--threads", "1", "--progress", "1"},
              dir.path() / "node.err", env);
  for (int done = 0; done < 10; ++done) ASSERT_TRUE(node.read_line()) << node.error_text();
  server.kill_now();
  Stats stats;
  std::string line;
  EXPECT_EQ(node.finish(stats, line), 0) << node.error_text();
  std::printf("  node: %s\n", line.c_str());
  const double extra_ms = stats["wall_ms"] - stats["compile_ms"];
  std::printf("  %.0f ms wall, %.0f ms in NVRTC, %.0f ms in remote calls\n", stats["wall_ms"], stats["compile_ms"],
              stats["remote_ms"]);
  EXPECT_EQ(stats["failed"], 0) << "every problem succeeds";
  EXPECT_GE(stats["remote_hits"], 1) << "some came from Redis before it died";
  EXPECT_GE(stats["remote_unavailable"], 1) << "some were compiled because it died";
  EXPECT_EQ(stats["remote_hits"] + stats["remote_misses"] + stats["remote_unavailable"], 40);
  EXPECT_EQ(stats["compiles"], 40 - stats["remote_hits"]);
  EXPECT_GE(stats["remote_errors"], 1);
  // A dead server refuses connections at once: its whole cost is a few milliseconds a
  // probe, and probes come once per back-off.
  EXPECT_LT(stats["remote_ms"], 2000);
  EXPECT_LT(extra_ms, 10000) << "time beyond NVRTC's, for 40 problems";
  const std::string text = node.error_text();
  EXPECT_NE(text.find("the remote cache " + server.url() + " failed"), std::string::npos) << text;
}

TEST(RemoteCacheFleet, ALockWhoseHolderDiedIsTakenOverWhenItsLeaseRunsOut) {
  CONVJIT_SHARED_REDIS_OR_SKIP(url);
  testing::TempDir dir;
  const std::string prefix = testing::unique_prefix("takeover");
  RedisClient client(url);
  std::string key_hash;
  {
    RuntimeOptions options;
    options.disk_cache = false;
    options.remote_cache = "off";
    Runtime local(options);
    key_hash = local.inspect(worker_desc(0), "sm_90").key_hash;
  }
  const std::string lock = prefix + "v" + std::to_string(kCacheFormatVersion) + ":" + key_hash + ":lock";
  // A holder that died: its lease is long, and nobody renews it.
  client.command({"SET", lock, "0123abcd pid 424242 on host dead-node since 2025-01-01T00:00:00Z", "PX", "60000"});

  auto env = remote_env(url, prefix);
  env.push_back("CONVJIT_LOG_LEVEL=debug");
  Worker waiter({"--cache", (dir.path() / "waiter").string(), "--count", "1", "--threads", "1"}, /*stderr: pipe*/ {},
                env);
  bool waiting = false;
  while (!waiting) {
    const auto line = waiter.read_error_line();
    ASSERT_TRUE(line) << "the worker ended without waiting for the lock\n" << waiter.error_text();
    waiting = line->find("waiting for pid 424242 on host dead-node") != std::string::npos &&
              line->find("fleet lock") != std::string::npos;
  }
  // The lease runs out, as the dead holder's would.
  client.command({"PEXPIRE", lock, "200"});
  Stats stats;
  std::string line;
  EXPECT_EQ(waiter.finish(stats, line), 0) << waiter.error_text();
  std::printf("  waiter: %s\n", line.c_str());
  EXPECT_EQ(stats["compiles"], 1) << "the waiter finished the work";
  EXPECT_EQ(stats["remote_lock_waits"], 1);
  EXPECT_EQ(stats["remote_lock_takeovers"], 1);
  EXPECT_EQ(stats["remote_lock_timeouts"], 0) << "took over because the lease ran out, not because the wait did";
  EXPECT_EQ(stats["remote_publishes"], 1);
  const std::string text = waiter.error_text();
  EXPECT_NE(text.find("took over the fleet compile lock '" + lock + "' from pid 424242 on host dead-node"),
            std::string::npos)
      << text;
  EXPECT_FALSE(client.command({"GET", lock})) << "released after publishing";
  client.remove_all(prefix);
}

}  // namespace
}  // namespace convjit
