// Every fault of the disk, injected under a whole Runtime: the call still succeeds
// (the kernel is compiled into memory), the warning says what happened, once.
// ENOSPC, EROFS and EACCES come from FaultyFileSystem, because this suite runs as
// root, for whom chmod does not deny anything.
#include <gtest/gtest.h>

#include <cerrno>
#include <fstream>

#include "cache/disk_cache.hpp"
#include "convjit/convjit.hpp"
#include "support/temp_dir.hpp"
#include "tests/cache/cache_test_util.hpp"
#include "tests/cache/faulty_file_system.hpp"

namespace convjit {
namespace {

using Op = testing::FaultyFileSystem::Op;
using testing::count_of;
namespace fs = std::filesystem;

const std::vector<Conv2dDesc> kDescs = {
    Conv2dDesc{.n = 1, .c = 2, .h = 7, .w = 5, .k = 2, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
    Conv2dDesc{.n = 1, .c = 3, .h = 7, .w = 5, .k = 2, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
    Conv2dDesc{.n = 1, .c = 4, .h = 7, .w = 5, .k = 2, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
};

class CacheFault : public ::testing::Test {
 protected:
  RuntimeOptions options() const { return RuntimeOptions{.cache_dir = dir_.path() / "cache"}; }
  // Prewarms kDescs under the faulty file system; every call must succeed.
  CacheStats prewarm_all(Runtime& rt) {
    const auto result = rt.prewarm(kDescs, "sm_90");
    EXPECT_EQ(result.failed, 0u) << (result.errors.empty() ? "" : result.errors[0]);
    EXPECT_EQ(result.compiled + result.already_cached, kDescs.size());
    for (const auto& d : kDescs) EXPECT_NE(rt.ptx(d, "sm_90").find(".target sm_90"), std::string::npos);
    return rt.stats();
  }

  testing::TempDir dir_;
  std::shared_ptr<testing::FaultyFileSystem> faults_ = std::make_shared<testing::FaultyFileSystem>();
};

TEST_F(CacheFault, DiskFullKeepsKernelsInMemoryAndWarnsOnce) {
  faults_->fail(Op::kWrite, ENOSPC, ".tmp.");
  testing::ScopedDefaultFileSystem scoped(faults_);
  testing::CapturedWarnings warnings;
  Runtime rt(options());
  const CacheStats stats = prewarm_all(rt);
  EXPECT_EQ(stats.compiles, kDescs.size());
  EXPECT_EQ(stats.disk_writes, 0u);
  EXPECT_EQ(stats.disk_write_errors, kDescs.size());
  const std::string text = warnings.text();
  EXPECT_EQ(count_of(text, "[convjit warn]"), 1u) << text;
  EXPECT_NE(text.find("is full (No space left on device while writing '"), std::string::npos) << text;
  EXPECT_NE(text.find("new kernels stay in memory until space frees up"), std::string::npos) << text;
  std::printf("warning shown: %s", text.c_str());
  for (const auto& e : fs::recursive_directory_iterator(dir_.path())) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "temp file left behind: " << e.path();
  }
}

TEST_F(CacheFault, StoreFailureWatchCountsEveryUnwrittenEntryWithTheFirstReason) {
  faults_->fail(Op::kWrite, ENOSPC, ".tmp.");
  testing::ScopedDefaultFileSystem scoped(faults_);
  testing::CapturedWarnings warnings;
  const StoreFailureWatch watch;
  Runtime rt(options());
  const CacheStats stats = prewarm_all(rt);
  // What `convjit prewarm` reports: the count CacheStats has, and why, which it has not.
  EXPECT_EQ(watch.count(), kDescs.size());
  EXPECT_EQ(watch.count(), stats.disk_write_errors);
  EXPECT_EQ(watch.first_reason().rfind("No space left on device while writing '" + (dir_.path() / "cache").string(), 0),
            0u)
      << watch.first_reason();
  {
    const StoreFailureWatch inner;  // the innermost watch collects; the outer one sees nothing meanwhile
    Runtime(options()).prewarm(std::span(kDescs).first(1), "sm_90");  // nothing was written: compiled again
    EXPECT_EQ(inner.count(), 1u);
  }
  EXPECT_EQ(watch.count(), kDescs.size());
}

TEST_F(CacheFault, DiskFullAtFsyncOrRenameIsAFailedWriteNotAFailedCall) {
  faults_->fail(Op::kFsync, EIO, ".tmp.");
  faults_->fail(Op::kRename, ENOSPC, ".entry");
  testing::ScopedDefaultFileSystem scoped(faults_);
  testing::CapturedWarnings warnings;
  Runtime rt(options());
  EXPECT_EQ(prewarm_all(rt).disk_write_errors, kDescs.size());
  const std::string text = warnings.text();
  EXPECT_NE(text.find("cannot write the disk cache (Input/output error while syncing"), std::string::npos) << text;
}

TEST_F(CacheFault, ReadOnlyFilesystemServesExistingEntriesAndWarnsOnce) {
  Runtime(options()).prewarm(std::span(kDescs).first(1), "sm_90");  // one entry exists
  faults_->fail(Op::kOpenWrite, EROFS);
  faults_->fail(Op::kMkdir, EROFS);
  testing::ScopedDefaultFileSystem scoped(faults_);
  testing::CapturedWarnings warnings;
  Runtime rt(options());
  const CacheStats stats = prewarm_all(rt);
  EXPECT_EQ(stats.disk_hits, 1u);
  EXPECT_EQ(stats.compiles, kDescs.size() - 1);
  EXPECT_EQ(stats.disk_mode, DiskCacheMode::kReadOnly);
  EXPECT_NE(stats.disk_note.find("is not writable (Read-only file system)"), std::string::npos) << stats.disk_note;
  const std::string text = warnings.text();
  EXPECT_EQ(count_of(text, "[convjit warn]"), 1u) << text;
  EXPECT_NE(text.find("is not writable (Read-only file system); using its entries read-only, new kernels stay in "
                      "memory"),
            std::string::npos)
      << text;
  std::printf("warning shown: %s", text.c_str());
}

TEST_F(CacheFault, PermissionDeniedCreatingTheCacheDirectoryWorksFromMemory) {
  faults_->fail(Op::kMkdir, EACCES);
  testing::ScopedDefaultFileSystem scoped(faults_);
  testing::CapturedWarnings warnings;
  Runtime rt(options());
  const CacheStats stats = prewarm_all(rt);
  EXPECT_EQ(stats.disk_mode, DiskCacheMode::kOff);
  EXPECT_EQ(stats.compiles, kDescs.size());
  const std::string text = warnings.text();
  EXPECT_EQ(count_of(text, "[convjit warn]"), 1u) << text;
  EXPECT_NE(text.find("disk cache disabled: cannot create cache directory '" + (dir_.path() / "cache").string() +
                      "': Permission denied; kernels stay in memory only"),
            std::string::npos)
      << text;
  std::printf("warning shown: %s", text.c_str());
}

TEST_F(CacheFault, PermissionDeniedWritingEntriesKeepsReadingAndWarnsOnce) {
  Runtime(options()).prewarm(std::span(kDescs).first(1), "sm_90");
  faults_->fail(Op::kOpenWrite, EACCES, ".tmp.");
  testing::ScopedDefaultFileSystem scoped(faults_);
  testing::CapturedWarnings warnings;
  Runtime rt(options());
  const CacheStats stats = prewarm_all(rt);
  EXPECT_EQ(stats.disk_hits, 1u);
  EXPECT_EQ(stats.disk_write_errors, kDescs.size() - 1);
  const std::string text = warnings.text();
  EXPECT_EQ(count_of(text, "[convjit warn]"), 1u) << text;
  EXPECT_NE(text.find("cannot write to the disk cache at '"), std::string::npos) << text;
  EXPECT_NE(text.find("(Permission denied while creating '"), std::string::npos) << text;
  EXPECT_NE(text.find("existing entries are still read"), std::string::npos) << text;
}

TEST_F(CacheFault, PermissionDeniedReadingAnEntryCompilesInstead) {
  Runtime(options()).prewarm(kDescs, "sm_90");
  faults_->fail(Op::kOpenRead, EACCES, ".entry");
  testing::ScopedDefaultFileSystem scoped(faults_);
  testing::CapturedWarnings warnings;
  Runtime rt(options());
  const CacheStats stats = prewarm_all(rt);
  EXPECT_EQ(stats.compiles, kDescs.size());
  const std::string text = warnings.text();
  EXPECT_EQ(count_of(text, "[convjit warn]"), 1u) << text;
  EXPECT_NE(text.find("(Permission denied); compiling instead"), std::string::npos) << text;
}

TEST_F(CacheFault, FileWhereTheCacheDirectoryShouldBeWorksFromMemory) {
  std::ofstream(dir_.path() / "cache") << "a file, not a directory";
  testing::CapturedWarnings warnings;
  Runtime rt(options());
  const CacheStats stats = prewarm_all(rt);
  EXPECT_EQ(stats.disk_mode, DiskCacheMode::kOff);
  const std::string text = warnings.text();
  EXPECT_EQ(count_of(text, "[convjit warn]"), 1u) << text;
  EXPECT_NE(text.find("disk cache disabled: cache path '" + (dir_.path() / "cache").string() +
                      "' exists and is not a directory"),
            std::string::npos)
      << text;
  std::printf("warning shown: %s", text.c_str());
}

TEST_F(CacheFault, FileWhereAShardDirectoryShouldBeWorksFromMemory) {
  const fs::path entry = Runtime(options()).inspect(kDescs[0], "sm_90").cache_path;
  fs::remove_all(entry.parent_path());
  std::ofstream(entry.parent_path()) << "a file where the shard directory should be";
  testing::CapturedWarnings warnings;
  Runtime rt(options());
  rt.inspect(kDescs[0], "sm_90");
  EXPECT_EQ(rt.stats().compiles, 1u);
  const std::string text = warnings.text();
  EXPECT_EQ(count_of(text, "[convjit warn]"), 1u) << text;
  EXPECT_NE(text.find("'" + entry.parent_path().string() + "' is not a directory"), std::string::npos) << text;
}

TEST_F(CacheFault, DirectoryThatBecomesUnwritableMidRunWarnsOnceAndKeepsWorking) {
  testing::ScopedDefaultFileSystem scoped(faults_);
  Runtime rt(options());
  rt.prewarm(std::span(kDescs).first(1), "sm_90");
  faults_->fail(Op::kOpenWrite, EROFS);
  faults_->fail(Op::kMkdir, EROFS);
  testing::CapturedWarnings warnings;
  const CacheStats stats = prewarm_all(rt);
  EXPECT_EQ(stats.disk_writes, 1u);
  EXPECT_EQ(stats.disk_write_errors, kDescs.size() - 1);
  const std::string text = warnings.text();
  EXPECT_EQ(count_of(text, "[convjit warn]"), 1u) << text;
  EXPECT_NE(text.find("(Read-only file system while creating"), std::string::npos) << text;
}

TEST_F(CacheFault, LocksUnsupportedByTheFilesystemCompileWithoutTheLock) {
  faults_->fail(Op::kFlock, ENOLCK, ".lock");
  testing::ScopedDefaultFileSystem scoped(faults_);
  testing::CapturedWarnings warnings;
  Runtime rt(options());
  const CacheStats stats = prewarm_all(rt);
  EXPECT_EQ(stats.disk_writes, kDescs.size());
  const std::string text = warnings.text();
  // Both locks are flocks: the per-key one and the cache-wide one for eviction.
  EXPECT_EQ(count_of(text, "[convjit warn]"), 2u) << text;
  EXPECT_NE(text.find("(No locks available); compiling without it"), std::string::npos) << text;
  EXPECT_NE(text.find("(No locks available); publishing without evicting"), std::string::npos) << text;
}

TEST_F(CacheFault, ListingFailureDuringEvictionStillPublishes) {
  faults_->fail(Op::kList, EIO);
  testing::ScopedDefaultFileSystem scoped(faults_);
  Runtime rt(options());
  EXPECT_EQ(prewarm_all(rt).disk_writes, kDescs.size());
}

}  // namespace
}  // namespace convjit
