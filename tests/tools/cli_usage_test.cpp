// The convjit command's dispatch: help for every subcommand, and usage errors that
// say what was wrong and exit with 2.
#include <gtest/gtest.h>

#include "tools/cli_runner.hpp"

namespace convjit::testing {
namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(ConvjitCli, HelpListsEverySubcommandAndExitCodes) {
  const auto r = run_cli({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* command : {"prewarm", "inspect", "cache", "run", "Exit status"}) {
    EXPECT_TRUE(contains(r.out, command)) << command << "\n" << r.out;
  }
}

TEST(ConvjitCli, EverySubcommandAndCacheActionHasHelp) {
  const std::vector<std::vector<std::string>> commands = {{"prewarm"},        {"inspect"},        {"run"},
                                                          {"cache", "ls"},    {"cache", "stats"}, {"cache", "verify"},
                                                          {"cache", "prune"}, {"cache", "clear"}};
  for (auto args : commands) {
    std::string name;
    for (const auto& a : args) name += (name.empty() ? "" : " ") + a;
    args.push_back("--help");
    const auto r = run_cli(args);
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.err;
    EXPECT_TRUE(contains(r.out, "usage: convjit " + name)) << r.out;
    EXPECT_TRUE(contains(r.out, "--dir D")) << name << " has no --dir:\n" << r.out;
  }
  const auto cache = run_cli({"cache", "--help"});
  EXPECT_EQ(cache.exit_code, 0);
  for (const char* action : {"ls", "stats", "verify", "prune", "clear"}) EXPECT_TRUE(contains(cache.out, action));
}

TEST(ConvjitCli, NoArgumentsPrintsUsageAndExitsTwo) {
  const auto r = run_cli({});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.out, "usage: convjit <command>"));
}

TEST(ConvjitCli, UnknownCommandOptionOrActionExitsTwoNamingIt) {
  auto r = run_cli({"compile"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "unknown command 'compile'")) << r.err;

  r = run_cli({"inspect", kSmallA, "--arch", "sm_90", "--bogus"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "convjit inspect: unknown option '--bogus' (see 'convjit inspect --help')")) << r.err;

  r = run_cli({"cache", "purge"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "unknown action 'purge'; expected ls, stats, verify, prune or clear")) << r.err;
}

TEST(ConvjitCli, OptionWithoutItsValueOrWithABadNumberExitsTwo) {
  auto r = run_cli({"prewarm", "--shape", kSmallA, "--arch"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "option '--arch' expects a value (SM)")) << r.err;

  r = run_cli({"prewarm", "--shape", kSmallA, "--arch", "sm_90", "--jobs", "0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "option '--jobs' expects a whole number >= 1, got '0'")) << r.err;

  r = run_cli({"inspect", kSmallA, "extra"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "unexpected argument 'extra'")) << r.err;

  r = run_cli({"inspect"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "expected SHAPE")) << r.err;
}

}  // namespace
}  // namespace convjit::testing
