#include "cache/disk_cache.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <utime.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include "cache/file_system.hpp"
#include "cache/lock_file.hpp"
#include "convjit/error.hpp"
#include "support/temp_dir.hpp"
#include "tests/cache/cache_test_util.hpp"

namespace convjit {
namespace {

using testing::test_entry;
using testing::test_key;
namespace fs = std::filesystem;

void set_mtime(const fs::path& path, std::time_t when) {
  const utimbuf times{when, when};
  ASSERT_EQ(::utime(path.c_str(), &times), 0);
}

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The start of an entry as the first cache format wrote it (magic "convjit-cache-entry 1").
std::string old_format_entry() { return "convjit-cache-entry 1\nkey 3 sha256:" + std::string(64, '0') + "\nkey\n"; }

TEST(DiskCache, MissThenStoreThenVerifiedHit) {
  testing::TempDir dir;
  DiskCache cache(dir.path() / "c");
  const CacheKey k = test_key("key-one");
  EXPECT_EQ(cache.load(k).status, DiskCache::Status::kMiss);
  const auto stored = cache.store(k, test_entry(k));
  EXPECT_TRUE(stored.published);
  EXPECT_EQ(stored.bytes, fs::file_size(cache.entry_path(k)));
  const auto hit = cache.load(k);
  ASSERT_EQ(hit.status, DiskCache::Status::kHit);
  EXPECT_EQ(*hit.entry, test_entry(k));
  EXPECT_EQ(hit.bytes, stored.bytes);
}

TEST(DiskCache, CreatesItsDirectoriesPrivate) {
  testing::TempDir dir;
  DiskCache cache(dir.path() / "new" / "private");
  const CacheKey k = test_key("private-key");
  cache.store(k, test_entry(k));
  for (const fs::path& p :
       {dir.path() / "new", dir.path() / "new" / "private", cache.version_dir(), cache.entry_path(k).parent_path()}) {
    struct stat st {};
    ASSERT_EQ(::stat(p.c_str(), &st), 0) << p;
    EXPECT_EQ(st.st_mode & 0777, 0700u) << p;
  }
  struct stat st {};
  ASSERT_EQ(::stat(cache.entry_path(k).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(DiskCache, EntryFileNameIsTheKeyHashNeverAUserString) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey k = test_key("problem ../../etc/passwd\n");
  EXPECT_EQ(cache.entry_path(k), cache.version_dir() / k.hash.substr(0, 2) / (k.hash + ".entry"));
  try {
    cache.entry_path(CacheKey{"text", "../../escape"});
    FAIL() << "a non-hash key name was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInternal);
  }
}

TEST(DiskCache, EntryWithAnotherKeyUnderTheSameNameIsCorrupt) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey stored = test_key("key-two");
  cache.store(stored, test_entry(stored));
  CacheKey other = stored;
  other.text = "a different full key with the same hash";
  const auto lookup = cache.load(other);
  EXPECT_EQ(lookup.status, DiskCache::Status::kCorrupt);
  EXPECT_NE(lookup.why.find("stored key differs"), std::string::npos) << lookup.why;
}

TEST(DiskCache, CorruptedFileIsReportedThenReplacedByTheRebuild) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey k = test_key("key-three");
  cache.store(k, test_entry(k));
  {
    std::fstream f(cache.entry_path(k), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('#');
  }
  testing::CapturedWarnings warnings;
  const auto lookup = cache.load(k);
  EXPECT_EQ(lookup.status, DiskCache::Status::kCorrupt);
  EXPECT_FALSE(lookup.why.empty());
  DiskCache::FetchReport report;
  int builds = 0;
  const CacheEntry got = cache.fetch_or_build(
      k,
      [&] {
        ++builds;
        return test_entry(k);
      },
      report);
  EXPECT_EQ(got, test_entry(k));
  EXPECT_EQ(builds, 1);
  EXPECT_TRUE(report.corrupt);
  EXPECT_TRUE(report.built);
  EXPECT_EQ(cache.load(k).status, DiskCache::Status::kHit);
  const std::string text = warnings.text();
  EXPECT_NE(text.find("cache entry '" + cache.entry_path(k).string() + "' is corrupt"), std::string::npos) << text;
  EXPECT_NE(text.find("rebuilding it"), std::string::npos) << text;
}

TEST(DiskCache, FetchOrBuildBuildsOnceThenServesFromDiskWithTheSavedCompileTime) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey k = test_key("fetch-key");
  int builds = 0;
  DiskCache::FetchReport first;
  cache.fetch_or_build(
      k,
      [&] {
        ++builds;
        return test_entry(k);
      },
      first);
  EXPECT_TRUE(first.built);
  EXPECT_GT(first.bytes_written, 0u);
  DiskCache::FetchReport second;
  const CacheEntry got = cache.fetch_or_build(
      k,
      [&] {
        ++builds;
        return test_entry(k);
      },
      second);
  EXPECT_EQ(builds, 1);
  EXPECT_TRUE(second.hit);
  EXPECT_EQ(second.bytes_read, first.bytes_written);
  EXPECT_DOUBLE_EQ(second.saved_compile_ms, 12.5);
  EXPECT_EQ(got, test_entry(k));
}

TEST(DiskCache, StoreLeavesNoTemporaryOrLockFiles) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  for (int i = 0; i < 10; ++i) {
    const CacheKey k = test_key("k" + std::to_string(i));
    DiskCache::FetchReport report;
    cache.fetch_or_build(
        k, [&] { return test_entry(k); }, report);
  }
  int entries = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
    if (e.path().extension() == ".lock") {
      EXPECT_EQ(e.path().filename(), "cache.lock") << e.path();
    }
    entries += e.path().extension() == ".entry";
  }
  EXPECT_EQ(entries, 10);
}

