#pragma once
// Command-line parsing for the convjit subcommands: a declared option list per
// command, so that --help and the errors are generated from one description.

#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace convjit::cli {

// Documented in docs/cli.md; scripts rely on them.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,       // the work failed: a compile, a check, a corrupt cache entry
  kExitUsage = 2,        // bad command line, malformed shape or file, invalid problem
  kExitUnavailable = 3,  // needs what this machine lacks: a GPU, cuobjdump/nvdisasm
};

struct OptionSpec {
  std::string_view name;        // "--arch"
  std::string_view value_name;  // "SM"; empty for a flag
  std::string_view help;
};

struct CommandSpec {
  std::string_view name;      // "prewarm", "cache prune"
  std::string_view synopsis;  // "FILE... [options]"
  std::string_view summary;   // one line, also shown by `convjit --help`
  std::string_view details;   // free text after the options
  std::vector<OptionSpec> options;
  std::size_t min_positionals = 0;
  std::size_t max_positionals = 0;
};

struct Args {
  std::vector<std::string> positionals;
  std::map<std::string, std::vector<std::string>, std::less<>> options;  // a flag maps to {""}
  bool help = false;

  bool has(std::string_view name) const { return options.find(name) != options.end(); }
  // The last value given; options given twice take the later one, like most tools.
  std::optional<std::string> value(std::string_view name) const;
  std::vector<std::string> values(std::string_view name) const;
};

// Accepts "--opt value" and "--opt=value"; "--" ends the options. Throws
// Error(kInvalidArgument) "convjit <cmd>: <what> (see 'convjit <cmd> --help')".
Args parse_args(const CommandSpec& spec, std::span<const std::string_view> argv);
void print_help(const CommandSpec& spec);

// Option values, each failing with the option's name and what was expected.
int parse_count(const CommandSpec& spec, std::string_view option, std::string_view text, int min);

}  // namespace convjit::cli
