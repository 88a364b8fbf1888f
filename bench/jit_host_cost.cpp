// Part (b) of jit_overhead: host time of one launch through rt.conv2d, plan.run and a
// bare cuLaunchKernel of the very same CUfunction.
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <vector>

#include "bench_util.hpp"
#include "convjit/convjit.hpp"
#include "gpu_timer.hpp"
#include "jit_overhead.hpp"
#include "problems.hpp"
#include "tooling/tooling.hpp"

namespace convjit::bench {

namespace {

// The kernel image inspect() returns, loaded on its own: the CUBIN when there is one,
// else the PTX (the driver JIT-compiles it).
class Module {
 public:
  explicit Module(const KernelInfo& info) {
    const bool cubin = !info.cubin.empty();
    const void* image = cubin ? static_cast<const void*>(info.cubin.data()) : info.ptx.c_str();
    CONVJIT_CU_CHECK(cuModuleLoadData(&module_, image), "loading the {} of {}", cubin ? "CUBIN" : "PTX",
                     info.kernel_name);
    from_cubin_ = cubin;
  }
  ~Module() {
    // NOTE: destructors never throw; an unload failure at exit is ignored.
    if (module_ != nullptr) CudaDriver::get().cuModuleUnload(module_);
  }
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  CUfunction function(const std::string& name) const {
    CUfunction f = nullptr;
    CONVJIT_CU_CHECK(cuModuleGetFunction(&f, module_, name.c_str()), "looking up {}", name);
    return f;
  }
  bool from_cubin() const noexcept { return from_cubin_; }

 private:
  CUmodule module_ = nullptr;
  bool from_cubin_ = false;
};

struct Method {
  std::string name;
  std::function<void()> call;
  std::vector<double> ns;
};

}  // namespace

std::string measure_host_cost(const HostCostOptions& options) {
  fmt::print("\n(b) host cost of one launch, {} calls each, synchronized every {} outside the timed region\n",
             options.calls, options.sync_every);
  const Conv2dDesc d = parse_bench_shape(options.shape);
  Runtime rt(RuntimeOptions{.cache_dir = options.work_dir / "host-cache"});
  make_runtime_context_current(rt);

  const KernelInfo info = rt.inspect(d, std::nullopt, PlanOptions{.algorithm = Algorithm::kDirect});
  // KernelInfo carries grid x only; the direct kernel's grid is 1-D, others use y and z too.
  if (info.algorithm != "direct") {
    fail(ErrorCode::kInternal, "host cost: expected the direct kernel for {}, got {}", d.to_string(), info.algorithm);
  }
  const Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kDirect});
  const Conv2dPlan automatic = rt.plan(d);
  const bool same_kernel = automatic.kernel_name() == plan.kernel_name();
  if (!same_kernel) {
    fmt::print("note: conv2d's automatic choice for {} is {}, not the direct kernel\n", d.to_string(),
               to_string(automatic.algorithm()));
  }
  const Module module(info);
  const CUfunction function = module.function(info.kernel_name);
  if (info.dynamic_shared_bytes > 48 * 1024) {
    CONVJIT_CU_CHECK(cuFuncSetAttribute(function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                        static_cast<int>(info.dynamic_shared_bytes)),
                     "allowing {} bytes of shared memory", info.dynamic_shared_bytes);
  }

  DeviceBuffer x(rt, d.x_elements() * 4), w(rt, d.w_elements() * 4), y(rt, d.y_elements() * 4), b;
  if (d.bias) b = DeviceBuffer(rt, d.k * 4);
  for (DeviceBuffer* buf : {&x, &w, &b}) {
    if (buf->size() > 0) buf->fill_u32(0x3c23d70au);
  }
  const Stream stream;
  const void* px = x.data();
  const void* pw = w.data();
  const void* pb = b.data();
  void* py = y.data();
  void* args[] = {&px, &pw, &pb, &py};
  CUresult bare_status = CUDA_SUCCESS;
  auto bare = [&] {
    const CUresult r =
        CudaDriver::get().cuLaunchKernel(function, static_cast<unsigned>(info.grid_blocks), 1, 1, info.block_threads, 1,
                                         1, info.dynamic_shared_bytes, stream.get(), args, nullptr);
    if (r != CUDA_SUCCESS) bare_status = r;
  };

  // The bare launch must compute what plan.run computes, or it is timing something else.
  std::vector<unsigned char> via_plan(y.size()), via_bare(y.size());
  y.fill_u32(0x7fc00000u);
  plan.run(px, pw, pb, py, stream.get());
  stream.synchronize();
  y.download(via_plan.data(), via_plan.size());
  y.fill_u32(0x7fc00000u);
  bare();
  stream.synchronize();
  if (bare_status != CUDA_SUCCESS) {
    fail(ErrorCode::kDriver, "bare cuLaunchKernel failed → {}", CudaDriver::get().describe(bare_status));
  }
  y.download(via_bare.data(), via_bare.size());
  const bool identical = via_plan == via_bare;
  fmt::print(
      "kernel {} ({}, grid {} x {} threads, {} B dynamic shared), loaded from its {}; bare output {} plan.run's\n",
      info.kernel_name, d.to_string(), info.grid_blocks, info.block_threads, info.dynamic_shared_bytes,
      module.from_cubin() ? "CUBIN" : "PTX", identical ? "matches" : "DIFFERS FROM");

  std::vector<Method> methods;
  methods.push_back({"rt.conv2d", [&] { rt.conv2d(d, px, pw, pb, py, stream.get()); }, {}});
  methods.push_back({"plan.run", [&] { plan.run(px, pw, pb, py, stream.get()); }, {}});
  methods.push_back({"cuLaunchKernel", bare, {}});
  for (auto& m : methods) {  // warm-up, untimed
    for (int i = 0; i < std::min(options.calls, 1000); ++i) m.call();
    stream.synchronize();
  }
  // Rounds alternate the methods so that clock and cache drift hit all three alike.
  for (int done = 0; done < options.calls; done += options.sync_every) {
    const int n = std::min(options.sync_every, options.calls - done);
    for (auto& m : methods) {
      for (int i = 0; i < n; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        m.call();
        const auto t1 = std::chrono::steady_clock::now();
        m.ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
      }
      stream.synchronize();
    }
  }
  if (bare_status != CUDA_SUCCESS) {
    fail(ErrorCode::kDriver, "bare cuLaunchKernel failed → {}", CudaDriver::get().describe(bare_status));
  }

  fmt::print("{:<16} {:>10} {:>10} {:>10} {:>10} {:>10}\n", "call", "median ns", "p10 ns", "p90 ns", "mean ns",
             "vs bare");
  const double bare_median = summarize(methods.back().ns).median;
  std::vector<std::string> items;
  for (const auto& m : methods) {
    const Summary s = summarize(m.ns);
    fmt::print("{:<16} {:>10.0f} {:>10.0f} {:>10.0f} {:>10.0f} {:>+10.0f}\n", m.name, s.median, s.p10, s.p90, s.mean,
               s.median - bare_median);
    items.push_back(JsonObject()
                        .str("call", m.name)
                        .integer("calls", s.count)
                        .num("median_ns", s.median)
                        .num("p10_ns", s.p10)
                        .num("p90_ns", s.p90)
                        .num("mean_ns", s.mean)
                        .text());
  }
  return JsonObject()
      .str("shape", d.to_string())
      .str("kernel", info.kernel_name)
      .boolean("auto_is_same_kernel", same_kernel)
      .boolean("bare_output_matches_plan", identical)
      .integer("sync_every", options.sync_every)
      .raw("calls", json_array(items, false))
      .text();
}

}  // namespace convjit::bench