TEST(DiskCache, ConcurrentWritersAndReadersOfOneKeyNeverSeeATornEntry) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey k = test_key("shared-key");
  const CacheEntry big = test_entry(k, 1 << 20);  // large enough to be caught half-way if it were not atomic
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        if (t % 2 == 0) {
          if (!cache.store(k, big).published) ++bad;
        } else {
          const auto lookup = cache.load(k);
          if (lookup.status == DiskCache::Status::kCorrupt) ++bad;
          if (lookup.status == DiskCache::Status::kHit && !(*lookup.entry == big)) ++bad;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(cache.load(k).status, DiskCache::Status::kHit);
}

TEST(DiskCache, FileWhereTheDirectoryShouldBeIsAClearError) {
  testing::TempDir dir;
  std::ofstream(dir.path() / "occupied") << "not a directory";
  try {
    DiskCache cache(dir.path() / "occupied");
    FAIL() << "accepted a file as the cache directory";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCache);
    EXPECT_NE(std::string(e.what()).find("'" + (dir.path() / "occupied").string() + "' exists and is not a directory"),
              std::string::npos)
        << e.what();
  }
}

TEST(DiskCache, ListShowsEveryEntryWithItsProblemOldestUseFirst) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey a = test_key("convjit 0.1.0\nproblem n1c1 first\narch sm_90\n");
  const CacheKey b = test_key("convjit 0.1.0\nproblem n1c2 second\narch sm_80\n");
  cache.store(a, test_entry(a));
  cache.store(b, test_entry(b, 100));
  set_mtime(cache.entry_path(a), 2'000'000'000);  // a used last
  set_mtime(cache.entry_path(b), 1'000'000'000);
  std::ofstream(cache.entry_path(b).parent_path() / (b.hash + ".entry.tmp.1.2.3")) << "half";
  const auto entries = cache.list();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].hash, b.hash);
  EXPECT_EQ(entries[0].problem, "n1c2 second");
  EXPECT_EQ(entries[0].arch, "sm_80");
  EXPECT_EQ(entries[0].key_text, b.text);
  EXPECT_EQ(entries[0].bytes, fs::file_size(cache.entry_path(b)));
  EXPECT_EQ(entries[1].hash, a.hash);
  EXPECT_EQ(entries[1].problem, "n1c1 first");
  EXPECT_LT(entries[0].last_used, entries[1].last_used);
  EXPECT_EQ(cache.total_size(), entries[0].bytes + entries[1].bytes) << "temp and lock files are not counted";
}

