// hiredis is loaded at run time, on the first remote cache: the library it finds by
// default, the typed error for one that is missing or is not hiredis, and a Runtime
// configured with a remote cache on a machine without hiredis, which warns once, says
// why in its stats, and compiles and caches locally as if none were configured.
#include <gtest/gtest.h>

#include <vector>

#include "cache/redis_store.hpp"
#include "convjit/convjit.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"
#include "tests/cache/cache_test_util.hpp"
#include "tests/cache/redis_test_util.hpp"

#if CONVJIT_HAVE_HIREDIS
#include "cache/hiredis_library.hpp"
#endif

namespace convjit {
namespace {

using testing::CapturedWarnings;
using testing::count_of;
using testing::ScopedEnv;
using testing::TempDir;

constexpr const char* kMissingLibrary = "/nonexistent/convjit-test/libhiredis.so.0";

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

#define CONVJIT_HIREDIS_HEADERS_OR_SKIP() \
  if (!redis_support_built()) GTEST_SKIP() << "built without hiredis's headers: the remote cache is compiled out"

#if CONVJIT_HAVE_HIREDIS

TEST(HiredisLibrary, LoadsTheSonameOfTheHeadersByDefault) {
  ScopedEnv unset("CONVJIT_HIREDIS_LIBRARY", nullptr);
  const std::string missing = redis_unavailable_reason();
  if (!missing.empty()) GTEST_SKIP() << "hiredis is not installed here: " << missing;
  EXPECT_EQ(Hiredis::get().library(), hiredis_soname());
  EXPECT_NE(Hiredis::get().redisCommandArgv, nullptr);
}

TEST(HiredisLibrary, AMissingLibraryIsATypedErrorNamingItAndDlerrorsText) {
  ScopedEnv missing("CONVJIT_HIREDIS_LIBRARY", kMissingLibrary);
  try {
    Hiredis::get();
    FAIL() << "loaded a library that does not exist";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "cannot load hiredis, so the remote cache is unavailable")) << what;
    EXPECT_TRUE(contains(what, std::string(kMissingLibrary) + ": cannot open shared object file")) << what;
    EXPECT_TRUE(contains(what, "CONVJIT_HIREDIS_LIBRARY")) << what;
  }
  EXPECT_TRUE(contains(redis_unavailable_reason(), kMissingLibrary));
}

TEST(HiredisLibrary, ALibraryThatIsNotHiredisIsRefusedNamingTheMissingFunction) {
  ScopedEnv not_hiredis("CONVJIT_HIREDIS_LIBRARY", "libm.so.6");
  try {
    Hiredis::get();
    FAIL() << "took libm for hiredis";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
    EXPECT_TRUE(contains(e.what(), "libm.so.6 has no redisConnectWithTimeout")) << e.what();
  }
}

TEST(HiredisLibrary, AStoreForAMissingLibraryIsRefusedBeforeAnyConnection) {
  ScopedEnv missing("CONVJIT_HIREDIS_LIBRARY", kMissingLibrary);
  const std::string url = "redis://127.0.0.1:" + std::to_string(testing::closed_port()) + "/0";
  try {
    make_redis_store(RedisStoreOptions{.url = parse_redis_url(url)});
    FAIL() << "made a store without hiredis";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
    EXPECT_TRUE(contains(e.what(), kMissingLibrary)) << e.what();
  }
}

#endif

// Small problems that compile fast, all distinct.
std::vector<Conv2dDesc> small_descs() {
  return {Conv2dDesc{.n = 1, .c = 2, .h = 7, .w = 5, .k = 2, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
          Conv2dDesc{.n = 1, .c = 3, .h = 6, .w = 6, .k = 4, .r = 1, .s = 1}};
}

RuntimeOptions remote_options(const TempDir& dir) {
  RuntimeOptions options;
  options.cache_dir = dir.path() / "cache";
  // Nothing listens there: the Runtime must never get as far as connecting.
  options.remote_cache = "redis://127.0.0.1:" + std::to_string(testing::closed_port()) + "/0";
  options.remote_cache_key = testing::kTestMacKey;
  return options;
}

TEST(RemoteCacheWithoutHiredis, PrewarmCompilesLocallyWarnsOnceAndStatsSayTheRemoteIsUnavailable) {
  CONVJIT_HIREDIS_HEADERS_OR_SKIP();
  ScopedEnv missing("CONVJIT_HIREDIS_LIBRARY", kMissingLibrary);
  ScopedEnv no_env_url("CONVJIT_REMOTE_CACHE", nullptr);
  TempDir dir;
  const auto descs = small_descs();

  CapturedWarnings warnings;
  {
    Runtime rt(remote_options(dir));
    const CacheStats opened = rt.stats();
    EXPECT_EQ(opened.remote_mode, RemoteCacheMode::kOff);
    EXPECT_TRUE(contains(opened.remote_note, "cannot load hiredis, so the remote cache is unavailable"))
        << opened.remote_note;
    EXPECT_TRUE(contains(opened.remote_note, kMissingLibrary)) << opened.remote_note;

    const PrewarmResult first = rt.prewarm(descs, "sm_90");
    EXPECT_EQ(first.compiled, descs.size());
    EXPECT_EQ(first.failed, 0u) << (first.errors.empty() ? "" : first.errors.front());
    const CacheStats after = rt.stats();
    EXPECT_EQ(after.compiles, descs.size());
    EXPECT_EQ(after.remote_hits + after.remote_misses + after.remote_unavailable, 0u);
    EXPECT_FALSE(rt.ptx(descs.front(), "sm_90").empty());
  }
  const std::string text = warnings.text();
  EXPECT_EQ(count_of(text, "remote cache disabled: cannot load hiredis"), 1u) << text;
  EXPECT_TRUE(contains(text, std::string(kMissingLibrary) + ": cannot open shared object file")) << text;
  EXPECT_TRUE(contains(text, "kernels are compiled locally")) << text;

  // The next process (another Runtime on the same directory) finds them on disk.
  CapturedWarnings quiet_about_the_rest;
  Runtime next(remote_options(dir));
  const PrewarmResult second = next.prewarm(descs, "sm_90");
  EXPECT_EQ(second.compiled, 0u);
  EXPECT_EQ(second.already_cached, descs.size());
  EXPECT_EQ(next.stats().compiles, 0u);
}

}  // namespace
}  // namespace convjit
