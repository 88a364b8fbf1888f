#pragma once
// The first tier: the shape-generic kernel compiled when convjit was built
// (kernel_sources/conv_generic.cu), which serves a problem's first Runtime::conv2d calls
// while the problem's specialized kernel compiles on a background thread (RuntimeOptions::
// first_tier). It needs no NVRTC and no cache: only its module, loaded once per context.

#include <cstdint>
#include <memory>

#include "base/once_map.hpp"
#include "convjit/runtime.hpp"
#include "driver/device_context.hpp"
#include "driver/loaded_module.hpp"
#include "runtime/run_arguments.hpp"

namespace convjit {

class FirstTier {
 public:
  // What the generic kernel should take on `device` for `desc`, from its tiles' FMA work
  // over the rate docs/perf.md measured (section "The first tier"): the Runtime serves
  // the first tier only where that is well under what a compile costs.
  static double predicted_ms(const Conv2dDesc& desc, const DeviceContext& device);
  // Past this prediction a problem's first call waits for its compile instead.
  static constexpr double kMostPredictedMs = 250.0;

  // Enqueues y = conv(x, w) (+ bias, activation) on `stream`, in `device`'s context, for
  // arguments check_run_arguments passed (`checked`, its result). Throws kUnsupported,
  // launching nothing, for packed weights (they exist only in the specialized kernel's
  // layout) and for a grid past the launch limit.
  void run(const Conv2dDesc& desc, const Conv2dArgs& args, const RunArguments& checked, CUstream stream,
           const std::shared_ptr<DeviceContext>& device);

 private:
  struct Kernels;
  std::shared_ptr<Kernels> kernels(const DeviceContext& device);

  OnceMap<std::uint64_t, Kernels> by_context_;
};

}  // namespace convjit
