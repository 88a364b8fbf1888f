// convjit with a remote cache: two nodes (two cache directories, one Redis) prewarm the
// KernelBench set, the second without compiling; `convjit cache stats` shows the remote
// cache's configuration and health; without hiredis (it is loaded at run time, and
// neither the command nor the tests link it) the command works on its local cache.
#include <elf.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>

#include "cache/redis_store.hpp"
#include "tests/cache/cache_test_util.hpp"
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

// The DT_NEEDED entries of a 64-bit ELF file: the libraries the loader must find before main.
std::vector<std::string> needed_libraries(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto at = [&](std::size_t offset, std::size_t size) {
    if (offset > bytes.size() || size > bytes.size() - offset) throw std::runtime_error(path + ": truncated ELF");
    return bytes.data() + offset;
  };
  Elf64_Ehdr header;
  std::memcpy(&header, at(0, sizeof header), sizeof header);
  if (std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0 || header.e_ident[EI_CLASS] != ELFCLASS64) {
    throw std::runtime_error(path + ": not a 64-bit ELF file");
  }
  std::vector<std::string> out;
  for (std::size_t i = 0; i < header.e_shnum; ++i) {
    Elf64_Shdr dynamic;
    std::memcpy(&dynamic, at(header.e_shoff + i * header.e_shentsize, sizeof dynamic), sizeof dynamic);
    if (dynamic.sh_type != SHT_DYNAMIC) continue;
    Elf64_Shdr strings;
    std::memcpy(&strings, at(header.e_shoff + dynamic.sh_link * header.e_shentsize, sizeof strings), sizeof strings);
    for (std::size_t offset = 0; offset + sizeof(Elf64_Dyn) <= dynamic.sh_size; offset += sizeof(Elf64_Dyn)) {
      Elf64_Dyn entry;
      std::memcpy(&entry, at(dynamic.sh_offset + offset, sizeof entry), sizeof entry);
      if (entry.d_tag == DT_NULL) break;
      if (entry.d_tag == DT_NEEDED) out.emplace_back(at(strings.sh_offset + entry.d_un.d_val, 1));
    }
  }
  return out;
}

TEST(CliRemoteCache, NeitherTheCommandNorTheTestsNeedLibhiredisToLoad) {
  for (const char* binary : {CONVJIT_CLI_PATH, "/proc/self/exe"}) {
    const std::vector<std::string> needed = needed_libraries(binary);
    EXPECT_FALSE(needed.empty()) << binary;  // the reader works: libc at least
    for (const std::string& library : needed) EXPECT_FALSE(contains(library, "hiredis")) << binary << ": " << library;
  }
}

TEST(CliRemoteCache, WithoutHiredisStatsSaysTheRemoteIsUnavailableAndPrewarmCompilesLocally) {
  if (!redis_support_built()) GTEST_SKIP() << "built without hiredis's headers: the remote cache is compiled out";
  TempDir dir;
  const std::string missing = "/nonexistent/convjit-test/libhiredis.so.0";
  std::vector<std::string> env =
      remote_env("redis://127.0.0.1:" + std::to_string(closed_port()) + "/0", unique_prefix("no-hiredis"));
  env.push_back("CONVJIT_HIREDIS_LIBRARY=" + missing);

  const CliResult prewarm = run_cli(
      {"prewarm", "--shape", kSmallA, "--shape", kSmallB, "--arch", "sm_90", "--dir", dir.path().string()}, env);
  ASSERT_EQ(prewarm.exit_code, 0) << prewarm.out << prewarm.err;
  EXPECT_EQ(summary_counts(prewarm.out), std::make_pair(2, 0)) << prewarm.out;
  const std::string both = prewarm.out + prewarm.err;
  EXPECT_EQ(count_of(both, "remote cache disabled: cannot load hiredis"), 1u) << both;
  EXPECT_TRUE(contains(both, missing + ": cannot open shared object file")) << both;

  const CliResult stats = run_cli({"cache", "stats", "--dir", dir.path().string()}, env);
  EXPECT_EQ(stats.exit_code, 1) << stats.out << stats.err;
  EXPECT_TRUE(contains(stats.out, "entries    2,")) << stats.out;
  EXPECT_TRUE(
      contains(stats.out, "remote     off: cannot load hiredis, so the remote cache is unavailable: " + missing))
      << stats.out;
}

}  // namespace
}  // namespace convjit::testing