TEST(DiskCache, VerifyAllReportsCorruptMisnamedAndUntrustedEntriesAndChangesNothing) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  std::vector<CacheKey> keys;
  for (int i = 0; i < 5; ++i) {
    keys.push_back(test_key("verify-" + std::to_string(i)));
    cache.store(keys.back(), test_entry(keys.back()));
  }
  EXPECT_TRUE(cache.verify_all().empty());
  fs::resize_file(cache.entry_path(keys[0]), fs::file_size(cache.entry_path(keys[0])) / 2);  // truncated
  fs::copy_file(cache.entry_path(keys[2]), cache.entry_path(keys[1]),  // another key's entry under this name
                fs::copy_options::overwrite_existing);
  fs::permissions(cache.entry_path(keys[3]), fs::perms::others_write, fs::perm_options::add);
  const auto bad = cache.verify_all();
  ASSERT_EQ(bad.size(), 3u);
  std::map<fs::path, std::string> why;
  for (const auto& b : bad) why[b.path] = b.why;
  EXPECT_NE(why[cache.entry_path(keys[0])].find("truncated"), std::string::npos) << why[cache.entry_path(keys[0])];
  EXPECT_NE(why[cache.entry_path(keys[1])].find("does not hash to the file's name"), std::string::npos);
  EXPECT_NE(why[cache.entry_path(keys[3])].find("writable by other users"), std::string::npos);
  EXPECT_TRUE(fs::exists(cache.entry_path(keys[0]))) << "verify must not change the cache";
  EXPECT_TRUE(cache.remove_entry(cache.entry_path(keys[0])));
  EXPECT_FALSE(cache.remove_entry(cache.entry_path(keys[0])));
  EXPECT_EQ(cache.verify_all().size(), 2u);
}

TEST(DiskCache, RemoveEntryRefusesPathsOutsideTheCache) {
  testing::TempDir dir;
  DiskCache cache(dir.path() / "c");
  std::ofstream(dir.path() / "precious") << "keep me";
  EXPECT_THROW(cache.remove_entry(dir.path() / "precious"), Error);
  EXPECT_THROW(cache.remove_entry(cache.version_dir() / "cache.lock"), Error);
  EXPECT_TRUE(fs::exists(dir.path() / "precious"));
}

TEST(DiskCache, ClearRemovesEntriesDeadLocksStaleTempsAndOtherFormatVersions) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey k = test_key("clear-me");
  cache.store(k, test_entry(k));
  const fs::path shard = cache.entry_path(k).parent_path();
  std::ofstream(shard / (std::string(64, 'd') + ".lock")) << "pid 1 on host gone since 0.000\n";
  const fs::path old_temp = shard / (k.hash + ".entry.tmp.9.9.9");
  std::ofstream(old_temp) << "half";
  set_mtime(old_temp, 1'000'000'000);
  // An entry of the earlier format, as convjit 0.1 wrote it (no marker then).
  write_file(dir.path() / "v1" / "ab" / (std::string(64, 'a') + ".entry"), old_format_entry());
  // A lock held by a live compile stays.
  auto held = KeyLock::try_acquire(*posix_file_system(), shard / (std::string(64, 'e') + ".lock"));
  ASSERT_TRUE(held.held());

  const auto report = cache.clear();
  EXPECT_EQ(report.entries, 2u);
  EXPECT_FALSE(fs::exists(cache.entry_path(k)));
  EXPECT_FALSE(fs::exists(shard / (std::string(64, 'd') + ".lock")));
  EXPECT_TRUE(fs::exists(shard / (std::string(64, 'e') + ".lock")));
  EXPECT_FALSE(fs::exists(old_temp));
  EXPECT_FALSE(fs::exists(dir.path() / "v1"));
  EXPECT_EQ(report.removed_dirs, std::vector<fs::path>{dir.path() / "v1"});
  ASSERT_EQ(report.left.size(), 1u) << "only the held lock stays";
  EXPECT_EQ(report.left[0].why, "held by a running compile");
  EXPECT_EQ(cache.total_size(), 0u);
  EXPECT_TRUE(cache.list().empty());
}

