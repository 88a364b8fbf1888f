// convjit prewarm: workload JSON and shape-list files compiled in parallel for a given
// arch on a machine without a GPU; skipped, unsupported and failed problems told apart;
// malformed input named by file:line:column.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <filesystem>

#include "support/gpu.hpp"
#include "tools/cli_runner.hpp"

namespace convjit::testing {
namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// One supported 2D problem, a 3D one and a transposed one, in the KernelBench format.
constexpr const char* kWorkloadJson = R"({"problems": [
  {"id": 1, "name": "small_2d", "op": "conv", "N": 1, "C": 4, "K": 8, "spatial": [12, 10], "kernel": [3, 3],
   "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1, "bias": false},
  {"id": 2, "name": "small_3d", "op": "conv", "N": 1, "C": 4, "K": 8, "spatial": [8, 8, 8], "kernel": [3, 3, 3],
   "stride": [1, 1, 1], "padding": [0, 0, 0], "dilation": [1, 1, 1], "groups": 1, "bias": false},
  {"id": 3, "name": "small_transposed", "op": "conv_transpose", "N": 1, "C": 4, "K": 8, "spatial": [8, 8],
   "kernel": [3, 3], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1, "bias": false}
]})";

constexpr const char* kShapeList =
    "# two more problems\n"
    "n2c8h9k8r3 pad=1 groups=8 bias=1\n"
    "\n"
    "n1c3h16w8k4r3s1 stride=2,1  # strided\n";

TEST_F(CliTest, PrewarmJsonAndTextFilesForSm90CompilesAll2d3dAndTransposedProblems) {
  const auto json = write_file("kb.json", kWorkloadJson);
  const auto text = write_file("shapes.txt", kShapeList);
  const auto r = cli({"prewarm", json.string(), text.string(), "--arch", "sm_90", "--jobs", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "prewarm   5 problems for sm_90 into " + cache_dir().string() + " with 2 jobs\n"))
      << r.out;
  EXPECT_FALSE(contains(r.out, "skipped   ")) << r.out;
  EXPECT_TRUE(contains(r.out, "#2 small_3d")) << r.out;
  EXPECT_TRUE(contains(r.out, "#3 small_transposed")) << r.out;
  // Not a terminal: one plain line per problem, no carriage returns.
  EXPECT_TRUE(contains(r.out, "compiled")) << r.out;
  EXPECT_TRUE(contains(r.out, "shapes.txt:2")) << r.out;
  EXPECT_TRUE(contains(r.out, "shapes.txt:4")) << r.out;
  EXPECT_TRUE(contains(r.out, "#1 small_2d")) << r.out;
  EXPECT_FALSE(contains(r.out, "\r"));
  EXPECT_TRUE(contains(r.out, "summary   compiled 5, already cached 0, failed 0, unsupported 0, skipped 0,")) << r.out;
  EXPECT_TRUE(contains(r.out, "runtime   compiles 5 (")) << r.out;
}

