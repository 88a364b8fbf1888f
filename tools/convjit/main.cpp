// convjit: prewarm the kernel cache, inspect generated code, manage the cache, run
// one problem. docs/cli.md describes every subcommand and the shape syntax.
#include <fmt/format.h>

#include <cstdio>
#include <string_view>
#include <vector>

#include "commands.hpp"
#include "convjit/error.hpp"
#include "convjit/version.hpp"

namespace {

using convjit::cli::Command;

constexpr std::string_view kOverview =
    "usage: convjit <command> [arguments] [options]\n"
    "\n"
    "commands:\n"
    "  prewarm FILE...   compile every problem of workload or shape-list files into the cache\n"
    "  inspect SHAPE     show the specialized source, PTX, SASS and resource use of one kernel\n"
    "  cache [ACTION]    ls, stats, verify, prune or clear the on-disk cache\n"
    "  run SHAPE         run one problem on the GPU, check it against float64 and time it\n"
    "\n"
    "SHAPE is one line such as \"n8c64h512w256k128r5s7 stride=1 pad=0\" (PyTorch Conv2d defaults for\n"
    "what is left out); see docs/cli.md. 'convjit <command> --help' describes each command.\n"
    "Exit status: 0 success, 1 the work failed, 2 bad command line or input, 3 needs a GPU or a tool\n"
    "this machine lacks.\n";

int exit_code_for(convjit::ErrorCode code) {
  using convjit::ErrorCode;
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return convjit::cli::kExitUsage;
    case ErrorCode::kNoDriver:
    case ErrorCode::kNoDevice:
      return convjit::cli::kExitUnavailable;
    default:
      return convjit::cli::kExitFailed;
  }
}

int dispatch(std::span<const std::string_view> argv) {
  if (argv.empty() || argv[0] == "-h" || argv[0] == "--help" || argv[0] == "help") {
    fmt::print("{}", kOverview);
    return argv.empty() ? convjit::cli::kExitUsage : convjit::cli::kExitOk;
  }
  if (argv[0] == "--version") {
    fmt::print("convjit {}\n", convjit::kVersion);
    return convjit::cli::kExitOk;
  }
  if (argv[0] == "cache") return convjit::cli::cache_main(argv.subspan(1));
  for (const Command* command :
       {&convjit::cli::prewarm_command(), &convjit::cli::inspect_command(), &convjit::cli::run_command()}) {
    if (argv[0] != command->spec.name) continue;
    const convjit::cli::Args args = convjit::cli::parse_args(command->spec, argv.subspan(1));
    if (args.help) {
      convjit::cli::print_help(command->spec);
      return convjit::cli::kExitOk;
    }
    return command->main(args);
  }
  fmt::print(stderr, "error: unknown command '{}'\n\n{}", argv[0], kOverview);
  return convjit::cli::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  try {
    const int code = dispatch(args);
    std::fflush(stdout);
    return code;
  } catch (const convjit::Error& e) {
    std::fflush(stdout);
    fmt::print(stderr, "error: {}\n", e.what());
    return exit_code_for(e.code());
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "error: {}\n", e.what());
    return convjit::cli::kExitFailed;
  }
}
