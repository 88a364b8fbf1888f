#include "specialize/algorithm.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string_view>

#include "base/fail.hpp"
#include "specialize/arch.hpp"

namespace convjit {

std::string_view to_string(Algorithm algorithm) noexcept {
  switch (algorithm) {
    case Algorithm::kAuto:
      return "auto";
    case Algorithm::kDirect:
      return "direct";
    case Algorithm::kImplicitGemm:
      return "implicit_gemm";
    case Algorithm::kIm2colGemm:
      return "im2col_gemm";
  }
  return "?";
}

std::optional<std::string> beyond_2d_forward_reason(const Conv2dDesc& d) {
  if (d.transposed) {
    return fmt::format("a transposed convolution runs on the direct kernel only so far ({})", d.to_string());
  }
  if (d.d != 1 || d.t != 1 || d.pad_d != 0) {
    return fmt::format("a convolution with a depth dimension runs on the direct kernel only so far ({})",
                       d.to_string());
  }
  return std::nullopt;
}

namespace {
// One spatial dimension of a transposed problem as the forward convolution of its
// receiving phase (ForwardTwin): stride s, dilation d = m s, the phase's first output, the
// twin's padding and dilation, or why not.
struct TwinDim {
  int phase = 0, pad = 0, dilation = 1;
  const char* why = nullptr;
};
TwinDim twin_dim(std::int64_t in, std::int64_t out, int kernel, int stride, int pad, int dilation) {
  TwinDim t;
  if (dilation % stride != 0) {
    t.why = "a strided transposed convolution whose dilation is no multiple of its stride fills several output phases";
    return t;
  }
  const int m = dilation / stride;
  t.phase = ((-pad) % stride + stride) % stride;
  t.pad = (kernel - 1) * m - (t.phase + pad) / stride;
  t.dilation = m;
  if (t.pad < 0) {
    t.why = "padding past the filter's reach crops the forward twin";
    return t;
  }
  // The twin's output, padded alike on both sides, must be the phase's grid: output_padding
  // (or a stride that leaves a longer tail) would pad one side only.
  const std::int64_t twin_out = in + 2 * t.pad - static_cast<std::int64_t>(m) * (kernel - 1);
  if (twin_out != (out - t.phase + stride - 1) / stride) {
    t.why = "output_padding pads one side of the forward twin only";
    return t;
  }
  return t;
}
}  // namespace

ForwardTwin forward_twin(const Conv2dDesc& d) {
  if (!d.transposed) return {std::nullopt, "a forward convolution is its own problem"};
  if (d.layout != Layout::kNCHW) {
    return {std::nullopt,
            fmt::format("a channels-last transposed convolution runs on im2col so far ({})", d.to_string())};
  }
  const auto out = d.output_shape();
  const TwinDim z = twin_dim(d.d, out.z, d.t, d.stride_d, d.pad_d, d.dilation_d);
  const TwinDim h = twin_dim(d.h, out.p, d.r, d.stride_h, d.pad_h, d.dilation_h);
  const TwinDim w = twin_dim(d.w, out.q, d.s, d.stride_w, d.pad_w, d.dilation_w);
  for (const TwinDim* t : {&z, &h, &w}) {
    if (t->why != nullptr) return {std::nullopt, fmt::format("{} ({})", t->why, d.to_string())};
  }
  Conv2dDesc twin = d;
  twin.transposed = false;
  twin.stride_d = twin.stride_h = twin.stride_w = 1;
  twin.pad_d = z.pad;
  twin.pad_h = h.pad;
  twin.pad_w = w.pad;
  twin.dilation_d = z.dilation;
  twin.dilation_h = h.dilation;
  twin.dilation_w = w.dilation;
  twin.output_padding_d = twin.output_padding_h = twin.output_padding_w = 0;
  const auto twin_out = twin.output_shape();
  if (twin_out.z != (out.z - z.phase + d.stride_d - 1) / d.stride_d ||
      twin_out.p != (out.p - h.phase + d.stride_h - 1) / d.stride_h ||
      twin_out.q != (out.q - w.phase + d.stride_w - 1) / d.stride_w || twin_out.n != out.n || twin_out.k != out.k) {
    fail(ErrorCode::kInternal, "forward_twin: {} and its twin {} disagree on the output", d.to_string(),
         twin.to_string());
  }
  return {twin, {}, h.phase, w.phase, d.stride_h, d.stride_w, z.phase, d.stride_d};
}

std::optional<std::string> implicit_gemm_beyond_2d_reason(const Conv2dDesc& d) {
  // The mma.sync kernel gathers a depth dimension in NCDHW; its channels-last copies and
  // the wgmma kernel are 2-D.
  const bool depth = d.d != 1 || d.t != 1 || d.pad_d != 0 || d.output_shape().z != 1;
  if (depth && d.layout != Layout::kNCHW) {
    return fmt::format("a convolution with a depth dimension runs on the implicit GEMM in NCDHW only so far ({})",
                       d.to_string());
  }
  // A stride-1 transposed convolution is a forward one of the flipped filter (the mma.sync
  // kernel's kTransposed): no zero products, no column matrix.
  if (d.transposed && (d.stride_d != 1 || d.stride_h != 1 || d.stride_w != 1 || d.layout != Layout::kNCHW)) {
    return fmt::format(
        "a transposed convolution runs on the implicit-GEMM kernel with stride 1 in NCHW only so far ({})",
        d.to_string());
  }
  return std::nullopt;
}

std::optional<std::string> unsupported_reason(const Conv2dDesc& d, Algorithm algorithm, const std::string& arch) {
  switch (algorithm) {
    case Algorithm::kAuto:
      return std::nullopt;
    case Algorithm::kDirect:  // both kernels read either layout
      return std::nullopt;
    case Algorithm::kIm2colGemm:  // cuBLAS takes every problem; the workspace limit is checked per plan
      // Its gather takes a depth dimension and the transposed index map too.
      return std::nullopt;
    case Algorithm::kImplicitGemm:
      // A strided transposed problem with one receiving phase: its forward twin through the
      // route, where the route takes it.
      if (forward_twin(d).phased() && !nchw_via_nhwc_unsupported_reason(d, arch)) return std::nullopt;
      if (auto why = implicit_gemm_beyond_2d_reason(d)) return why;
      // Both layouts, every group count: the mma.sync kernel reads either; on Hopper the
      // wgmma kernel takes what wgmma_unsupported_reason lets it, mma.sync the rest.
      // mma.sync m16n8k8 (TF32) and m16n8k16 (f16, bf16) need Ampere; an arch not named
      // gets the portable kernel, which needs the same.
      if (!arch.empty() && parse_arch(arch) < 80) {
        return fmt::format("the tensor-core kernels need sm_80 or newer, the target is {} ({})", arch, d.to_string());
      }
      return std::nullopt;
  }
  return "unknown algorithm";
}

long long transposed_waste(const Conv2dDesc& d) noexcept {
  return d.transposed ? static_cast<long long>(d.stride_d) * d.stride_h * d.stride_w : 1;
}

int nominal_multiprocessors(const std::string& arch) noexcept {
  // The heuristic must choose the same kernel with no GPU present (prewarm --arch), so it
  // goes by the arch's flagship part: H100 / H200 SXM.
  return arch.rfind("sm_90", 0) == 0 ? 132 : 108;
}

// The longest reduction (channels x taps) of a float32 3-D stem the direct kernel takes: between
// the KernelBench stems the direct kernel runs faster (27 and 81) and those the implicit GEMM
// does (315; docs/perf.md, "3-channel 3-D stems in float32").
constexpr long long kShortStemReduction = 160;

Algorithm select_beyond_2d(const Conv2dDesc& d, const std::string& arch) {
  // 3-D and transposed problems: the implicit GEMM where it takes them (NCHW: 3-D
  // forward, stride-1 transposed), else im2col + cuBLAS or the direct kernel, by
  // predicted time where a transposed stride makes columns of zeros (below).
  const int c_per_group = d.c / d.groups;
  const int k_per_group = d.k / d.groups;
  const long long waste = transposed_waste(d);
  const long long useful_reduction = static_cast<long long>(c_per_group) * d.t * d.r * d.s / waste;
  // Narrow groups (8 output channels) still fill half an m16 tile of the GEMM; fewer, or
  // a handful of useful products an output, are the direct kernel's.
  if (k_per_group < 8 || useful_reduction < 16) return Algorithm::kDirect;
  // One receiving phase (ForwardTwin): its dense forward convolution through the route
  // against the direct kernel, by predicted time. im2col is not in the race: it multiplies
  // every other phase's zeros, and ran these problems slowest of the three where its
  // model, which prices neither y's store nor cuBLAS on a 96-deep reduction, put it first
  // (KernelBench 79, docs/perf.md).
  if (forward_twin(d).phased() && !nchw_via_nhwc_unsupported_reason(d, arch)) {
    return predicted_nchw_via_nhwc_ms(d, arch) < predicted_direct_ms(d, arch) ? Algorithm::kImplicitGemm
                                                                              : Algorithm::kDirect;
  }
  // A float32 NCDHW stem whose channels fill less than one TF32 k step (8) and whose filter
  // is short: the implicit GEMM pads each tap's few channels to the k step and pays a
  // gather a tap, where the direct kernel multiplies only real products; on long filters
  // the tensor cores catch up (docs/perf.md, "3-channel 3-D stems"). 16-bit data keeps the
  // implicit GEMM, whose k16 steps and halved copies beat the FMAs either way.
  const bool depth = d.d > 1 || d.t > 1;
  if (depth && !d.transposed && d.layout == Layout::kNCHW && d.dtype == DType::kFloat32 && c_per_group < 8 &&
      useful_reduction <= kShortStemReduction) {
    return Algorithm::kDirect;
  }
  // NCHW 3-D forward and stride-1 transposed: the implicit GEMM reads x in place, where
  // im2col writes and reads a column matrix taps times the size of x.
  // Shallow inputs too (a 3-channel 3-D stem: 27 taps x 3): the gather reads x in place.
  if (k_per_group >= 16 && !unsupported_reason(d, Algorithm::kImplicitGemm, arch)) {
    return Algorithm::kImplicitGemm;
  }
  // A strided transposed problem's columns hold every tap for every output, of which one
  // in `waste` reaches it: the column matrix is that many times the useful one, written
  // and read once, and its GEMM multiplies the zeros. The direct kernel's gather skips
  // them, at the FMA units' rate. Which wins turns on k / groups, the columns' reuse
  // (docs/perf.md, issue 15: KernelBench 72 and 73, 8 outputs a group).
  if (waste > 1 && predicted_direct_ms(d, arch) < predicted_im2col_ms(d, arch)) return Algorithm::kDirect;
  return Algorithm::kIm2colGemm;
}

namespace {
// Hopper SXM dense rates (TFLOP/s) and copy bandwidth (TB/s), the datasheet's, with the
// efficiencies docs/perf.md records for the wgmma kernel and for cuBLAS's large GEMMs.
// Ratios decide, so the H100/H200 spread is moot.
constexpr double kTensorTf32 = 494.7, kTensor16 = 989.4, kFma32 = 66.9, kBandwidth = 3.0;
constexpr double kWgmmaEfficiency = 0.7, kCublasEfficiency = 0.6;
// The direct kernel on a strided transposed problem walks only the taps that land (a
// block per depth and height phase, a thread over the width's phases): its share of the
// FMA peak on the useful products, plus y written once at bandwidth, fitted to the
// KernelBench strided transposed problems (docs/perf.md, "The direct kernel by phases").
// Channels last, the same kernel ran 3.4-5.7 times slower (each lane walks its own
// pixel's channel run, so a warp's loads are C elements apart).
constexpr double kDirectTransposedEfficiency = 0.25, kDirectNhwcSlowdown = 4.5;
constexpr double kStrictStageFloorUs = 1.4;
constexpr int kPointwiseStreamMaxFilters = 96, kPointwiseStreamMaxTf32Channels = 32,
              kPointwiseStreamMax16BitChannels = 128;
// The NCHW route and the NCHW wgmma kernel are priced from what they measured, since their
// floors miss by far more than the choices they decide (docs/perf.md, "NCHW through the
// NHWC kernel by default"): the transposes' bandwidth (read plus written), the scattered
// K,C/g,R,S pack's, the route's extra launches; the NCHW stage copy's fixed part, per row
// segment and per kilobyte (a least-squares fit), its share on 1x1 stages (no halo); the
// pipeline's fill in stages; im2col's measured time over its model on 3x3 and wider
// NCHW problems in TF32 and 16-bit; the NCHW kernel's measured time over this model on 1x1
// problems in 3xTF32 (the only math whose pointwise problems it is weighed for) with
// patches of several rows (images narrower than a 128-pixel patch row): 0.8-4.1x over
// twelve of them, geometric mean 2.0, where one-row patches (1024- and 512-wide images)
// ran 0.86x (docs/perf.md, "Strict pointwise layers in NCHW").
constexpr double kTransposeBandwidth = 1.8;
constexpr double kKcrsPackBandwidth = 1.5, kRouteLaunchesMs = 0.008;
constexpr double kNchwStageUs = 0.456, kNchwStageRowUs = 0.0113, kNchwStageKbUs = 0.119;
constexpr double kNchwPointwiseStageShare = 0.65;
constexpr double kNchwFillStages = 2.0;
constexpr double kIm2colMeasuredOverModel = 1.5;
constexpr double kNchwStrictPointwiseRowsMeasuredOverModel = 2.0;
// The route's measured time over its model in 3xTF32 on 1x1 problems: 0.70-0.92 over the
// networks set's pointwise and strided pointwise layers and twelve more (geometric mean
// 0.83; docs/perf.md, "Strict pointwise layers in NCHW"), where im2col's cuBLAS ran at or
// over its own model.
constexpr double kRouteStrictPointwiseMeasuredOverModel = 0.85;

double tensor_rate(const Conv2dDesc& d) { return d.dtype == DType::kFloat32 ? kTensorTf32 : kTensor16; }
// 3xTF32 on tensor cores, fp32 FMAs elsewhere: the mode every model prices apart.
bool strict_fp32(const Conv2dDesc& d) { return d.dtype == DType::kFloat32 && d.math == MathMode::kStrictFp32; }

bool wgmma_partial_chunks_requested() {
  const char* env = std::getenv("CONVJIT_WGMMA_PARTIAL_CHUNKS");
  return env != nullptr && *env != '\0' && std::string_view(env) != "0";
}
}  // namespace

bool nhwc_prefers_wgmma(const Conv2dDesc& d, const std::string& arch, const AlignmentNeeds& align) {
  if (d.layout != Layout::kNHWC) {
    // NCHW, 16-bit, fewer than 16 channels a group and a reduction (channels x taps) of at
    // most 64: the NCHW wgmma kernel's stages are 32-byte runs of 16 channels, three
    // quarters or more of them zeros here, and with so few of them a tile is mostly its
    // fixed costs, where mma.sync's reduction runs over channels and taps together in one
    // or two k tiles. Longer reductions (the 7x7 and 11x11 stems) and float32 measured
    // faster on wgmma (docs/perf.md, "Narrow 16-bit NCHW stems").
    // NOTE: CONVJIT_NCHW_NARROW_MMA=0 keeps every such problem on wgmma, =1 sends every
    // 16-bit problem of fewer than 16 channels a group to mma.sync (tests, timing runs).
    if (d.dtype == DType::kFloat32 || d.c / d.groups >= 16) return true;
    const char* env = std::getenv("CONVJIT_NCHW_NARROW_MMA");
    if (env != nullptr && *env != '\0') return std::string_view(env) == "0";
    return std::int64_t{d.c / d.groups} * d.r * d.s > 64;
  }
  // A wgmma stage is a 128-byte (or, for channels that fill 64 bytes only, 64-byte) run of each
  // pixel's channels: with fewer channels a group it copies and multiplies mostly zeros
  // (3-channel stems ran 8-16x slower than mma.sync).
  const std::int64_t stage_channels = wgmma_stage_channels(d);
  const std::int64_t c_per_group = d.c / d.groups;
  // NOTE: development switch, unmeasured: CONVJIT_WGMMA_PARTIAL_CHUNKS=1 also sends
  // one-group problems with half a chunk of channels or more to the TMA kernel, whose map
  // zero-fills the rest of the chunk (KernelBench 62, 63 and 80 run 0.4-0.6x cuDNN on
  // mma.sync in NHWC).
  const bool partial = c_per_group < stage_channels;
  if (partial && !(d.groups == 1 && 2 * c_per_group >= stage_channels && wgmma_partial_chunks_requested())) {
    return false;
  }
  // Where a TMA im2col map reads x, wgmma measured faster than mma.sync on every problem
  // of the networks and KernelBench sets that both ran (docs/perf.md, "TMA im2col").
  const bool tma = wgmma_tma_enabled() && !wgmma_tma_unsupported_reason(d, align);
  if (partial || tma) return tma;
  // The cp.async copies: where a 128x128 tiling of the output leaves a third of the SMs
  // idle, wgmma's split-K fills them (measured 1.3-3x faster than mma.sync); where it
  // already fills the machine, mma.sync's several blocks an SM keep up (wgmma measured
  // 0.7-1.1x of it in TF32 and 16-bit), except 3xTF32, where wgmma's rate pays once a tap
  // carries two 128-byte chunks (1.5x).
  const auto out = d.output_shape();
  const std::int64_t pixels = static_cast<std::int64_t>(out.n) * out.p * out.q;
  const std::int64_t tiles = (pixels + 127) / 128 * ((d.k / d.groups + 127) / 128) * d.groups;
  if (10 * tiles < 7 * static_cast<std::int64_t>(nominal_multiprocessors(arch))) return true;
  const bool strict = strict_fp32(d);
  return strict && c_per_group >= 2 * stage_channels;
}

bool runs_on_wgmma(const Conv2dDesc& d, const std::string& arch, const AlignmentNeeds& align) {
  return !arch.empty() && !wgmma_unsupported_reason(d, arch, align) && nhwc_prefers_wgmma(d, arch, align);
}

std::optional<std::string> nchw_via_nhwc_unsupported_reason(const Conv2dDesc& d, const std::string& arch) {
  if (nchw_via_nhwc_switch() == NchwRoute::kOff) return "CONVJIT_NCHW_VIA_NHWC=0 turns the route off";
  if (d.layout != Layout::kNCHW) return "the route is for NCHW problems";
  if (arch != "sm_90" && arch != "sm_90a")
    return fmt::format("the route runs on sm_90 (Hopper), the target is {}", arch);
  // The regions and the split-K slices would be sized for the largest batch and the map
  // encoded per run; not built yet.
  if (d.dynamic_batch) return "a dynamic-batch problem keeps its NCHW kernels";
  // A stride-1 transposed problem takes the route as its forward twin (weights packed flipped).
  auto forward = forward_twin(d);
  if (d.transposed && !forward.twin) return std::move(forward.why_not);
  // 3-D problems too: the NHWC kernel reads NDHWC x through a rank-5 map.
  if (!wgmma_tma_enabled()) return "CONVJIT_WGMMA_TMA=0 turns the NHWC kernel's map off";
  Conv2dDesc twin = forward.twin.value_or(d);
  twin.layout = Layout::kNHWC;
  if (auto why = wgmma_tma_unsupported_reason(twin, kFullAlignment)) {
    return fmt::format("the NHWC kernel's map cannot read x's NHWC copy: {}", *why);
  }
  if (!runs_on_wgmma(twin, arch, kFullAlignment)) return "the implicit GEMM would not run the NHWC problem on wgmma";
  return std::nullopt;
}

double predicted_nchw_via_nhwc_ms(const Conv2dDesc& d, const std::string& arch) {
  if (nchw_via_nhwc_unsupported_reason(d, arch)) return std::numeric_limits<double>::infinity();
  const ForwardTwin forward = forward_twin(d);
  Conv2dDesc twin = forward.twin.value_or(d);
  twin.layout = Layout::kNHWC;
  const auto work = wgmma_work(twin);
  const double y_bytes = static_cast<double>(d.y_elements()) * static_cast<double>(size_of(d.dtype));
  // x read and written once more, and y's share: the kernel stores NCHW y itself where
  // split-K does not run, but in TF32 and 16-bit y's share stands in for the NHWC stages'
  // costs on narrow channels, which the model lacks: without it, layers the NCHW kernel runs
  // faster go to the route (KernelBench 62, 63, 78 and 80 in TF32).
  // In strict math the products dwarf both, and over the rows of both sets that the route
  // and the NCHW kernel both ran, the choice without y's share is better on every row it
  // changes (docs/perf.md, "The route's model in strict math").
  const double bytes =
      static_cast<double>(d.x_elements()) * static_cast<double>(size_of(d.dtype)) + (strict_fp32(d) ? 0.0 : y_bytes);
  // The pack reads K,C/g,R,S weights a channel run at a time (scattered) every call.
  const double weight_bytes =
      static_cast<double>(d.k) * (d.c / d.groups) * d.t * d.r * d.s * static_cast<double>(size_of(d.dtype));
  // Its blocks pay the pipeline's fill as the NCHW kernel's do (predicted_nchw_wgmma_copy_ms),
  // against which the route is weighed.
  const double fill =
      work && work->stages > 0 ? (work->stages + kNchwFillStages) / static_cast<double>(work->stages) : 1.0;
  // A phased problem's fill writes all of y once more (the bias), at bandwidth.
  const double y_fill_bytes = forward.phased() ? y_bytes : 0.0;
  const double measured =
      strict_fp32(d) && d.t * d.r * d.s == 1 && !d.transposed ? kRouteStrictPointwiseMeasuredOverModel : 1.0;
  return (predicted_wgmma_ms(twin, arch) * fill + 2.0 * bytes / (kTransposeBandwidth * 1e12) * 1e3 +
          2.0 * weight_bytes / (kKcrsPackBandwidth * 1e12) * 1e3 + y_fill_bytes / (kBandwidth * 1e12) * 1e3 +
          kRouteLaunchesMs) *
         measured;
}

double predicted_nchw_wgmma_copy_ms(const Conv2dDesc& d, const std::string& arch) {
  Conv2dDesc nchw = d;
  nchw.layout = Layout::kNCHW;
  const auto work = wgmma_work(nchw);
  if (!work) return std::numeric_limits<double>::infinity();
  // A stage copies kBP input rows of each of a chunk's channels, with their halo, through
  // cp.async, and runs the chunk's wgmma for one filter row; the slower of the two sets
  // the stage. On images narrower than a few hundred pixels the copy is the slower.
  const int sms = nominal_multiprocessors(arch);
  const double waves = std::ceil(static_cast<double>(work->blocks) / sms);
  const double products = strict_fp32(d) ? 3.0 : 1.0;
  const double stage_flops = 2.0 * work->block_pixels * work->block_channels *
                             (static_cast<double>(work->block_reduction) / static_cast<double>(work->stages));
  const double compute_us = stage_flops * products / (tensor_rate(d) * 1e12 / sms * kWgmmaEfficiency) * 1e6;
  double copy_us = kNchwStageUs + kNchwStageRowUs * static_cast<double>(work->stage_rows) +
                   kNchwStageKbUs * static_cast<double>(work->stage_copy_bytes) / 1000.0;
  if (d.r * d.s == 1) copy_us *= kNchwPointwiseStageShare;
  // A block's first copies land before its first wgmma, with nothing to hide them behind:
  // the pipeline's fill, the most of a block that runs a few stages (a pointwise layer of
  // 64 channels runs 8).
  // Several input rows a stage: more than one chunk's (8 f32 channels') row segments.
  const bool several_rows = work->stage_rows > 8;
  const double measured =
      strict_fp32(d) && d.r * d.s == 1 && several_rows ? kNchwStrictPointwiseRowsMeasuredOverModel : 1.0;
  return waves * (static_cast<double>(work->stages) + kNchwFillStages) * std::max(compute_us, copy_us) * 1e-3 *
         measured;
}

bool nchw_takes_route(const Conv2dDesc& d, const std::string& arch) {
  if (nchw_via_nhwc_unsupported_reason(d, arch)) return false;
  if (nchw_via_nhwc_switch() == NchwRoute::kForced) return true;
  // A strided transposed problem's phase has no NCHW wgmma kernel.
  if (forward_twin(d).phased()) return true;
  return predicted_nchw_via_nhwc_ms(d, arch) < predicted_nchw_wgmma_copy_ms(d, arch);
}

std::optional<std::string> nchw_mma_via_nhwc_unsupported_reason(const Conv2dDesc& d, const std::string& arch) {
  if (nchw_mma_via_nhwc_switch() == NchwRoute::kOff) return "CONVJIT_NCHW_MMA_VIA_NHWC=0 turns the route off";
  if (d.layout != Layout::kNCHW) return "the route is for NCHW problems";
  if (arch.empty() || parse_arch(arch) < 80) return "the route's mma.sync kernel needs a named arch, sm_80 or newer";
  if (d.dynamic_batch) return "a dynamic-batch problem keeps its NCHW kernels";
  if (d.transposed || d.d != 1 || d.t != 1 || d.pad_d != 0) {
    return "the NHWC mma.sync kernel runs 2-D forward problems only";
  }
  Conv2dDesc twin = d;
  twin.layout = Layout::kNHWC;
  if (runs_on_wgmma(twin, arch, kFullAlignment)) return "the NHWC twin runs on wgmma (that route's problem)";
  return std::nullopt;
}

bool nchw_mma_takes_route(const Conv2dDesc& d, const std::string& arch) {
  if (nchw_mma_via_nhwc_unsupported_reason(d, arch)) return false;
  if (nchw_mma_via_nhwc_switch() == NchwRoute::kForced) return true;
  if (!(d.groups == 1 && d.c < 16 && d.k >= 16 && d.r * d.s > 1)) return false;
  // The route pays x's transpose, which only the work it saves outweighs: a reduction past
  // 64 (the NCHW wgmma kernel's 16-channel stages, mostly zeros here), or outputs at least
  // four times x's elements (where the NCHW kernels' per-element gathers cost more than x
  // read and written once). Measured on the stems of both sets: ResNet's (147) and
  // KernelBench 50's (363) reductions, VGG's and the U-Net's input layers took it and ran
  // 1.2-3.3x faster; EfficientNet's strided 3x3 stem (x 0.375 of y) ran 1.2x slower
  // (docs/perf.md, "Session 21").
  const std::int64_t reduction = std::int64_t{d.c} * d.r * d.s;
  return reduction > 64 || 4 * d.x_elements() <= d.y_elements();
}

Conv2dDesc implicit_gemm_model(const Conv2dDesc& d, const std::string& arch) {
  // NHWC problems that run on the mma.sync kernel (the wgmma kernel refuses them, or
  // nhwc_prefers_wgmma sends them there): its grid starves the machine on the same shapes
  // as the wgmma kernel's NCHW grid, so that model stands in for it (docs/perf.md,
  // networks set in NHWC). Those wgmma takes are modelled as they run (split-K included).
  Conv2dDesc model = d;
  if (!runs_on_wgmma(d, arch)) model.layout = Layout::kNCHW;
  return model;
}

double wgmma_model_tflops(const Conv2dDesc& d) noexcept { return tensor_rate(d) * kWgmmaEfficiency; }

double predicted_wgmma_ms(const Conv2dDesc& d, const std::string& arch) {
  const auto work = wgmma_work(d);
  if (!work) return std::numeric_limits<double>::infinity();
  // One block an SM at a time: whole waves of blocks, each computing its whole patch
  // (padding included), at the SM's share of the tensor rate; 3xTF32 does three products.
  // Split-K blocks reduce a slice each, and their fp32 partial sums are written and read
  // back once, at bandwidth, by a second launch.
  const int sms = nominal_multiprocessors(arch);
  const double waves = std::ceil(static_cast<double>(work->blocks) / sms);
  const double block_flops = 2.0 * work->block_pixels * work->block_channels * work->block_reduction;
  const bool strict = strict_fp32(d);
  const double products = strict ? 3.0 : 1.0;
  double block_ms = block_flops * products / (tensor_rate(d) * 1e12 / sms * kWgmmaEfficiency) * 1e3;
  if (strict && d.r * d.s > 1 && d.layout == Layout::kNCHW) {
    // A stage (one filter row of one channel chunk) is bound by the copy of its input
    // rows with their halo, not the math, unless the filter is wide: measured at least
    // this long on the networks and KernelBench shapes (docs/perf.md, "Every algorithm on
    // the networks set"); 1x1 stages, with no halo, measured half of it. In TF32 and
    // 16-bit the floor is as real, but im2col's prediction there is as far off the other
    // way, so the comparison keeps the bare tensor-core time. NHWC stages (one tap's
    // channel run, no halo) were not measured against it and keep the bare time.
    const double stages = static_cast<double>(work->block_reduction) / (8.0 * d.s);
    block_ms = std::max(block_ms, stages * kStrictStageFloorUs * 1e-3);
  }
  const double split_ms =
      work->slices > 1 ? 2.0 * static_cast<double>(work->partial_bytes) / (kBandwidth * 1e12) * 1e3 + 0.003 : 0.0;
  return waves * block_ms + split_ms;
}

double predicted_im2col_ms(const Conv2dDesc& d, const std::string&) {
  // The GEMM at cuBLAS's rate (strict fp32: FMA), plus the column matrix written and read
  // once and a few microseconds of launches. A pointwise convolution has no column
  // matrix in either layout: its GEMM reads x as it is (NCHW: batched over images, x^T
  // per image; NHWC: one GEMM over every pixel). Strided or padded 1x1 problems gather
  // one, whose size the same formula gives (c/g x 1 x 1 per output pixel).
  // Every group has its own columns (c/g x taps a pixel each), so they add up to c x taps
  // a pixel. A transposed problem's GEMM runs over every tap of every output, `waste`
  // times the useful FLOPs that flops() counts.
  const bool strict = strict_fp32(d);
  const double gemm_flops = d.flops() * static_cast<double>(transposed_waste(d));
  const double gemm_ms = gemm_flops / ((strict ? kFma32 : tensor_rate(d)) * 1e12 * kCublasEfficiency) * 1e3;
  const auto o = d.output_shape();
  const double columns = is_pointwise_gemm(d) ? 0.0
                                              : static_cast<double>(o.n) * o.z * o.p * o.q * d.c * d.t * d.r * d.s *
                                                    static_cast<double>(size_of(d.dtype));
  return gemm_ms + 2.0 * columns / (kBandwidth * 1e12) * 1e3 + 0.01;
}

double predicted_direct_ms(const Conv2dDesc& d, const std::string&) {
  // Every dtype and math mode runs on the FMA units (16-bit data converted to f32).
  const double y_bytes = static_cast<double>(d.y_elements()) * static_cast<double>(size_of(d.dtype));
  const double slowdown = d.layout == Layout::kNHWC ? kDirectNhwcSlowdown : 1.0;
  return d.flops() * slowdown / (kFma32 * 1e12 * kDirectTransposedEfficiency) * 1e3 +
         y_bytes / (kBandwidth * 1e12) * 1e3 + 0.005;
}

bool pointwise_stream_preferred(const Conv2dDesc& d, const std::string& arch) {
  if (pointwise_unsupported_reason(d, arch)) return false;
  if (pointwise_stream_switch() == PointwiseSwitch::kForced) return true;
  // Measured against cuBLAS on the networks' and KernelBench's pointwise layers in both
  // layouts (docs/perf.md, "A streaming kernel for pointwise layers"): it wins where the
  // filters fit one block and x is shallow, so that the layer is bytes moved once; with
  // two blocks of filters it reads x twice, and on deeper x cuBLAS's tiles win.
  return d.k <= kPointwiseStreamMaxFilters &&
         d.c <= (d.dtype == DType::kFloat32 ? kPointwiseStreamMaxTf32Channels : kPointwiseStreamMax16BitChannels);
}

Algorithm select_algorithm(const Conv2dDesc& d, const std::string& arch) {
  const int c_per_group = d.c / d.groups;
  const int k_per_group = d.k / d.groups;
  // A stride-1 transposed problem the wgmma kernel takes is chosen for as its forward twin
  // (same output, same work): the route, the NCHW wgmma kernel and im2col all run it, and
  // kImplicitGemm's mma.sync fallback reads the flipped filter too.
  if (auto f = forward_twin(d); f.twin && !arch.empty() && !wgmma_unsupported_reason(d, arch)) {
    return select_algorithm(*f.twin, arch);
  }
  if (beyond_2d_forward_reason(d)) return select_beyond_2d(d, arch);
  const long long reduction = static_cast<long long>(c_per_group) * d.r * d.s;
  // Tensor cores pay once a GEMM tile has real rows and a real reduction to chew on;
  // depthwise and tiny-channel problems are memory-bound and stay on the direct kernel.
  // A pointwise convolution is a GEMM that reads each input once: cuBLAS at bandwidth,
  // except in strict math on Hopper, where 3xTF32 wgmma beats cuBLAS's fp32 GEMM
  // (docs/perf.md, issue 4).
  // On Hopper, the wgmma kernel against im2col + cuBLAS by predicted time (below): the
  // wgmma grid can leave most of the chip idle, or compute mostly padding, on small images
  // with deep channels (7x7 to 16x16 layers, strided 1x1 ones), where im2col's column
  // matrix is small and cuBLAS splits the long reduction across the machine.
  // An NCHW problem the route takes is priced as the route runs it (the NHWC kernel and
  // the two transposes).
  const bool via_nhwc = nchw_takes_route(d, arch);
  const bool wgmma = via_nhwc || runs_on_wgmma(d, arch);
  const Conv2dDesc grid_model = implicit_gemm_model(d, arch);
  // The NCHW wgmma kernel is priced with its stage copies, which bind it on mid-size layers
  // where its bare tensor-core time is far short of what it runs.
  const bool nchw_copy = d.layout == Layout::kNCHW && wgmma;
  const double implicit_ms = via_nhwc    ? predicted_nchw_via_nhwc_ms(d, arch)
                             : nchw_copy ? predicted_nchw_wgmma_copy_ms(d, arch)
                                         : predicted_wgmma_ms(grid_model, arch);
  // The route's and the NCHW kernel's models are calibrated on measured times (the
  // transposes' bandwidth, the stage copies); against them im2col gets its own measured
  // ratio, in TF32 and 16-bit on filters wider than 1x1 (strict measured near its model;
  // pointwise problems, one GEMM on x as it is, keep the comparison they had).
  const double im2col_ms =
      predicted_im2col_ms(d, arch) *
      ((via_nhwc || nchw_copy) && !strict_fp32(d) && !is_pointwise_gemm(d) ? kIm2colMeasuredOverModel : 1.0);
  const bool wgmma_starved = !arch.empty() && (via_nhwc || !wgmma_unsupported_reason(grid_model, arch)) &&
                             d.groups == 1 && c_per_group >= 16 && im2col_ms < implicit_ms;
  if (d.groups == 1 && is_pointwise_gemm(d) && k_per_group >= 16 && c_per_group >= 16) {
    if (pointwise_stream_preferred(d, arch)) return Algorithm::kImplicitGemm;
    const bool wgmma_strict = d.math == MathMode::kStrictFp32 && wgmma && !wgmma_starved;
    return wgmma_strict ? Algorithm::kImplicitGemm : Algorithm::kIm2colGemm;
  }
  // A strided 1x1 convolution is a GEMM on every stride-th pixel: im2col gathers a
  // fraction of the input, where the wgmma kernel copies whole input rows element by
  // element for a single tap (docs/perf.md, networks set). In strict math the route's map
  // strides over x instead, and its 3xTF32 products beat cuBLAS's FMA GEMM where the
  // models say so (ResNet's strided projections measured 1.6-1.9x faster there).
  const bool strided_pointwise = d.r == 1 && d.s == 1 && d.pad_h == 0 && d.pad_w == 0 && !is_pointwise_gemm(d);
  if (d.groups == 1 && strided_pointwise && k_per_group >= 16 && c_per_group >= 16) {
    return strict_fp32(d) && via_nhwc && !wgmma_starved ? Algorithm::kImplicitGemm : Algorithm::kIm2colGemm;
  }
  // Non-overlapping patches (stride equal to the filter, no padding: ViT's patch
  // embedding): the column matrix is x reordered, read once, and its reduction packs
  // (c, r, s) densely, where the implicit-GEMM kernels pad each tap's few channels up to a
  // tensor-core k step. Strict fp32 stays on 3xTF32: cuBLAS would run it on FMA units.
  const bool patches = d.r * d.s > 1 && d.stride_h == d.r && d.stride_w == d.s && d.pad_h == 0 && d.pad_w == 0 &&
                       d.dilation_h == 1 && d.dilation_w == 1;
  const bool strict = strict_fp32(d);
  if (d.groups == 1 && patches && !strict && k_per_group >= 16) return Algorithm::kIm2colGemm;
  // NCHW stems: x's transpose and the NHWC mma.sync kernel (nchw_mma_takes_route).
  if (nchw_mma_takes_route(d, arch)) return Algorithm::kImplicitGemm;
  const bool tensor_cores = !unsupported_reason(d, Algorithm::kImplicitGemm, arch);
  // Few output channels over a deep reduction (a U-Net's 4-channel output layer): half an
  // n8 tile idle still beats FMA units at a seventh of the rate, and a GEMM as thin as
  // this leaves cuBLAS no better (docs/perf.md).
  if (d.groups == 1 && k_per_group < 16 && c_per_group >= 16 && reduction >= 32 && tensor_cores) {
    return Algorithm::kImplicitGemm;
  }
  if (wgmma_starved && reduction >= 32) return Algorithm::kIm2colGemm;
  // NHWC: a pixel's channels are contiguous, so the implicit-GEMM gather is a plain run
  // of a row even for 3 or 4 channels, and tensor cores beat the direct kernel's FMAs on
  // every dense problem, shallow ones included (docs/perf.md, networks set).
  if (d.layout == Layout::kNHWC && d.groups == 1 && tensor_cores) return Algorithm::kImplicitGemm;
  if (k_per_group >= 16 && reduction >= 32) {
    if (tensor_cores) return Algorithm::kImplicitGemm;
    // No tensor-core kernel for this target (before sm_80): in NHWC the same GEMM through
    // cuBLAS beats the direct kernel's FMAs by far once the reduction is this deep.
    if (d.layout != Layout::kNCHW) return Algorithm::kIm2colGemm;
  }
  return Algorithm::kDirect;
}

namespace {
// kAuto's pick: the heuristic's choice, or, where it cannot read the problem (a layout it
// lacks), the next best that can, in the order that usually wins. Without one, why the
// heuristic's choice cannot.
struct AutoChoice {
  std::optional<Algorithm> algorithm;
  std::string why_not;
};
AutoChoice choose_auto(const Conv2dDesc& d, const std::string& arch) {
  const Algorithm chosen = select_algorithm(d, arch);
  auto why = unsupported_reason(d, chosen, arch);
  if (!why) return {chosen, {}};
  for (Algorithm a : {Algorithm::kImplicitGemm, Algorithm::kIm2colGemm, Algorithm::kDirect}) {
    if (!unsupported_reason(d, a, arch)) return {a, {}};
  }
  return {std::nullopt, std::move(*why)};
}
}  // namespace

std::optional<std::string> why_unsupported(const Conv2dDesc& d, Algorithm algorithm, std::string_view arch_view) {
  d.validate();
  const std::string arch(arch_view);
  if (algorithm != Algorithm::kAuto) return unsupported_reason(d, algorithm, arch);
  AutoChoice choice = choose_auto(d, arch);
  if (choice.algorithm) return std::nullopt;
  return std::move(choice.why_not);
}

Algorithm resolve_algorithm(const Conv2dDesc& d, Algorithm requested, const std::string& arch) {
  if (requested == Algorithm::kAuto) {
    const AutoChoice choice = choose_auto(d, arch);
    if (!choice.algorithm) {
      fail(ErrorCode::kUnsupported, "{}: no algorithm can run it: {}", d.to_string(), choice.why_not);
    }
    return *choice.algorithm;
  }
  if (auto why = unsupported_reason(d, requested, arch)) {
    fail(ErrorCode::kUnsupported, "{}: algorithm {} cannot run it: {}", d.to_string(), to_string(requested), *why);
  }
  return requested;
}

AlignmentNeeds min_alignment(const AlignmentNeeds& a, const AlignmentNeeds& b) noexcept {
  return {std::min(a.x, b.x), std::min(a.w, b.w), std::min(a.bias, b.bias), std::min(a.y, b.y)};
}

bool satisfies(const AlignmentNeeds& have, const AlignmentNeeds& need) noexcept {
  return have.x >= need.x && have.w >= need.w && have.bias >= need.bias && have.y >= need.y;
}

AlignmentNeeds element_alignment(const Conv2dDesc& d) noexcept {
  const auto e = static_cast<unsigned>(size_of(d.dtype));
  return {e, e, e, e};
}

Specialization specialize(const Conv2dDesc& d, Algorithm algorithm, const std::string& arch,
                          const AlignmentNeeds& align) {
  Specialization src;
  switch (algorithm) {
    case Algorithm::kDirect:
      // Scalar accesses, or vector ones behind a run-time test of the pointer (depthwise).
      src = specialize_direct(d);
      src.launch.needs = element_alignment(d);
      return src;
    case Algorithm::kImplicitGemm:
      // Pointwise problems with few input channels stream through their own kernel.
      if (!pointwise_unsupported_reason(d, arch)) return specialize_pointwise(d, align);
      // Hopper gets the wgmma kernel wherever it applies (in NHWC, where it is the faster
      // of the two); mma.sync serves the rest, and the pointers the wgmma kernel cannot
      // copy from.
      // NCHW problems the route takes run on the NHWC TMA kernel between two transposes,
      // whatever the pointers' alignment (the transposes copy elements).
      if (nchw_takes_route(d, arch)) return specialize_wgmma_via_nhwc(d);
      // NCHW problems of few channels: x's transpose and the NHWC mma.sync kernel.
      if (nchw_mma_takes_route(d, arch)) return specialize_implicit_gemm_via_nhwc(d);
      return runs_on_wgmma(d, arch, align) ? specialize_wgmma(d, align) : specialize_implicit_gemm(d, align);
    case Algorithm::kIm2colGemm:
      // The im2col kernels are scalar; cuBLAS checks the pointers it is given itself.
      src = specialize_im2col(d);
      src.launch.needs = element_alignment(d);
      return src;
    default:
      fail(ErrorCode::kInternal, "specialize: algorithm {} has no kernel template", to_string(algorithm));
  }
}

}  // namespace convjit
