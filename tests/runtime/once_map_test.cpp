// The per-context table behind the Runtime (contexts, modules, plans), driven with a
// fake module loader keyed by an opaque context id: no GPU needed.
#include "base/once_map.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <latch>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace convjit {
namespace {

using namespace std::chrono_literals;

struct ModuleKey {
  std::uint64_t context;
  std::string kernel;
  bool operator==(const ModuleKey&) const = default;
};
struct ModuleKeyHash {
  std::size_t operator()(const ModuleKey& key) const noexcept {
    return std::hash<std::string>{}(key.kernel) * 31 + key.context;
  }
};

// What cuModuleLoadData would give: a module that knows its context and kernel.
struct FakeModule {
  std::uint64_t context;
  std::string kernel;
};

// Stands in for loading a CUBIN into a context; counts every load.
struct FakeLoader {
  std::atomic<int> loads{0};
  std::shared_ptr<FakeModule> operator()(const ModuleKey& key) {
    ++loads;
    return std::make_shared<FakeModule>(FakeModule{key.context, key.kernel});
  }
};

using ModuleTable = OnceMap<ModuleKey, FakeModule, ModuleKeyHash>;

TEST(OnceMap, EachContextLoadsEachKernelOnceAndLookupsReturnThatModule) {
  ModuleTable table;
  FakeLoader loader;
  for (int round = 0; round < 5; ++round) {
    for (std::uint64_t context : {7u, 9u}) {
      for (const char* kernel : {"direct", "igemm", "im2col"}) {
        const ModuleKey key{context, kernel};
        bool built = false;
        const auto module = table.get(
            key, [&] { return loader(key); }, &built);
        EXPECT_EQ(built, round == 0);
        EXPECT_EQ(module->context, context);
        EXPECT_EQ(module->kernel, kernel);
        EXPECT_EQ(table.find(key), module);
      }
    }
  }
  EXPECT_EQ(loader.loads.load(), 6);  // 2 contexts x 3 kernels
  EXPECT_EQ(table.size(), 6u);
  EXPECT_EQ(table.find(ModuleKey{8, "direct"}), nullptr);
}

TEST(OnceMap, ThreadsAskingOneContextForOneKernelAtOnceLoadItOnce) {
  ModuleTable table;
  FakeLoader loader;
  constexpr int kThreads = 16;
  std::latch start(kThreads);
  std::latch asking(kThreads);
  std::vector<std::shared_ptr<FakeModule>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      asking.count_down();
      got[t] = table.get(ModuleKey{1, "direct"}, [&] {
        // The load lasts until every thread has made its call, so all 16 calls overlap
        // this one load. (A 20 ms sleep here made that likely, not certain.) Whether a
        // caller then waits on the key or finds the value just published is the
        // scheduler's choice: either way it must get this module, and nobody loads again.
        asking.wait();
        return loader(ModuleKey{1, "direct"});
      });
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(loader.loads.load(), 1);
  for (const auto& module : got) EXPECT_EQ(module, got.front());
}

TEST(OnceMap, LoadsIntoTwoContextsRunAtTheSameTime) {
  ModuleTable table;
  std::promise<void> started[2];
  std::shared_future<void> has_started[2] = {started[0].get_future().share(), started[1].get_future().share()};
  std::atomic<int> overlapped{0};
  auto load_in = [&](int index) {
    const std::uint64_t context = static_cast<std::uint64_t>(index) + 1;
    table.get(ModuleKey{context, "direct"}, [&] {
      started[index].set_value();
      // Each load waits for the other context's load to start: one global lock held
      // through a build would keep the second from starting, and this would time out.
      if (has_started[1 - index].wait_for(10s) == std::future_status::ready) ++overlapped;
      return std::make_shared<FakeModule>(FakeModule{context, "direct"});
    });
  };
  std::thread a(load_in, 0);
  std::thread b(load_in, 1);
  a.join();
  b.join();
  EXPECT_EQ(overlapped.load(), 2);
}

TEST(OnceMap, AHitDoesNotWaitForAnotherContextsLoad) {
  ModuleTable table;
  FakeLoader loader;
  const auto built = table.get(ModuleKey{2, "direct"}, [&] { return loader(ModuleKey{2, "direct"}); });
  std::promise<void> release;
  std::promise<void> started;
  std::thread slow([&, gate = release.get_future()]() mutable {
    table.get(ModuleKey{1, "direct"}, [&] {
      started.set_value();
      gate.wait();
      return loader(ModuleKey{1, "direct"});
    });
  });
  const bool loading = started.get_future().wait_for(10s) == std::future_status::ready;
  if (!loading) {
    release.set_value();
    slow.join();
    FAIL() << "the load of context 1 never started";
  }
  // Context 1's load is in progress; context 2's module must still come straight back.
  auto hit = std::async(std::launch::async, [&] {
    return table.get(ModuleKey{2, "direct"}, [&] { return loader(ModuleKey{2, "direct"}); });
  });
  const bool returned = hit.wait_for(10s) == std::future_status::ready;
  release.set_value();
  slow.join();
  ASSERT_TRUE(returned) << "a lookup of a loaded module waited for another context's load";
  EXPECT_EQ(hit.get(), built);
  EXPECT_EQ(loader.loads.load(), 2);
}

TEST(OnceMap, AFailedLoadIsNotRememberedAndTheNextCallLoadsAgain) {
  ModuleTable table;
  int attempts = 0;
  auto flaky = [&] {
    if (++attempts == 1) throw std::runtime_error("CUDA_ERROR_OUT_OF_MEMORY");
    return std::make_shared<FakeModule>(FakeModule{3, "direct"});
  };
  EXPECT_THROW(table.get(ModuleKey{3, "direct"}, flaky), std::runtime_error);
  EXPECT_EQ(table.find(ModuleKey{3, "direct"}), nullptr);
  EXPECT_EQ(table.size(), 0u);
  bool built = false;
  const auto module = table.get(ModuleKey{3, "direct"}, flaky, &built);
  EXPECT_TRUE(built);
  EXPECT_EQ(module->context, 3u);
  EXPECT_EQ(attempts, 2);
}

TEST(OnceMap, ManyThreadsOnManyContextsLoadEveryPairExactlyOnce) {
  constexpr int kContexts = 4;
  constexpr int kKernels = 8;
  ModuleTable table;
  std::vector<std::atomic<int>> loads(kContexts * kKernels);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 500; ++i) {
        const int context = static_cast<int>(rng() % kContexts);
        const int kernel = static_cast<int>(rng() % kKernels);
        const ModuleKey key{static_cast<std::uint64_t>(context), std::to_string(kernel)};
        const auto module = table.get(key, [&] {
          ++loads[context * kKernels + kernel];
          return std::make_shared<FakeModule>(FakeModule{key.context, key.kernel});
        });
        if (module->context != key.context || module->kernel != key.kernel) ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  for (const auto& count : loads) EXPECT_LE(count.load(), 1);
  EXPECT_EQ(table.size(), static_cast<std::size_t>(
                              std::count_if(loads.begin(), loads.end(), [](const auto& c) { return c.load() == 1; })));
}

}  // namespace
}  // namespace convjit