TEST_F(CliTest, PrewarmOfOnlySkippedProblemsSucceeds) {
  const auto json = write_file("kb.json", R"({"problems": [{"id": 99, "name": "pool", "op": "max_pool", "N": 1,
    "C": 4, "K": 4, "spatial": [64], "kernel": [3], "stride": [1], "padding": [0], "dilation": [1]}]})");
  const auto r = cli({"prewarm", json.string(), "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "skipped   #99 pool: op 'max_pool' is not supported")) << r.out;
  EXPECT_TRUE(contains(r.out, "summary   compiled 0, already cached 0, failed 0, unsupported 0, skipped 1,")) << r.out;
}

TEST_F(CliTest, PrewarmTwiceFindsEverythingCachedAndCompilesNothing) {
  const auto text = write_file("shapes.txt", kShapeList);
  ASSERT_EQ(cli({"prewarm", text.string(), "--arch", "sm_90"}).exit_code, 0);
  const auto r = cli({"prewarm", text.string(), "--arch", "sm_90", "--jobs", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "summary   compiled 0, already cached 2, failed 0")) << r.out;
  EXPECT_TRUE(contains(r.out, "runtime   compiles 0 (0 ms in NVRTC), disk hits 2")) << r.out;
}

TEST_F(CliTest, PrewarmShapeOptionWithDirOption) {
  const auto dir = cache_dir().parent_path() / "elsewhere";
  const auto r = cli({"prewarm", "--shape", kSmallA, "--arch=sm_90", "--dir", dir.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "into " + dir.string())) << r.out;
  EXPECT_TRUE(contains(r.out, "compiled 1,")) << r.out;
}

TEST_F(CliTest, PrewarmDrawsABarWhenAskedAsOnATerminal) {
  const auto r = cli({"prewarm", "--shape", kSmallA, "--arch", "sm_90"}, {"CONVJIT_PROGRESS=bar"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "\r\033[2K[")) << r.out;
  EXPECT_TRUE(contains(r.out, "[##############################] 1/1  compiled 1  cached 0  failed 0")) << r.out;
}

TEST_F(CliTest, PrewarmMalformedShapeListNamesFileLineAndColumnAndCompilesNothing) {
  const auto text = write_file("bad.txt", "n1c4h12k8r3\n\nn8c64h512w256k128r5s7 strid=1\n");
  const auto r = cli({"prewarm", text.string(), "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, text.string() + ":3:23: unknown key 'strid'; expected one of stride")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(cache_dir())) << "nothing may be compiled from a malformed file";
}

TEST_F(CliTest, PrewarmMalformedJsonNamesLineAndColumn) {
  const auto json = write_file("bad.json", "{\"problems\": [\n  {\"id\": 1,, }\n]}\n");
  const auto r = cli({"prewarm", json.string(), "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, json.string() + ":2:12: expected")) << r.err;
}

TEST_F(CliTest, PrewarmJsonProblemWithAWrongFieldNamesTheProblemAndField) {
  const auto json = write_file("bad.json", R"({"problems": [{"op": "conv", "N": "eight", "C": 4, "K": 8,
    "spatial": [8, 8], "kernel": [3, 3], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1]}]})");
  const auto r = cli({"prewarm", json.string(), "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "problems[0]: field 'N': expected an integer")) << r.err;
}

TEST_F(CliTest, PrewarmMissingFileExitsTwoNamingIt) {
  const auto r = cli({"prewarm", (cache_dir().parent_path() / "nope.txt").string(), "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "cannot open")) << r.err;
  EXPECT_TRUE(contains(r.err, "nope.txt")) << r.err;
}

TEST_F(CliTest, PrewarmDtypeOverrideCompiles16BitVariants) {
  for (const char* dtype : {"f16", "bf16"}) {
    const auto r = cli({"prewarm", "--shape", kSmallA, "--shape", kSmallB, "--dtype", dtype, "--arch", "sm_90"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "summary   compiled 2, already cached 0, failed 0, unsupported 0")) << r.out;
  }
  const auto ls = cli({"cache", "ls"});
  EXPECT_TRUE(contains(ls.out, "dtype=f16")) << ls.out;
  EXPECT_TRUE(contains(ls.out, "dtype=bf16")) << ls.out;
}

TEST_F(CliTest, PrewarmNhwcShapesCompileAndAreListedWithTheirLayout) {
  const auto r =
      cli({"prewarm", "--shape", std::string(kSmallA) + " layout=nhwc", "--shape",
           std::string(kSmallB) + " layout=nhwc", "--shape", "n2c32h7w7k48r1 layout=nhwc", "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "summary   compiled 3, already cached 0, failed 0, unsupported 0")) << r.out;
  const auto ls = cli({"cache", "ls"});
  EXPECT_TRUE(contains(ls.out, "layout=nhwc")) << ls.out;
  EXPECT_FALSE(contains(ls.out, "layout=nchw")) << ls.out;
}

TEST_F(CliTest, PrewarmLayoutOverrideAndWorkloadLayoutFieldCompileNhwcVariants) {
  const auto json = write_file("nhwc.json", R"({"problems": [{"id": 1, "op": "conv", "N": 1, "C": 4, "K": 8,
    "spatial": [12, 10], "kernel": [3, 3], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1],
    "layout": "nhwc"}]})");
  const auto from_file = cli({"prewarm", json.string(), "--arch", "sm_80"});
  EXPECT_EQ(from_file.exit_code, 0) << from_file.out << from_file.err;
  EXPECT_TRUE(contains(from_file.out, "summary   compiled 1, already cached 0, failed 0, unsupported 0"))
      << from_file.out;
  // The same problem through --layout: already cached.
  const auto overridden = cli({"prewarm", "--shape", kSmallA, "--layout", "nhwc", "--arch", "sm_80"});
  EXPECT_EQ(overridden.exit_code, 0) << overridden.out << overridden.err;
  EXPECT_TRUE(contains(overridden.out, "summary   compiled 0, already cached 1, failed 0, unsupported 0"))
      << overridden.out;
  const auto bad = cli({"prewarm", "--shape", kSmallA, "--layout", "chwn", "--arch", "sm_80"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(contains(bad.err, "option '--layout' expects nchw or nhwc, got 'chwn'")) << bad.err;
}

TEST_F(CliTest, PrewarmMathOverrideCompilesStrictVariants) {
  const auto r = cli({"prewarm", "--shape", kSmallA, "--math", "strict", "--arch", "sm_90"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto ls = cli({"cache", "ls"});
  EXPECT_TRUE(contains(ls.out, "math=strict")) << ls.out;
}

// docs/cli.md: an invalid problem is bad input (exit 2), and stops prewarm before anything is compiled.
TEST_F(CliTest, PrewarmInvalidShapeOptionExitsTwoNamingItAndCompilesNothing) {
  // groups=4 does not divide k=6: the problem is well formed but invalid.
  const auto r = cli({"prewarm", "--shape", kSmallA, "--shape", "c4h8k6r3 groups=4", "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err,
                       "--shape 'c4h8k6r3 groups=4': invalid problem: Conv2dDesc.groups: expected a divisor of "
                       "k = 6, got 4"))
      << r.err;
  EXPECT_FALSE(std::filesystem::exists(cache_dir())) << "nothing may be compiled when a problem is invalid";
}

TEST_F(CliTest, PrewarmInvalidProblemInAShapeListExitsTwoWithFileLineAndColumn) {
  const auto text = write_file("shapes.txt", std::string(kSmallA) + "\n  c4h8k6r3 groups=4\n");
  const auto r = cli({"prewarm", text.string(), "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, text.string() + ":2:3: invalid problem: Conv2dDesc.groups: expected a divisor of k = 6"))
      << r.err;
  EXPECT_FALSE(std::filesystem::exists(cache_dir()));
}

TEST_F(CliTest, PrewarmInvalidJsonProblemExitsTwoWithFileLineAndColumnOfTheProblem) {
  const auto json = write_file("kb.json", R"({"problems": [
  {"id": 7, "name": "filter_too_big", "op": "conv", "N": 1, "C": 4, "K": 8, "spatial": [4, 4], "kernel": [5, 5],
   "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1]}]})");
  const auto r = cli({"prewarm", json.string(), "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, json.string() + ":2:3: problems[0] (#7 filter_too_big): invalid problem: Conv2dDesc.h:"))
      << r.err;
  EXPECT_FALSE(std::filesystem::exists(cache_dir()));
}

// Issue 12: a spatial extent of 4294967304 was converted to int with undefined behaviour.
TEST_F(CliTest, PrewarmJsonNumberTooLargeForIntExitsTwoNamingPlaceAndField) {
  const auto json = write_file("kb.json", R"({"problems": [{"op": "conv", "N": 1, "C": 4, "K": 8,
    "spatial": [8, 4294967304], "kernel": [3, 3], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1]}]})");
  const auto r = cli({"prewarm", json.string(), "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, json.string() +
                                  ":2:20: problems[0]: field 'spatial'[1]: expected an integer from 1 to 2147483647, "
                                  "got 4294967304"))
      << r.err;
}

// Issue 12: a key given twice passed silently (the last one won).
TEST_F(CliTest, PrewarmJsonDuplicateKeyExitsTwoNamingBothPlaces) {
  const auto json = write_file("kb.json", R"({"problems": [{"op": "conv", "N": 1, "C": 4, "K": 8, "C": 16,
    "spatial": [8, 8], "kernel": [3, 3], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1]}]})");
  const auto r = cli({"prewarm", json.string(), "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, json.string() + ":1:54: member \"C\" is given twice in one object (first at 1:38)"))
      << r.err;
}

// Makes every file this process and its children write stop at `bytes`, with SIGXFSZ
// ignored so that write() fails with EFBIG instead of killing the writer: a disk that
// fills up, without root (a loop mount needs it) and without a hook in the cache.
class ScopedFileSizeLimit {
 public:
  explicit ScopedFileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    saved_handler_ = std::signal(SIGXFSZ, SIG_IGN);  // inherited across exec, unlike a handler
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    ok_ = ::setrlimit(RLIMIT_FSIZE, &limit) == 0;
  }
  ~ScopedFileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, saved_handler_);
  }
  ScopedFileSizeLimit(const ScopedFileSizeLimit&) = delete;
  ScopedFileSizeLimit& operator=(const ScopedFileSizeLimit&) = delete;
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  void (*saved_handler_)(int) = SIG_DFL;
  bool ok_ = false;
};

// Issue 12: prewarm exited 0 when the disk was full and nothing could be written.
TEST_F(CliTest, PrewarmThatCannotWriteItsEntriesExitsOneAndSaysHowManyAndWhy) {
  CliResult r;
  {
    // Entries are tens of KiB; prewarm's own output is far below the limit.
    const ScopedFileSizeLimit limit(16 * 1024);
    ASSERT_TRUE(limit.ok());
    r = cli({"prewarm", "--shape", kSmallA, "--shape", kSmallB, "--arch", "sm_90", "--jobs", "1"});
  }
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "summary   compiled 2, already cached 0, failed 0")) << r.out;
  EXPECT_TRUE(contains(r.out, "disk writes 0")) << r.out;
  EXPECT_TRUE(contains(r.out, "uncached  2 entries could not be written to the cache at " + cache_dir().string() +
                                  " (first error: File too large while writing '" + cache_dir().string()))
      << r.out;
  // Nothing half written was left, and a prewarm with room compiles both again.
  for (const auto& e : std::filesystem::recursive_directory_iterator(cache_dir())) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
  }
  r = cli({"prewarm", "--shape", kSmallA, "--shape", kSmallB, "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "summary   compiled 2, already cached 0")) << r.out;
  EXPECT_FALSE(contains(r.out, "uncached")) << r.out;
}

TEST_F(CliTest, PrewarmBadArchOrOverrideExitsTwo) {
  auto r = cli({"prewarm", "--shape", kSmallA, "--arch", "sm90"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--arch: expected the form sm_XY (e.g. sm_90), got 'sm90'")) << r.err;
  r = cli({"prewarm", "--shape", kSmallA, "--arch", "sm_90", "--dtype", "f64"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "option '--dtype' expects f32, f16 or bf16, got 'f64'")) << r.err;
  r = cli({"prewarm", "--arch", "sm_90"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "nothing to prewarm")) << r.err;
}

TEST_F(CliTest, PrewarmWithoutArchOnAMachineWithoutGpuSaysToGiveArch) {
  if (!gpu_unavailable_reason()) GTEST_SKIP() << "there is a GPU here: its arch is the default";
  const auto r = cli({"prewarm", "--shape", kSmallA});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(contains(r.err, "no GPU here to take the arch from")) << r.err;
  EXPECT_TRUE(contains(r.err, "--arch sm_90")) << r.err;
}

}  // namespace
}  // namespace convjit::testing
