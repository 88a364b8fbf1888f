// The streaming pointwise kernel (kernel_sources/conv2d_pointwise.cu): which problems it
// takes, its tile, its shared-memory layout and its prologue.
#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "base/fail.hpp"
#include "specialize/arch.hpp"
#include "specialize/prologue.hpp"
#include "specialize/specialized_source.hpp"
#include "specialize/templates.hpp"

namespace convjit {

namespace {
constexpr const char* kTemplate = "conv2d_pointwise.cu";
// The weights of a warp's channels stay in registers for the whole kernel: at most this
// many a thread, which bounds the input channels (128 in TF32, 256 in 16-bit, with
// 16-channel warp tiles).
constexpr int kMaxWeightRegisters = 64;
// A block's accumulators and weights together, at most: the rest of the 255 a thread
// gets holds addresses and fragments without spilling.
constexpr int kMaxTileRegisters = 96;
// Copies in flight a block (one block an SM): DRAM's bandwidth times its latency, about
// 4.8 TB/s x 1.5 us / 132 SMs (docs/perf.md, "A streaming kernel for pointwise layers").
constexpr int kBytesInFlight = 56 * 1024;
constexpr int kMaxSharedBytes = 200 * 1024;
constexpr int kMaxStageBytes = 36 * 1024;

struct Tile {
  int warp_m = 32, warp_n = 32, warps_m = 1, warps_n = 1, stages = 3;
};

int mma_k(const Conv2dDesc& d) { return d.dtype == DType::kFloat32 ? 8 : 16; }
// A warp's pixels come in whole n8 tiles, pairs of them for 16-bit (the template's ldmatrix).
int pixel_step(const Conv2dDesc& d) { return d.dtype == DType::kFloat32 ? 8 : 16; }
int padded_channels(const Conv2dDesc& d) { return (d.c + mma_k(d) - 1) / mma_k(d) * mma_k(d); }
int weight_registers(const Conv2dDesc& d, int warp_m) { return warp_m / 16 * (padded_channels(d) / mma_k(d)) * 4; }

struct SharedLayout {
  int x_stride, staging_stride, x_stage_elems, staging_elems, shared_bytes;
};

// Rows padded by 16 bytes (the staging tiles, 16-bit x tiles: whole ldmatrix rows on
// distinct banks) or by 8 / 4 words (TF32 x tiles, whose scalar fragment loads then hit
// distinct banks).
SharedLayout shared_layout(const Conv2dDesc& d, const Tile& t) {
  const int e = static_cast<int>(size_of(d.dtype));
  const bool nhwc = d.layout == Layout::kNHWC;
  const int bn = t.warp_n * t.warps_n;
  const int pad16 = 16 / e;
  SharedLayout l{};
  if (nhwc) {
    l.x_stride = padded_channels(d) + (e == 4 ? 4 : pad16);
    l.x_stage_elems = bn * l.x_stride;
    l.staging_stride = t.warp_m + pad16;
    l.staging_elems = t.warp_n * l.staging_stride;
  } else {
    l.x_stride = bn + (e == 4 ? 8 : pad16);
    l.x_stage_elems = padded_channels(d) * l.x_stride;
    l.staging_stride = t.warp_n + pad16;
    l.staging_elems = t.warp_m * l.staging_stride;
  }
  l.shared_bytes = (t.stages * l.x_stage_elems + t.warps_m * t.warps_n * l.staging_elems) * e;
  return l;
}

Tile choose_tile(const Conv2dDesc& d) {
  // NOTE: a development override for tuning runs; it changes the source, so the cache key
  // changes with it. "warp_m,warp_n,warps_m,warps_n,stages".
  if (const char* env = std::getenv("CONVJIT_POINTWISE_TILE"); env != nullptr && *env != '\0') {
    Tile t;
    const bool parsed =
        std::sscanf(env, "%d,%d,%d,%d,%d", &t.warp_m, &t.warp_n, &t.warps_m, &t.warps_n, &t.stages) == 5;
    const int n_step = pixel_step(d);
    const bool ok = parsed && (t.warp_m == 16 || t.warp_m == 32) && t.warp_n > 0 && t.warp_n % n_step == 0 &&
                    t.warp_n <= 128 && t.warps_m > 0 && t.warps_n > 0 && t.warps_m * t.warps_n <= 16 && t.stages >= 2 &&
                    t.stages <= 16 && weight_registers(d, t.warp_m) <= kMaxWeightRegisters;
    if (!ok) {
      fail(ErrorCode::kInvalidArgument,
           "CONVJIT_POINTWISE_TILE: expected warp_m (16 or 32), warp_n (a multiple of {} up to 128), warps_m, "
           "warps_n (16 warps at most) and stages (2-16) whose weights fit {} registers a thread, got '{}'",
           n_step, kMaxWeightRegisters, env);
    }
    return t;
  }
  Tile t;
  t.warp_m = weight_registers(d, 32) <= kMaxWeightRegisters ? 32 : 16;
  // At most 128 channels a block, every warp's rows mostly real channels.
  t.warps_m = std::clamp((d.k + t.warp_m - 1) / t.warp_m, 1, 128 / t.warp_m);
  t.warps_n = std::max(1, 8 / t.warps_m);
  const int frag_m = t.warp_m / 16;
  t.warp_n = weight_registers(d, t.warp_m) + frag_m * 8 * 4 <= kMaxTileRegisters ? 64 : 32;
  const auto stage_bytes_of = [&](const Tile& tile) {
    return shared_layout(d, Tile{tile.warp_m, tile.warp_n, tile.warps_m, tile.warps_n, 1}).x_stage_elems *
           static_cast<int>(size_of(d.dtype));
  };
  // A stage's tile of x stays small enough for several in flight.
  const int n_step = pixel_step(d);
  // Deep channels: fewer pixels a warp first (the warps stay), then fewer warps.
  while (stage_bytes_of(t) > kMaxStageBytes && (t.warps_n > 1 || t.warp_n > n_step)) {
    if (t.warp_n > 16 && t.warp_n > n_step) {
      t.warp_n /= 2;
    } else {
      t.warps_n /= 2;
    }
  }
  const int stage_bytes = stage_bytes_of(t);
  t.stages = std::clamp((kBytesInFlight + stage_bytes - 1) / stage_bytes + 1, 3, 8);
  while (t.stages > 2 && shared_layout(d, t).shared_bytes > kMaxSharedBytes) --t.stages;
  return t;
}
}  // namespace

PointwiseSwitch pointwise_stream_switch() {
  const char* env = std::getenv("CONVJIT_POINTWISE_STREAM");
  if (env == nullptr || *env == '\0') return PointwiseSwitch::kByModel;
  if (std::string_view(env) == "0") return PointwiseSwitch::kOff;
  if (std::string_view(env) == "1") return PointwiseSwitch::kForced;
  fail(ErrorCode::kInvalidArgument, "CONVJIT_POINTWISE_STREAM: expected 0 (off) or 1 (wherever it applies), got '{}'",
       env);
}

std::optional<std::string> pointwise_unsupported_reason(const Conv2dDesc& d, const std::string& arch) {
  if (pointwise_stream_switch() == PointwiseSwitch::kOff)
    return "the streaming pointwise kernel is switched off "
           "(CONVJIT_POINTWISE_STREAM=0)";
  if (!is_pointwise_gemm(d) || d.groups != 1) {
    return fmt::format("{}: not a pointwise convolution (1x1, stride 1, unpadded, one group, forward)", d.to_string());
  }
  if (d.dtype == DType::kFloat32 && d.math == MathMode::kStrictFp32) {
    return fmt::format("{}: strict fp32 (the streaming kernel multiplies in TF32 or 16-bit)", d.to_string());
  }
  if (!arch.empty() && parse_arch(arch) < 80) {
    return fmt::format("{}: the streaming kernel needs sm_80 or newer, the target is {}", d.to_string(), arch);
  }
  if (weight_registers(d, 16) > kMaxWeightRegisters) {
    return fmt::format("{}: {} input channels; the streaming kernel holds at most {} ({}) in registers", d.to_string(),
                       d.c, d.dtype == DType::kFloat32 ? 128 : 256, to_string(d.dtype));
  }
  return std::nullopt;
}

Specialization specialize_pointwise(const Conv2dDesc& d, const AlignmentNeeds& align) {
  const Tile t = choose_tile(d);
  const SharedLayout layout = shared_layout(d, t);
  if (layout.shared_bytes > 227 * 1024) {
    fail(ErrorCode::kInvalidArgument, "{}: the pointwise tile needs {} bytes of shared memory, over 227 KiB",
         d.to_string(), layout.shared_bytes);
  }
  const bool nhwc = d.layout == Layout::kNHWC;
  const auto e = static_cast<unsigned>(size_of(d.dtype));
  const auto out = d.output_shape();
  const std::int64_t pixels = out.p * out.q;
  const int bm = t.warp_m * t.warps_m;
  const int bn = t.warp_n * t.warps_n;
  // Copies and stores as wide as the pointers and the rows allow: NCHW rows are an
  // image's plane of one channel, NHWC rows a pixel's channels.
  const unsigned x_vec = copy_width(nhwc ? d.c : pixels, align.x, e);
  const unsigned y_vec = copy_width(nhwc ? d.k : pixels, align.y, e);
  const std::int64_t tiles_per_image = (pixels + bn - 1) / bn;
  const std::int64_t items = nhwc ? (d.n * pixels + bn - 1) / bn : d.n * tiles_per_image;
  if (items > INT_MAX) fail(ErrorCode::kUnsupported, "{}: {} pixel tiles exceed the grid", d.to_string(), items);
  const bool wide = std::max({d.x_elements(), d.y_elements(), d.w_elements()}) > INT_MAX;

  Specialization src;
  src.launch.algorithm = "implicit_gemm";
  const std::string_view math = d.dtype == DType::kFloat32 ? "tf32" : to_string(d.dtype);
  src.launch.tile = fmt::format(
      "streaming pointwise GEMM: {} channels x {} pixels a tile ({}x{} warps of {}x{}), weights in registers, "
      "{}-stage x pipeline, persistent blocks, {} mma.sync; x in {}-byte copies, y in {}-byte stores",
      bm, bn, t.warps_m, t.warps_n, t.warp_m, t.warp_n, t.stages, math, x_vec, y_vec);
  src.source.template_name = kTemplate;
  src.source.kernel_name = fmt::format("conv2d_pointwise_{}_{}_{}{}", math, to_string(d.layout), problem_tag(d),
                                       alignment_tag(align, kFullAlignment));
  src.source.text = Prologue(src.source.kernel_name)
                        .problem(d)
                        .constant("kBM", bm)
                        .constant("kBN", bn)
                        .constant("kWarpsM", t.warps_m)
                        .constant("kWarpsN", t.warps_n)
                        .constant("kStages", t.stages)
                        .constant("kWideIndex", wide)
                        .constant("kXVecBytes", static_cast<int>(x_vec))
                        .constant("kYVecBytes", static_cast<int>(y_vec))
                        .constant("kXStride", layout.x_stride)
                        .constant("kStagingStride", layout.staging_stride)
                        .constant("kSharedBytes", layout.shared_bytes)
                        .finish(template_text(kTemplate));
  src.launch.geometry = {.grid_x = static_cast<std::uint64_t>(items),
                         .grid_y = static_cast<unsigned>((d.k + bm - 1) / bm),
                         .block_x = static_cast<unsigned>(t.warps_m * t.warps_n * 32),
                         .shared_bytes = static_cast<unsigned>(layout.shared_bytes),
                         .persistent = true,
                         .grid_x_per_image = static_cast<std::uint64_t>(nhwc ? pixels : tiles_per_image),
                         .grid_x_divisor = static_cast<std::uint64_t>(nhwc ? bn : 1)};
  src.launch.needs = {x_vec, e, e, y_vec};
  return src;
}

}  // namespace convjit
