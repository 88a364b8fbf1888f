// convjit run: one problem on the GPU with random data, checked against a float64
// CPU reference and timed. The only subcommand that needs a GPU.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>

#include "commands.hpp"
#include "common.hpp"
#include "convjit/device_buffer.hpp"
#include "host_reference.hpp"
#include "tooling/tooling.hpp"

namespace convjit::cli {

namespace {

const CommandSpec kSpec{
    .name = "run",
    .synopsis = "SHAPE [--iters N] [options]",
    .summary = "Run one problem on the GPU with random data, check it against float64 and time it.",
    .details =
        "Inputs are uniform in [-1, 1) without zeros, in the problem's dtype (f32, f16 or bf16) and\n"
        "layout (layout=nhwc: x N,H,W,C, w K,R,S,C/groups, y N,P,Q,K); the output is filled with NaN\n"
        "first, so an unwritten element fails the check. The float64 reference reads the same (for\n"
        "f16/bf16: rounded) inputs. The relative L2 error is taken over every output for small\n"
        "problems, else over 4096 random output pixels with all their channels; the tolerance\n"
        "is 1e-5 for math=strict and 1e-3 for math=tf32 with f32 data, 2e-3 for f16 and 1e-2 for bf16.\n"
        "The time is the median of --iters runs after warm-up, each synchronized and measured on the\n"
        "host clock. With batch=dynamic in SHAPE, --batch B runs the one kernel at batch B (1..n).\n"
        "Exit status: 0 pass, 1 check failed, 2 malformed shape, 3 no GPU here.",
    .options = {{"--iters", "N", "timed runs (default 50)"},
                {"--warmup", "N", "untimed runs first (default 3)"},
                {"--seed", "S", "random seed for the data (default: random)"},
                {"--batch", "B", "the run's batch, 1..n, for a batch=dynamic SHAPE (default: n)"},
                kAlgorithmOption,
                kDirOption},
    .min_positionals = 1,
    .max_positionals = 1,
};

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Values as `dtype` stores them, so the reference reads exactly what the GPU does.
std::vector<float> random_nonzero(std::int64_t count, std::mt19937_64& rng, DType dtype) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(count));
  for (auto& e : v) {
    do e = rounded_to(dtype, dist(rng));
    while (e == 0.0f);  // zeros would hide unwritten or skipped terms
  }
  return v;
}

double tolerance_for(const Conv2dDesc& desc) {
  switch (desc.dtype) {
    case DType::kFloat16:
      return 2e-3;  // the output's own rounding is ~3e-4
    case DType::kBFloat16:
      return 1e-2;  // ~2e-3
    case DType::kFloat32:
      break;
  }
  return desc.math == MathMode::kStrictFp32 ? 1e-5 : 1e-3;
}

std::string plan_origin(const CacheStats& s) {
  if (s.compiles > 0) return fmt::format("compiled now ({} in NVRTC)", format_ms(s.compile_ms));
  if (s.disk_hits > 0) return "from the disk cache, no compile";
  if (s.remote_hits > 0) return "from the remote cache, no compile";
  return "from memory, no compile";
}

