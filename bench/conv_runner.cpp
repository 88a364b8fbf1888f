#include "conv_runner.hpp"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "bench_util.hpp"
#include "convjit/device_buffer.hpp"
#include "tooling/tooling.hpp"

namespace convjit::bench {

namespace {

using Clock = std::chrono::steady_clock;

// Stable across runs and builds (std::hash is not), so --ids subsets see the same data.
std::uint64_t fnv1a(std::string_view text) {
  std::uint64_t h = 1469598103934665603ull;
  for (const char ch : text) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ull;
  return h;
}

// The first line, shortened: compile errors carry the whole NVRTC log.
std::string headline(std::string_view message) {
  std::string line(message.substr(0, message.find('\n')));
  return line.size() > 200 ? line.substr(0, 199) + "~" : line;
}

// "n8c64...: algorithm im2col_gemm cannot run it: <why>" -> "<why>".
std::string reason(const std::string& message) {
  constexpr std::string_view kMarker = "cannot run it: ";
  const auto at = message.find(kMarker);
  return headline(at == std::string::npos ? message : message.substr(at + kMarker.size()));
}

CUdeviceptr device_ptr(const DeviceBuffer& b) { return reinterpret_cast<CUdeviceptr>(b.data()); }

// A fault that leaves the CUDA context unusable: every later row would fail too.
class BrokenContext : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace

struct ConvRunner::Buffers {
  DType dtype = DType::kFloat32;
  std::int64_t y_count = 0;
  DeviceBuffer x, w, bias, y;
};

double tolerance(BenchMath math) noexcept {
  switch (math) {
    case BenchMath::kStrict:
      return 1e-5;
    case BenchMath::kTF32:
      return 1e-3;
    case BenchMath::kFP16:
      return 2e-3;  // output rounding to half: ~3e-4 expected
    case BenchMath::kBF16:
      return 1e-2;  // output rounding to bfloat16: ~2e-3 expected
  }
  return 0;
}

Conv2dDesc desc_for(const BenchProblem& problem, BenchMath math, Layout layout, const BenchConfig& config) {
  Conv2dDesc d = problem.desc;
  d.layout = layout;
  if (!config.bias) d.bias = false;
  d.dtype = dtype_of(math);
  d.math = math == BenchMath::kStrict ? MathMode::kStrictFp32 : MathMode::kTF32;
  return d;
}

ConvRunner::ConvRunner(Runtime& runtime, const BenchConfig& config, const Peaks& peaks)
    : runtime_(runtime), arch_(tooling::runtime_device(runtime).arch), config_(config), peaks_(peaks) {
  if (!config_.cudnn) return;
  try {
    cudnn_.emplace(make_cudnn_handle(stream_.get()));
  } catch (const CudnnError& e) {
    // convjit's rows still mean something; the run is marked failed at the end.
    cudnn_error_ = e.what();
    fmt::print("warning   no cuDNN rows: {}\n", e.what());
  }
}

void ConvRunner::build_plans(const std::vector<BenchProblem>& problems) {
  std::vector<Key> forced, automatic;
  for (std::size_t i = 0; i < problems.size(); ++i) {
    for (const Layout layout : config_.layouts) {
      for (const BenchMath math : config_.maths) {
        for (const Algorithm algorithm : config_.algorithms) {
          const Key key{i, math, layout, algorithm};
          plans_[key];
          (algorithm == Algorithm::kAuto ? automatic : forced).push_back(key);
        }
      }
    }
  }
  const CacheStats before = runtime_.stats();
  const auto start = Clock::now();
  // kAuto last and on one thread: its kernel is one of the forced ones, already built by
  // then, and with CONVJIT_AUTOTUNE=1 it times the algorithms, which must not overlap.
  for (const auto* keys : {&forced, &automatic}) {
    std::atomic<std::size_t> next{0};
    auto worker = [&] {
      for (std::size_t i = next++; i < keys->size(); i = next++) {
        const auto& [index, math, layout, algorithm] = (*keys)[i];
        PlanSlot& slot = plans_.at((*keys)[i]);  // NOTE: the map is only read while the workers run
        try {
          slot.plan =
              runtime_.plan(desc_for(problems[index], math, layout, config_), PlanOptions{.algorithm = algorithm});
        } catch (const Error& e) {
          slot.error = e.what();
          slot.unsupported = e.code() == ErrorCode::kUnsupported;
        }
      }
    };
    std::vector<std::jthread> pool;
    const std::size_t jobs = keys == &automatic ? 1 : static_cast<std::size_t>(std::max(1, config_.jobs));
    const auto threads = std::min(jobs, keys->size());
    for (std::size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const CacheStats after = runtime_.stats();
  int ready = 0, unsupported = 0, failed = 0;
  for (const auto& [key, slot] : plans_) {
    if (slot.plan) {
      ++ready;
    } else if (slot.unsupported) {
      ++unsupported;
    } else {
      ++failed;
      fmt::print(stderr, "plan for problem {} ({}, {}, {}) failed:\n{}\n", problems[std::get<0>(key)].id,
                 to_string(std::get<1>(key)), to_string(std::get<2>(key)), to_string(std::get<3>(key)), slot.error);
    }
  }
  fmt::print(
      "plans     {} ready, {} unsupported, {} failed in {:.1f} s with {} job{}: {} NVRTC compiles ({:.1f} s), "
      "{} disk hits\n\n",
      ready, unsupported, failed, seconds, config_.jobs, config_.jobs == 1 ? "" : "s", after.compiles - before.compiles,
      (after.compile_ms - before.compile_ms) / 1e3, after.disk_hits - before.disk_hits);
}

std::vector<Row> ConvRunner::run(std::size_t index, const BenchProblem& problem) {
  std::vector<Row> out;
  for (const Layout layout : config_.layouts) {
    auto rows = run_layout(index, problem, layout);
    out.insert(out.end(), rows.begin(), rows.end());
  }
  return out;
}

std::vector<Row> ConvRunner::run_layout(std::size_t index, const BenchProblem& problem, Layout layout) {
  std::vector<Row> out;
  std::vector<DType> dtypes;
  for (const BenchMath math : config_.maths) {
    if (std::find(dtypes.begin(), dtypes.end(), dtype_of(math)) == dtypes.end()) dtypes.push_back(dtype_of(math));
  }
  // The same random values in either layout, read by the reference in the layout's order.
  const Conv2dDesc shape = desc_for(problem, BenchMath::kStrict, layout, config_);
  const std::uint64_t seed = config_.seed ^ fnv1a(problem.id);
  const HostInputs inputs = random_inputs(shape, seed, config_.positive);
  for (const DType dtype : dtypes) {
    std::vector<Row> rows;
    try {
      HostInputs rounded;
      const HostInputs& in = dtype == DType::kFloat32 ? inputs : (rounded = rounded_to(inputs, dtype));
      const ReferenceSample reference(shape, in, config_.sample_pixels, seed);
      Buffers b;
      b.dtype = dtype;
      b.y_count = shape.y_elements();
      const std::size_t esz = size_of(dtype);
      auto upload = [&](DeviceBuffer& buffer, const std::vector<float>& values) {
        buffer = DeviceBuffer(runtime_, values.size() * esz);
        if (dtype == DType::kFloat32) {
          buffer.upload(values.data(), values.size() * esz);
        } else {
          const auto bytes = encode(values, dtype);
          buffer.upload(bytes.data(), bytes.size());
        }
      };
      upload(b.x, in.x);
      upload(b.w, in.w);
      if (shape.bias) upload(b.bias, in.bias);
      // Rounded up to whole 32-bit words: the NaN poison is written 4 bytes at a time.
      b.y = DeviceBuffer(runtime_, (static_cast<std::size_t>(b.y_count) * esz + 3) / 4 * 4);
      for (const BenchMath math : config_.maths) {
        if (dtype_of(math) != dtype) continue;
        auto block = run_math(index, problem, math, layout, b, reference);
        derive_columns(block, peaks_);
        for (const auto& row : block) print_row(row);
        rows.insert(rows.end(), block.begin(), block.end());
      }
    } catch (const BrokenContext&) {
      throw;
    } catch (const std::exception& e) {
      // Setting up the problem failed (out of memory, say): one error row per math mode.
      fmt::print(stderr, "problem {}: {}\n", problem.id, e.what());
      for (const BenchMath math : config_.maths) {
        if (dtype_of(math) != dtype) continue;
        Row row{.id = problem.id,
                .group = problem.group,
                .problem = problem_text(shape),
                .math = std::string(to_string(math)),
                .layout = std::string(to_string(layout)),
                .impl = "-",
                .status = "error: " + headline(e.what())};
        print_row(row);
        rows.push_back(row);
      }
    }
    out.insert(out.end(), rows.begin(), rows.end());
  }
  return out;
}

std::vector<Row> ConvRunner::run_math(std::size_t index, const BenchProblem& problem, BenchMath math, Layout layout,
                                      Buffers& b, const ReferenceSample& reference) {
  const Conv2dDesc d = desc_for(problem, math, layout, config_);
  const Row base{.id = problem.id,
                 .group = problem.group,
                 .problem = problem_text(d),
                 .math = std::string(to_string(math)),
                 .layout = std::string(to_string(layout)),
                 .flops = d.flops()};
  std::vector<Row> rows;

  // When no algorithm can run this data type, one row says so instead of one per algorithm.
  bool all_unsupported = !config_.algorithms.empty();
  std::string common_reason;
  for (const Algorithm a : config_.algorithms) {
    const PlanSlot& slot = plans_.at({index, math, layout, a});
    const std::string why = reason(slot.error);
    all_unsupported =
        all_unsupported && !slot.plan && slot.unsupported && (common_reason.empty() || why == common_reason);
    common_reason = why;
  }
  if (all_unsupported) {
    Row row = base;
    row.impl = "convjit";
    row.status = "n/a: convjit: unsupported (" + common_reason + ")";
    rows.push_back(row);
  } else {
    for (const Algorithm a : config_.algorithms) {
      const PlanSlot& slot = plans_.at({index, math, layout, a});
      Row row = base;
      row.impl = std::string(to_string(a));
      if (!slot.plan) {
        row.status = (slot.unsupported ? "n/a: " : "error: ") + reason(slot.error);
        rows.push_back(row);
        continue;
      }
      const Conv2dPlan& plan = *slot.plan;
      if (a == Algorithm::kAuto) {
        // The same kernel as a forced row already measured: report those numbers again.
        const std::string chosen(to_string(plan.algorithm()));
        const auto same = std::find_if(rows.begin(), rows.end(), [&](const Row& r) { return r.impl == chosen; });
        const Key forced_key{index, math, layout, plan.algorithm()};
        const PlanSlot* forced = plans_.count(forced_key) ? &plans_.at(forced_key) : nullptr;
        if (same != rows.end() && same->timed() && forced != nullptr && forced->plan &&
            forced->plan->kernel_name() == plan.kernel_name()) {
          row = *same;
          row.impl = "auto";
          row.predicted_ms = tooling::predicted_ms(plan.desc(), plan.algorithm(), arch_);
          row.note = "= " + chosen + (same->note.empty() ? "" : ", " + same->note);
          rows.push_back(row);
          continue;
        }
        row.note = "-> " + chosen;
      }
      row.predicted_ms = tooling::predicted_ms(plan.desc(), plan.algorithm(), arch_);
      // Only the direct kernel may be timed with fewer runs (--skip-slow-ms): it is the slow one by design.
      measure(
          row, [&] { plan.run(b.x.data(), b.w.data(), b.bias.data(), b.y.data(), stream_.get()); }, b, reference,
          tolerance(math), plan.algorithm() == Algorithm::kDirect);
      rows.push_back(row);
      if (a == Algorithm::kAuto && config_.packed)
        rows.push_back(packed_row(base, plan, b, reference, tolerance(math)));
    }
  }
  if (cudnn_) rows.push_back(cudnn_row(base, d, math, b, reference));
  return rows;
}

void ConvRunner::measure(Row& row, const std::function<void()>& launch, Buffers& b, const ReferenceSample& reference,
                         double tol, bool may_reduce) {
  try {
    b.y.fill_u32(nan_fill_pattern(b.dtype));
    launch();
    stream_.synchronize();
    const CheckResult c = check_device_output(device_ptr(b.y), b.dtype, b.y_count, reference);
    row.rel_err = c.rel_l2;
    row.max_abs_err = c.max_abs;
    row.nonfinite = c.nonfinite;
    row.checked = c.checked;
    row.full_check = c.full;
    if (c.nonfinite > 0) {
      row.status = fmt::format("FAIL: {} non-finite outputs", c.nonfinite);
    } else if (!(c.rel_l2 <= tol)) {
      row.status = fmt::format("FAIL: rel err > {:.0e}", tol);
    } else {
      row.status = "ok";
    }
    // Timed even when the check failed: the time still says something, the status says the rest.
    TimingPlan timing = config_.timing;
    if (!may_reduce) timing.slow_ms = 0;
    const Timing t = time_launches(launch, stream_.get(), timing);
    const Summary s = summarize(t.ms);
    row.ms = s.median;
    row.p10_ms = s.p10;
    row.p90_ms = s.p90;
    row.iters = s.count;
    if (t.reduced) row.note += fmt::format("{}{} iters (slow)", row.note.empty() ? "" : ", ", s.count);
  } catch (const std::exception& e) {
    fmt::print(stderr, "{} {} {}: {}\n", row.id, row.math, row.impl, e.what());
    row.status = "error: " + headline(e.what());
    row.ms = kNaN;
    // A kernel fault leaves the context unusable: stop rather than fill the table with errors.
    if (const CUresult r = CudaDriver::get().cuCtxSynchronize(); r != CUDA_SUCCESS) {
      throw BrokenContext(fmt::format("the CUDA context is unusable after {} {} {} ({}): {}", row.id, row.math,
                                      row.impl, CudaDriver::get().describe(r), e.what()));
    }
  }
}

Row ConvRunner::packed_row(Row row, const Conv2dPlan& plan, Buffers& b, const ReferenceSample& reference, double tol) {
  row.impl = "auto+packed";
  if (plan.packed_weight_bytes() == 0) {
    row.status = fmt::format("n/a: {} reads the weights as they are", to_string(plan.algorithm()));
    return row;
  }
  DeviceBuffer packed(runtime_, plan.packed_weight_bytes());
  plan.pack_weights(b.w.data(), packed.data(), stream_.get());
  row.note = fmt::format("weights packed once ({:.1f} MiB)", plan.packed_weight_bytes() / 1048576.0);
  const Conv2dArgs args{.x = b.x.data(), .packed_w = packed.data(), .bias = b.bias.data(), .y = b.y.data()};
  measure(
      row, [&] { plan.run(args, stream_.get()); }, b, reference, tol, false);
  return row;
}

Row ConvRunner::cudnn_row(Row row, const Conv2dDesc& d, BenchMath math, Buffers& b, const ReferenceSample& reference) {
  row.impl = "cudnn";
  try {
    CudnnConv conv(cudnn_->get(), d, math);
    const CudnnChoice& choice = conv.find(runtime_, b.x.data(), b.w.data(), b.y.data(), config_.cudnn_workspace_cap);
    row.note = choice.describe();
    if (conv.batch_slices() > 1) row.note += fmt::format(", batch in {} calls", conv.batch_slices());
    measure(
        row, [&] { conv.run(b.x.data(), b.w.data(), b.bias.data(), b.y.data()); }, b, reference, tolerance(math),
        false);
  } catch (const CudnnError& e) {
    fmt::print(stderr, "{} {} cudnn: {}\n", row.id, row.math, e.what());
    const bool unsupported = CUDNN_STATUS_CATEGORY(e.status()) == CUDNN_STATUS_NOT_SUPPORTED;
    row.status = (unsupported ? "n/a: " : "error: ") + headline(e.what());
  }
  return row;
}

}  // namespace convjit::bench
