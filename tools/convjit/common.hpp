#pragma once
// What several subcommands share: the cache directory, the target arch, the shape
// argument, and readable numbers.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "cli_args.hpp"
#include "convjit/conv2d_desc.hpp"
#include "convjit/runtime.hpp"

namespace convjit::cli {

inline constexpr OptionSpec kDirOption{"--dir", "D",
                                       "cache directory (default: $CONVJIT_CACHE_DIR, else ~/.cache/convjit)"};
inline constexpr OptionSpec kArchOption{"--arch", "SM",
                                        "target such as sm_90 (default: the local GPU's); no GPU needed"};
inline constexpr OptionSpec kAlgorithmOption{"--algorithm", "A",
                                             "auto (default), direct, implicit_gemm or im2col_gemm"};

// --dir, else the runtime's default (CONVJIT_CACHE_DIR, XDG_CACHE_HOME, ~/.cache).
std::filesystem::path cache_dir_from(const Args& args);
RuntimeOptions runtime_options(const Args& args);

// --arch when given (checked now, not at the first compile), else the local GPU's.
// Without a GPU the error says so and suggests --arch sm_90.
std::string target_arch(const CommandSpec& spec, const Args& args, Runtime& runtime);

// A one-line shape from the command line; a malformed one throws kInvalidArgument
// with the column and a caret under the bad token.
Conv2dDesc shape_argument(const CommandSpec& spec, std::string_view text);

Algorithm algorithm_option(const CommandSpec& spec, const Args& args);

// The process's CacheStats on one line: "compiles 0, disk hits 1, ...", and a second
// for the remote cache when one is configured.
void print_cache_stats(const CacheStats& stats);

std::string format_bytes(std::uint64_t bytes);  // "1.5 MiB"
std::string format_ms(double ms);               // "812 ms", "12.3 s"

}  // namespace convjit::cli
