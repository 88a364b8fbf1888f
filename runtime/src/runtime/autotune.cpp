// kAuto by measurement: every algorithm that can run the problem is built and timed
// once on scratch buffers; the fastest is stored next to the kernels (TuningRecords)
// so that the next process reads the choice instead of timing again.
#include <algorithm>
#include <limits>

#include "base/log.hpp"
#include "convjit/version.hpp"
#include "runtime/runtime_impl.hpp"
#include "runtime/timing_event.hpp"
#include "specialize/algorithm.hpp"

namespace convjit {

namespace {
struct ScratchBuffer {
  CUdeviceptr ptr = 0;
  explicit ScratchBuffer(std::size_t bytes) {
    CONVJIT_CU_CHECK(cuMemAlloc(&ptr, std::max<std::size_t>(bytes, 4)), "allocating {} bytes to tune on", bytes);
    // 0.1f everywhere: never time on zeros, which can run faster than real data.
    CONVJIT_CU_CHECK(cuMemsetD32(ptr, 0x3dcccccdu, std::max<std::size_t>(bytes, 4) / 4), "filling a tuning buffer");
  }
  ~ScratchBuffer() {
    if (ptr != 0) CudaDriver::get().cuMemFree(ptr);
  }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  void* get() const { return reinterpret_cast<void*>(ptr); }
};

std::string tuning_key(const Conv2dDesc& desc, const DeviceContext& dev) {
  return fmt::format("{} arch={} device={} convjit={}", desc.to_string(), dev.arch(), dev.name(), kVersion);
}
}  // namespace

std::shared_ptr<const Conv2dPlan::Impl> Runtime::Impl::tuned_plan(const Conv2dDesc& desc,
                                                                  const std::shared_ptr<DeviceContext>& dev,
                                                                  Stream stream) {
  desc.validate();
  Counters& counters = pipeline->counters;
  const std::string key = tuning_key(desc, *dev);
  if (auto stored = tuning.load(key)) {
    Counters::bump(counters.autotune_reused);
    log::info("autotune: {} -> {} (stored choice, no timing)", desc.to_string(), to_string(*stored));
    return build_plan(desc, *stored, dev);
  }

  std::vector<std::shared_ptr<const Conv2dPlan::Impl>> candidates;
  for (Algorithm a : {Algorithm::kImplicitGemm, Algorithm::kIm2colGemm, Algorithm::kDirect}) {
    if (unsupported_reason(desc, a, dev->arch())) continue;
    try {
      candidates.push_back(build_plan(desc, a, dev));
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kUnsupported) throw;
      log::debug("autotune: {} cannot use {}: {}", desc.to_string(), to_string(a), e.what());
    }
  }
  if (candidates.size() == 1) return candidates.front();
  // Buffers, events and the launches below all belong to the plan's context, and so does a
  // null `stream` where no context is current (a first call from a fresh thread).
  ScopedContext scope(dev->context());
  // Timing synchronizes, which would invalidate a graph being captured on `stream`.
  if (is_capturing(reinterpret_cast<CUstream>(stream))) {
    fail(ErrorCode::kUnsupported,
         "conv2d {}: autotuning would time the algorithms, which a CUDA graph capture forbids, and this problem "
         "has no stored choice yet; nothing was launched and the capture is still valid. Run it once before "
         "capturing, prewarm its tuning in an earlier process, or turn autotuning off (CONVJIT_AUTOTUNE)",
         desc.to_string());
  }

  ScratchBuffer x(desc.x_elements() * size_of(desc.dtype));
  ScratchBuffer w(desc.w_elements() * size_of(desc.dtype));
  ScratchBuffer b(static_cast<std::size_t>(desc.k) * size_of(desc.dtype));
  ScratchBuffer y(desc.y_elements() * size_of(desc.dtype));
  TimingEvent start;
  TimingEvent stop;
  std::string timings;
  double best_ms = std::numeric_limits<double>::infinity();
  std::shared_ptr<const Conv2dPlan::Impl> best;
  for (const auto& plan : candidates) {
    const void* bias = desc.bias ? b.get() : nullptr;
    const Conv2dArgs args{.x = x.get(), .w = w.get(), .bias = bias, .y = y.get()};
    plan->run(args, nullptr, /*check_binding=*/false);  // warm-up: first touch, workspace, cuBLAS heuristics
    double fastest = std::numeric_limits<double>::infinity();
    for (int rep = 0; rep < 3; ++rep) {
      start.record(nullptr);
      plan->run(args, nullptr, /*check_binding=*/false);
      stop.record(nullptr);
      fastest = std::min(fastest, static_cast<double>(stop.since(start)));
      if (fastest > 10 * best_ms) break;  // hopeless: do not spend two more runs on it
    }
    fmt::format_to(std::back_inserter(timings), "{}{}={:.3f}ms", timings.empty() ? "" : " ", to_string(plan->algorithm),
                   fastest);
    if (fastest < best_ms) {
      best_ms = fastest;
      best = plan;
    }
  }
  Counters::bump(counters.autotune_runs);
  log::info("autotune: {} -> {} ({})", desc.to_string(), to_string(best->algorithm), timings);
  if (options.disk_cache) tuning.store(key, best->algorithm, timings);
  return best;
}

}  // namespace convjit
