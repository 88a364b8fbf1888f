// jit_overhead: what the JIT costs a user. (a) time to first result in a new process
// with an empty cache (cold) and with a filled one (warm disk), against the same
// process's second call (hot); (b) host time of a hot rt.conv2d and of plan.run against
// a bare cuLaunchKernel of the same kernel; (c) Runtime::prewarm kernels per second
// with N threads. Prints tables and writes JSON.
#include "jit_overhead.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <optional>
#include <thread>

#include "bench_util.hpp"
#include "convjit/convjit.hpp"
#include "problems.hpp"
#include "tooling/tooling.hpp"

namespace convjit::bench {
namespace {

// Headline (KernelBench 56) both ways, then 50 (large filter, stride 4, bias), 82
// (depthwise), 87 (pointwise) and 62 strict: one kernel per line, each compiled cold.
// Then every other template and data type kAuto picks on sm_90: the headline in fp16 and
// in bf16 channels-last (the TMA wgmma kernel), a channels-last stem (mma.sync), a
// strided transposed problem (the direct kernel), a 1-D and a 3-D problem.
const std::vector<std::string> kColdShapes = {
    "n8c64h512w256k128r5s7",
    "n8c64h512w256k128r5s7 math=strict",
    "n256c3h224w224k96r11s11 stride=4 pad=2 bias=1",
    "n16c64h512w512k64r3s3 groups=64",
    "n16c64h1024w1024k128r1s1",
    "n8c32h512w512k64r5s9 math=strict",
    "n8c64h512w256k128r5s7 dtype=f16",
    "n8c64h512w256k128r5s7 dtype=bf16 layout=nhwc",
    "n16c3h224w224k64r7s7 stride=2 pad=3 layout=nhwc dtype=f16",
    "n8c64h128w128k32r3s3 transposed=1 stride=2 pad=1 output_padding=1 dtype=bf16",
    "n16c32w131072k64s3 dtype=f16",
    "n8c32d32h64w64k32t3r3s3 pad=1 math=strict",
};

const std::vector<OptionSpec> kOptions = {
    {"--parts", "LIST", "cold, host, prewarm (default all three)"},
    {"--cold-shape", "SHAPE", "a problem for (a), replacing the default list; repeatable"},
    {"--host-shape", "SHAPE", "the problem for (b); must run the direct kernel (default n1c4h16w16k4r3s3)"},
    {"--calls", "N", "calls per method in (b) (default 10000)"},
    {"--sync-every", "N", "synchronize after this many calls, outside the timing (default 1000)"},
    {"--prewarm-count", "N", "distinct kernels for (c), at most 64 (default 64)"},
    {"--jobs", "LIST", "thread counts for (c) (default 1,2,4,8,16)"},
    {"--arch", "SM", "target of (c) (default sm_90)"},
    {"--work-dir", "DIR", "where the throw-away caches go (default /tmp/convjit-jit-overhead-PID)"},
    {"--keep", "", "keep the caches under --work-dir"},
    {"--machine-compute-cache", "",
     "compile with the machine's CUDA compute cache (CUDA_CACHE_PATH as set), which NVRTC reuses across processes; "
     "default: an empty one, as on a machine that never compiled these kernels"},
    {"--hold-us", "N",
     "(a): each child waits N microseconds (spinning) between its device set-up and its first call, to tell a "
     "first module load that waits on the driver from host work before it (default 0)"},
    {"--first-tier", "",
     "(a): also a cold child with RuntimeOptions::first_tier for each shape (first result from the generic kernel "
     "while the problem's kernel compiles behind it)"},
    {"--json", "FILE", "write the results as JSON"},
    {"--child", "MODE", "internal: one measured process of part (a)"},
    {"--shape", "SHAPE", "internal: the child's problem"},
    {"--spawn-ns", "NS", "internal: steady-clock time at which the parent spawned the child"},
};

constexpr std::string_view kAbout =
    "(a) cold: first conv2d + synchronize in a new process with an empty CONVJIT_CACHE_DIR; warm: a new process\n"
    "    with the cache (a) filled; hot: the same process's second call. Each is this program re-executed.\n"
    "(b) host time around the call only (launches are asynchronous), median over --calls, for rt.conv2d,\n"
    "    plan.run and a bare cuLaunchKernel of the same CUfunction loaded from the kernel's CUBIN.\n"
    "(c) kernels compiled per second by Runtime::prewarm from N threads sharing one Runtime; no GPU needed.\n"
    "Every part compiles with an empty CUDA compute cache (CUDA_CACHE_PATH), under which NVRTC keeps what it\n"
    "compiled, unless --machine-compute-cache.\n"
    "Exit status: 0 done, 1 a part failed, 2 bad command line.";

int overhead_main(int argc, char** argv) {
  Options opts("jit_overhead", "[--parts LIST] [--json FILE] [options]", kAbout, kOptions);
  opts.parse(argc, argv);
  if (opts.help()) {
    opts.print_help();
    return 0;
  }
  if (auto mode = opts.value("--child")) {
    const auto shape = opts.value("--shape");
    const auto spawn = opts.value("--spawn-ns");
    if (!shape || !spawn) fail(ErrorCode::kInvalidArgument, "jit_overhead --child needs --shape and --spawn-ns");
    return child_main(*mode, *shape, parse_integer(*spawn, "jit_overhead --spawn-ns"),
                      opts.int_value("--hold-us", 0, 0));
  }

  std::vector<std::string> parts = {"cold", "host", "prewarm"};
  if (auto v = opts.value("--parts")) parts = split_list(*v);
  for (const auto& p : parts) {
    if (p != "cold" && p != "host" && p != "prewarm") {
      fail(ErrorCode::kInvalidArgument, "jit_overhead --parts: expected cold, host or prewarm, got '{}'", p);
    }
  }
  const auto wants = [&](std::string_view p) { return std::find(parts.begin(), parts.end(), p) != parts.end(); };
  const std::filesystem::path work_dir =
      opts.value("--work-dir")
          ? std::filesystem::path(*opts.value("--work-dir"))
          : std::filesystem::temp_directory_path() / fmt::format("convjit-jit-overhead-{}", ::getpid());
  const bool keep = opts.has("--keep");
  const bool machine_compute_cache = opts.has("--machine-compute-cache");

  ColdOptions cold{.shapes = opts.has("--cold-shape") ? opts.values("--cold-shape") : kColdShapes,
                   .work_dir = work_dir,
                   .keep = keep,
                   .machine_compute_cache = machine_compute_cache,
                   .hold_us = opts.int_value("--hold-us", 0, 0),
                   .first_tier = opts.has("--first-tier")};
  HostCostOptions host{.shape = opts.value("--host-shape").value_or("n1c4h16w16k4r3s3"),
                       .calls = opts.int_value("--calls", 10000, 1),
                       .sync_every = opts.int_value("--sync-every", 1000, 1),
                       .work_dir = work_dir};
  PrewarmOptions prewarm{.count = opts.int_value("--prewarm-count", 64, 1),
                         .arch = opts.value("--arch").value_or("sm_90"),
                         .work_dir = work_dir,
                         .keep = keep};
  if (auto v = opts.value("--jobs")) {
    prewarm.jobs.clear();
    for (const auto& j : split_list(*v)) {
      const long long n = parse_integer(j, "jit_overhead --jobs");
      if (n < 1 || n > 1024) fail(ErrorCode::kInvalidArgument, "jit_overhead --jobs: expected 1..1024, got {}", n);
      prewarm.jobs.push_back(static_cast<int>(n));
    }
  }
  // Shapes are checked before any part runs: a typo should not cost a cold run first.
  for (const auto& s : cold.shapes) parse_bench_shape(s);
  parse_bench_shape(host.shape);
  std::filesystem::create_directories(work_dir);
  if (!machine_compute_cache) {
    // Before this process's first NVRTC call (the prewarm part's), which reads it once.
    const auto nv = work_dir / "nv-compute-cache";
    std::filesystem::remove_all(nv);
    std::filesystem::create_directories(nv);
    ::setenv("CUDA_CACHE_PATH", nv.c_str(), 1);
  }

  JsonObject doc;
  doc.raw("meta", JsonObject()
                      .str("program", "jit_overhead")
                      .str("convjit_version", kVersion)
                      .str("date", utc_timestamp())
                      .str("command", command_line(argc, argv))
                      .integer("cpu_threads", std::thread::hardware_concurrency())
                      .text());
  bool failed = false;
  const auto json_path = opts.value("--json");
  // Each part on its own: one that cannot run here (no GPU for (a) and (b)) leaves the
  // others. The JSON is rewritten after each, so a run cut short keeps what it measured.
  auto run_part = [&](std::string_view name, const std::function<std::string()>& part) {
    if (!wants(name)) return;
    try {
      doc.raw(name, part());
    } catch (const std::exception& e) {
      fmt::print(stderr, "jit_overhead {}: {}\n", name, e.what());
      doc.raw(name, JsonObject().str("error", e.what()).text());
      failed = true;
    }
    if (json_path) write_file_atomically(*json_path, doc.text() + "\n");
  };
  // (a) first: its children must not share the GPU with a parent that holds a context.
  run_part("cold", [&] {
    ColdResult r = measure_cold_warm_hot(cold);
    failed = failed || !r.ok;
    return r.json;
  });
  run_part("prewarm", [&] { return measure_prewarm(prewarm); });
  run_part("host", [&] { return measure_host_cost(host); });
  if (!keep) std::filesystem::remove_all(work_dir);
  if (json_path) fmt::print("\nwrote {}\n", *json_path);
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace convjit::bench

int main(int argc, char** argv) {
  return convjit::bench::run_main("jit_overhead", argc, argv, convjit::bench::overhead_main);
}
