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
  // Three plans a row: the one specialized for the batch; a dynamic plan whose n is the
  // batch itself (every decision the specialized plan makes, only the batch at run time:
  // the kernel's own cost, and what a bucket topped at this batch costs); and the one
  // dynamic plan for every batch up to --max-batch (the kernel's cost plus that of
  // choosing algorithm, tiles and index width for the largest batch).
  fmt::print(
      "dynamic   plans: static (n = batch), dyn=b (batch=dynamic, n = batch), dyn<={} (batch=dynamic, "
      "n = {}, one plan for every batch); algorithm {}\n",
      config.max_batch, config.max_batch, to_string(config.algorithm));
  fmt::print("{:<40} {:<6} {:<5} {:>5} {:>10} {:>10} {:>10} {:>7} {:>7} {:>8}  {}\n", "problem", "math", "lay", "batch",
             "static ms", "dyn=b ms", "dyn<= ms", "b/stat", "<=/stat", "max err", "algorithms (static, dyn<=)");
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
          Conv2dDesc bucket = fixed;
          bucket.dynamic_batch = true;
          const std::string label =
              fmt::format("n{}c{}h{}w{}k{}r{}s{} pad={},{} stride={},{}", fixed.n, fixed.c, fixed.h, fixed.w, fixed.k,
                          fixed.r, fixed.s, fixed.pad_h, fixed.pad_w, fixed.stride_h, fixed.stride_w);
          Measured m[3];  // static, dyn=b, dyn<=max
          int at = 0;
          try {
            const Conv2dPlan static_plan = rt.plan(fixed, PlanOptions{.algorithm = config.algorithm});
            const Conv2dPlan bucket_plan = rt.plan(bucket, PlanOptions{.algorithm = config.algorithm});
            const HostInputs in = rounded_to(random_inputs(fixed, config.seed + batch, false), fixed.dtype);
            const ReferenceSample reference(fixed, in, config.sample_pixels, config.seed + batch);
            const double tol = tolerance(math);
            m[0] = measure(static_plan, batch, in, reference, fixed, rt, config, tol);
            at = 1;
            m[1] = measure(bucket_plan, batch, in, reference, fixed, rt, config, tol);
            at = 2;
            if (!dynamic_plan) fail(ErrorCode::kUnsupported, "the dynamic plan: {}", dyn_error);
            m[2] = measure(*dynamic_plan, batch, in, reference, fixed, rt, config, tol);
          } catch (const Error& e) {
            m[at].error = e.what();
          }
          const bool ok = m[0].ok && m[1].ok && m[2].ok;
          all_ok = all_ok && ok;
          const auto ratio = [&](const Measured& d) {
            return m[0].median_ms > 0 && d.median_ms > 0 ? d.median_ms / m[0].median_ms : NAN;
          };
          const double max_err = std::max({m[0].check.rel_l2, m[1].check.rel_l2, m[2].check.rel_l2});
          fmt::print("{:<40} {:<6} {:<5} {:>5} {:>10.4f} {:>10.4f} {:>10.4f} {:>7.3f} {:>7.3f} {:>8.1e}  {}, {}{}\n",
                     label, to_string(math), to_string(layout), batch, m[0].median_ms, m[1].median_ms, m[2].median_ms,
                     ratio(m[1]), ratio(m[2]), max_err, m[0].algorithm, m[2].algorithm,
                     ok ? "" : fmt::format("  FAIL {}{}{}", m[0].error, m[1].error, m[2].error));
          rows.push_back(JsonObject()
                             .str("problem", label)
                             .str("math", to_string(math))
                             .str("layout", to_string(layout))
                             .integer("batch", batch)
                             .integer("max_batch", config.max_batch)
                             .num("static_ms", m[0].median_ms)
                             .num("dynamic_same_n_ms", m[1].median_ms)
                             .num("dynamic_max_n_ms", m[2].median_ms)
                             .num("dynamic_same_n_over_static", ratio(m[1]))
                             .num("dynamic_max_n_over_static", ratio(m[2]))
                             .num("static_rel_l2", m[0].check.rel_l2)
                             .num("dynamic_same_n_rel_l2", m[1].check.rel_l2)
                             .num("dynamic_max_n_rel_l2", m[2].check.rel_l2)
                             .str("static_kernel", m[0].kernel)
                             .str("dynamic_same_n_kernel", m[1].kernel)
                             .str("dynamic_max_n_kernel", m[2].kernel)
                             .boolean("ok", ok)
                             .str("error", m[0].error + m[1].error + m[2].error)
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