TEST(DiskCache, VersionDirectoryConvjitCreatesIsMarkedAndOneItFindsIsNot) {
  testing::TempDir dir;
  const DiskCache cache(dir.path() / "new");
  EXPECT_EQ(read_file(cache.version_dir() / "CACHEDIR.TAG").rfind("Signature: 8a477f597d28d172789f06886806bc55\n", 0),
            0u);
  // A version directory that exists already may be anyone's: convjit does not claim it.
  fs::create_directories(dir.path() / "old" / "v2");
  fs::permissions(dir.path() / "old", fs::perms::owner_all, fs::perm_options::replace);
  fs::permissions(dir.path() / "old" / "v2", fs::perms::owner_all, fs::perm_options::replace);
  const DiskCache found(dir.path() / "old");
  EXPECT_FALSE(fs::exists(found.version_dir() / "CACHEDIR.TAG"));
}

// Issue 12: `cache clear` deleted every v<digits> directory whole, a user's
// v1/checkpoints/model.pt included.
TEST(DiskCache, ClearLeavesWhatConvjitDidNotMakeInAnOlderVersionDirectoryAndSaysWhy) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const fs::path v1 = dir.path() / "v1";
  write_file(v1 / "checkpoints" / "model.pt", "weights");
  write_file(v1 / "notes.txt", "mine");
  const fs::path old_entry = v1 / "ab" / (std::string(64, 'a') + ".entry");
  const fs::path lookalike = v1 / "ab" / (std::string(64, 'b') + ".entry");
  write_file(old_entry, old_format_entry());
  write_file(lookalike, "named like an entry, but not one");

  const auto report = cache.clear();
  EXPECT_EQ(report.entries, 1u);
  EXPECT_FALSE(fs::exists(old_entry));
  EXPECT_EQ(read_file(v1 / "checkpoints" / "model.pt"), "weights");
  EXPECT_EQ(read_file(v1 / "notes.txt"), "mine");
  EXPECT_EQ(read_file(lookalike), "named like an entry, but not one");
  EXPECT_TRUE(report.removed_dirs.empty()) << "v1 still holds the user's files";
  std::map<fs::path, std::string> left;
  for (const auto& l : report.left) {
    EXPECT_FALSE(l.error) << l.path << ": " << l.why;
    left[l.path] = l.why;
  }
  EXPECT_EQ(left.size(), 3u);
  EXPECT_EQ(left[v1 / "checkpoints"], "not made by convjit (none of its file names)");
  EXPECT_EQ(left[v1 / "notes.txt"], "not made by convjit (none of its file names)");
  EXPECT_EQ(left[lookalike], "not recognizably convjit's (it does not start like a cache entry)");
}

TEST(DiskCache, ClearInAnUnmarkedVersionDirectoryRemovesOnlyFilesThatStartLikeEntries) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey good = test_key("good");
  const CacheKey damaged = test_key("damaged");
  cache.store(good, test_entry(good));
  cache.store(damaged, test_entry(damaged));
  write_file(cache.entry_path(damaged), "garbage where the header was");
  // In the directory convjit marked, a damaged entry is still convjit's...
  {
    testing::TempDir copy;
    fs::copy(dir.path(), copy.path(), fs::copy_options::recursive);
    const auto report = DiskCache(copy.path()).clear();
    EXPECT_EQ(report.entries, 2u);
    EXPECT_TRUE(report.left.empty());
  }
  // ...without the marker (a cache made before convjit wrote one) its contents must tell.
  fs::remove(cache.version_dir() / "CACHEDIR.TAG");
  const auto report = cache.clear();
  EXPECT_EQ(report.entries, 1u);
  EXPECT_FALSE(fs::exists(cache.entry_path(good)));
  EXPECT_TRUE(fs::exists(cache.entry_path(damaged)));
  ASSERT_EQ(report.left.size(), 1u);
  EXPECT_EQ(report.left[0].path, cache.entry_path(damaged));
}

