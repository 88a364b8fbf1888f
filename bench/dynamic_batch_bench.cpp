#include "dynamic_batch_bench.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "bench_util.hpp"
#include "convjit/convjit.hpp"
#include "tooling/tooling.hpp"

namespace convjit::bench {

namespace {

struct Measured {
  std::string kernel;
  std::string algorithm;
  double median_ms = 0;
  CheckResult check;
  bool ok = false;
  std::string error;
};

// One plan run at `batch` on `in`: checked on a NaN-filled output, then timed.
Measured measure(const Conv2dPlan& plan, int batch, const HostInputs& in, const ReferenceSample& reference,
                 const Conv2dDesc& run_desc, Runtime& rt, const DynamicBatchConfig& config, double tol) {
  Measured m{.kernel = plan.kernel_name(), .algorithm = std::string(to_string(plan.algorithm()))};
  const DType t = run_desc.dtype;
  const auto x = encode(in.x, t);
  const auto w = encode(in.w, t);
  DeviceBuffer dx(rt, x.size()), dw(rt, w.size());
  const std::size_t y_bytes = static_cast<std::size_t>(run_desc.y_elements()) * size_of(t);
  DeviceBuffer dy(rt, (y_bytes + 3) / 4 * 4);
  DeviceBuffer db;
  dx.upload(x.data(), x.size());
  dw.upload(w.data(), w.size());
  if (run_desc.bias) {
    const auto b = encode(in.bias, t);
    db = DeviceBuffer(rt, b.size());
    db.upload(b.data(), b.size());
  }
  dy.fill_u32(0xffffffffu);  // all-ones bytes: a NaN in f32, f16 and bf16 alike
  DeviceBuffer workspace(rt, std::max<std::uint64_t>(plan.workspace_bytes(), 16));
  const Conv2dArgs args{.x = dx.data(),
                        .w = dw.data(),
                        .bias = run_desc.bias ? db.data() : nullptr,
                        .y = dy.data(),
                        .workspace = workspace.data(),
                        .workspace_bytes = plan.workspace_bytes(),
                        .n = batch};
  Stream stream;
  plan.run(args, reinterpret_cast<convjit::Stream>(stream.get()));
  stream.synchronize();
  m.check = check_device_output(reinterpret_cast<CUdeviceptr>(dy.data()), t, run_desc.y_elements(), reference);
  m.ok = m.check.nonfinite == 0 && m.check.rel_l2 <= tol;
  const Timing timing = time_launches([&] { plan.run(args, reinterpret_cast<convjit::Stream>(stream.get())); },
                                      stream.get(), config.timing);
  m.median_ms = summarize(timing.ms).median;
  return m;
}

}  // namespace

std::vector<Conv2dDesc> dynamic_batch_default_problems() {
  return {Conv2dDesc{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7},
          Conv2dDesc{.n = 16, .c = 256, .h = 14, .w = 14, .k = 256, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1}};
}

int run_dynamic_batch_bench(Runtime& rt, const DynamicBatchConfig& config) {
  fmt::print(
      "dynamic   one batch=dynamic plan for n <= {} against the plan specialized for each batch; "
      "algorithm {}\n",
      config.max_batch, to_string(config.algorithm));
  fmt::print("{:<34} {:<6} {:<5} {:>5} {:>11} {:>11} {:>8} {:>9} {:>9}  {}\n", "problem", "math", "lay", "batch",
             "static ms", "dynamic ms", "dyn/stat", "err stat", "err dyn", "kernels (static | dynamic)");
  std::vector<std::string> rows;
  bool all_ok = true;
  for (const Conv2dDesc& base : config.problems) {
    for (const BenchMath math : config.maths) {
      for (const Layout layout : config.layouts) {
        Conv2dDesc shape = base;
        shape.dtype = dtype_of(math);
        shape.math = math == BenchMath::kStrict ? MathMode::kStrictFp32 : MathMode::kTF32;
        shape.layout = layout;
        shape.dynamic_batch = false;
        Conv2dDesc dyn = shape;
        dyn.n = config.max_batch;
        dyn.dynamic_batch = true;
        std::optional<Conv2dPlan> dynamic_plan;
        std::string dyn_error;
        try {
          dynamic_plan = rt.plan(dyn, PlanOptions{.algorithm = config.algorithm});
        } catch (const Error& e) {
          dyn_error = e.what();
        }
        for (const int batch : config.batches) {
          Conv2dDesc fixed = shape;
          fixed.n = batch;
          const std::string label =
              fmt::format("n{}c{}h{}w{}k{}r{}s{} pad={},{} stride={},{}", fixed.n, fixed.c, fixed.h, fixed.w, fixed.k,
                          fixed.r, fixed.s, fixed.pad_h, fixed.pad_w, fixed.stride_h, fixed.stride_w);
          Measured stat, dynm;
          try {
            const Conv2dPlan static_plan = rt.plan(fixed, PlanOptions{.algorithm = config.algorithm});
            const HostInputs in = rounded_to(random_inputs(fixed, config.seed + batch, false), fixed.dtype);
            const ReferenceSample reference(fixed, in, config.sample_pixels, config.seed + batch);
            const double tol = tolerance(math);
            stat = measure(static_plan, batch, in, reference, fixed, rt, config, tol);
            if (!dynamic_plan) fail(ErrorCode::kUnsupported, "the dynamic plan: {}", dyn_error);
            dynm = measure(*dynamic_plan, batch, in, reference, fixed, rt, config, tol);
          } catch (const Error& e) {
            (stat.kernel.empty() ? stat : dynm).error = e.what();
          }
          const bool ok = stat.ok && dynm.ok;
          all_ok = all_ok && ok;
          const double ratio = stat.median_ms > 0 && dynm.median_ms > 0 ? dynm.median_ms / stat.median_ms : NAN;
          fmt::print("{:<34} {:<6} {:<5} {:>5} {:>11.4f} {:>11.4f} {:>8.3f} {:>9.1e} {:>9.1e}  {} | {}{}\n", label,
                     to_string(math), to_string(layout), batch, stat.median_ms, dynm.median_ms, ratio,
                     stat.check.rel_l2, dynm.check.rel_l2, stat.kernel, dynm.kernel,
                     ok ? "" : fmt::format("  FAIL {}{}", stat.error, dynm.error));
          rows.push_back(JsonObject()
                             .str("problem", label)
                             .str("math", to_string(math))
                             .str("layout", to_string(layout))
                             .integer("batch", batch)
                             .integer("max_batch", config.max_batch)
                             .num("static_ms", stat.median_ms)
                             .num("dynamic_ms", dynm.median_ms)
                             .num("dynamic_over_static", ratio)
                             .num("static_rel_l2", stat.check.rel_l2)
                             .num("dynamic_rel_l2", dynm.check.rel_l2)
                             .str("static_kernel", stat.kernel)
                             .str("dynamic_kernel", dynm.kernel)
                             .str("static_algorithm", stat.algorithm)
                             .str("dynamic_algorithm", dynm.algorithm)
                             .boolean("ok", ok)
                             .str("error", stat.error + dynm.error)
                             .text());
          if (config.json) {
            write_file_atomically(*config.json, fmt::format("{{\n\"meta\": {},\n\"rows\": {}\n}}\n",
                                                            JsonObject()
                                                                .str("program", "conv_bench --dynamic-batch")
                                                                .str("command", config.command)
                                                                .str("date", utc_timestamp())
                                                                .integer("iters", config.timing.iters)
                                                                .integer("warmup", config.timing.warmup)
                                                                .text(),
                                                            json_array(rows, true)));
          }
        }
      }
    }
  }
  const CacheStats stats = rt.stats();
  fmt::print("compiles  {} in this run ({} memory hits, {} disk hits)\n", stats.compiles, stats.memory_hits,
             stats.disk_hits);
  if (config.json) fmt::print("wrote     {}\n", *config.json);
  return all_ok ? 0 : 1;
}

}  // namespace convjit::bench
