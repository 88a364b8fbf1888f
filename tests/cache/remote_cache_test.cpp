// The remote cache's protocol on an in-memory store: fetch, verify, publish, the
// fleet lock, the read-only mode and the back-off. Redis itself: redis_cache_test.cpp.
#include "cache/remote_cache.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "cache/remote_entry.hpp"
#include "convjit/error.hpp"
#include "tests/cache/cache_test_util.hpp"
#include "tests/cache/fake_remote_store.hpp"

namespace convjit {
namespace {

using testing::CapturedWarnings;
using testing::FakeRemoteStore;
using testing::test_entry;
using testing::test_key;
using Status = RemoteStore::Status;

constexpr const char* kMacKey = "fleet-key-for-the-tests-0123";

// A store shared by several nodes (RemoteCache objects), as a Redis is by a fleet.
struct Fleet {
  std::shared_ptr<FakeRemoteStore> owned = std::make_shared<FakeRemoteStore>();
  FakeRemoteStore* store = owned.get();

  // The store outlives the nodes: each node holds a forwarding handle to it.
  class Handle final : public RemoteStore {
   public:
    explicit Handle(std::shared_ptr<FakeRemoteStore> s) : s_(std::move(s)) {}
    Reply get(std::string_view k) override { return s_->get(k); }
    Reply put(std::string_view k, std::string_view v, std::chrono::milliseconds t) override { return s_->put(k, v, t); }
    Reply put_if_absent(std::string_view k, std::string_view v, std::chrono::milliseconds t) override {
      return s_->put_if_absent(k, v, t);
    }
    Reply expire_if_equals(std::string_view k, std::string_view v, std::chrono::milliseconds t) override {
      return s_->expire_if_equals(k, v, t);
    }
    Reply remove_if_equals(std::string_view k, std::string_view v) override { return s_->remove_if_equals(k, v); }
    Reply remove(std::string_view k) override { return s_->remove(k); }
    Reply ping() override { return s_->ping(); }
    Reply info() override { return s_->info(); }
    Reply keys(std::string_view p, std::vector<std::string>& out) override { return s_->keys(p, out); }
    std::string describe() const override { return s_->describe(); }

   private:
    std::shared_ptr<FakeRemoteStore> s_;
  };