TEST(DiskCache, ClearNeverFollowsOrRemovesSymbolicLinks) {
  testing::TempDir dir;
  DiskCache cache(dir.path() / "cache");
  const CacheKey k = test_key("linked");
  cache.store(k, test_entry(k));
  // Entry-looking files outside the cache, reachable only through links in it.
  const fs::path outside = dir.path() / "outside";
  const fs::path target_entry = outside / "ab" / (std::string(64, 'a') + ".entry");
  write_file(target_entry, old_format_entry());
  fs::rename(cache.entry_path(k), outside / "moved.entry");
  fs::create_symlink(outside / "moved.entry", cache.entry_path(k));  // an entry slot
  fs::create_symlink(outside / "ab", cache.version_dir() / "cd");    // a shard slot
  fs::create_symlink(outside, cache.root() / "v1");                  // another version's directory

  const auto report = cache.clear();
  EXPECT_EQ(report.entries, 0u);
  EXPECT_TRUE(fs::exists(target_entry));
  EXPECT_TRUE(fs::exists(outside / "moved.entry"));
  for (const fs::path& link : {cache.entry_path(k), cache.version_dir() / "cd", cache.root() / "v1"}) {
    EXPECT_TRUE(fs::is_symlink(link)) << link;
    EXPECT_TRUE(std::any_of(
        report.left.begin(), report.left.end(),
        [&](const auto& l) { return l.path == link && l.why.find("a symbolic link") != std::string::npos; }))
        << link << " is not reported as left";
  }
}

TEST(DiskCache, ClearLeavesLockFilesConvjitDidNotWriteUntouched) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey k = test_key("locks");
  cache.store(k, test_entry(k));
  fs::remove(cache.version_dir() / "CACHEDIR.TAG");  // names alone then prove nothing
  const fs::path shard = cache.entry_path(k).parent_path();
  write_file(shard / "build.lock", "a user's lock");
  write_file(shard / (std::string(64, 'c') + ".lock"), "not an owner record");
  const auto report = cache.clear();
  EXPECT_EQ(read_file(shard / "build.lock"), "a user's lock");
  EXPECT_EQ(read_file(shard / (std::string(64, 'c') + ".lock")), "not an owner record");
  EXPECT_EQ(report.left.size(), 2u);
}

// Issue 12: verify skipped symlinks, FIFOs and directories in entry slots and called the cache clean.
TEST(DiskCache, VerifyAllReportsAnythingButARegularFileInAnEntrySlotAndChangesNothing) {
  testing::TempDir dir;
  DiskCache cache(dir.path() / "cache");
  const CacheKey k = test_key("slots");
  cache.store(k, test_entry(k));
  const fs::path shard = cache.entry_path(k).parent_path();
  const fs::path link = shard / (std::string(64, '1') + ".entry");
  const fs::path fifo = shard / (std::string(64, '2') + ".entry");
  const fs::path subdir = shard / (std::string(64, '3') + ".entry");
  const fs::path socket_path = shard / (std::string(64, '4') + ".entry");
  const fs::path shard_link = cache.version_dir() / "ff";
  fs::create_symlink(cache.entry_path(k), link);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  fs::create_directory(subdir);
  {
    // Bound at a short path (sun_path holds 108 bytes), then moved into the slot.
    const fs::path bound = dir.path() / "s";
    const int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(sock, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, bound.c_str(), sizeof address.sun_path - 1);
    ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&address), sizeof address), 0) << bound;
    ::close(sock);
    fs::rename(bound, socket_path);
  }
  fs::create_symlink(shard, shard_link);

  const auto bad = cache.verify_all();
  std::map<fs::path, DiskCache::BadEntry> by_path;
  for (const auto& b : bad) by_path[b.path] = b;
  ASSERT_EQ(bad.size(), 5u);
  EXPECT_EQ(by_path[link].why, "a symbolic link where a cache entry belongs");
  EXPECT_EQ(by_path[fifo].why, "a FIFO where a cache entry belongs");
  EXPECT_EQ(by_path[subdir].why, "a directory where a cache entry belongs");
  EXPECT_EQ(by_path[socket_path].why, "a socket where a cache entry belongs");
  EXPECT_EQ(by_path[shard_link].why, "a symbolic link where a shard directory belongs");
  for (const auto& b : bad) {
    EXPECT_TRUE(b.misplaced) << b.path;
    EXPECT_NE(b.not_convjits.find("not made by convjit"), std::string::npos) << b.path << ": " << b.not_convjits;
  }
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_TRUE(fs::is_fifo(fifo));
  EXPECT_TRUE(fs::is_directory(subdir));
}

