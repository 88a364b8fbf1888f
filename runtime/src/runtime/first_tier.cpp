#include "runtime/first_tier.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <string>
#include <vector>

#include "base/fail.hpp"
#include "conv_generic_params.h"
#include "runtime/run_arguments.hpp"
#include "specialize/templates.hpp"

namespace convjit {

namespace {
constexpr unsigned kThreads = 256;  // conv_generic::kThreads
constexpr int kRowsWide = 64;       // rows of the 64-column tile (a thread's 4 x 4 outputs)
constexpr int kRowsNarrow = 256;    // rows of the 16-column tile

// FMAs a multiprocessor retires per millisecond in the generic kernel, tile padding
// included, for the 64- and the 16-column tile (docs/perf.md, "The first tier": the
// slower of the problems measured with each, so a problem is rather left to its compile
// than served slowly).
constexpr double kFmaPerMsPerSmWide = 3.5e7;
constexpr double kFmaPerMsPerSmNarrow = 1.5e7;

bool narrow(const Conv2dDesc& d) { return d.k / d.groups <= 16; }

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

struct Geometry {
  Conv2dOutputShape out;
  std::int64_t pixels = 0;
  std::int64_t row_tiles = 0;
  std::int64_t col_tiles = 0;
  std::int64_t blocks = 0;
};

Geometry geometry(const Conv2dDesc& d, int batch) {
  Geometry g;
  g.out = d.output_shape();
  g.pixels = std::int64_t{batch} * g.out.z * g.out.p * g.out.q;
  const int rows = narrow(d) ? kRowsNarrow : kRowsWide;
  const int cols = narrow(d) ? 16 : 64;
  g.row_tiles = ceil_div(g.pixels, rows);
  g.col_tiles = ceil_div(d.k / d.groups, cols);
  g.blocks = g.row_tiles * g.col_tiles * d.groups;
  return g;
}

// The kernel's parameters for `d` at the batch `g` was computed for.
convjit_generic::Params params_for(const Conv2dDesc& d, const Geometry& g) {
  const Conv2dOutputShape& out = g.out;
  const bool last = d.layout == Layout::kNHWC;
  const std::int64_t cg = d.c / d.groups, kg = d.k / d.groups, taps = d.taps();
  convjit_generic::Params p{};
  // Batch, channel, depth, height, width.
  const auto strides = [&](std::int64_t channels, std::int64_t depth, std::int64_t height, std::int64_t width,
                           long long(&s)[5]) {
    s[4] = last ? channels : 1;
    s[3] = width * s[4];
    s[2] = height * s[3];
    s[1] = last ? 1 : depth * height * width;
    s[0] = channels * depth * height * width;
  };
  strides(d.c, d.d, d.h, d.w, p.x_stride);
  strides(d.k, out.z, out.p, out.q, p.y_stride);
  // Per filter element: forward w is [k][c / groups][taps] ([k][taps][c / groups]
  // channels last), transposed [c][k / groups][taps] ([c][taps][k / groups]).
  const std::int64_t inner = last ? (d.transposed ? kg : cg) : 1;  // the channel run of one tap
  p.w_stride_s = inner;
  p.w_stride_r = d.s * p.w_stride_s;
  p.w_stride_t = std::int64_t{d.r} * p.w_stride_r;
  const std::int64_t filter = taps * inner;  // one outer channel's filter
  if (!d.transposed) {
    p.w_stride_c = last ? 1 : taps;
    p.w_stride_k = last ? filter : cg * taps;
  } else {
    p.w_stride_k = last ? 1 : taps;
    p.w_stride_c = last ? filter : kg * taps;
  }
  p.w_stride_g = cg * kg * taps;
  p.pixels = g.pixels;
  p.in_d = d.d;
  p.in_h = d.h;
  p.in_w = d.w;
  p.out_z = static_cast<int>(out.z);
  p.out_p = static_cast<int>(out.p);
  p.out_q = static_cast<int>(out.q);
  p.t = d.t;
  p.r = d.r;
  p.s = d.s;
  p.stride[0] = d.stride_d;
  p.stride[1] = d.stride_h;
  p.stride[2] = d.stride_w;
  p.pad[0] = d.pad_d;
  p.pad[1] = d.pad_h;
  p.pad[2] = d.pad_w;
  p.dilation[0] = d.dilation_d;
  p.dilation[1] = d.dilation_h;
  p.dilation[2] = d.dilation_w;
  p.groups = d.groups;
  p.c_per_group = static_cast<int>(cg);
  p.k_per_group = static_cast<int>(kg);
  p.reduction = static_cast<int>(cg * taps);
  p.row_tiles = static_cast<int>(g.row_tiles);
  p.col_tiles = static_cast<int>(g.col_tiles);
  p.transposed = d.transposed ? 1 : 0;
  p.has_bias = d.bias ? 1 : 0;
  p.relu = d.activation == Activation::kRelu ? 1 : 0;
  return p;
}

// One entry point per dtype (f32, f16, bf16) and column tile (64, 16).
constexpr std::array<const char*, 6> kNames = {"convjit_generic_f32_c64",  "convjit_generic_f32_c16",
                                               "convjit_generic_f16_c64",  "convjit_generic_f16_c16",
                                               "convjit_generic_bf16_c64", "convjit_generic_bf16_c16"};
int kernel_index(const Conv2dDesc& d) { return 2 * static_cast<int>(d.dtype) + (narrow(d) ? 1 : 0); }
}  // namespace

struct FirstTier::Kernels {
  explicit Kernels(const DeviceContext& device)
      : module(device.context(), std::string(first_tier_fatbin()), kNames[0], 0,
               std::vector<std::string>(kNames.begin() + 1, kNames.end())) {
    functions[0] = module.function();
    for (std::size_t i = 1; i < kNames.size(); ++i) functions[i] = module.lookup(kNames[i]);
  }
  LoadedModule module;
  std::array<CUfunction, kNames.size()> functions{};
};

double FirstTier::predicted_ms(const Conv2dDesc& d, const DeviceContext& device) {
  const Geometry g = geometry(d, d.n);
  if (g.blocks > std::numeric_limits<int>::max() || g.row_tiles > std::numeric_limits<int>::max()) {
    return std::numeric_limits<double>::infinity();
  }
  const double cols = narrow(d) ? 16 : 64;
  const double fmas = double(g.row_tiles) * (narrow(d) ? kRowsNarrow : kRowsWide) * double(g.col_tiles) * cols *
                      d.groups * double(d.c / d.groups) * double(d.taps());
  return fmas / ((narrow(d) ? kFmaPerMsPerSmNarrow : kFmaPerMsPerSmWide) * std::max(1, device.multiprocessors()));
}

std::shared_ptr<FirstTier::Kernels> FirstTier::kernels(const DeviceContext& device) {
  return by_context_.get(device.id(), [&] { return std::make_shared<Kernels>(device); });
}

void FirstTier::run(const Conv2dDesc& desc, const Conv2dArgs& a, const RunArguments& checked, CUstream stream,
                    const std::shared_ptr<DeviceContext>& device) {
  const std::string where = fmt::format("conv2d {} (first tier)", desc.to_string());
  if (a.packed_w != nullptr) {
    fail(ErrorCode::kUnsupported, "{}: packed weights are in the specialized kernel's layout; nothing was launched",
         where);
  }
  const Geometry g = geometry(desc, checked.batch);
  if (g.blocks > std::numeric_limits<int>::max()) {
    fail(ErrorCode::kUnsupported, "{}: {} blocks are past the grid's limit; nothing was launched", where, g.blocks);
  }
  convjit_generic::Params p = params_for(desc, g);
  ScopedContext scope(device->context());
  const auto k = kernels(*device);
  const int index = kernel_index(desc);
  const CUfunction function = k->functions[index];
  const void* x = a.x;
  const void* w = a.w;
  const void* bias = a.bias;
  void* y = a.y;
  void* params[] = {&x, &w, &bias, &y, &p};
  CONVJIT_CU_CHECK(
      cuLaunchKernel(function, static_cast<unsigned>(g.blocks), 1, 1, kThreads, 1, 1, 0, stream, params, nullptr),
      "launching {} for {}", kNames[index], where);
}

}  // namespace convjit
