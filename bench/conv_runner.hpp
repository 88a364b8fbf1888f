#pragma once
// Runs one problem through every convjit algorithm and cuDNN on one set of device
// buffers per data type: check against float64 first, then time.

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "bench_report.hpp"
#include "convjit/runtime.hpp"
#include "cudnn_conv.hpp"
#include "gpu_timer.hpp"
#include "problems.hpp"
#include "reference_check.hpp"

namespace convjit::bench {

struct BenchConfig {
  std::vector<BenchMath> maths = {BenchMath::kStrict, BenchMath::kTF32};
  std::vector<Layout> layouts = {Layout::kNCHW};  // each problem runs in each, cuDNN in the same one
  std::vector<Algorithm> algorithms = {Algorithm::kDirect, Algorithm::kImplicitGemm, Algorithm::kIm2colGemm,
                                       Algorithm::kAuto};
  TimingPlan timing;
  bool cudnn = true;
  bool bias = true;       // false: --no-bias strips the bias from every problem
  bool positive = false;  // x in (0, 1) like torch.rand
  bool packed = false;    // a row "auto+packed": auto's plan on weights packed once (Conv2dPlan::pack_weights)
  std::uint64_t seed = 1234;
  int sample_pixels = 4096;
  int jobs = 1;  // parallel compiles before the runs
  std::size_t cudnn_workspace_cap = std::size_t{4} << 30;
};

// Relative L2 error a row must stay under to pass.
double tolerance(BenchMath math) noexcept;

// The descriptor convjit and cuDNN run for `problem` in `math` and `layout`.
Conv2dDesc desc_for(const BenchProblem& problem, BenchMath math, Layout layout, const BenchConfig& config);

class ConvRunner {
 public:
  // Needs the Runtime's context current on this thread (make_runtime_context_current).
  ConvRunner(Runtime& runtime, const BenchConfig& config, const Peaks& peaks);

  // Compiles (or loads from the cache) every plan the runs will need, on `config.jobs`
  // threads, and prints how long that took.
  void build_plans(const std::vector<BenchProblem>& problems);

  // The rows of one problem, every layout and math mode, in table order; each block of
  // rows is printed as soon as it is complete.
  std::vector<Row> run(std::size_t index, const BenchProblem& problem);

  // Why cuDNN could not be set up (its rows are then missing); empty when it was, or not asked for.
  const std::string& cudnn_error() const noexcept { return cudnn_error_; }

 private:
  struct PlanSlot {
    std::optional<Conv2dPlan> plan;
    std::string error;  // why there is no plan
    bool unsupported = false;
  };
  struct Buffers;
  using Key = std::tuple<std::size_t, BenchMath, Layout, Algorithm>;

  std::vector<Row> run_layout(std::size_t index, const BenchProblem& problem, Layout layout);
  std::vector<Row> run_math(std::size_t index, const BenchProblem& problem, BenchMath math, Layout layout,
                            Buffers& buffers, const ReferenceSample& reference);
  void measure(Row& row, const std::function<void()>& launch, Buffers& buffers, const ReferenceSample& reference,
               double tol, bool may_reduce);
  Row packed_row(Row row, const Conv2dPlan& plan, Buffers& b, const ReferenceSample& reference, double tol);
  Row cudnn_row(Row row, const Conv2dDesc& desc, BenchMath math, Buffers& buffers, const ReferenceSample& reference);

  Runtime& runtime_;
  std::string arch_;  // the device's, for the cost model's predictions
  BenchConfig config_;
  Peaks peaks_;
  Stream stream_;
  std::optional<CudnnHandle> cudnn_;
  std::string cudnn_error_;
  std::map<Key, PlanSlot> plans_;
};

}  // namespace convjit::bench
