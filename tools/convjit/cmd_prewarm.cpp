// convjit prewarm: compile every problem of some files into the disk cache, in
// parallel, for a given arch; works without a GPU (sglang #29170: compile in the
// image build, not at every container start).
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "commands.hpp"
#include "common.hpp"
#include "problem_input.hpp"
#include "progress.hpp"
#include "tooling/tooling.hpp"

namespace convjit::cli {

namespace {

const CommandSpec kSpec{
    .name = "prewarm",
    .synopsis = "FILE... [--shape SHAPE]... [options]",
    .summary = "Compile every problem of the files (and --shape) into the disk cache, in parallel.",
    .details =
        "FILE is a workload JSON file (the KernelBench format of workloads/) or a text file with one shape\n"
        "per line ('#' starts a comment). conv, conv_transpose and separable problems of 1, 2 or 3 spatial\n"
        "dimensions run; other ops are skipped with the reason. Works on a machine with no GPU when --arch\n"
        "is given.\n"
        "Exit status: 0 all compiled and cached, 1 some failed or unsupported or could not be written to\n"
        "the cache (a full disk), 2 malformed input or an invalid problem (nothing is compiled then).",
    .options = {kArchOption,
                {"--jobs", "N", "parallel compiles (default: the number of CPU cores)"},
                {"--shape", "SHAPE", "one more problem in the one-line form; repeatable"},
                {"--dtype", "T", "override every problem's dtype: f32, f16 or bf16"},
                {"--math", "M", "override every problem's math mode: tf32 or strict"},
                {"--layout", "L", "override every problem's layout: nchw or nhwc"},
                kDirOption},
    .min_positionals = 0,
    .max_positionals = SIZE_MAX,
};

std::string_view first_line(std::string_view text) { return text.substr(0, text.find('\n')); }

void apply_overrides(const Args& args, std::vector<Problem>& problems) {
  if (auto dtype = args.value("--dtype")) {
    DType value{};
    if (*dtype == "f32")
      value = DType::kFloat32;
    else if (*dtype == "f16")
      value = DType::kFloat16;
    else if (*dtype == "bf16")
      value = DType::kBFloat16;
    else
      fail(ErrorCode::kInvalidArgument, "convjit prewarm: option '--dtype' expects f32, f16 or bf16, got '{}'", *dtype);
    for (auto& p : problems) p.desc.dtype = value;
  }
  if (auto math = args.value("--math")) {
    MathMode value{};
    if (*math == "tf32")
      value = MathMode::kTF32;
    else if (*math == "strict")
      value = MathMode::kStrictFp32;
    else
      fail(ErrorCode::kInvalidArgument, "convjit prewarm: option '--math' expects tf32 or strict, got '{}'", *math);
    for (auto& p : problems) p.desc.math = value;
  }
  if (auto layout = args.value("--layout")) {
    Layout value{};
    if (*layout == "nchw")
      value = Layout::kNCHW;
    else if (*layout == "nhwc")
      value = Layout::kNHWC;
    else
      fail(ErrorCode::kInvalidArgument, "convjit prewarm: option '--layout' expects nchw or nhwc, got '{}'", *layout);
    for (auto& p : problems) p.desc.layout = value;
  }
}

ProblemList gather(const Args& args) {
  ProblemList list;
  for (const auto& file : args.positionals) {
    try {
      load_problem_file(file, list);
    } catch (const Error& e) {
      // A missing or unreadable input is the caller's mistake as much as a malformed one.
      fail(ErrorCode::kInvalidArgument, "convjit prewarm: {}", e.what());
    }
  }
  for (const auto& shape : args.values("--shape")) {
    const Conv2dDesc desc = shape_argument(kSpec, shape);
    // Like a problem of a file: an invalid one stops prewarm before anything is compiled.
    try {
      desc.validate();
    } catch (const Error& e) {
      if (e.code() == ErrorCode::kInvalidArgument) {
        fail(ErrorCode::kInvalidArgument, "convjit prewarm: --shape '{}': invalid problem: {}", shape, e.what());
      }
      // kUnsupported (a layout this version cannot run) is counted when the problem runs.
      if (e.code() != ErrorCode::kUnsupported) throw;
    }
    list.problems.push_back(Problem{to_short_string(desc), desc});
  }
  apply_overrides(args, list.problems);
  return list;
}

struct JobResult {
  Outcome outcome = Outcome::kFailed;
  std::string error;
};

JobResult prewarm_one(Runtime& rt, const Conv2dDesc& desc, const std::string& arch) {
  try {
    // Checked here, not inside prewarm(), so that "this version cannot" is told apart
    // from "this failed" in the summary.
    desc.validate();
    if (auto why = why_unsupported(desc, Algorithm::kAuto, arch)) return {Outcome::kUnsupported, *why};
    const PrewarmResult r = rt.prewarm(std::span(&desc, 1), arch);
    if (r.failed != 0) return {Outcome::kFailed, r.errors.empty() ? "failed" : r.errors.front()};
    return {r.compiled != 0 ? Outcome::kCompiled : Outcome::kCached, {}};
  } catch (const Error& e) {
    return {e.code() == ErrorCode::kUnsupported ? Outcome::kUnsupported : Outcome::kFailed, e.what()};
  }
}

int prewarm_main(const Args& args) {
  const ProblemList list = gather(args);
  if (list.problems.empty() && list.skipped.empty()) {
    fail(ErrorCode::kInvalidArgument, "convjit prewarm: nothing to prewarm: give workload files or --shape");
  }
  const auto hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int jobs = args.value("--jobs") ? parse_count(kSpec, "--jobs", *args.value("--jobs"), 1) : hw;

  const RuntimeOptions options = runtime_options(args);
  {
    // The Runtime would fall back to memory only, which makes a prewarm pointless: fail now, with the reason.
    const DiskCache probe(options.cache_dir, disk_cache_options(options));
    if (probe.readonly()) {
      fail(ErrorCode::kCache, "convjit prewarm: the cache at '{}' is read-only ({}); prewarm needs to write it",
           options.cache_dir.string(), probe.readonly_reason());
    }
  }
  // Counts the entries the Runtime's cache could not publish, with the first reason:
  // CacheStats counts them without it.
  const StoreFailureWatch unwritten;
  Runtime rt(options);
  const std::string arch = target_arch(kSpec, args, rt);

  fmt::print("prewarm   {} problem{} for {} into {} with {} job{}{}\n", list.problems.size(),
             list.problems.size() == 1 ? "" : "s", arch, rt.cache_dir().string(), jobs, jobs == 1 ? "" : "s",
             list.skipped.empty() ? "" : fmt::format(", {} skipped", list.skipped.size()));
  for (const auto& s : list.skipped) fmt::print("skipped   {}: {}\n", s.label, s.reason);

  const auto start = std::chrono::steady_clock::now();
  std::vector<JobResult> results(list.problems.size());
  ProgressCounts counts;
  {
    Progress progress(list.problems.size(), stdout_wants_bar());
    std::atomic<std::size_t> next{0};
    auto worker = [&] {
      for (std::size_t i = next++; i < list.problems.size(); i = next++) {
        const Problem& p = list.problems[i];
        progress.started(p.label);
        const auto t0 = std::chrono::steady_clock::now();
        results[i] = prewarm_one(rt, p.desc, arch);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        progress.finished(p.label, results[i].outcome, ms, first_line(results[i].error));
      }
    };
    std::vector<std::jthread> pool;
    const std::size_t threads = std::min<std::size_t>(static_cast<std::size_t>(jobs), list.problems.size());
    for (std::size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    pool.clear();  // joins
    counts = progress.counts();
  }
  const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  for (std::size_t i = 0; i < results.size(); ++i) {
    const JobResult& r = results[i];
    if (!r.error.empty()) {
      // The whole message (a compile error carries the NVRTC log), indented under its problem.
      fmt::print("failed    {}{}\n", list.problems[i].label,
                 r.outcome == Outcome::kUnsupported ? " (unsupported in this version)" : "");
      std::string_view rest = r.error;
      while (!rest.empty()) {
        const std::size_t newline = rest.find('\n');
        fmt::print("          {}\n", rest.substr(0, newline));
        rest = newline == std::string_view::npos ? std::string_view{} : rest.substr(newline + 1);
      }
    }
  }
  fmt::print("summary   compiled {}, already cached {}, failed {}, unsupported {}, skipped {}, {} wall\n",
             counts.compiled, counts.cached, counts.failed, counts.unsupported, list.skipped.size(),
             format_ms(wall_ms));
  const CacheStats stats = rt.stats();
  print_cache_stats(stats);
  if (stats.disk_write_errors != 0) {
    // The kernels compiled, but the next process would compile them again: the prewarm failed.
    const std::string why = unwritten.first_reason();
    fmt::print(
        "uncached  {} entr{} could not be written to the cache at {} (first error: {}); compiled, but "
        "the next process compiles {} again\n",
        stats.disk_write_errors, stats.disk_write_errors == 1 ? "y" : "ies", rt.cache_dir().string(),
        why.empty() ? std::string("see the warning above") : why, stats.disk_write_errors == 1 ? "it" : "them");
  }
  return counts.failed + counts.unsupported == 0 && stats.disk_write_errors == 0 ? kExitOk : kExitFailed;
}

}  // namespace

const Command& prewarm_command() {
  static const Command command{kSpec, prewarm_main};
  return command;
}

}  // namespace convjit::cli