  std::unique_ptr<RemoteCache> node(RemoteCacheOptions options = {}) {
    if (options.mac_key.empty()) options.mac_key = kMacKey;
    options.format_version = 2;
    return std::make_unique<RemoteCache>(std::make_unique<Handle>(owned), std::move(options));
  }
};

// A build that counts its calls.
struct Builder {
  CacheKey key;
  int calls = 0;
  CacheEntry operator()() {
    ++calls;
    return test_entry(key, 100);
  }
  std::function<CacheEntry()> fn() {
    return [this] { return (*this)(); };
  }
};

TEST(RemoteCache, RefusesToRunWithoutAMacKey) {
  RemoteCacheOptions options;
  EXPECT_THROW(RemoteCache(std::make_unique<FakeRemoteStore>(), options), Error);
}

TEST(RemoteCache, AMissBuildsAndPublishesAndTheNextNodeHitsWithoutBuilding) {
  Fleet fleet;
  auto a = fleet.node();
  auto b = fleet.node();
  Builder build{test_key("problem one\n")};

  RemoteCache::FetchReport report;
  const CacheEntry built = a->fetch_or_build(build.key.text, build.fn(), report);
  EXPECT_EQ(build.calls, 1);
  EXPECT_TRUE(report.miss);
  EXPECT_TRUE(report.published);
  EXPECT_FALSE(report.hit);
  EXPECT_GT(report.bytes_written, built.cubin.size());
  EXPECT_FALSE(fleet.store->value(RemoteCache::lock_key(a->entry_key(build.key.text)))) << "lock left behind";

  const CacheEntry fetched = b->fetch_or_build(build.key.text, build.fn(), report);
  EXPECT_EQ(build.calls, 1) << "the second node must not compile";
  EXPECT_TRUE(report.hit);
  EXPECT_FALSE(report.miss);
  EXPECT_EQ(fetched, built);
  EXPECT_EQ(report.saved_compile_ms, built.compile_ms);
}

TEST(RemoteCache, KeysCarryThePrefixTheFormatVersionAndTheKeyHash) {
  Fleet fleet;
  RemoteCacheOptions options;
  options.prefix = "fleet7:";
  auto node = fleet.node(options);
  const CacheKey key = test_key("problem k\n");
  EXPECT_EQ(node->entry_key(key.text), "fleet7:v2:" + key.hash);
  EXPECT_EQ(RemoteCache::lock_key(node->entry_key(key.text)), "fleet7:v2:" + key.hash + ":lock");
}

TEST(RemoteCache, ATamperedEntryIsRejectedRebuiltAndReplacedByTheGoodOne) {
  Fleet fleet;
  auto node = fleet.node();
  Builder build{test_key("problem two\n")};
  const std::string name = node->entry_key(build.key.text);
  fleet.store->set_value(name, "not an entry at all");

  CapturedWarnings warnings;
  RemoteCache::FetchReport report;
  node->fetch_or_build(build.key.text, build.fn(), report);
  const std::string text = warnings.text();
  EXPECT_TRUE(report.rejected);
  EXPECT_FALSE(report.miss);
  EXPECT_TRUE(report.published);
  EXPECT_EQ(build.calls, 1);
  EXPECT_NE(text.find("remote cache entry '" + name + "' (two) is refused"), std::string::npos) << text;
  std::string why;
  EXPECT_TRUE(open_remote_entry(kMacKey, 2, build.key.text, *fleet.store->value(name), why)) << why;
}

TEST(RemoteCache, AReadOnlyNodeFetchesButNeverWrites) {
  Fleet fleet;
  auto writer = fleet.node();
  RemoteCacheOptions readonly;
  readonly.readonly = true;
  auto reader = fleet.node(readonly);
  Builder present{test_key("problem present\n")};
  Builder absent{test_key("problem absent\n")};
  Builder tampered{test_key("problem tampered\n")};
  RemoteCache::FetchReport report;
  writer->fetch_or_build(present.key.text, present.fn(), report);
  fleet.store->set_value(reader->entry_key(tampered.key.text), "tampered");
  const int writes_before = fleet.store->writes();

  reader->fetch_or_build(present.key.text, present.fn(), report);
  EXPECT_TRUE(report.hit);
  reader->fetch_or_build(absent.key.text, absent.fn(), report);
  EXPECT_TRUE(report.miss);
  EXPECT_FALSE(report.published);
  {
    CapturedWarnings quiet;
    reader->fetch_or_build(tampered.key.text, tampered.fn(), report);
  }
  EXPECT_TRUE(report.rejected);
  EXPECT_FALSE(report.published);
  EXPECT_EQ(absent.calls, 1);
  EXPECT_EQ(tampered.calls, 1);
  EXPECT_EQ(fleet.store->writes(), writes_before) << "a read-only node wrote to the store";
  EXPECT_EQ(*fleet.store->value(reader->entry_key(tampered.key.text)), "tampered") << "read-only: left alone";
}

TEST(RemoteCache, AFailureBacksOffSoLaterRequestsDoNotAskTheStore) {
  Fleet fleet;
  RemoteCacheOptions options;
  options.backoff_min = std::chrono::hours(1);  // no retry within this test
  auto node = fleet.node(options);
  fleet.store->set_mode(FakeRemoteStore::Mode::kTimeout);
  Builder first{test_key("problem t1\n")};
  Builder second{test_key("problem t2\n")};

  CapturedWarnings warnings;
  RemoteCache::FetchReport report;
  node->fetch_or_build(first.key.text, first.fn(), report);
  EXPECT_TRUE(report.unavailable);
  EXPECT_EQ(report.timeouts, 1u);
  EXPECT_FALSE(report.published) << "no publication after the lookup failed";
  EXPECT_EQ(first.calls, 1);
  EXPECT_TRUE(node->backing_off());
  const int calls = fleet.store->calls();

  node->fetch_or_build(second.key.text, second.fn(), report);
  EXPECT_TRUE(report.skipped);
  EXPECT_TRUE(report.unavailable);
  EXPECT_EQ(report.timeouts, 0u);
  EXPECT_EQ(second.calls, 1);
  EXPECT_EQ(fleet.store->calls(), calls) << "asked the store while backing off";
  const std::string text = warnings.text();
  EXPECT_EQ(testing::count_of(text, "the remote cache fake://store failed (fake timeout); compiling locally"), 1u)
      << text;
}

TEST(RemoteCache, WhenTheBackOffEndsOneProbeFindsTheStoreBack) {
  Fleet fleet;
  RemoteCacheOptions options;
  options.backoff_min = std::chrono::milliseconds(0);  // the next request probes
  auto node = fleet.node(options);
  Builder build{test_key("problem back\n")};
  CapturedWarnings quiet;
  RemoteCache::FetchReport report;
  fleet.store->set_mode(FakeRemoteStore::Mode::kDown);
  node->fetch_or_build(build.key.text, build.fn(), report);
  EXPECT_EQ(report.errors, 1u);
  EXPECT_TRUE(node->backing_off());

  fleet.store->set_mode(FakeRemoteStore::Mode::kHealthy);
  node->fetch_or_build(build.key.text, build.fn(), report);
  EXPECT_FALSE(node->backing_off());
  EXPECT_TRUE(report.miss);
  EXPECT_TRUE(report.published);
}

TEST(RemoteCache, ARefusedCommandDoesNotBackOff) {
  // A server that answers "no" (an ACL, maxmemory with noeviction) is up: keep fetching.
  Fleet fleet;
  auto node = fleet.node();
  fleet.store->set_mode(FakeRemoteStore::Mode::kRefuseWrites);
  Builder a{test_key("problem r1\n")};
  Builder b{test_key("problem r2\n")};
  CapturedWarnings warnings;
  RemoteCache::FetchReport report;
  node->fetch_or_build(a.key.text, a.fn(), report);
  EXPECT_TRUE(report.miss);
  EXPECT_FALSE(report.published);
  EXPECT_EQ(report.errors, 1u);
  EXPECT_FALSE(node->backing_off());
  node->fetch_or_build(b.key.text, b.fn(), report);
  EXPECT_FALSE(report.skipped);
  EXPECT_TRUE(report.miss);
  EXPECT_EQ(testing::count_of(warnings.text(), "refused a command"), 1u) << "warned once";
}

TEST(RemoteCache, ARefusedPublicationStillReleasesTheFleetLock) {
  // Else every other node would wait a whole lease for an entry that never comes.
  Fleet fleet;
  auto node = fleet.node();
  fleet.store->set_mode(FakeRemoteStore::Mode::kRefusePuts);
  Builder build{test_key("problem full\n")};
  CapturedWarnings warnings;
  RemoteCache::FetchReport report;
  node->fetch_or_build(build.key.text, build.fn(), report);
  EXPECT_EQ(build.calls, 1);
  EXPECT_TRUE(report.miss);
  EXPECT_FALSE(report.published);
  EXPECT_EQ(report.errors, 1u);
  EXPECT_FALSE(fleet.store->value(RemoteCache::lock_key(node->entry_key(build.key.text)))) << "lock left behind";
}

TEST(RemoteCache, ANodeWaitsForTheLockHolderAndTakesItsEntryWithoutBuilding) {
  Fleet fleet;
  auto holder = fleet.node();
  auto waiter_node = fleet.node();
  Builder build{test_key("problem shared\n")};
  const std::string name = holder->entry_key(build.key.text);
  const std::string lock = RemoteCache::lock_key(name);
  fleet.store->set_value(lock, "token pid 1 on host builder since now");

  std::promise<void> waiting;
  std::once_flag once;
  fleet.store->on_call([&](std::string_view op, std::string_view key, Status status) {
    if (op == "put_if_absent" && key == lock && status == Status::kNo)
      std::call_once(once, [&] { waiting.set_value(); });
  });
  RemoteCache::FetchReport report;
  auto result =
      std::async(std::launch::async, [&] { return waiter_node->fetch_or_build(build.key.text, build.fn(), report); });
  waiting.get_future().wait();  // it found the lock taken: the holder "publishes" and lets go
  fleet.store->set_value(name, seal_remote_entry(kMacKey, 2, test_entry(build.key, 100)));
  fleet.store->erase(lock);
  const CacheEntry entry = result.get();
  fleet.store->on_call(nullptr);
  EXPECT_EQ(build.calls, 0);
  EXPECT_TRUE(report.hit);
  EXPECT_TRUE(report.waited);
  EXPECT_FALSE(report.took_over);
  EXPECT_EQ(entry, test_entry(build.key, 100));
}

TEST(RemoteCache, ALockLetGoWithoutAnEntryIsTakenOverAndBuiltHere) {
  Fleet fleet;
  auto node = fleet.node();
  Builder build{test_key("problem orphan\n")};
  const std::string lock = RemoteCache::lock_key(node->entry_key(build.key.text));
  fleet.store->set_value(lock, "token pid 99 on host gone since then");

  std::promise<void> waiting;
  std::once_flag once;
  // Fires once the node found the lock taken and read who holds it.
  fleet.store->on_call([&](std::string_view op, std::string_view key, Status status) {
    if (op == "get" && key == lock && status == Status::kOk) std::call_once(once, [&] { waiting.set_value(); });
  });
  CapturedWarnings warnings;
  RemoteCache::FetchReport report;
  auto result =
      std::async(std::launch::async, [&] { return node->fetch_or_build(build.key.text, build.fn(), report); });
  waiting.get_future().wait();
  fleet.store->erase(lock);  // the holder's lease ran out (it died) before it published
  result.get();
  fleet.store->on_call(nullptr);
  const std::string text = warnings.text();
  EXPECT_EQ(build.calls, 1);
  EXPECT_TRUE(report.waited);
  EXPECT_TRUE(report.took_over);
  EXPECT_TRUE(report.published);
  EXPECT_NE(text.find("took over the fleet compile lock '" + lock + "' from pid 99 on host gone since then"),
            std::string::npos)
      << text;
  EXPECT_FALSE(fleet.store->value(lock)) << "released after publishing";
}

TEST(RemoteCache, AWaitThatRunsOutBuildsAnyway) {
  Fleet fleet;
  RemoteCacheOptions options;
  options.lock_wait = std::chrono::milliseconds(0);  // a hung holder: give up at once
  auto node = fleet.node(options);
  Builder build{test_key("problem hung\n")};
  const std::string lock = RemoteCache::lock_key(node->entry_key(build.key.text));
  fleet.store->set_value(lock, "token pid 5 on host stuck since then");
  CapturedWarnings warnings;
  RemoteCache::FetchReport report;
  node->fetch_or_build(build.key.text, build.fn(), report);
  EXPECT_EQ(build.calls, 1);
  EXPECT_TRUE(report.lock_timed_out);
  EXPECT_TRUE(report.published);
  EXPECT_TRUE(fleet.store->value(lock)) << "the holder's lock is not ours to release";
  EXPECT_NE(warnings.text().find("compiling it here too"), std::string::npos);
}

TEST(RemoteCache, TheHolderRenewsItsLeaseWhileItBuilds) {
  Fleet fleet;
  RemoteCacheOptions options;
  options.lock_lease = std::chrono::milliseconds(30);  // renewed every 10 ms
  auto node = fleet.node(options);
  const CacheKey key = test_key("problem slow\n");
  const std::string lock = RemoteCache::lock_key(node->entry_key(key.text));
  std::mutex mutex;
  std::condition_variable renewed;
  int renewals = 0;
  fleet.store->on_call([&](std::string_view op, std::string_view k, Status status) {
    if (op == "expire_if_equals" && k == lock && status == Status::kOk) {
      std::lock_guard guard(mutex);
      ++renewals;
      renewed.notify_all();
    }
  });
  RemoteCache::FetchReport report;
  node->fetch_or_build(
      key.text,
      [&] {
        // A build longer than the lease: it ends only after two renewals.
        std::unique_lock guard(mutex);
        renewed.wait(guard, [&] { return renewals >= 2; });
        EXPECT_TRUE(fleet.store->value(lock)) << "the lease lapsed while building";
        return test_entry(key);
      },
      report);
  fleet.store->on_call(nullptr);
  EXPECT_TRUE(report.published);
  EXPECT_FALSE(fleet.store->value(lock));
}

TEST(RemoteCache, ABuildThatThrowsReleasesTheFleetLock) {
  Fleet fleet;
  auto node = fleet.node();
  const CacheKey key = test_key("problem broken\n");
  const std::string lock = RemoteCache::lock_key(node->entry_key(key.text));
  RemoteCache::FetchReport report;
  EXPECT_THROW(node->fetch_or_build(
                   key.text,
                   [&]() -> CacheEntry {
                     EXPECT_TRUE(fleet.store->value(lock));
                     throw Error(ErrorCode::kCompile, "nvrtc says no");
                   },
                   report),
               Error);
  EXPECT_FALSE(fleet.store->value(lock));
  EXPECT_FALSE(fleet.store->value(node->entry_key(key.text)));
}

TEST(RemoteCache, HealthReportsTheServerAndCountsEntriesAndLocks) {
  Fleet fleet;
  auto node = fleet.node();
  Builder a{test_key("problem h1\n")};
  Builder b{test_key("problem h2\n")};
  RemoteCache::FetchReport report;
  node->fetch_or_build(a.key.text, a.fn(), report);
  node->fetch_or_build(b.key.text, b.fn(), report);
  fleet.store->set_value(RemoteCache::lock_key(node->entry_key("x")), "t");
  fleet.store->set_value("convjit:v1:old", "an entry of an older format");
  const RemoteCache::Health health = node->health(true);
  EXPECT_TRUE(health.reachable);
  EXPECT_EQ(health.server_version, "fake");
  EXPECT_EQ(health.maxmemory_policy, "noeviction");
  EXPECT_TRUE(health.counted);
  EXPECT_EQ(health.entries, 2u);
  EXPECT_EQ(health.locks, 1u);
  fleet.store->set_mode(FakeRemoteStore::Mode::kDown);
  EXPECT_FALSE(node->health(true).reachable);
}

}  // namespace
}  // namespace convjit
