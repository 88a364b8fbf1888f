// conv_bench: every convjit algorithm and cuDNN on the 35 KernelBench level-1
// convolutions, 1-D, 2-D and 3-D, forward and transposed (and shapes from the command line), in NCHW and/or NHWC, on
// the same random device buffers: checked against float64, then timed with CUDA events. Prints a table and writes JSON.
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <thread>

#include "bench_report.hpp"
#include "bench_util.hpp"
#include "conv_runner.hpp"
#include "convjit/convjit.hpp"
#include "dynamic_batch_bench.hpp"
#include "tooling/tooling.hpp"

namespace convjit::bench {
namespace {

const std::vector<OptionSpec> kOptions = {
    {"--workloads", "FILE",
     "KernelBench-format workload file (default: the project's workloads/kernelbench_level1_conv.json)"},
    {"--ids", "LIST", "only these problems, e.g. 50,55,56 (86 selects both halves, 86.dw one)"},
    {"--shape", "SHAPE",
     "one more problem: n,c,h,w,k,r,s[,stride,pad,dilation,groups] or n8c64h512w256k128r5s7 pad=1; repeatable"},
    {"--math", "LIST",
     "strict, tf32, fp16, bf16 (default strict,tf32); fp16/bf16: x, w, bias, y in that type, fp32 accumulation"},
    {"--layout", "LIST",
     "nchw, nhwc (default nchw); a list runs every problem in each, cuDNN in the same layout (NHWC: x N,H,W,C, "
     "w K,R,S,C/groups, y N,P,Q,K, as PyTorch's channels-last); it overrides a layout= in --shape"},
    {"--algos", "LIST", "convjit algorithms: direct, implicit_gemm, im2col_gemm, auto (default all)"},
    {"--iters", "N", "timed runs per row (default 50); the median is reported"},
    {"--warmup", "N", "untimed runs before timing (default 10)"},
    {"--skip-slow-ms", "X",
     "a direct-kernel row whose single run takes over X ms is timed with --slow-iters runs (default 0: never)"},
    {"--slow-iters", "N", "timed runs for such slow direct-kernel rows (default 5)"},
    {"--scale", "F", "multiply every batch size by F (0 < F <= 1) to shrink huge problems"},
    {"--positive", "", "x uniform in (0, 1) like torch.rand (default: uniform in [-1, 1))"},
    {"--no-bias", "", "drop the bias from every problem (default: keep it, timed for both convjit and cuDNN)"},
    {"--no-cudnn", "", "convjit rows only"},
    {"--packed", "", "add a row auto+packed: auto's plan run on weights packed once (Conv2dPlan::pack_weights)"},
    {"--cudnn-workspace-mb", "N", "largest workspace cudnnFind may use (default 4096)"},
    {"--sample-pixels", "N", "output pixels checked against float64, all channels each (default 4096)"},
    {"--seed", "S", "random seed of the data (default 1234)"},
    {"--jobs", "N", "parallel compiles before the runs (default: the number of CPU cores)"},
    {"--peak-fp32", "TFLOPS", "peak for strict (default: the datasheet figure for the GPU)"},
    {"--peak-tf32", "TFLOPS", "peak for tf32"},
    {"--peak-fp16", "TFLOPS", "peak for fp16 and bf16"},
    {"--json", "FILE", "write the rows and metadata as JSON (rewritten after every problem)"},
    {"--list", "",
     "print the selected problems and what auto runs each with on --list-arch, then exit (no GPU needed)"},
    {"--list-arch", "SM", "the target --list shows auto's choice for (default sm_90)"},
    {"--dynamic-batch", "",
     "instead of the table above: one batch=dynamic plan against the plan specialized for each batch (issue 17), "
     "on --shape problems (default the headline and n16c256h14w14k256r3s3 pad=1), every --math (default all four) "
     "and --layout (default nchw,nhwc), with the first of --algos (default auto)"},
    {"--batches", "LIST", "with --dynamic-batch: the batches timed (default 8,64)"},
    {"--max-batch", "N", "with --dynamic-batch: the dynamic plan's n, the largest batch it takes (default 256)"},
};

constexpr std::string_view kAbout =
    "Runs every convjit algorithm that applies, convjit's automatic choice, and cuDNN (the fastest result of\n"
    "cudnnFindConvolutionForwardAlgorithmEx, or ...BackwardDataAlgorithmEx for a transposed problem, math type\n"
    "matched) on each problem, on one set of random device\n"
    "buffers. Each row first runs once on a NaN-filled output and is checked against a float64 CPU reference\n"
    "(relative L2 error on sampled pixels, every output scanned for NaN/Inf), then timed: warm-up, then CUDA\n"
    "events around each launch, median reported. Peaks are datasheet values. Exit status: 0 every row passed\n"
    "or is n/a, 1 a check or run failed, 2 bad command line, 3 no GPU.";

BenchMath parse_math(std::string_view text) {
  if (text == "strict") return BenchMath::kStrict;
  if (text == "tf32") return BenchMath::kTF32;
  if (text == "fp16" || text == "f16") return BenchMath::kFP16;
  if (text == "bf16") return BenchMath::kBF16;
  fail(ErrorCode::kInvalidArgument, "conv_bench --math: expected strict, tf32, fp16 or bf16, got '{}'", text);
}

Layout parse_layout(std::string_view text) {
  if (text == "nchw") return Layout::kNCHW;
  if (text == "nhwc" || text == "channels_last") return Layout::kNHWC;
  fail(ErrorCode::kInvalidArgument, "conv_bench --layout: expected nchw or nhwc, got '{}'", text);
}

Algorithm parse_algorithm(std::string_view text) {
  if (text == "direct") return Algorithm::kDirect;
  if (text == "implicit_gemm" || text == "igemm") return Algorithm::kImplicitGemm;
  if (text == "im2col_gemm" || text == "im2col") return Algorithm::kIm2colGemm;
  if (text == "auto") return Algorithm::kAuto;
  fail(ErrorCode::kInvalidArgument, "conv_bench --algos: expected direct, implicit_gemm, im2col_gemm or auto, got '{}'",
       text);
}

struct Setup {
  BenchConfig config;
  SelectionRequest selection;
  std::optional<std::string> json;
  bool list = false;
  std::string list_arch = "sm_90";
};

Setup read_options(const Options& opts) {
  Setup s;
  BenchConfig& c = s.config;
  if (auto v = opts.value("--math")) {
    c.maths.clear();
    for (const auto& m : split_list(*v)) c.maths.push_back(parse_math(m));
  }
  if (auto v = opts.value("--layout")) {
    c.layouts.clear();
    for (const auto& l : split_list(*v)) {
      const Layout layout = parse_layout(l);
      if (std::find(c.layouts.begin(), c.layouts.end(), layout) == c.layouts.end()) c.layouts.push_back(layout);
    }
    if (c.layouts.empty()) fail(ErrorCode::kInvalidArgument, "conv_bench --layout: expected nchw, nhwc or both");
  }
  if (auto v = opts.value("--algos")) {
    c.algorithms.clear();
    for (const auto& a : split_list(*v)) c.algorithms.push_back(parse_algorithm(a));
  }
  c.timing.iters = opts.int_value("--iters", 50, 1);
  c.timing.warmup = opts.int_value("--warmup", 10, 0);
  c.timing.slow_ms = opts.double_value("--skip-slow-ms", 0, 0);
  c.timing.slow_iters = opts.int_value("--slow-iters", 5, 1);
  c.cudnn = !opts.has("--no-cudnn");
  c.bias = !opts.has("--no-bias");
  c.positive = opts.has("--positive");
  c.packed = opts.has("--packed");
  c.seed = static_cast<std::uint64_t>(opts.int_value("--seed", 1234, 0));
  c.sample_pixels = opts.int_value("--sample-pixels", 4096, 1);
  c.jobs = opts.int_value("--jobs", static_cast<int>(std::max(1u, std::thread::hardware_concurrency())), 1);
  c.cudnn_workspace_cap = static_cast<std::size_t>(opts.int_value("--cudnn-workspace-mb", 4096, 0)) << 20;

  SelectionRequest& r = s.selection;
  r.shapes = opts.values("--shape");
  if (auto v = opts.value("--ids")) r.ids = split_list(*v);
  r.batch_scale = opts.double_value("--scale", 1.0, 0.0);
  if (r.batch_scale <= 0 || r.batch_scale > 1) {
    fail(ErrorCode::kInvalidArgument, "conv_bench --scale: expected 0 < F <= 1, got {}", r.batch_scale);
  }
  // Shapes alone mean "just these"; with --ids or --workloads the workload problems come too.
  if (auto v = opts.value("--workloads")) {
    r.workloads = *v;
  } else if (r.shapes.empty() || !r.ids.empty()) {
    r.workloads = default_workload_file();
    if (!r.workloads) {
      fail(ErrorCode::kInvalidArgument,
           "conv_bench: workloads/kernelbench_level1_conv.json not found; pass --workloads FILE or --shape");
    }
  }
  s.json = opts.value("--json");
  s.list = opts.has("--list");
  if (auto v = opts.value("--list-arch")) s.list_arch = *v;
  return s;
}

void print_list(const ProblemSelection& sel, const BenchConfig& config, const std::string& arch) {
  fmt::print("{:<6} {:<6} {:<48} {:>9} {:>9} {:>9}  auto on {} (math/layout: algorithm[kernel family])\n", "id",
             "group", "problem", "GFLOP", "x MiB", "y MiB", arch);
  for (const auto& p : sel.problems) {
    const Conv2dDesc d = desc_for(p, BenchMath::kStrict, config.layouts.front(), config);
    std::string choices;
    for (const Layout layout : config.layouts) {
      for (const BenchMath math : config.maths) {
        const Conv2dDesc m = desc_for(p, math, layout, config);
        const Algorithm algorithm = tooling::auto_algorithm(m, arch);
        choices += fmt::format(" {}/{}:{}", to_string(math), to_string(layout), to_string(algorithm));
        // The implicit GEMM runs on several kernel families (wgmma, mma.sync, the pointwise kernel); say which.
        if (algorithm == Algorithm::kImplicitGemm) {
          constexpr std::string_view kPrefix = "implicit_gemm_";  // "implicit_gemm_wgmma" -> "wgmma"
          std::string family = tooling::kernel_template(m, algorithm, arch);
          if (family.starts_with(kPrefix)) family.erase(0, kPrefix.size());
          choices += fmt::format("[{}]", family);
        }
      }
    }
    fmt::print("{:<6} {:<6} {:<48} {:>9.1f} {:>9.1f} {:>9.1f} {}\n", p.id, p.group, problem_text(d), d.flops() / 1e9,
               double(d.x_elements()) * 4 / (1 << 20), double(d.y_elements()) * 4 / (1 << 20), choices);
  }
  for (const auto& s : sel.skipped) fmt::print("skipped {}: {}\n", s.id, s.reason);
}

struct GpuInfo {
  std::string name, arch;
  int sm_clock_mhz = 0;  // the maximum the driver reports; 0 when it does not
  int driver = 0;
};

GpuInfo gpu_info(Runtime& rt) {
  const auto dev = tooling::runtime_device(rt);
  GpuInfo g{.name = dev.name, .arch = dev.arch, .driver = CudaDriver::get().version()};
  auto& drv = CudaDriver::get();
  CUdevice device = 0;
  int khz = 0;
  if (drv.cuDeviceGet(&device, dev.ordinal) == CUDA_SUCCESS &&
      drv.cuDeviceGetAttribute(&khz, CU_DEVICE_ATTRIBUTE_CLOCK_RATE, device) == CUDA_SUCCESS) {
    g.sm_clock_mhz = khz / 1000;
  }
  return g;
}

// The Runtime reads the same variable; the row "auto" means a different thing with it on.
bool autotune_on() {
  const char* v = std::getenv("CONVJIT_AUTOTUNE");
  return v != nullptr && std::string_view(v) == "1";
}

std::string bias_policy(const BenchConfig& c) {
  return c.bias ? "bias timed where the problem has one: fused in convjit's kernel; cuDNN adds it with "
                  "cudnnAddTensor after the convolution, as PyTorch eager does"
                : "bias dropped from every problem (--no-bias)";
}

std::string meta_json(const Setup& s, const GpuInfo& g, const Peaks& peaks, const ProblemSelection& sel,
                      const std::string& command, const std::string& date) {
  const BenchConfig& c = s.config;
  std::vector<std::string> skipped;
  for (const auto& k : sel.skipped) skipped.push_back(JsonObject().str("id", k.id).str("reason", k.reason).text());
  std::vector<std::string> maths, layouts;
  for (const auto l : c.layouts) layouts.push_back(json_quote(convjit::to_string(l)));
  JsonObject dtypes, tolerances;
  for (const auto m : c.maths) {
    maths.push_back(json_quote(to_string(m)));
    dtypes.str(to_string(m), fmt::format("x, w, bias, y {}; fp32 accumulation{}", convjit::to_string(dtype_of(m)),
                                         m == BenchMath::kTF32 ? " of TF32-rounded products" : ""));
    tolerances.num(to_string(m), tolerance(m));
  }
  return JsonObject()
      .str("program", "conv_bench")
      .str("convjit_version", kVersion)
      .str("date", date)
      .str("command", command)
      .str("gpu", g.name)
      .str("arch", g.arch)
      .integer("sm_clock_max_mhz", g.sm_clock_mhz)
      .integer("cuda_driver", g.driver)
      .str("cudnn", c.cudnn ? cudnn_version_text() : "not run")
      .raw("maths", json_array(maths, false))
      .raw("layouts", json_array(layouts, false))
      .raw("data_types", dtypes.text())
      .raw("tolerance_rel_l2", tolerances.text())
      .integer("iters", c.timing.iters)
      .integer("warmup", c.timing.warmup)
      .num("skip_slow_ms", c.timing.slow_ms)
      .integer("slow_iters", c.timing.slow_iters)
      .str("timing", "CUDA events around each launch on one stream, no sync between launches, median; L2 not flushed")
      .str("data", c.positive ? "x uniform (0,1) like torch.rand; w, bias uniform [-1,1)" : "uniform [-1,1), no zeros")
      .integer("seed", static_cast<std::int64_t>(c.seed))
      .str("bias", bias_policy(c))
      .str("auto", autotune_on() ? "autotuned (CONVJIT_AUTOTUNE=1)" : "heuristic")
      .str("check", "relative L2 vs float64 on sampled output pixels (all channels); every output scanned for NaN")
      .integer("sample_pixels", c.sample_pixels)
      .raw("peaks_tflops", JsonObject()
                               .num("strict", peaks.fp32)
                               .num("tf32", peaks.tf32)
                               .num("fp16", peaks.fp16)
                               .num("bf16", peaks.fp16)
                               .str("source", peaks.source)
                               .text())
      .raw("skipped", json_array(skipped, false))
      .text();
}

int dynamic_batch_main(const Options& opts, int argc, char** argv) {
  DynamicBatchConfig c;
  for (const auto& text : opts.values("--shape")) c.problems.push_back(parse_shape(text, "--shape"));
  if (c.problems.empty()) c.problems = dynamic_batch_default_problems();
  c.maths = {BenchMath::kStrict, BenchMath::kTF32, BenchMath::kFP16, BenchMath::kBF16};
  if (auto v = opts.value("--math")) {
    c.maths.clear();
    for (const auto& m : split_list(*v)) c.maths.push_back(parse_math(m));
  }
  c.layouts = {Layout::kNCHW, Layout::kNHWC};
  if (auto v = opts.value("--layout")) {
    c.layouts.clear();
    for (const auto& l : split_list(*v)) c.layouts.push_back(parse_layout(l));
  }
  c.max_batch = opts.int_value("--max-batch", 256, 1);
  c.batches = {8, 64};
  if (auto v = opts.value("--batches")) {
    c.batches.clear();
    for (const auto& b : split_list(*v)) {
      const long long batch = parse_integer(b, "conv_bench --batches");
      if (batch < 1 || batch > c.max_batch) {
        fail(ErrorCode::kInvalidArgument, "conv_bench --batches: expected batches from 1 to --max-batch {}, got {}",
             c.max_batch, batch);
      }
      c.batches.push_back(static_cast<int>(batch));
    }
  }
  if (auto v = opts.value("--algos")) c.algorithm = parse_algorithm(split_list(*v).at(0));
  c.timing.iters = opts.int_value("--iters", 50, 1);
  c.timing.warmup = opts.int_value("--warmup", 10, 0);
  c.seed = static_cast<std::uint64_t>(opts.int_value("--seed", 1234, 0));
  c.sample_pixels = opts.int_value("--sample-pixels", 4096, 1);
  c.json = opts.value("--json");
  c.command = command_line(argc, argv);
  Runtime rt;
  make_runtime_context_current(rt);
  const GpuInfo gpu = gpu_info(rt);
  fmt::print("gpu       {} ({}), max SM clock {} MHz, CUDA driver {}\n", gpu.name, gpu.arch, gpu.sm_clock_mhz,
             gpu.driver);
  fmt::print("timing    median of {} runs after {} warm-up, CUDA events per launch\n", c.timing.iters, c.timing.warmup);
  return run_dynamic_batch_bench(rt, c);
}

int bench_main(int argc, char** argv) {
  Options opts("conv_bench", "[--ids LIST] [--shape SHAPE]... [--math LIST] [--json FILE] [options]", kAbout, kOptions);
  opts.parse(argc, argv);
  if (opts.help()) {
    opts.print_help();
    return 0;
  }
  if (opts.has("--dynamic-batch")) return dynamic_batch_main(opts, argc, argv);
  const Setup setup = read_options(opts);
  const ProblemSelection selection = select_problems(setup.selection);
  if (setup.list) {
    print_list(selection, setup.config, setup.list_arch);
    return 0;
  }
  if (selection.problems.empty()) fail(ErrorCode::kInvalidArgument, "conv_bench: no problem selected");

  Runtime rt;
  make_runtime_context_current(rt);
  const GpuInfo gpu = gpu_info(rt);
  Peaks peaks = datasheet_peaks(gpu.name);
  if (opts.has("--peak-fp32") || opts.has("--peak-tf32") || opts.has("--peak-fp16")) {
    peaks.fp32 = opts.double_value("--peak-fp32", peaks.fp32, 0);
    peaks.tf32 = opts.double_value("--peak-tf32", peaks.tf32, 0);
    peaks.fp16 = opts.double_value("--peak-fp16", peaks.fp16, 0);
    peaks.source = "given on the command line";
  }
  const std::string date = utc_timestamp();
  const std::string command = command_line(argc, argv);
  fmt::print("gpu       {} ({}), max SM clock {} MHz, CUDA driver {}\n", gpu.name, gpu.arch, gpu.sm_clock_mhz,
             gpu.driver);
  fmt::print("cudnn     {}\n", setup.config.cudnn ? cudnn_version_text() : "not run (--no-cudnn)");
  fmt::print("peaks     strict {} / tf32 {} / fp16,bf16 {} TFLOP/s ({})\n", peaks.fp32, peaks.tf32, peaks.fp16,
             peaks.source);
  fmt::print("timing    median of {} runs after {} warm-up, CUDA events per launch{}\n", setup.config.timing.iters,
             setup.config.timing.warmup,
             setup.config.timing.slow_ms > 0 ? fmt::format("; direct kernel: {} runs when one takes over {} ms",
                                                           setup.config.timing.slow_iters, setup.config.timing.slow_ms)
                                             : "");
  fmt::print("bias      {}\n", bias_policy(setup.config));
  std::string layouts;
  for (const auto l : setup.config.layouts) layouts += (layouts.empty() ? "" : ", ") + std::string(to_string(l));
  fmt::print("layouts   {} (cuDNN in the same layout as each row)\n", layouts);
  fmt::print("auto      convjit's {} choice\n", autotune_on() ? "autotuned (CONVJIT_AUTOTUNE=1)" : "heuristic");
  for (const auto& s : selection.skipped) fmt::print("skipped   {}: {}\n", s.id, s.reason);
  if (const char* v = std::getenv("NVIDIA_TF32_OVERRIDE"); v != nullptr && std::string_view(v) == "0") {
    fmt::print("warning   NVIDIA_TF32_OVERRIDE=0 is set: cuDNN will not use TF32 in tf32 rows\n");
  }

  ConvRunner runner(rt, setup.config, peaks);
  runner.build_plans(selection.problems);
  print_table_header();
  std::vector<Row> rows;
  auto write_json = [&] {
    if (!setup.json) return;
    std::vector<std::string> items, lines;
    for (const auto& r : rows) items.push_back(row_json(r));
    for (const auto& g : geomeans(rows)) lines.push_back(geomean_json(g));
    write_file_atomically(*setup.json, fmt::format("{{\n\"meta\": {},\n\"rows\": {},\n\"geomean\": {}\n}}\n",
                                                   meta_json(setup, gpu, peaks, selection, command, date),
                                                   json_array(items, true), json_array(lines, true)));
  };
  const auto& problems = selection.problems;
  for (std::size_t i = 0; i < problems.size(); ++i) {
    const auto block = runner.run(i, problems[i]);
    rows.insert(rows.end(), block.begin(), block.end());
    const bool group_done = i + 1 == problems.size() || problems[i + 1].group != problems[i].group;
    if (group_done && problems[i].id != problems[i].group) {
      for (const auto& sum : sum_parts(rows, problems[i].group, peaks)) {
        print_row(sum);
        rows.push_back(sum);
      }
    }
    write_json();
  }
  print_geomeans(geomeans(rows));
  if (setup.json) fmt::print("wrote     {}\n", *setup.json);
  if (!runner.cudnn_error().empty()) fmt::print("warning   no cuDNN rows: {}\n", runner.cudnn_error());
  const bool all_good = runner.cudnn_error().empty() && std::all_of(rows.begin(), rows.end(), [](const Row& r) {
                          return r.ok() || r.status.starts_with("n/a");
                        });
  return all_good ? 0 : 1;
}

}  // namespace
}  // namespace convjit::bench

int main(int argc, char** argv) {
  return convjit::bench::run_main("conv_bench", argc, argv, convjit::bench::bench_main);
}
