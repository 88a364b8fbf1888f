#pragma once
// The subcommands. Each returns an ExitCode; errors it cannot handle itself are
// thrown as convjit::Error and turned into a message and an exit code by main.

#include <span>
#include <string_view>

#include "cli_args.hpp"

namespace convjit::cli {

struct Command {
  const CommandSpec& spec;
  int (*main)(const Args& args);
};

const Command& prewarm_command();
const Command& inspect_command();
const Command& run_command();
// `cache` has actions of its own (ls, stats, ...), so it takes the raw arguments.
int cache_main(std::span<const std::string_view> argv);
void print_cache_overview();

}  // namespace convjit::cli