int run_main(const Args& args) {
  const Conv2dDesc desc = shape_argument(kSpec, args.positionals[0]);
  desc.validate();
  const Algorithm algorithm = algorithm_option(kSpec, args);
  const int iters = args.value("--iters") ? parse_count(kSpec, "--iters", *args.value("--iters"), 1) : 50;
  const int warmup = args.value("--warmup") ? parse_count(kSpec, "--warmup", *args.value("--warmup"), 0) : 3;
  const std::uint64_t seed = args.value("--seed")
                                 ? static_cast<std::uint64_t>(parse_count(kSpec, "--seed", *args.value("--seed"), 0))
                                 : std::random_device{}();

  // The problem this run computes: the descriptor's own, or the same at --batch images.
  Conv2dDesc run_desc = desc;
  if (args.value("--batch")) run_desc.n = parse_count(kSpec, "--batch", *args.value("--batch"), 1);
  run_desc.dynamic_batch = false;

  Runtime rt(runtime_options(args));
  std::string arch;
  try {
    arch = rt.device_arch();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kNoDriver && e.code() != ErrorCode::kNoDevice) throw;
    fail(e.code(),
         "convjit run needs a CUDA GPU and there is none here: {}\n"
         "(prewarm and inspect work without one: give --arch sm_90)",
         e.what());
  }
  fmt::print("problem   {}\ndevice    {}, cache {}\n", desc.to_string(), arch, rt.cache_dir().string());
  if (desc.dynamic_batch) fmt::print("batch     {} of at most {}\n", run_desc.n, desc.n);

  auto t0 = Clock::now();
  const Conv2dPlan plan = rt.plan(desc, PlanOptions{.algorithm = algorithm});
  const double plan_ms = ms_since(t0);
  const CacheStats after_plan = rt.stats();
  fmt::print("kernel    {} (algorithm {})\n", plan.kernel_name(), to_string(plan.algorithm()));
  fmt::print("plan      {} to a launchable kernel, {}\n", format_ms(plan_ms), plan_origin(after_plan));

  std::mt19937_64 rng(seed);
  const DType dtype = desc.dtype;
  const auto x = random_nonzero(run_desc.x_elements(), rng, dtype);
  const auto w = random_nonzero(desc.w_elements(), rng, dtype);
  const auto bias = desc.bias ? random_nonzero(desc.k, rng, dtype) : std::vector<float>{};
  const auto x_image = to_storage(x, dtype);
  const auto w_image = to_storage(w, dtype);
  const std::size_t y_bytes = static_cast<std::size_t>(run_desc.y_elements()) * size_of(dtype);
  DeviceBuffer dx(rt, x_image.size()), dw(rt, w_image.size());
  DeviceBuffer dy(rt, (y_bytes + 3) / 4 * 4);  // whole 32-bit words for the NaN fill
  DeviceBuffer db = desc.bias ? DeviceBuffer(rt, bias.size() * size_of(dtype)) : DeviceBuffer();
  dx.upload(x_image.data(), x_image.size());
  dw.upload(w_image.data(), w_image.size());
  if (desc.bias) {
    const auto b_image = to_storage(bias, dtype);
    db.upload(b_image.data(), b_image.size());
  }
  dy.fill_u32(nan_fill_pattern(dtype));  // quiet NaN: an output the kernel never writes fails the check
  const void* bias_ptr = desc.bias ? db.data() : nullptr;
  const Conv2dArgs run_args{.x = dx.data(), .w = dw.data(), .bias = bias_ptr, .y = dy.data(), .n = run_desc.n};

  plan.run(run_args);
  rt.synchronize();
  std::vector<unsigned char> y_image(y_bytes);
  dy.download(y_image.data(), y_image.size());
  const std::vector<float> y = from_storage(y_image, dtype);
  const auto non_finite = std::count_if(y.begin(), y.end(), [](float v) { return !std::isfinite(v); });
  const CheckResult check = check_against_reference(run_desc, x, w, bias, y, seed + 1);
  const double tolerance = tolerance_for(desc);
  const bool pass = non_finite == 0 && check.rel_l2 <= tolerance;
  fmt::print(
      "check     rel L2 error {:.2e} vs float64 over {} outputs ({}), max abs error {:.2e}, non-finite {}; "
      "tolerance {:.0e} ({}): {}\n",
      check.rel_l2, check.checked, check.full ? "all" : "4096 sampled pixels, all channels", check.max_abs, non_finite,
      tolerance, dtype == DType::kFloat32 ? to_string(desc.math) : to_string(dtype), pass ? "PASS" : "FAIL");

  for (int i = 0; i < warmup; ++i) plan.run(run_args);
  rt.synchronize();
  std::vector<double> times;
  times.reserve(static_cast<std::size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    t0 = Clock::now();
    plan.run(run_args);
    rt.synchronize();
    times.push_back(ms_since(t0));
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  fmt::print("time      {:.3f} ms median of {} (min {:.3f}, max {:.3f}), {:.1f} TFLOP/s\n", median, iters,
             times.front(), times.back(), run_desc.flops() / median / 1e9);
  print_cache_stats(rt.stats());
  return pass ? kExitOk : kExitFailed;
}

}  // namespace

const Command& run_command() {
  static const Command command{kSpec, run_main};
  return command;
}

}  // namespace convjit::cli
