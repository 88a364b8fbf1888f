// convjit with a remote cache: two nodes (two cache directories, one Redis) prewarm the
// KernelBench set, the second without compiling; `convjit cache stats` shows the remote
// cache's configuration and health.
#include <gtest/gtest.h>

#include <regex>

#include "tests/cache/redis_test_util.hpp"
#include "tools/cli_runner.hpp"

namespace convjit::testing {
namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::vector<std::string> remote_env(const std::string& url, const std::string& prefix) {
  return {"CONVJIT_REMOTE_CACHE=" + url, std::string("CONVJIT_REMOTE_CACHE_KEY=") + kTestMacKey,
          "CONVJIT_REMOTE_CACHE_PREFIX=" + prefix, "CONVJIT_PROGRESS"};
}

// "summary   compiled 13, already cached 0, ..., 6.1 s wall" -> {13, 0}
std::pair<int, int> summary_counts(const std::string& out) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(R"(summary   compiled (\d+), already cached (\d+),)"))) return {-1, -1};
  return {std::stoi(m[1]), std::stoi(m[2])};
}

TEST(CliRemoteCache, TwoNodesOneRedisTheSecondPrewarmsKernelBenchWithoutCompiling) {
  CONVJIT_SHARED_REDIS_OR_SKIP(url);
  TempDir dir;
  const std::string prefix = unique_prefix("two-nodes");
  const auto env = remote_env(url, prefix);

  const CliResult first =
      run_cli({"prewarm", CONVJIT_WORKLOADS_FILE, "--arch", "sm_90", "--dir", (dir.path() / "node1").string()}, env);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  const auto [compiled, cached] = summary_counts(first.out);
  ASSERT_GT(compiled, 0) << first.out;
  EXPECT_EQ(cached, 0) << first.out;
  EXPECT_TRUE(contains(first.out, "remote    hits 0, misses " + std::to_string(compiled) + ", rejects 0")) << first.out;
  EXPECT_TRUE(contains(first.out, "publishes " + std::to_string(compiled) + ",")) << first.out;

  const CliResult second =
      run_cli({"prewarm", CONVJIT_WORKLOADS_FILE, "--arch", "sm_90", "--dir", (dir.path() / "node2").string()}, env);
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  EXPECT_EQ(summary_counts(second.out), std::make_pair(0, compiled)) << second.out;
  EXPECT_TRUE(contains(second.out, "runtime   compiles 0 (")) << second.out;
  EXPECT_TRUE(contains(second.out, "remote    hits " + std::to_string(compiled) + ", misses 0, rejects 0"))
      << second.out;
  EXPECT_TRUE(contains(second.out, "publishes 0,")) << second.out;

  std::smatch m;
  const std::regex wall(R"(summary .* ([0-9.]+ m?s|[0-9]+m[0-9]+s) wall)");
  std::printf("  node 1: %s\n  node 2: %s\n", std::regex_search(first.out, m, wall) ? m[0].str().c_str() : "?",
              std::regex_search(second.out, m, wall) ? m[0].str().c_str() : "?");
  RedisClient(url).remove_all(prefix);
}

TEST(CliRemoteCache, CacheStatsShowsTheRemoteCacheAndItsHealth) {
  CONVJIT_SHARED_REDIS_OR_SKIP(url);
  TempDir dir;
  const std::string prefix = unique_prefix("stats");
  const auto env = remote_env(url, prefix);
  ASSERT_EQ(run_cli({"prewarm", "--shape", kSmallA, "--arch", "sm_90", "--dir", dir.path().string()}, env).exit_code,
            0);
  const CliResult r = run_cli({"cache", "stats", "--dir", dir.path().string()}, env);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "entries    1,")) << r.out;  // the disk part, as before
  EXPECT_TRUE(contains(r.out, "remote     " + url.substr(0, url.rfind('/')))) << r.out;
  EXPECT_TRUE(contains(r.out, "(read-write, entries signed with the key from CONVJIT_REMOTE_CACHE_KEY)")) << r.out;
  EXPECT_TRUE(contains(r.out, "server     Redis ")) << r.out;
  EXPECT_TRUE(contains(r.out, "entries    1 of format v2 under '" + prefix + "', 0 fleet locks held")) << r.out;
  RedisClient(url).remove_all(prefix);
}

TEST(CliRemoteCache, CacheStatsExitsWithOneWhenTheRemoteCacheCannotBeUsed) {
  TempDir dir;
  const std::string refused = "redis://127.0.0.1:" + std::to_string(closed_port()) + "/0";
  CliResult r = run_cli({"cache", "stats", "--dir", dir.path().string()},
                        {"CONVJIT_REMOTE_CACHE=" + refused, "CONVJIT_REMOTE_CACHE_KEY"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "remote     off: '" + refused + "' is configured but no key")) << r.out;

  r = run_cli({"cache", "stats", "--dir", dir.path().string()}, remote_env(refused, "p:"));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "unreachable")) << r.out;
}

}  // namespace
}  // namespace convjit::testing