TEST(DiskCache, RemoveEntryRefusesWhatConvjitDidNotMake) {
  testing::TempDir dir;
  DiskCache cache(dir.path() / "cache");
  const CacheKey k = test_key("refuse");
  cache.store(k, test_entry(k));
  const fs::path target = dir.path() / "target";
  fs::rename(cache.entry_path(k), target);
  fs::create_symlink(target, cache.entry_path(k));
  try {
    cache.remove_entry(cache.entry_path(k));
    FAIL() << "removed a symbolic link";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCache);
    EXPECT_NE(std::string(e.what()).find("a symbolic link"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_symlink(cache.entry_path(k)));
  EXPECT_TRUE(fs::exists(target));
}

TEST(DiskCache, HitRefreshesTheLastUsedStampAtMostOncePerInterval) {
  testing::TempDir dir;
  const CacheKey k = test_key("stamp-key");
  DiskCache(dir.path()).store(k, test_entry(k));
  DiskCacheOptions hourly;
  hourly.stamp_interval = std::chrono::hours(1);
  DiskCache cache(dir.path(), hourly);
  const fs::path path = cache.entry_path(k);

  const auto now = std::time(nullptr);
  set_mtime(path, now - 60);  // used a minute ago: fresh enough, no write
  ASSERT_EQ(cache.load(k).status, DiskCache::Status::kHit);
  struct stat st {};
  ::stat(path.c_str(), &st);
  EXPECT_EQ(st.st_mtime, now - 60);

  set_mtime(path, now - 7200);  // two hours ago: stamped now
  ASSERT_EQ(cache.load(k).status, DiskCache::Status::kHit);
  ::stat(path.c_str(), &st);
  EXPECT_GE(st.st_mtime, now);
}

TEST(DiskCache, ReadOnlyCacheServesItsEntriesAndWritesNothing) {
  testing::TempDir dir;
  const CacheKey k = test_key("shipped");
  const CacheKey missing = test_key("not-shipped");
  DiskCache(dir.path()).store(k, test_entry(k));
  const fs::path path = DiskCache(dir.path()).entry_path(k);
  set_mtime(path, 1'000'000'000);

  DiskCache cache(dir.path(), DiskCacheOptions{.readonly = true, .stamp_interval = std::chrono::seconds(0)});
  EXPECT_TRUE(cache.readonly());
  EXPECT_EQ(cache.load(k).status, DiskCache::Status::kHit);
  DiskCache::FetchReport report;
  int builds = 0;
  cache.fetch_or_build(
      missing,
      [&] {
        ++builds;
        return test_entry(missing);
      },
      report);
  EXPECT_EQ(builds, 1);
  EXPECT_FALSE(report.store_failed) << "a read-only cache does not try";
  EXPECT_FALSE(cache.store(missing, test_entry(missing)).published);
  EXPECT_FALSE(fs::exists(cache.entry_path(missing)));
  EXPECT_FALSE(fs::exists(cache.entry_path(missing).parent_path() / (missing.hash + ".lock")));
  struct stat st {};
  ::stat(path.c_str(), &st);
  EXPECT_EQ(st.st_mtime, 1'000'000'000) << "no last-used stamp in read-only mode";
  EXPECT_THROW(cache.evict_to(0), Error);
  EXPECT_THROW(cache.clear(), Error);
}

TEST(DiskCache, ReadOnlyCacheThatDoesNotExistIsAClearError) {
  testing::TempDir dir;
  try {
    DiskCache cache(dir.path() / "absent", DiskCacheOptions{.readonly = true});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCache);
    EXPECT_NE(std::string(e.what()).find("read-only cache directory"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir.path() / "absent"));
}

// Flips the first byte of section `name`'s body in the entry file at `path`.
void flip_section_body(const fs::path& path, std::string_view name) {
  std::string bytes = read_file(path);
  const std::size_t header = bytes.find("\n" + std::string(name) + " ") + 1;
  bytes[bytes.find('\n', header) + 1] ^= 0x01;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

CacheEntry big_entry(const CacheKey& k) {
  CacheEntry entry = test_entry(k, 4000);
  entry.source = std::string(30000, 's');
  entry.ptx = std::string(50000, 'p');
  return entry;
}

TEST(DiskCache, ALoadForTheKernelReadsNeitherTheSourceNorThePtx) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey k = test_key("for-load");
  const auto stored = cache.store(k, big_entry(k));
  const auto hit = cache.load(k, DiskCache::Parts::kForLoad);
  ASSERT_EQ(hit.status, DiskCache::Status::kHit) << hit.why;
  CacheEntry expected = big_entry(k);
  expected.source.clear();
  expected.ptx.clear();
  EXPECT_EQ(*hit.entry, expected);
  EXPECT_LT(hit.bytes, stored.bytes - 80000 + 20000) << "the source and PTX bodies were read";
  EXPECT_EQ(*cache.load(k).entry, big_entry(k)) << "a whole load still reads every section";
}

TEST(DiskCache, AFlippedCubinByteIsCorruptForALoadAndRebuilt) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey k = test_key("cubin-flip");
  cache.store(k, big_entry(k));
  flip_section_body(cache.entry_path(k), "cubin");
  testing::CapturedWarnings warnings;
  const auto lookup = cache.load(k, DiskCache::Parts::kForLoad);
  EXPECT_EQ(lookup.status, DiskCache::Status::kCorrupt);
  EXPECT_NE(lookup.why.find("checksum mismatch in section 'cubin'"), std::string::npos) << lookup.why;
  DiskCache::FetchReport report;
  int builds = 0;
  const CacheEntry got = cache.fetch_or_build(
      k,
      [&] {
        ++builds;
        return big_entry(k);
      },
      report, DiskCache::Parts::kForLoad);
  EXPECT_EQ(builds, 1);
  EXPECT_TRUE(report.corrupt);
  EXPECT_EQ(got, big_entry(k)) << "what was built is returned whole";
  EXPECT_EQ(cache.load(k).status, DiskCache::Status::kHit) << "the rebuild replaced the damaged entry";
  EXPECT_NE(warnings.text().find("is corrupt (checksum mismatch in section 'cubin'); rebuilding it"),
            std::string::npos);
}

TEST(DiskCache, AFlippedPtxOrSourceByteStillLoadsTheKernelButFailsAWholeLoadAndVerify) {
  for (const std::string_view section : {"ptx", "source"}) {
    testing::TempDir dir;
    DiskCache cache(dir.path());
    const CacheKey k = test_key(fmt::format("{}-flip", section));
    cache.store(k, big_entry(k));
    flip_section_body(cache.entry_path(k), section);
    const auto for_load = cache.load(k, DiskCache::Parts::kForLoad);
    ASSERT_EQ(for_load.status, DiskCache::Status::kHit) << section << ": " << for_load.why;
    EXPECT_EQ(for_load.entry->cubin, big_entry(k).cubin);
    const auto whole = cache.load(k);
    EXPECT_EQ(whole.status, DiskCache::Status::kCorrupt) << section;
    EXPECT_NE(whole.why.find(fmt::format("checksum mismatch in section '{}'", section)), std::string::npos)
        << whole.why;
    const auto bad = cache.verify_all();
    ASSERT_EQ(bad.size(), 1u) << section;
    EXPECT_NE(bad[0].why.find(fmt::format("section '{}'", section)), std::string::npos) << bad[0].why;
  }
}

TEST(DiskCache, ALoadForTheKernelRejectsTruncatedEmptyGarbageAndEarlierFormatEntries) {
  testing::TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey k = test_key("for-load-bad");
  const std::string good = serialize_entry(big_entry(k));
  const std::string earlier = std::string(good).replace(0, 21, "convjit-cache-entry 1");
  for (const std::string& bytes : {good.substr(0, good.size() / 2), good.substr(0, good.size() - 1), std::string(),
                                   std::string("garbage\n"), earlier, good + "x"}) {
    write_file(cache.entry_path(k), bytes);
    const auto lookup = cache.load(k, DiskCache::Parts::kForLoad);
    EXPECT_EQ(lookup.status, DiskCache::Status::kCorrupt) << bytes.size() << " bytes";
    EXPECT_FALSE(lookup.why.empty());
  }
}

}  // namespace
}  // namespace convjit
