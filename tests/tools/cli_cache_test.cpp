// convjit cache ls|stats|verify|prune|clear on a cache filled by convjit prewarm.
#include <gtest/gtest.h>

#include <fstream>

#include "tools/cli_runner.hpp"
#include "workload/shape_text.hpp"

namespace convjit::testing {
namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class CliCacheTest : public CliTest {
 protected:
  void SetUp() override {
    const auto r = cli({"prewarm", "--shape", kSmallA, "--shape", kSmallB, "--arch", "sm_90", "--jobs", "2"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }

  std::vector<std::filesystem::path> entry_files() const {
    std::vector<std::filesystem::path> out;
    for (const auto& e : std::filesystem::recursive_directory_iterator(cache_dir())) {
      if (e.is_regular_file() && e.path().extension() == ".entry") out.push_back(e.path());
    }
    return out;
  }
};

TEST_F(CliCacheTest, LsListsEachEntryWithItsProblemInReadableForm) {
  const auto r = cli({"cache", "ls"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "LAST USED")) << r.out;
  EXPECT_TRUE(contains(r.out, parse_shape(kSmallA).to_string())) << r.out;
  EXPECT_TRUE(contains(r.out, parse_shape(kSmallB).to_string())) << r.out;
  EXPECT_TRUE(contains(r.out, "sm_90")) << r.out;
  EXPECT_TRUE(contains(r.out, "2 entries, ")) << r.out;
  const auto long_form = cli({"cache", "ls", "--long"});
  for (const auto& file : entry_files()) EXPECT_TRUE(contains(long_form.out, file.string())) << long_form.out;
}

TEST_F(CliCacheTest, StatsCountsEntriesBytesAndArchesAndIsTheDefaultAction) {
  const auto r = cli({"cache", "stats"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "entries    2, ")) << r.out;
  EXPECT_TRUE(contains(r.out, "  sm_90    2 entries, ")) << r.out;
  EXPECT_TRUE(contains(r.out, "limit")) << r.out;
  EXPECT_EQ(cli({"cache"}).out, r.out);
}

TEST_F(CliCacheTest, DirOptionPointsAtAnotherCache) {
  const auto elsewhere = cache_dir().parent_path() / "other";
  const auto r = cli({"cache", "stats", "--dir", elsewhere.string()});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "no cache at " + elsewhere.string())) << r.out;
  EXPECT_FALSE(std::filesystem::exists(elsewhere)) << "looking at a cache must not create one";
}

TEST_F(CliCacheTest, VerifyPassesThenFindsAFlippedByteAndRemoveDeletesIt) {
  auto r = cli({"cache", "verify"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "verified   2 entries in")) << r.out;
  EXPECT_TRUE(contains(r.out, ": 2 good, 0 bad")) << r.out;

  const auto files = entry_files();
  ASSERT_EQ(files.size(), 2u);
  {
    std::fstream f(files[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(files[0]) / 2));
    const char c = static_cast<char>(f.peek());
    f.put(static_cast<char>(c ^ 0x20));
  }
  r = cli({"cache", "verify"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.out, "BAD        " + files[0].string() + ": ")) << r.out;
  EXPECT_TRUE(contains(r.out, ": 1 good, 1 bad")) << r.out;
  EXPECT_TRUE(std::filesystem::exists(files[0])) << "verify without --remove changes nothing";

  r = cli({"cache", "verify", "--remove"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.out, "(removed)")) << r.out;
  EXPECT_FALSE(std::filesystem::exists(files[0]));
  r = cli({"cache", "verify"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, ": 1 good, 0 bad")) << r.out;
}

TEST_F(CliCacheTest, PruneEvictsDownToTheGivenSize) {
  auto r = cli({"cache", "prune", "--max-size", "1G"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "pruned     0 entries, 0 B;")) << r.out;
  EXPECT_EQ(entry_files().size(), 2u);

  r = cli({"cache", "prune", "--max-size", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "pruned     2 entries, ")) << r.out;
  EXPECT_TRUE(entry_files().empty());
}

TEST_F(CliCacheTest, PruneWithAMalformedSizeExitsTwo) {
  const auto r = cli({"cache", "prune", "--max-size", "lots"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "option '--max-size' expects a size such as 500M or 2G, got 'lots'")) << r.err;
}

TEST_F(CliCacheTest, ClearRemovesEveryEntryAndLsShowsNone) {
  auto r = cli({"cache", "clear"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "cleared    2 entries, ")) << r.out;
  EXPECT_TRUE(entry_files().empty());
  r = cli({"cache", "ls"});
  EXPECT_TRUE(contains(r.out, "0 entries, 0 B")) << r.out;
}

// Issue 12: clear deleted every v<digits> directory whole, whoever made it.
TEST_F(CliCacheTest, ClearKeepsAUsersFilesInAVersionLikeDirectoryAndListsWhatItLeft) {
  const auto model = cache_dir() / "v1" / "checkpoints" / "model.pt";
  std::filesystem::create_directories(model.parent_path());
  std::ofstream(model) << "weights";
  const auto r = cli({"cache", "clear"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "cleared    2 entries, ")) << r.out;
  EXPECT_TRUE(contains(r.out, "left       v1/checkpoints: not made by convjit")) << r.out;
  EXPECT_TRUE(std::filesystem::exists(model));
  EXPECT_TRUE(entry_files().empty());
}

// Issue 12: verify skipped a symbolic link in an entry slot and called the cache clean.
TEST_F(CliCacheTest, VerifyReportsASymlinkInAnEntrySlotExitsOneAndRemoveLeavesIt) {
  const auto files = entry_files();
  ASSERT_EQ(files.size(), 2u);
  const auto target = cache_dir().parent_path() / "elsewhere.entry";
  std::filesystem::rename(files[0], target);
  std::filesystem::create_symlink(target, files[0]);
  auto r = cli({"cache", "verify"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "BAD        " + files[0].string() + ": a symbolic link where a cache entry belongs"))
      << r.out;
  EXPECT_TRUE(contains(r.out, ": 1 good, 1 bad")) << r.out;
  r = cli({"cache", "verify", "--remove"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "(left: not made by convjit (a symbolic link")) << r.out;
  EXPECT_TRUE(std::filesystem::is_symlink(files[0]));
  EXPECT_TRUE(std::filesystem::exists(target));
}

}  // namespace
}  // namespace convjit::testing
