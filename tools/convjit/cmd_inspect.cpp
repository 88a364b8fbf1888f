// convjit inspect: what the runtime generates for one problem: the specialized
// source, the PTX, the SASS and what ptxas reported. Needs no GPU with --arch.
#include <fmt/format.h>

#include <algorithm>

#include "commands.hpp"
#include "common.hpp"
#include "disassembler.hpp"
#include "tooling/tooling.hpp"

namespace convjit::cli {

using disasm::disassembler_search_path;
using disasm::find_disassembler;
using disasm::print_sass;

namespace {

const CommandSpec kSpec{
    .name = "inspect",
    .synopsis = "SHAPE [--source] [--ptx] [--sass] [--resources] [options]",
    .summary = "Show the kernel convjit builds for one problem (compiling it into the cache if needed).",
    .details =
        "SHAPE is the one-line form, e.g. \"n8c64h512w256k128r5s7 stride=1 pad=0\" (docs/cli.md).\n"
        "With no section flag, --resources is shown. With one flag the output is that artifact alone\n"
        "(pipe it to a file); with several, each gets a header.\n"
        "--sass needs nvdisasm or cuobjdump from the CUDA toolkit; exit status 3 when neither is found.",
    .options = {{"--source", "", "the specialized CUDA source, as compiled"},
                {"--ptx", "", "the PTX"},
                {"--sass", "", "the SASS of the CUBIN (nvdisasm, else cuobjdump -sass)"},
                {"--resources", "", "algorithm, tile, launch geometry, registers, shared memory, spills"},
                kArchOption,
                kAlgorithmOption,
                kDirOption},
    .min_positionals = 1,
    .max_positionals = 1,
};

void print_resources(const Conv2dDesc& desc, const KernelInfo& info, const CacheStats& stats) {
  const ResourceUsage& r = info.resources;
  const std::string origin = stats.compiles > 0      ? fmt::format("compiled now ({})", format_ms(stats.compile_ms))
                             : stats.disk_hits > 0   ? std::string("from the disk cache")
                             : stats.remote_hits > 0 ? std::string("from the remote cache")
                                                     : std::string("from memory");
  fmt::print("problem    {}\n", desc.to_string());
  fmt::print("kernel     {}\n", info.kernel_name);
  fmt::print("arch       {}\n", info.arch);
  fmt::print("algorithm  {}\n", info.algorithm);
  fmt::print("tile       {}\n", info.tile);
  fmt::print("launch     {} blocks x {} threads, {} dynamic shared memory\n", info.grid_blocks, info.block_threads,
             format_bytes(info.dynamic_shared_bytes));
  fmt::print("registers  {} per thread\n", r.registers);
  fmt::print("shared     {} static + {} dynamic per block\n",
             format_bytes(static_cast<std::uint64_t>(r.static_shared_bytes)), format_bytes(info.dynamic_shared_bytes));
  fmt::print("stack      {}\n", format_bytes(static_cast<std::uint64_t>(r.stack_bytes)));
  fmt::print("spills     {} stores, {} loads{}\n", format_bytes(static_cast<std::uint64_t>(r.spill_store_bytes)),
             format_bytes(static_cast<std::uint64_t>(r.spill_load_bytes)),
             r.spill_store_bytes + r.spill_load_bytes > 0 ? "  (spilling: local memory traffic)" : "");
  fmt::print("sizes      source {}, PTX {}, CUBIN {}\n", format_bytes(info.source.size()),
             format_bytes(info.ptx.size()), format_bytes(info.cubin_bytes));
  fmt::print("options    {}\n", info.options);
  fmt::print("cache      {} ({})\n", info.cache_path.empty() ? std::string("(memory only)") : info.cache_path.string(),
             origin);
  fmt::print("key        {}\n", info.key_hash);
}

void print_text(std::string_view text) {
  fmt::print("{}", text);
  if (!text.empty() && text.back() != '\n') fmt::print("\n");
}

int inspect_main(const Args& args) {
  const Conv2dDesc desc = shape_argument(kSpec, args.positionals[0]);
  const Algorithm algorithm = algorithm_option(kSpec, args);
  const bool want_source = args.has("--source");
  const bool want_ptx = args.has("--ptx");
  const bool want_sass = args.has("--sass");
  const bool want_resources = args.has("--resources") || !(want_source || want_ptx || want_sass);
  const int sections = int{want_source} + int{want_ptx} + int{want_sass} + int{want_resources};

  // Fail before compiling anything when the SASS cannot be shown anyway.
  const auto disassembler = want_sass ? find_disassembler() : std::nullopt;
  if (want_sass && !disassembler) {
    fmt::print(stderr,
               "error: convjit inspect --sass needs nvdisasm or cuobjdump from the CUDA toolkit; neither is in {}\n"
               "       (install the toolkit's nvdisasm, e.g. the cuda-nvdisasm package, set CUDA_HOME, or use --ptx)\n",
               disassembler_search_path());
    return kExitUnavailable;
  }

  Runtime rt(runtime_options(args));
  const std::string arch = target_arch(kSpec, args, rt);
  const KernelInfo info = rt.inspect(desc, arch, PlanOptions{.algorithm = algorithm});
  const CacheStats stats = rt.stats();

  auto header = [&](std::string_view what, std::string_view detail) {
    if (sections > 1) fmt::print("\n===== {} of {} ({}) =====\n", what, info.kernel_name, detail);
  };
  if (want_resources) print_resources(desc, info, stats);
  if (want_source) {
    header("source", fmt::format("{} lines", std::count(info.source.begin(), info.source.end(), '\n')));
    print_text(info.source);
  }
  if (want_ptx) {
    header("PTX", info.arch);
    print_text(info.ptx);
  }
  if (want_sass) {
    header("SASS", fmt::format("{}, via {}", info.arch, disassembler->program.filename().string()));
    if (info.cubin.empty())
      fail(ErrorCode::kInternal, "convjit inspect: the runtime returned no CUBIN for {}", info.kernel_name);
    if (const int status = print_sass(*disassembler, info.cubin); status != 0) {
      fmt::print(stderr, "error: {} exited with status {}\n", disassembler->program.string(), status);
      return kExitFailed;
    }
  }
  return kExitOk;
}

}  // namespace

const Command& inspect_command() {
  static const Command command{kSpec, inspect_main};
  return command;
}

}  // namespace convjit::cli
