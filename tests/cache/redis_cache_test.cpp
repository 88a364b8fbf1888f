// The remote cache on a real Redis, in this process: the store's commands, nodes that
// share kernels, entries tampered with in the store, a read-only node, and servers
// that fail (one that never answers, a port nobody listens on). The multi-process
// cases (a cold fleet, Redis killed mid-prewarm): remote_cache_fleet_test.cpp.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <vector>

#include "cache/cache_key.hpp"
#include "cache/redis_store.hpp"
#include "cache/redis_url.hpp"
#include "convjit/convjit.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"
#include "tests/cache/cache_test_util.hpp"
#include "tests/cache/redis_test_util.hpp"

namespace convjit {
namespace {

namespace fs = std::filesystem;
using testing::CapturedWarnings;
using testing::kTestMacKey;
using testing::RedisClient;
using testing::ScopedEnv;
using testing::TempDir;
using Clock = std::chrono::steady_clock;
using Status = RemoteStore::Status;

#define CONVJIT_HIREDIS_OR_SKIP() \
  if (const std::string missing = redis_unavailable_reason(); !missing.empty()) GTEST_SKIP() << missing

// Small problems that compile fast, all distinct (as the stress worker's).
Conv2dDesc small_desc(int i) {
  return Conv2dDesc{.n = 1, .c = 1 + i % 4, .h = 6 + i / 4, .w = 5, .k = 2, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
}
std::vector<Conv2dDesc> small_descs(int first, int count) {
  std::vector<Conv2dDesc> out;
  for (int i = first; i < first + count; ++i) out.push_back(small_desc(i));
  return out;
}

// A node: a Runtime with a cache directory of its own and the shared Redis.
RuntimeOptions node_options(const fs::path& dir, const std::string& url, const std::string& key = kTestMacKey) {
  RuntimeOptions options;
  options.cache_dir = dir;
  options.remote_cache = url;
  options.remote_cache_key = key;
  return options;
}

// The Redis key of a problem's entry.
std::string entry_key_of(Runtime& rt, const Conv2dDesc& desc, const std::string& prefix) {
  return prefix + "v" + std::to_string(kCacheFormatVersion) + ":" + rt.inspect(desc, "sm_90").key_hash;
}

// Each test keeps to a prefix of its own on the shared server and removes it afterwards.
class SharedRedis : public ::testing::Test {
 protected:
  void SetUp() override {
    CONVJIT_HIREDIS_OR_SKIP();
    const auto url = testing::shared_redis_url();
    if (!url) {
      GTEST_SKIP() << "no Redis server for the remote cache tests: set CONVJIT_TEST_REDIS_URL=redis://127.0.0.1:PORT "
                      "or run ./scripts/test.sh with redis-server installed (it starts one)";
    }
    url_ = *url;
    prefix_ = testing::unique_prefix(::testing::UnitTest::GetInstance()->current_test_info()->name());
    prefix_env_ = std::make_unique<ScopedEnv>("CONVJIT_REMOTE_CACHE_PREFIX", prefix_.c_str());
    client_ = std::make_unique<RedisClient>(url_);
  }
  void TearDown() override {
    if (client_) client_->remove_all(prefix_);
  }

  std::string url_;
  std::string prefix_;
  std::unique_ptr<ScopedEnv> prefix_env_;
  std::unique_ptr<RedisClient> client_;
  TempDir dir_;
};

TEST_F(SharedRedis, StoreCommandsGetPutLockRenewAndReleaseOnARealServer) {
  auto store = make_redis_store(RedisStoreOptions{.url = parse_redis_url(url_)});
  const std::string key = prefix_ + "k";
  EXPECT_EQ(store->get(key).status, Status::kNo);
  const std::string binary("a\0b\r\n\xff", 6);
  EXPECT_EQ(store->put(key, binary, std::chrono::seconds(60)).status, Status::kOk);
  const auto got = store->get(key);
  EXPECT_EQ(got.status, Status::kOk);
  EXPECT_EQ(got.value, binary);

  const std::string lock = prefix_ + "lock";
  EXPECT_EQ(store->put_if_absent(lock, "mine", std::chrono::seconds(60)).status, Status::kOk);
  EXPECT_EQ(store->put_if_absent(lock, "theirs", std::chrono::seconds(60)).status, Status::kNo);
  EXPECT_EQ(store->expire_if_equals(lock, "theirs", std::chrono::seconds(60)).status, Status::kNo);
  EXPECT_EQ(store->expire_if_equals(lock, "mine", std::chrono::seconds(120)).status, Status::kOk);
  const long long ttl = std::stoll(client_->command({"PTTL", lock}).value());
  EXPECT_GT(ttl, 60'000);
  EXPECT_EQ(store->remove_if_equals(lock, "theirs").status, Status::kNo);
  EXPECT_EQ(store->remove_if_equals(lock, "mine").status, Status::kOk);
  EXPECT_EQ(store->get(lock).status, Status::kNo);

  std::vector<std::string> keys;
  EXPECT_EQ(store->keys(prefix_, keys).status, Status::kOk);
  EXPECT_EQ(keys, std::vector<std::string>{key});
  EXPECT_EQ(store->ping().status, Status::kOk);
  const auto info = store->info();
  EXPECT_NE(info.value.find("redis_version:"), std::string::npos);
}

TEST_F(SharedRedis, TwoNodesWithSeparateDirectoriesShareKernelsThroughRedis) {
  const auto descs = small_descs(0, 3);
  Runtime first(node_options(dir_.path() / "a", url_));
  ASSERT_EQ(first.prewarm(descs, "sm_90").compiled, 3u);
  EXPECT_EQ(first.stats().remote_publishes, 3u);
  EXPECT_EQ(first.stats().remote_misses, 3u);
  EXPECT_EQ(first.stats().remote_mode, RemoteCacheMode::kReadWrite);

  Runtime second(node_options(dir_.path() / "b", url_));
  const PrewarmResult result = second.prewarm(descs, "sm_90");
  const CacheStats s = second.stats();
  EXPECT_EQ(result.compiled, 0u);
  EXPECT_EQ(result.already_cached, 3u);
  EXPECT_EQ(s.compiles, 0u);
  EXPECT_EQ(s.remote_hits, 3u);
  EXPECT_EQ(s.misses, 0u);
  EXPECT_EQ(s.disk_writes, 3u) << "what the remote served is kept on the local disk";
  EXPECT_GT(s.compile_ms_saved, 0);

  Runtime third(node_options(dir_.path() / "b", url_));  // the same host again: the disk serves it
  third.prewarm(descs, "sm_90");
  EXPECT_EQ(third.stats().disk_hits, 3u);
  EXPECT_EQ(third.stats().remote_hits, 0u);
}

// A node with an empty directory gets a bad entry from Redis: it refuses it, builds the
// kernel, and publishes the good entry over the bad one, which a third node then uses.
void expect_rejected_then_repaired(const std::string& url, const fs::path& dir, const Conv2dDesc& desc,
                                   const std::string& entry_key, const std::string& why) {
  CapturedWarnings warnings;
  Runtime victim(node_options(dir / "victim", url));
  const PrewarmResult result = victim.prewarm(std::span(&desc, 1), "sm_90");
  const CacheStats s = victim.stats();
  const std::string text = warnings.text();
  EXPECT_EQ(result.failed, 0u);
  EXPECT_EQ(s.remote_rejects, 1u);
  EXPECT_EQ(s.remote_hits, 0u);
  EXPECT_EQ(s.compiles, 1u) << "rebuilt locally";
  EXPECT_EQ(s.remote_publishes, 1u) << "the good entry replaces the bad one";
  EXPECT_NE(text.find("remote cache entry '" + entry_key + "'"), std::string::npos) << text;
  EXPECT_NE(text.find(why), std::string::npos) << text;

  Runtime next(node_options(dir / "next", url));
  next.prewarm(std::span(&desc, 1), "sm_90");
  EXPECT_EQ(next.stats().remote_hits, 1u);
  EXPECT_EQ(next.stats().compiles, 0u);
}

TEST_F(SharedRedis, AnEntryWithFlippedBytesIsRejectedAndRebuiltLocally) {
  const Conv2dDesc desc = small_desc(10);
  Runtime writer(node_options(dir_.path() / "writer", url_));
  const std::string key = entry_key_of(writer, desc, prefix_);
  std::string value = client_->command({"GET", key}).value();
  for (std::size_t i = value.size() / 3; i < value.size() / 3 + 4; ++i) value[i] = static_cast<char>(value[i] ^ 0x5a);
  client_->command({"SET", key, value});
  expect_rejected_then_repaired(url_, dir_.path(), desc, key, "its MAC does not verify");
}

TEST_F(SharedRedis, AValidEntryStoredUnderAnotherKeyIsRejectedAndRebuiltLocally) {
  const Conv2dDesc wanted = small_desc(11);
  const Conv2dDesc other = small_desc(12);
  Runtime writer(node_options(dir_.path() / "writer", url_));
  const std::string wanted_key = entry_key_of(writer, wanted, prefix_);
  const std::string other_key = entry_key_of(writer, other, prefix_);
  // Authentic, correctly MACed, but the kernel of another problem.
  client_->command({"SET", wanted_key, client_->command({"GET", other_key}).value()});
  expect_rejected_then_repaired(url_, dir_.path(), wanted, wanted_key, "it holds the entry of another key");
}

TEST_F(SharedRedis, AnEntryMacedWithTheWrongKeyIsRejectedAndRebuiltLocally) {
  const Conv2dDesc desc = small_desc(13);
  // Someone who can write to Redis but does not hold the fleet's key publishes first.
  Runtime forger(node_options(dir_.path() / "forger", url_, "not-the-fleet-key-0123456789"));
  const std::string key = entry_key_of(forger, desc, prefix_);
  EXPECT_EQ(forger.stats().remote_publishes, 1u);
  expect_rejected_then_repaired(url_, dir_.path(), desc, key, "its MAC does not verify");
}

TEST_F(SharedRedis, AReadOnlyNodeNeverWritesToRedis) {
  // The read-only node logs in as a Redis ACL user that may only GET (and PING) keys
  // of this test: a single write attempt would be refused and counted as an error.
  const std::string user = "convjit-ro-" + std::to_string(::getpid());
  try {
    client_->command({"ACL", "SETUSER", user, "reset", "on", ">ro-password", "~" + prefix_ + "*", "+get", "+ping"});
  } catch (const std::exception& e) {
    GTEST_SKIP() << "this Redis refuses ACL SETUSER (" << e.what() << "); needs Redis 6 or newer and admin rights";
  }
  struct DropUser {
    RedisClient& client;
    std::string user;
    ~DropUser() { client.command({"ACL", "DELUSER", user}); }
  } drop{*client_, user};
  RedisUrl readonly_url = parse_redis_url(url_);
  readonly_url.user = user;
  readonly_url.password = "ro-password";
  const std::string ro_url = "redis://" + user + ":ro-password@" + readonly_url.host + ":" +
                             std::to_string(readonly_url.port) + "/" + std::to_string(readonly_url.db);

  // Two entries present, one tampered with, one absent.
  const auto descs = small_descs(20, 4);
  {
    Runtime writer(node_options(dir_.path() / "writer", url_));
    writer.prewarm(std::span(descs).subspan(0, 3), "sm_90");
    const std::string tampered = entry_key_of(writer, descs[2], prefix_);
    client_->command({"SET", tampered, "garbage"});
  }
  const auto before = client_->snapshot(prefix_);
  ASSERT_EQ(before.size(), 3u);

  CapturedWarnings warnings;
  RuntimeOptions options = node_options(dir_.path() / "reader", ro_url);
  options.remote_cache_readonly = true;
  Runtime reader(options);
  const PrewarmResult result = reader.prewarm(descs, "sm_90");
  const CacheStats s = reader.stats();
  warnings.text();
  EXPECT_EQ(result.failed, 0u);
  EXPECT_EQ(s.remote_mode, RemoteCacheMode::kReadOnly);
  EXPECT_EQ(s.remote_hits, 2u);
  EXPECT_EQ(s.remote_rejects, 1u);
  EXPECT_EQ(s.remote_misses, 1u);
  EXPECT_EQ(s.compiles, 2u);
  EXPECT_EQ(s.remote_publishes, 0u);
  EXPECT_EQ(s.remote_errors, 0u) << "a write was attempted and refused by the ACL";
  EXPECT_EQ(client_->snapshot(prefix_), before) << "the read-only node changed the store";

  // The ACL really forbids writing: a node that is not read-only, with the same user, is refused.
  CapturedWarnings refused;
  Runtime writer_as_reader(node_options(dir_.path() / "x", ro_url));
  const Conv2dDesc fresh = small_desc(30);
  EXPECT_EQ(writer_as_reader.prewarm(std::span(&fresh, 1), "sm_90").failed, 0u);
  EXPECT_GE(writer_as_reader.stats().remote_errors, 1u);
  EXPECT_NE(refused.text().find("NOPERM"), std::string::npos);
}

// ---- Servers that fail. A kernel request never fails because of them, and the time
// they cost is bounded: one timeout per back-off (1 s, doubling), not one per kernel.

TEST(RedisFaults, ASilentServerCostsABoundedTimeAndEveryProblemSucceeds) {
  CONVJIT_HIREDIS_OR_SKIP();
  testing::SilentServer silent;
  TempDir dir;
  constexpr int kProblems = 16;
  const auto timeout = std::chrono::milliseconds(400);
  RuntimeOptions options = node_options(dir.path(), silent.url());
  options.remote_cache_timeout = timeout;
  CapturedWarnings warnings;
  Runtime rt(options);
  const auto start = Clock::now();
  const PrewarmResult result = rt.prewarm(small_descs(40, kProblems), "sm_90");
  const double wall_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  const CacheStats s = rt.stats();
  const std::string text = warnings.text();
  const double extra_ms = wall_ms - s.compile_ms;
  std::printf(
      "  %d problems in %.0f ms, %.0f ms of it in NVRTC; %.0f ms in remote calls; timeouts %llu, skipped "
      "%llu\n",
      kProblems, wall_ms, s.compile_ms, s.remote_ms, static_cast<unsigned long long>(s.remote_timeouts),
      static_cast<unsigned long long>(s.remote_skipped));
  EXPECT_EQ(result.failed, 0u);
  EXPECT_EQ(result.compiled, static_cast<std::size_t>(kProblems));
  EXPECT_EQ(s.remote_unavailable, static_cast<std::uint64_t>(kProblems));
  EXPECT_GE(s.remote_timeouts, 1u);
  // Back-offs of 1, 2, 4, 8... s after each probe: at most 2 + log2(wall in s) probes.
  const double probes_allowed = 2 + std::log2(std::max(1.0, wall_ms / 1000));
  EXPECT_LE(static_cast<double>(s.remote_timeouts), probes_allowed);
  EXPECT_GE(s.remote_skipped, kProblems - s.remote_timeouts);
  // Each probe costs one timeout; without the back-off it would be one per problem
  // (16 x 400 ms), which these bounds exclude.
  EXPECT_LE(s.remote_ms, static_cast<double>(s.remote_timeouts) * (timeout.count() + 300));
  EXPECT_LT(extra_ms, 4000) << "time beyond NVRTC's";
  EXPECT_EQ(testing::count_of(text, "failed ("), 1u) << "one warning for the outage\n" << text;
}

TEST(RedisFaults, ARefusedConnectionCostsAlmostNothing) {
  CONVJIT_HIREDIS_OR_SKIP();
  TempDir dir;
  const std::string url = "redis://127.0.0.1:" + std::to_string(testing::closed_port()) + "/0";
  CapturedWarnings warnings;
  Runtime rt(node_options(dir.path(), url));
  const PrewarmResult result = rt.prewarm(small_descs(60, 4), "sm_90");
  const CacheStats s = rt.stats();
  const std::string text = warnings.text();
  EXPECT_EQ(result.failed, 0u);
  EXPECT_EQ(result.compiled, 4u);
  EXPECT_EQ(s.remote_unavailable, 4u);
  EXPECT_GE(s.remote_errors, 1u);
  EXPECT_EQ(s.remote_errors + s.remote_skipped, 4u) << "each request either probed or skipped";
  EXPECT_LT(s.remote_ms, 200.0 * static_cast<double>(s.remote_errors)) << "a refused connect is immediate";
  EXPECT_NE(text.find("Connection refused"), std::string::npos) << text;
}

TEST(RedisFaults, NoServerAtConstructionCostsNothingAndNeverThrows) {
  CONVJIT_HIREDIS_OR_SKIP();
  testing::SilentServer silent;
  TempDir dir;
  RuntimeOptions options = node_options(dir.path(), silent.url());
  options.remote_cache_timeout = std::chrono::seconds(3);
  const auto start = Clock::now();
  Runtime rt(options);  // connects lazily: one command would take the whole 3 s
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(1500));
  EXPECT_EQ(rt.stats().remote_mode, RemoteCacheMode::kReadWrite);
  EXPECT_EQ(rt.stats().remote_note, silent.url());
}

}  // namespace
}  // namespace convjit
