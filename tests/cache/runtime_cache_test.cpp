// The disk cache seen through the public Runtime API: statistics, read-only mode,
// entries from another arch / compiler / convjit version, the size limit.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "cache/disk_cache.hpp"
#include "cache/entry_file.hpp"
#include "convjit/convjit.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"
#include "tests/cache/cache_test_util.hpp"

namespace convjit {
namespace {

namespace fs = std::filesystem;

const std::vector<Conv2dDesc> kDescs = {
    Conv2dDesc{.n = 1, .c = 2, .h = 8, .w = 5, .k = 2, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
    Conv2dDesc{.n = 1, .c = 3, .h = 8, .w = 5, .k = 2, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
    Conv2dDesc{.n = 1, .c = 4, .h = 8, .w = 5, .k = 2, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
};

using testing::ScopedEnv;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Rewrites one line of the entry's stored key (with valid checksums): what an
// entry written by another convjit or NVRTC would look like under this name.
void rewrite_key_line(const fs::path& path, const std::string& field, const std::string& value) {
  std::string why;
  auto entry = parse_entry(read_file(path), why);
  ASSERT_TRUE(entry) << why;
  const auto start = entry->key_text.find(field + " ");
  ASSERT_NE(start, std::string::npos) << entry->key_text;
  const auto end = entry->key_text.find('\n', start);
  entry->key_text.replace(start, end - start, field + " " + value);
  write_file(path, serialize_entry(*entry));
}

std::map<fs::path, fs::file_time_type> snapshot(const fs::path& root) {
  std::map<fs::path, fs::file_time_type> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) out[e.path()] = e.last_write_time();
  return out;
}

RuntimeOptions options_in(const testing::TempDir& dir) { return RuntimeOptions{.cache_dir = dir.path() / "cache"}; }

TEST(RuntimeCache, StatsCountBytesAndTheCompileTimeDiskHitsSaved) {
  testing::TempDir dir;
  CacheStats first;
  {
    Runtime rt(options_in(dir));
    rt.prewarm(kDescs, "sm_90");
    first = rt.stats();
  }
  EXPECT_EQ(first.disk_mode, DiskCacheMode::kReadWrite);
  EXPECT_TRUE(first.disk_note.empty());
  EXPECT_EQ(first.disk_writes, kDescs.size());
  EXPECT_GT(first.bytes_written, 0u);
  EXPECT_EQ(first.compile_ms_saved, 0.0);
  Runtime rt(options_in(dir));
  rt.prewarm(kDescs, "sm_90");
  const CacheStats second = rt.stats();
  EXPECT_EQ(second.disk_hits, kDescs.size());
  EXPECT_EQ(second.compiles, 0u);
  EXPECT_EQ(second.bytes_read, first.bytes_written) << "prewarm reads whole entries";
  EXPECT_NEAR(second.compile_ms_saved, first.compile_ms, 1e-6) << "saved = the compile time recorded in the entries";
  EXPECT_EQ(second.lock_waits, 0u);
  EXPECT_EQ(second.lock_takeovers, 0u);
}

TEST(RuntimeCache, StatsSplitAWarmStartIntoKeyReadAndVerifyTimes) {
  testing::TempDir dir;
  CacheStats cold;
  {
    Runtime rt(options_in(dir));
    rt.prewarm(kDescs, "sm_90");
    cold = rt.stats();
  }
  EXPECT_GT(cold.key_ms, 0.0) << "every request specializes and keys its kernel";
  EXPECT_EQ(cold.disk_verify_ms, 0.0) << "nothing was there to verify";
  Runtime rt(options_in(dir));
  rt.prewarm(kDescs, "sm_90");
  const CacheStats warm = rt.stats();
  ASSERT_EQ(warm.disk_hits, kDescs.size());
  EXPECT_GT(warm.key_ms, 0.0);
  EXPECT_GT(warm.disk_read_ms, 0.0);
  EXPECT_GT(warm.disk_verify_ms, 0.0);
  EXPECT_EQ(warm.module_load_ms, 0.0) << "prewarm for an explicit arch loads no module";
  EXPECT_EQ(warm.function_load_ms, 0.0);
}

TEST(RuntimeCache, ReadOnlyModeFromTheEnvironmentServesAPrewarmedCacheWithoutWriting) {
  testing::TempDir dir;
  Runtime(options_in(dir)).prewarm(std::span(kDescs).first(2), "sm_90");
  const auto before = snapshot(dir.path() / "cache");
  ScopedEnv readonly("CONVJIT_CACHE_READONLY", "1");
  Runtime rt(options_in(dir));
  const auto result = rt.prewarm(kDescs, "sm_90");  // two shipped, one not
  EXPECT_EQ(result.failed, 0u);
  EXPECT_EQ(result.already_cached, 2u);
  EXPECT_EQ(result.compiled, 1u);
  const CacheStats stats = rt.stats();
  EXPECT_EQ(stats.disk_mode, DiskCacheMode::kReadOnly);
  EXPECT_EQ(stats.disk_hits, 2u);
  EXPECT_EQ(stats.disk_writes, 0u);
  EXPECT_EQ(stats.disk_write_errors, 0u);
  EXPECT_EQ(snapshot(dir.path() / "cache"), before) << "a read-only cache changed (files or stamps)";
}

TEST(RuntimeCache, ReadOnlyModeOnAMissingDirectoryWorksFromMemory) {
  testing::TempDir dir;
  testing::CapturedWarnings warnings;
  Runtime rt(RuntimeOptions{.cache_dir = dir.path() / "absent", .cache_readonly = true});
  EXPECT_EQ(rt.prewarm(kDescs, "sm_90").compiled, kDescs.size());
  EXPECT_EQ(rt.stats().disk_mode, DiskCacheMode::kOff);
  EXPECT_FALSE(fs::exists(dir.path() / "absent"));
  EXPECT_NE(warnings.text().find("read-only cache directory '" + (dir.path() / "absent").string() + "' does not exist"),
            std::string::npos);
}

TEST(RuntimeCache, CorruptEntryInAReadOnlyCacheIsCompiledInMemoryAndLeftAlone) {
  testing::TempDir dir;
  const fs::path entry = Runtime(options_in(dir)).inspect(kDescs[0], "sm_90").cache_path;
  fs::resize_file(entry, fs::file_size(entry) / 2);
  const auto size = fs::file_size(entry);
  testing::CapturedWarnings warnings;
  RuntimeOptions options = options_in(dir);
  options.cache_readonly = true;
  Runtime rt(options);
  rt.inspect(kDescs[0], "sm_90");
  EXPECT_EQ(rt.stats().corrupt_rebuilt, 1u);
  EXPECT_EQ(fs::file_size(entry), size);
  EXPECT_NE(warnings.text().find("compiling it in memory (the cache is read-only)"), std::string::npos);
}

class ForeignEntry : public ::testing::TestWithParam<const char*> {};

// Stale entries after a driver/arch/compiler change gave garbled output (vllm
// #41871): everything that changes the binary is in the key, compared in full.
TEST_P(ForeignEntry, UnderThisKeysNameIsRejectedRebuiltAndCounted) {
  testing::TempDir dir;
  const Conv2dDesc d = kDescs[1];
  const fs::path entry = Runtime(options_in(dir)).inspect(d, "sm_80").cache_path;
  const std::string what = GetParam();
  if (what == "arch") {
    const fs::path sm90 = Runtime(options_in(dir)).inspect(d, "sm_90").cache_path;
    fs::copy_file(sm90, entry, fs::copy_options::overwrite_existing);  // an sm_90 CUBIN where sm_80 is asked for
  } else if (what == "nvrtc") {
    rewrite_key_line(entry, "nvrtc", "11.8");
  } else {
    rewrite_key_line(entry, "convjit", "0.0.1");
  }
  testing::CapturedWarnings warnings;
  Runtime rt(options_in(dir));
  const auto info = rt.inspect(d, "sm_80");
  EXPECT_EQ(rt.stats().corrupt_rebuilt, 1u);
  EXPECT_EQ(rt.stats().compiles, 1u);
  EXPECT_NE(info.ptx.find(".target sm_80"), std::string::npos);
  EXPECT_NE(warnings.text().find("the stored key differs from the requested one"), std::string::npos);
  Runtime after(options_in(dir));
  after.inspect(d, "sm_80");
  EXPECT_EQ(after.stats().disk_hits, 1u) << "the rebuilt entry replaced the foreign one";
}
INSTANTIATE_TEST_SUITE_P(RuntimeCache, ForeignEntry, ::testing::Values("arch", "nvrtc", "convjit"),
                         [](const auto& info) { return std::string("another_") + info.param; });

TEST(RuntimeCache, MaxSizeFromTheEnvironmentEvictsAndKeepsTheCacheUnderIt) {
  testing::TempDir dir;
  Runtime(options_in(dir)).inspect(kDescs[0], "sm_90");
  const DiskCache probe(dir.path() / "cache");
  const std::uint64_t one = probe.total_size();
  ASSERT_GT(one, 0u);
  const std::string limit = std::to_string(one + one / 2);  // room for one entry and a half
  ScopedEnv size("CONVJIT_CACHE_MAX_SIZE", limit.c_str());
  Runtime rt(options_in(dir));
  EXPECT_EQ(rt.prewarm(kDescs, "sm_90").failed, 0u);
  EXPECT_EQ(rt.stats().evictions, kDescs.size() - 1);
  EXPECT_LE(probe.total_size(), std::stoull(limit));
  EXPECT_EQ(probe.list().size(), 1u);
}

// Flips the first byte of section `name`'s body in the entry file at `path`.
void flip_section_body(const fs::path& path, const std::string& name) {
  std::string bytes = read_file(path);
  const std::size_t header = bytes.find("\n" + name + " ") + 1;
  bytes[bytes.find('\n', header) + 1] ^= 0x01;
  write_file(path, bytes);
}

// Prewarming fills or repairs a cache, so it reads whole entries: a damaged PTX, which a
// kernel request would not read (FakeDriver.AWarmPlanLoadsTheVerifiedCubin...), is found
// and rebuilt here.
TEST(RuntimeCache, PrewarmReadsWholeEntriesAndRebuildsADamagedPtx) {
  testing::TempDir dir;
  const fs::path entry = Runtime(options_in(dir)).inspect(kDescs[0], "sm_90").cache_path;
  flip_section_body(entry, "ptx");
  testing::CapturedWarnings warnings;
  Runtime rt(options_in(dir));
  EXPECT_EQ(rt.prewarm(std::span(kDescs).first(1), "sm_90").compiled, 1u);
  EXPECT_EQ(rt.stats().corrupt_rebuilt, 1u);
  EXPECT_NE(warnings.text().find("checksum mismatch in section 'ptx'"), std::string::npos);
  std::string why;
  EXPECT_TRUE(parse_entry(read_file(entry), why)) << "the rebuild replaced the entry: " << why;
}

}  // namespace
}  // namespace convjit
