#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "base/env_switch.hpp"
#include "base/fail.hpp"
#include "base/log.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/prologue.hpp"
#include "specialize/specialized_source.hpp"
#include "specialize/templates.hpp"

namespace convjit {

namespace {
constexpr const char* kTemplate = "conv2d_implicit_gemm_wgmma.cu";
constexpr int kConsumers = 2;  // consumer warpgroups; the template's kConsumers
constexpr int kThreads = 128 * (1 + kConsumers);
constexpr int kBarrierBytes = 256;
// The row halo's deeper stage ring (up to 2 S + 2 stages) keeps its barriers in twice the area.
constexpr int kHaloBarrierBytes = 512;
// H100's opt-in limit is 227 KiB a block; the stage count is what gives way.
constexpr int kSharedLimit = 227 * 1024;
constexpr int kMaxStages = 4;
// The TMA variant's stages start on a 1024-byte boundary (its 128-byte swizzle's atom); the
// kernel rounds up past the barriers at run time, and this is what the rounding may skip.
constexpr int kSwizzleAtom = 1024;
// The rank-4 (2-D convolution) im2col map's limits, from the CUDA driver's and PTX's
// documentation of cuTensorMapEncodeIm2col and cp.async.bulk.tensor: bounding-box corners,
// im2col offsets (the tap's dilated position), traversal strides.
constexpr int kCornerMin = -128, kCornerMax = 127;
constexpr int kOffsetMax = 255;
constexpr int kTraversalStrideMax = 8;
// The rank-5 (3-D) map's: three corners in [-16, 15] (cuda.h), three 5-bit offsets.
constexpr int kCornerMin3d = -16, kCornerMax3d = 15;
constexpr int kOffsetMax3d = 31;

struct WgmmaTile {
  int bn = 0, mb = 0, bp = 0, bq = 0, stages = 0, split = 1;
  int chunks = 0;            // channel chunks of a group: the template's kChunks
  std::int64_t patches = 0;  // kBP x kBQ patches over the output: the template's kTiles
  bool store_warps = false;
  bool persistent = false;
  int slices = 1;        // split-K (NHWC): the template's kSplitK
  int slice_stages = 0;  // stages a slice reduces: the template's kSliceStages
  std::uint64_t packed_bytes = 0;
  int stage_bytes = 0;  // the template's kStageBytes
  unsigned shared_bytes = 0;
  bool tma = false;         // the template's kATma: A through a TMA im2col map
  int taps_per_stage = 1;   // the template's kTapsPerStage (NHWC with the map)
  int stream_workers = 0;   // stream-K's blocks (the template's kStreamWorkers); 0: none
  std::int64_t items = 0;   // stream-K: (tile, group, k block) items
  bool y_map = false;       // the template's kYMap: outputs staged in boxes, stored by TMA
  int y_passes = 1;         // the template's kYPasses: the boxes staged a share at a time
  int y_buffers = 1;        // the template's kYBuffers: 2 where passes alternate between two
  bool row_halo = false;    // the template's kRowHalo: row tiles, one A copy a filter row
  int halo_ring = 2;        // the template's kHaloRing: slots of kRowHalo's ring
  int halo_ring_bytes = 0;  // kRowHalo's ring of A rows beside the stages
};

// The template's layout arithmetic (kHaloW, kRowElems, kChanStride, kStageBytes), which
// decides how many stages fit. The prologue carries the result (kStageBytes,
// kSharedBytes) and the template static_asserts its own derivation against it.
bool sixteen_bit(const Conv2dDesc& d) { return d.dtype != DType::kFloat32; }
// A depth dimension, as beyond_2d_forward_reason counts one: the template's kDepth.
bool has_depth(const Conv2dDesc& d) { return d.d != 1 || d.t != 1 || d.pad_d != 0; }
// Taps a stage walks: the template's kTaps.
int taps(const Conv2dDesc& d) { return d.t * d.r * d.s; }
// Output pixels: the template's kN x kOutPlane.
std::int64_t out_pixels(const Conv2dDesc& d) {
  const auto out = d.output_shape();
  return std::int64_t{out.n} * out.z * out.p * out.q;
}
bool nhwc(const Conv2dDesc& d) { return d.layout == Layout::kNHWC; }
int chunk_channels(const Conv2dDesc& d) { return sixteen_bit(d) ? 16 : 8; }
// A one-group NHWC problem whose channels fill 64 but not 128 bytes a pixel gets stages of
// 64-byte pixel rows (TMA's 64-byte swizzle) instead of half-empty 128-byte ones, measured
// 1.7-2.1x faster (docs/perf.md). NOTE: CONVJIT_WGMMA_ROW64=0 keeps 128-byte rows, for
// timing runs of both (changes the source, so the cache key).
bool row64_enabled() { return env_switch_on("CONVJIT_WGMMA_ROW64"); }
// The same for channels that fill 32 but not 64 bytes (16 to 31 halves, 8 to 15 floats):
// 32-byte rows, one k step a tap, where 64-byte ones were half zeros. NOTE:
// CONVJIT_WGMMA_ROW32=0 keeps them on the wider rows, for timing runs of both.
bool row32_enabled() { return env_switch_on("CONVJIT_WGMMA_ROW32"); }

// Bytes of a pixel's channel run a stage holds (the template's kARowBytes): 128, or 64
// or 32 where a one-group problem's channels fill no more (unless turned off above).
int a_row_bytes(const Conv2dDesc& d) {
  const int run = d.c / d.groups * static_cast<int>(size_of(d.dtype));
  if (!nhwc(d) || d.groups != 1 || run >= 128 || !row64_enabled()) return 128;
  if (run >= 64) return 64;
  return run >= 32 && row32_enabled() ? 32 : 128;
}

// Channels of one tap a stage reduces (the template's kStageC): one k step in NCHW, a
// pixel row's bytes of the channel run in NHWC.
int stage_channels(const Conv2dDesc& d) {
  return nhwc(d) ? a_row_bytes(d) / static_cast<int>(size_of(d.dtype)) : chunk_channels(d);
}
int halo_width(const Conv2dDesc& d, int bq) { return (bq - 1) * d.stride_w + (d.s - 1) * d.dilation_w + 1; }

int stage_bytes(const Conv2dDesc& d, const WgmmaTile& t) {
  // NHWC: a pixel row (128, 64 or 32 bytes) of each of the kBM pixels, and as many bytes of
  // each of the kBN output channels per weight plane; with the row halo the weights alone.
  if (nhwc(d) && t.row_halo) return (t.split == 3 ? 2 : 1) * t.bn * a_row_bytes(d);
  if (nhwc(d)) return t.taps_per_stage * (t.bp * t.bq + (t.split == 3 ? 2 : 1) * t.bn) * a_row_bytes(d);
  const bool half = sixteen_bit(d);
  const int halo = halo_width(d, t.bq) + (half ? 1 : 0);
  const int row = half ? (halo + 1) / 2 * 2 : halo;
  const int chan_stride = (t.bp * row + 31) / 32 * 32 + 8;
  const int planes = t.split == 3 ? 2 : 1;
  const int element = half ? 2 : 4;
  return (chunk_channels(d) * chan_stride + planes * d.s * t.bn * chunk_channels(d)) * element;
}

// The patch shape (kBP rows x kBQ columns of output pixels). Each stage copies kBP
// rows of kHaloW input columns for kBP x kBQ x kS taps' worth of wgmma, so a patch
// is charged its pixels outside the image and its halo columns per tap:
// cost = computed pixels x (1 + kHaloW / (kBQ * kS)).
void choose_patch(const Conv2dDesc& d, WgmmaTile& t) {
  const auto out = d.output_shape();
  const int bm = kConsumers * t.mb * 64;
  double best = 0;
  for (int bq = 8; bq <= bm; bq *= 2) {
    const int bp = bm / bq;
    const double computed = static_cast<double>((out.p + bp - 1) / bp * bp) * ((out.q + bq - 1) / bq * bq);
    const double cost = computed * (1.0 + static_cast<double>(halo_width(d, bq)) / (bq * d.s));
    if (t.bq == 0 || cost <= best) {
      best = cost;
      t.bq = bq;
      t.bp = bp;
    }
  }
}

// One block an SM walking the patches, or one block a patch. Persistent blocks overlap a
// patch's stores with the next patch's first copies, which pays for 3xTF32 with long
// patches in NCHW and costs elsewhere there, and for the NHWC TMA kernel's whole-tile grids
// (`nhwc_map`: the caller's own NHWC problem, not the route's; docs/perf.md, "Session
// 17").
// NOTE: CONVJIT_WGMMA_PERSISTENT=0|1 forces it for timing runs; it is launch geometry
// only, so the source and the cache key stay the same.
bool persistent_launch(int split, int stages_per_patch, bool nhwc_map) {
  if (const char* env = std::getenv("CONVJIT_WGMMA_PERSISTENT"); env != nullptr && *env != '\0') {
    return std::string_view(env) != "0";
  }
  return nhwc_map || (split == 3 && stages_per_patch >= 24);
}

// Split-K (NHWC) where the grid leaves SMs idle: as many slices of the reduction as the
// idle machine holds (SMs / blocks), none shorter than kMinSliceStages (a slice must
// cover its pipeline's fill) and at most kMaxSlices (each adds its partial sums' traffic);
// then the fewest slices of that length, so that none is empty. One rule, from the JIT
// constants, for every shape; the flagship's SM count, as the algorithm choice uses.
constexpr int kMinSliceStages = 8;
constexpr int kMaxSlices = 16;
int split_k_slices(std::int64_t blocks, int stages) {
  const int sms = nominal_multiprocessors("sm_90");
  if (blocks >= sms) return 1;
  const auto slices = static_cast<int>(std::min<std::int64_t>({sms / blocks, stages / kMinSliceStages, kMaxSlices}));
  if (slices <= 1) return 1;
  const int per_slice = (stages + slices - 1) / slices;
  return (stages + per_slice - 1) / per_slice;
}

// Stream-K (NHWC TMA kernel, static batch, no split-K): where the grid's last wave leaves
// more than kStreamKMaxIdle of the machine idle (96 blocks on 132 SMs; 196 blocks, 1.5
// waves), the SMs share the items' stages evenly instead, none fewer than
// kMinSliceStages, where that and a split item's fix-up beat the waves of whole items.
// Taken for f32 elements (TF32, 3xTF32); 16-bit stages do half the work for the same fp32
// fix-up traffic, and measured slower with it (docs/perf.md, "Stream-K for grids with an
// idle last wave"). CONVJIT_WGMMA_STREAM_K=0 turns it off; =1 takes every grid with an
// idle last wave, in every element type, whatever the fix-up costs (for tests and timing
// runs; changes the source, so the cache key).
constexpr double kStreamKMaxIdle = 0.15;
enum class StreamK { kOff, kModel, kForced };
StreamK stream_k_mode(const Conv2dDesc& d) {
  const char* env = std::getenv("CONVJIT_WGMMA_STREAM_K");
  if (env != nullptr && *env != '\0') return std::string_view(env) == "0" ? StreamK::kOff : StreamK::kForced;
  return sixteen_bit(d) ? StreamK::kOff : StreamK::kModel;
}
// A split item's fix-up, in stage-times: its fp32 sums (bm x bn x 4 bytes) written by each
// part and read back by the last, at kStreamFixupTbps, against a stage's 2 x bm x bn x
// channels x products FLOPs at the SM's share of the tensor rate; bm x bn cancels. The
// bandwidth is the one that fits the networks set's f32 stream-K rows on the H200 (same
// section).
constexpr double kStreamFixupTbps = 2.0;
double stream_fixup_stages(const Conv2dDesc& d, int split) {
  return 2.0 * 4.0 * wgmma_model_tflops(d) / (2.0 * stage_channels(d) * split * kStreamFixupTbps);
}
// Stream-K's blocks where the grid's last wave idles: kModel, one an SM where each gets
// kMinSliceStages and the shared run plus a fix-up beats the waves of whole items;
// kForced, up to one an SM, each with kMinSliceStages. 0: none.
int stream_k_workers(StreamK mode, std::int64_t items, int stages_per_item, double fixup_stages) {
  const int sms = nominal_multiprocessors("sm_90");
  const std::int64_t waves = (items + sms - 1) / sms;
  const double idle = 1.0 - static_cast<double>(items) / static_cast<double>(waves * sms);
  if (mode == StreamK::kOff || idle <= kStreamKMaxIdle) return 0;
  const std::int64_t stages = items * stages_per_item;
  if (mode == StreamK::kForced) return static_cast<int>(std::min<std::int64_t>(sms, stages / kMinSliceStages));
  if (stages < std::int64_t{sms} * kMinSliceStages) return 0;
  const double per_worker = std::ceil(static_cast<double>(stages) / sms);
  return per_worker + fixup_stages < static_cast<double>(waves * stages_per_item) ? sms : 0;
}

// Stream-K's whole items (the template's kWholeItems): whole waves of them, one a block,
// before the rest are shared stage by stage; one wave fewer where the rest would give
// some block no stage.
std::int64_t stream_k_whole_items(std::int64_t items, int stages_per_item, int workers) {
  const std::int64_t waves = items / workers;
  const std::int64_t rest = items - waves * workers;
  const std::int64_t whole_waves = waves > 0 && rest * stages_per_item < workers ? waves - 1 : waves;
  return whole_waves * workers;
}

// NOTE: development switch for timing runs: CONVJIT_WGMMA_STORE_WARPS=0|1 (changes the
// source, so the cache key).
std::optional<bool> store_warps_override() {
  const char* env = std::getenv("CONVJIT_WGMMA_STORE_WARPS");
  if (env == nullptr || *env == '\0') return std::nullopt;
  return std::string_view(env) != "0";
}

// 3xTF32 drains its partial sums after every second stage: each drain waits for the
// consumer's wgmmas to finish, so half as many leave the tensor pipe idle half as often,
// and a chain of two stages' truncating adds stays far inside the fp32 bound (docs/perf.md,
// "3xTF32's partial sums drained every second stage").
// NOTE: development switch for timing runs: CONVJIT_WGMMA_PAIRED_PARTIALS=0 drains after
// every stage (changes the source, so the cache key).
bool paired_partials() { return env_switch_on("CONVJIT_WGMMA_PAIRED_PARTIALS"); }

// NOTE: development switch, not yet run on a GPU: CONVJIT_WGMMA_TAPS_PER_STAGE=N gives the
// NHWC kernel's stages (with the TMA map) the largest divisor of the filter's taps up to N
// whose stages still fit three deep, so that a stage's fixed costs (its barriers, copies
// issued and waited for) are paid once for several taps: the narrow-channel problems'
// one-tap stages are bound by them (docs/perf.md, "n16 and n32 tiles"). Changes the
// source, so the cache key.
// 32-byte stage rows (one k step a tap) take up to 8 by default: a one-step stage's fixed
// costs are four times a 128-byte row's share of its work, and with one step a stage
// ptxas serializes the wgmmas (the register sets' reuse across stages defeats its check).
// 16-bit 64-byte rows (two k steps a tap) take up to 3 on persistent grids (docs/perf.md,
// "Session 17").
// A development switch's integer in [lo, hi], or `fallback` where it is unset or empty.
int env_int_in(const char* name, int lo, int hi, int fallback) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return fallback;
  int n = 0;
  if (std::sscanf(env, "%d", &n) != 1 || n < lo || n > hi) {
    fail(ErrorCode::kInvalidArgument, "{}: expected {} to {}, got '{}'", name, lo, hi, env);
  }
  return n;
}
int taps_per_stage_requested(int row_bytes, bool sixteen_bit_persistent) {
  return env_int_in("CONVJIT_WGMMA_TAPS_PER_STAGE", 1, 8,
                    row_bytes == 32                             ? 8
                    : row_bytes == 64 && sixteen_bit_persistent ? 3
                                                                : 1);
}

// Row-halo A (the template's kRowHalo): tiles of one output row, whose stages hold one
// tap's weights, and one im2col copy of a filter row's input pixels (kHaloRows of them, two
// in a ring beside the stages) for all of that row's taps, where one box a tap lands each
// input pixel S times. Where the template takes it: the NHWC TMA kernel, 2-D, stride 1 along
// W (a tap's A is then the row shifted by whole pixels), a filter wider than one tap,
// 128-byte pixel rows, a static batch (y's map is per output row), and room for the ring
// beside (ring - 1) x S + 1 stages, which the producer's wait on a ring slot's last
// reader needs. By default only where wgmma reads A through descriptors (16-bit, and TF32
// tiles of 128 filters: there the boxes' L2 traffic bounds a stage; KernelBench 55 and 56
// 5-7% faster, while 62 and 80's TF32 register-path tiles of 64 filters measured 5-8%
// slower: docs/perf.md, "Session 22") and where row tiles leave at most 1/16 of the row
// idle (tiles across rows leave none).
// NOTE: CONVJIT_WGMMA_ROW_HALO=0|1 turns it off or on wherever the template takes it, for
// tests and timing runs (changes the source, so the cache key).
bool wgmma_a_smem(const Conv2dDesc& d, bool tma, const WgmmaTile& t);
int halo_rows(const Conv2dDesc& d, int bm) {
  const int atom_rows = kSwizzleAtom / a_row_bytes(d);
  return (bm + (d.s - 1) * d.dilation_w + atom_rows - 1) / atom_rows * atom_rows;
}
int halo_min_stages(const Conv2dDesc& d, int ring) { return (ring - 1) * d.s + 1; }
// `t` with the row halo: its ring of `ring` slots beside stages of one tap's weights.
WgmmaTile with_row_halo(const Conv2dDesc& d, WgmmaTile t, int ring = 2) {
  t.row_halo = true;
  t.halo_ring = ring;
  t.halo_ring_bytes = ring * halo_rows(d, t.bp * t.bq) * a_row_bytes(d);
  return t;
}
bool row_halo_wanted(const Conv2dDesc& d, const WgmmaTile& t) {
  const int bm = t.bp * t.bq;
  const WgmmaTile halo = with_row_halo(d, t);
  const bool possible =
      nhwc(d) && !has_depth(d) && d.stride_w == 1 && d.s > 1 && a_row_bytes(d) == 128 && !d.dynamic_batch &&
      d.pad_w <= kCornerMax && halo_rows(d, bm) <= 1024 &&
      (kSharedLimit - kHaloBarrierBytes - kSwizzleAtom - halo.halo_ring_bytes) / stage_bytes(d, halo) >=
          halo_min_stages(d, halo.halo_ring);
  if (!possible) return false;
  const char* env = std::getenv("CONVJIT_WGMMA_ROW_HALO");
  const std::string_view mode = env != nullptr ? env : "";
  if (mode == "0") return false;
  if (mode == "1") return true;
  if (!mode.empty()) fail(ErrorCode::kInvalidArgument, "CONVJIT_WGMMA_ROW_HALO: expected 0 or 1, got '{}'", mode);
  const std::int64_t q = d.output_shape().q;
  const std::int64_t idle = (q + bm - 1) / bm * bm - q;
  return wgmma_a_smem(d, /*tma=*/true, t) && idle * 16 <= q;
}

// NOTE: CONVJIT_WGMMA_HALO_RING=n (2 to 4) sets the ring's slots, for timing runs (changes the
// source, so the cache key).
int halo_ring_requested() { return env_int_in("CONVJIT_WGMMA_HALO_RING", 2, 4, 2); }

// `nhwc_map`: the caller's own NHWC problem through the TMA map (not the route's), whose
// grids of whole tiles run persistent.
// y's boxes (kYMap): 128 bytes of channels for each of a tile's pixels.
int y_box_channels(const Conv2dDesc& d) { return 128 / static_cast<int>(size_of(d.dtype)); }

// `y_map_ok`: the caller's y can take the kernel's y map (see y_map_possible).
std::optional<WgmmaTile> choose_tile(const Conv2dDesc& d, bool tma = false, bool nhwc_map = false,
                                     bool y_map_ok = false) {
  WgmmaTile t;
  t.tma = tma;
  const int slack = tma ? kSwizzleAtom : 0;
  const int k_per_group = d.k / d.groups;
  t.split = d.math == MathMode::kStrictFp32 && !sixteen_bit(d) ? 3 : 1;
  // NHWC: the narrowest of n16, n32, n64 that holds a group's filters. A stage's A (a tap's
  // channel run of every pixel) is the same whatever the width, so a wider tile than the
  // filters only multiplies and copies zeros (KernelBench 58, 16 filters: a quarter of n64
  // used). The NCHW kernel's store warps take n64 and n128 only.
  t.bn = k_per_group > 64 ? 128 : !nhwc(d) || k_per_group > 32 ? 64 : k_per_group > 16 ? 32 : 16;
  // A 32-byte row's n16 weights (512 bytes) would leave the stages off the swizzle atoms.
  if (a_row_bytes(d) == 32) t.bn = std::max(t.bn, 32);
  // NHWC, one product a k step: n160 tiles of m128 (the 80 accumulators a thread holds
  // for one m64 block) where they pad a group's filters less than n128 does. 320 filters
  // are two n160 blocks instead of three n128 blocks of which the last is 3/8 zeros, and
  // 128-pixel tiles double the grid (the Stable Diffusion layers' 96 blocks of 256 pixels
  // left 36 of 132 SMs idle; docs/perf.md, "n160 tiles").
  const auto padded = [&](int bn) { return (k_per_group + bn - 1) / bn * bn; };
  if (nhwc(d) && t.split == 1 && k_per_group > 128 && padded(160) < padded(128)) t.bn = 160;
  // As many m64 blocks as 128 accumulator registers hold: the weights of a stage then
  // serve the most pixels (n64 blocks read half the weights per pixel of n128 ones,
  // so they get twice the pixels). 3xTF32 keeps a partial set beside the running one.
  // NHWC copies 128 bytes per pixel and stage, whatever the taps: more than two m64
  // blocks a warpgroup would leave room for fewer than four stages.
  const int accumulator_sets = t.split == 3 ? 2 : 1;
  t.mb = 128 / (t.bn / 2) / accumulator_sets;
  if (nhwc(d)) {
    t.mb = std::min(t.mb, 2);
    // One m64 block a warpgroup where two would compute a third more pixels or worse, the
    // last tile mostly padding (the Stable Diffusion 8x8 layers' 128 pixels, half of a
    // two-block tile); elsewhere two, whose stages serve twice the pixels (docs/perf.md,
    // "Session 17").
    const auto computed = [&](int mb) {
      const std::int64_t bm = std::int64_t{kConsumers} * mb * 64;
      return (out_pixels(d) + bm - 1) / bm * bm;
    };
    // A dynamic batch's tile is the same for every batch, so only a static batch's count decides.
    if (t.mb == 2 && !d.dynamic_batch && 4 * computed(1) <= 3 * computed(2)) t.mb = 1;
    t.bp = 1;
    t.bq = kConsumers * t.mb * 64;
  } else {
    choose_patch(d, t);
  }
  // NOTE: a development override for tuning runs ("bn,mb,bp,bq,stages"); it changes the
  // source, so the cache key changes with it.
  if (const char* env = std::getenv("CONVJIT_WGMMA_TILE"); env != nullptr && *env != '\0') {
    if (std::sscanf(env, "%d,%d,%d,%d,%d", &t.bn, &t.mb, &t.bp, &t.bq, &t.stages) != 5 ||
        t.bp * t.bq != kConsumers * t.mb * 64 || t.bq % 8 != 0 ||
        (t.bn != 64 && t.bn != 128 && !(nhwc(d) && (t.bn == 16 || t.bn == 32 || (t.bn == 160 && t.mb == 1)))) ||
        (nhwc(d) && t.bp != 1) || (t.bn == 160 && t.split != 1)) {
      fail(ErrorCode::kInvalidArgument,
           "CONVJIT_WGMMA_TILE: expected bn,mb,bp,bq,stages with bn 64|128 (NHWC also 16|32, and 160 with mb 1 "
           "outside 3xTF32), bq a multiple of 8 and bp*bq = {}*mb*64 (NHWC: bp 1), got '{}'",
           kConsumers, env);
    }
  }
  if (nhwc(d) && tma && row_halo_wanted(d, t)) t = with_row_halo(d, t, halo_ring_requested());
  if (nhwc(d) && tma && !t.row_halo) {
    // Whole tiles a block, more blocks than SMs: the grid runs persistent (no split-K).
    const std::int64_t tile_pixels = std::int64_t{t.bp} * t.bq;
    const std::int64_t blocks =
        (out_pixels(d) + tile_pixels - 1) / tile_pixels * ((k_per_group + t.bn - 1) / t.bn) * d.groups;
    const bool persistent_grid = nhwc_map && !d.dynamic_batch && blocks >= nominal_multiprocessors("sm_90");
    for (int n = std::min(taps_per_stage_requested(a_row_bytes(d), sixteen_bit(d) && persistent_grid), taps(d)); n > 1;
         --n) {
      if (taps(d) % n != 0) continue;
      WgmmaTile several = t;
      several.taps_per_stage = n;
      if ((kSharedLimit - kBarrierBytes - slack) / stage_bytes(d, several) >= 3) {
        t.taps_per_stage = n;
        break;
      }
    }
  }
  const int per_stage = stage_bytes(d, t);
  // Store warps (a staged output tile, [kBN][kBM + 4], written out while the next patch
  // runs) pay where a patch is a few stages and its stores are most of its time, and
  // only with the full pipeline depth beside the tile; on long patches they lose, since
  // half the producer's warps store instead of copying (docs/perf.md).
  const int element = d.dtype == DType::kFloat32 ? 4 : 2;
  const int out_bytes = t.bn * (kConsumers * t.mb * 64 + 4) * element;
  const int ring = t.halo_ring_bytes;
  const int barriers = t.row_halo ? kHaloBarrierBytes : kBarrierBytes;
  const int fit_with_store = (kSharedLimit - barriers - slack - ring - out_bytes) / per_stage;
  t.chunks = (d.c / d.groups + stage_channels(d) - 1) / stage_channels(d);
  const int stages_per_patch = t.chunks * (nhwc(d) ? taps(d) / t.taps_per_stage : d.r);
  const bool short_patches = stages_per_patch <= 8;
  // NHWC stores from registers: a thread's channel pairs are contiguous in y.
  t.store_warps = !nhwc(d) && store_warps_override().value_or(short_patches && fit_with_store >= kMaxStages);
  const int fit = (kSharedLimit - barriers - slack - ring - (t.store_warps ? out_bytes : 0)) / per_stage;
  // The row halo's stages are one tap's weights: as many as hold two filter rows' taps and two more.
  const int min_stages = t.row_halo ? halo_min_stages(d, t.halo_ring) : 2;
  if (t.stages == 0) t.stages = std::min(t.row_halo ? 2 * d.s + 2 : kMaxStages, fit);
  if (t.stages < min_stages || t.stages > fit) return std::nullopt;
  t.stage_bytes = per_stage;
  t.shared_bytes =
      static_cast<unsigned>(barriers + slack + ring + t.stages * per_stage + (t.store_warps ? out_bytes : 0));
  // Store warps only pay off when the block goes on to another patch.
  t.persistent = t.store_warps || persistent_launch(t.split, stages_per_patch, nhwc(d) && tma && nhwc_map);
  const auto out = d.output_shape();
  const std::int64_t bm = std::int64_t{t.bp} * t.bq;
  t.patches = t.row_halo ? std::int64_t{d.n} * out.p * ((out.q + bm - 1) / bm)
              : nhwc(d)  ? (out_pixels(d) + bm - 1) / bm
                         : static_cast<std::int64_t>(d.n) * ((out.p + t.bp - 1) / t.bp) * ((out.q + t.bq - 1) / t.bq);
  const std::uint64_t k_blocks = static_cast<std::uint64_t>(k_per_group + t.bn - 1) / t.bn;
  // Per output channel, tap and plane: a chunk's channels (32 bytes in NCHW for every
  // data type, 8 floats or 16 halves; a pixel row's, 128, 64 or 32 bytes, in NHWC).
  t.packed_bytes = static_cast<std::uint64_t>(d.groups) * k_blocks * t.chunks * static_cast<std::uint64_t>(taps(d)) *
                   (t.split == 3 ? 2 : 1) * t.bn * static_cast<std::uint64_t>(stage_channels(d)) * size_of(d.dtype);
  // The row halo's tiles are whole a block (its ring follows the tile's stages).
  t.slices = nhwc(d) && !t.row_halo
                 ? split_k_slices(t.patches * static_cast<std::int64_t>(k_blocks) * d.groups, stages_per_patch)
                 : 1;
  t.slice_stages = (stages_per_patch + t.slices - 1) / t.slices;
  // Split grids fit the machine in one wave: one block a (tile, slice).
  if (t.slices > 1) t.persistent = false;
  if (nhwc(d) && tma && t.slices == 1 && !d.dynamic_batch && !t.row_halo) {
    const std::int64_t items = t.patches * static_cast<std::int64_t>(k_blocks) * d.groups;
    const double fixup = stream_fixup_stages(d, t.split);
    if (const int workers = stream_k_workers(stream_k_mode(d), items, stages_per_patch, fixup); workers > 1) {
      t.stream_workers = workers;
      t.items = items;
      t.persistent = false;
    }
  }
  // The outputs through y's map: 16-bit tiles with three stages or more beside the boxes
  // (1-30% faster, the most where a tile has few stages), f32 tiles of at most
  // kYMapF32MaxStages stages that keep all of theirs (5-12% faster; longer ones measured up
  // to 5% slower, and tiles that gave up a stage for the boxes 2% slower: docs/perf.md,
  // "Session 19"), staged in two or four passes where the whole tile's boxes would cost a
  // stage; and the row halo's tiles in every dtype, which may give up weight stages down
  // to their least (KernelBench 55 and 56 TF32 1-2% faster: "Session 22"). One group (a box would cross into the next
  // group's channels), whole boxes of the tile's channels, no split reduction. NOTE: CONVJIT_WGMMA_Y_MAP=f32 lifts the
  // f32 stage limit, and CONVJIT_WGMMA_Y_PASSES=n tries n passes alone (n dividing the tile's boxes; 1 keeps f32 tiles
  // that would need passes on register stores), for timing runs (both change the source, so the cache key).
  constexpr int kYMapF32MaxStages = 16;
  // Passes staged in two buffers that alternate (a pass written while TMA still reads the one
  // before) for the row halo's f32 tiles: four passes in the bytes two passes of one buffer take
  // measured 2.0-2.5% faster on KernelBench 55 TF32 (docs/perf.md, "Session 23"); 16-bit tiles
  // measured no change and stay on one. NOTE: CONVJIT_WGMMA_Y_BUFFERS=1|2 forces one or two
  // buffers for timing runs (changes the source, so the cache key).
  int y_buffers = t.row_halo && !sixteen_bit(d) ? 2 : 1;
  const char* buffers_env = std::getenv("CONVJIT_WGMMA_Y_BUFFERS");
  const bool buffers_forced = buffers_env != nullptr && *buffers_env != '\0';
  if (buffers_forced) {
    if (std::string_view(buffers_env) != "1" && std::string_view(buffers_env) != "2") {
      fail(ErrorCode::kInvalidArgument, "CONVJIT_WGMMA_Y_BUFFERS: expected 1 or 2, got '{}'", buffers_env);
    }
    y_buffers = *buffers_env - '0';
  }
  const char* y_env = std::getenv("CONVJIT_WGMMA_Y_MAP");
  const bool y_f32_any = y_env != nullptr && std::string_view(y_env) == "f32";
  const int boxes = t.bn / y_box_channels(d);
  if (y_map_ok && t.slices == 1 && t.stream_workers == 0 && d.groups == 1 && t.bn % y_box_channels(d) == 0 &&
      (sixteen_bit(d) || stages_per_patch <= kYMapF32MaxStages || t.row_halo || y_f32_any)) {
    int forced = 0;
    if (const char* env = std::getenv("CONVJIT_WGMMA_Y_PASSES"); env != nullptr && *env != '\0') {
      if (std::sscanf(env, "%d", &forced) != 1 || forced < 1 || boxes % forced != 0) {
        fail(ErrorCode::kInvalidArgument, "CONVJIT_WGMMA_Y_PASSES: expected a divisor of the tile's {} boxes, got '{}'",
             boxes, env);
      }
    }
    // By bytes, the whole boxes first, then a half, a quarter...; at each size the two buffers'
    // twice as many passes where the boxes divide into them, else one buffer's passes.
    for (int share = 1; share <= boxes; share *= 2) {
      int passes = forced != 0 ? forced : share;
      if (boxes % passes != 0) break;
      int buffers = 1;
      if (forced != 0) {
        buffers = passes > 1 && buffers_forced ? y_buffers : 1;
      } else if (share > 1 && y_buffers == 2 && boxes % (2 * share) == 0) {
        passes = 2 * share;
        buffers = 2;
      }
      const int y_bytes = buffers * (t.bp * t.bq * t.bn * element / passes);
      const int fit_y = (kSharedLimit - barriers - slack - ring - y_bytes) / per_stage;
      // The row halo's stages are a tap's weights, a few of which the boxes may take.
      if (t.row_halo ? fit_y >= min_stages : sixteen_bit(d) ? fit_y >= 3 : fit_y >= t.stages) {
        t.y_map = true;
        t.y_passes = passes;
        t.y_buffers = buffers;
        t.stages = std::min(t.stages, fit_y);
        t.shared_bytes = static_cast<unsigned>(barriers + slack + ring + t.stages * per_stage + y_bytes);
        break;
      }
      // 16-bit tiles stage their boxes whole (one pass) or not at all; a fixed count is tried alone.
      if (sixteen_bit(d) || forced != 0) break;
    }
  }
  return t;
}

// NHWC: the widest cp.async piece (16, 8 or 4 bytes; the template's kXVecBytes) that a
// group's channel run and x's alignment allow, so that no piece straddles the run's end or
// reads an unaligned address; 0 when not even 4 bytes do (16-bit data, odd channel runs).
int x_copy_bytes(const Conv2dDesc& d, unsigned align_x) {
  const std::int64_t run_bytes = std::int64_t{d.c / d.groups} * static_cast<std::int64_t>(size_of(d.dtype));
  for (const int bytes : {16, 8, 4}) {
    if (align_x >= static_cast<unsigned>(bytes) && run_bytes % bytes == 0) return bytes;
  }
  return 0;
}

// NHWC: a thread's two adjacent output channels in one store, where the group's channel
// count is even (every pair starts on an even channel) and y's alignment holds a pair.
bool pair_stores(const Conv2dDesc& d, unsigned align_y) {
  return nhwc(d) && (d.k / d.groups) % 2 == 0 && align_y >= 2 * size_of(d.dtype);
}

// 16-bit NHWC: two lanes' pairs joined into one 8-byte store of four channels (the
// template's kQuadStores), so that a warp's store writes whole sectors: 1.1-1.7x on 16-bit
// NHWC tiles whose stores are a large share (docs/perf.md); needs whole runs of four
// channels a group and y 8-byte aligned. NOTE: CONVJIT_WGMMA_QUAD_STORES=0 keeps the pair
// stores, for timing runs of both (changes the source, so the cache key).
bool quad_stores(const Conv2dDesc& d, unsigned align_y) {
  return env_switch_on("CONVJIT_WGMMA_QUAD_STORES") && pair_stores(d, align_y) && sixteen_bit(d) &&
         (d.k / d.groups) % 4 == 0 && align_y >= 8;
}

// x through the map: C, W, H, N innermost first; the box's corners put the traversal on
// the lattice of tap-(0, 0) input positions, -pad + q x stride for q = 0 .. Q - 1 (the last
// one is W - 1 + upper, since Q - 1 = (W + 2 pad - dil (S - 1) - 1) / stride rounds down),
// so that kBM consecutive traversal steps are kBM consecutive output pixels of y.
// 3-D: rank 5, C, W, H, D, N, the depth's corners and stride as the other dimensions'.
// `halo_rows` > 0 (the row halo): the traversal walks input columns, padding included
// (upper corner +pad), and a copy is a filter row's halo_rows pixels from the tile's first.
Im2colTensorMap im2col_map(const Conv2dDesc& d, int bm, int halo_rows = 0) {
  const auto e = static_cast<std::uint64_t>(size_of(d.dtype));
  const bool depth = has_depth(d);
  Im2colTensorMap m;
  m.dtype = d.dtype;
  m.rank = depth ? 5 : 4;
  std::uint64_t dims[] = {static_cast<std::uint64_t>(d.c), static_cast<std::uint64_t>(d.w),
                          static_cast<std::uint64_t>(d.h), static_cast<std::uint64_t>(d.d),
                          static_cast<std::uint64_t>(d.n)};
  if (!depth) dims[3] = dims[4];  // C, W, H, N
  for (int i = 0; i < m.rank; ++i) m.dims[i] = dims[i];
  m.strides[0] = m.dims[0] * e;
  for (int i = 1; i + 1 < m.rank; ++i) m.strides[i] = m.strides[i - 1] * m.dims[i];
  m.lower[0] = -d.pad_w;
  m.lower[1] = -d.pad_h;
  m.upper[0] = d.pad_w - d.dilation_w * (d.s - 1);
  m.upper[1] = d.pad_h - d.dilation_h * (d.r - 1);
  m.element_strides[0] = 1;
  m.element_strides[1] = static_cast<unsigned>(d.stride_w);
  m.element_strides[2] = static_cast<unsigned>(d.stride_h);
  m.element_strides[3] = 1;
  if (depth) {
    m.lower[2] = -d.pad_d;
    m.upper[2] = d.pad_d - d.dilation_d * (d.t - 1);
    m.element_strides[3] = static_cast<unsigned>(d.stride_d);
    m.element_strides[4] = 1;
  }
  m.channels_per_pixel = static_cast<unsigned>(stage_channels(d));
  m.swizzle_bytes = static_cast<unsigned>(a_row_bytes(d));
  m.pixels_per_column = static_cast<unsigned>(bm);
  if (halo_rows > 0) {
    m.upper[0] = d.pad_w;
    m.pixels_per_column = static_cast<unsigned>(halo_rows);
  }
  return m;
}

// Split-K's fp32 partial sums: [slice][pixel][k]; none for one slice. Slices are the
// descriptor's n images apart for every run (a dynamic-batch run fills a prefix of each).
std::uint64_t partial_bytes(const Conv2dDesc& d, int slices) {
  if (slices <= 1) return 0;
  return static_cast<std::uint64_t>(slices) * static_cast<std::uint64_t>(out_pixels(d)) * d.k * sizeof(float);
}
}  // namespace

std::optional<std::string> wgmma_unsupported_reason(const Conv2dDesc& d, const std::string& arch,
                                                    const AlignmentNeeds& align) {
  if (arch != "sm_90" && arch != "sm_90a") return fmt::format("wgmma needs sm_90 (Hopper), the target is {}", arch);
  if (d.transposed) {
    // Its forward twin, the weights packed flipped.
    auto f = forward_twin(d);
    if (!f.twin) return std::move(f.why_not);
    // Its outputs s apart: only the route's kernel stores them (nchw_via_nhwc_unsupported_reason).
    if (f.phased()) return "a strided transposed convolution's phase runs through the route only";
    return wgmma_unsupported_reason(*f.twin, arch, align);
  }
  if (has_depth(d)) {
    // 3-D through the TMA kernel's rank-5 map only; NCDHW problems take it through the
    // route (nchw_via_nhwc_unsupported_reason), with their NDHWC twin.
    if (!nhwc(d)) return "a 3-D convolution runs on the NHWC TMA kernel (NCDHW through the route) only";
    if (!wgmma_tma_enabled()) return "a 3-D convolution needs the TMA kernel, which CONVJIT_WGMMA_TMA=0 turns off";
    if (auto why = wgmma_tma_unsupported_reason(d, align))
      return fmt::format("a 3-D convolution needs the map: {}", *why);
  }
  if (nhwc(d)) {
    // Channel runs are copied in 4- to 16-byte pieces.
    if (x_copy_bytes(d, align.x) == 0) {
      return fmt::format("NHWC x in 4-byte pieces needs C/groups x {} bytes a multiple of 4 and x 4-byte aligned",
                         size_of(d.dtype));
    }
  } else {
    // 16-bit rows are copied as 4-byte pixel pairs, which needs even rows and an x at a
    // 4-byte boundary.
    if (sixteen_bit(d) && d.w % 2 != 0) return "16-bit data with an odd width W cannot be copied in pixel pairs";
    if (align.x < 4) return "16-bit x not 4-byte aligned cannot be copied in pixel pairs";
  }
  // Through the TMA map, an NHWC problem with a few output channels (a U-Net's 4-channel
  // output layer) is bound by reading x once, which the map does at bandwidth, with
  // split-K filling the machine; elsewhere its copies or the tile's idle columns lose.
  const bool thin_on_tma = nhwc(d) && d.groups == 1 && wgmma_tma_enabled() && !wgmma_tma_unsupported_reason(d, align);
  if (d.k / d.groups < 32 && !thin_on_tma) {
    return "fewer than 32 output channels per group leave most of a wgmma tile empty";
  }
  const auto tile = choose_tile(d);
  if (!tile) return "not even two pipeline stages fit in shared memory";
  if (tile->patches > INT_MAX) return "more pixel tiles than a grid holds";
  // NHWC pixel indices (tile x kBM + row) are 32-bit in the kernel.
  if (nhwc(d) && out_pixels(d) + std::int64_t{tile->bp} * tile->bq > INT_MAX) {
    return "more output pixels than 32-bit pixel indices hold";
  }
  return std::nullopt;
}

// NHWC wgmma kernels read x through a TMA im2col map wherever
// wgmma_tma_unsupported_reason allows it (measured faster than the cp.async copies on every
// networks and KernelBench NHWC problem, docs/perf.md); CONVJIT_WGMMA_TMA=0 keeps the
// cp.async copies, for comparison and as a way out (changes the source, so the cache key).
bool wgmma_tma_enabled() { return env_switch_on("CONVJIT_WGMMA_TMA"); }

// NOTE: CONVJIT_WGMMA_B_MAP=0 keeps the weight pack where the kernel would read w through
// its tiled map (kBMap), for timing runs of both (changes the source, so the cache key).
bool wgmma_b_map_enabled() { return env_switch_on("CONVJIT_WGMMA_B_MAP"); }

namespace {
// The NHWC TMA kernel's wgmmas read A through shared-memory descriptors (kASmem) in 16-bit,
// where the consumers loaded every fragment into registers first, and in TF32 on tiles of
// 128 filters or more over 128-byte pixel rows: there the register path's loads and
// roundings, not the tensor cores, bound a stage (KernelBench 55 / 56 2.09 / 1.68 -> 1.89 /
// 1.48 ms), while on narrower tiles a stage's A serves half as many products and on
// 64-byte rows the descriptor path measured slower (KernelBench 62 and 80; 63, 4.03 ->
// 4.19 ms: docs/perf.md, "Session 19"). The tensor cores truncate the A they
// read from shared memory to TF32 where the register path rounds it to nearest: the
// relative error about doubles and stays far under TF32's 1e-3 (KernelBench 56: 2.6e-4 ->
// 4.1e-4). NOTE: CONVJIT_WGMMA_A_SMEM=0 keeps every tile on the register path, =16 keeps
// TF32 there (16-bit alone on descriptors), =tf32 puts every TF32 tile on descriptors, for
// timing runs (changes the source, so the cache key).
// The NHWC TMA kernel's outputs through a tiled map of y (kYMap) where the tile leaves room
// (choose_tile): the caller's own NHWC y (not the route's, whose kernel stores NCHW), 16
// bytes aligned with a pixel's channels a whole number of 16 bytes, as TMA wants.
// NOTE: CONVJIT_WGMMA_Y_MAP=0 keeps the stores from registers, for timing runs (changes
// the source, so the cache key).
bool y_map_possible(const Conv2dDesc& d, bool nhwc_map, unsigned align_y) {
  return nhwc_map && env_switch_on("CONVJIT_WGMMA_Y_MAP") && align_y >= 16 && d.k * size_of(d.dtype) % 16 == 0;
}

bool wgmma_a_smem(const Conv2dDesc& d, bool tma, const WgmmaTile& t) {
  const char* env = std::getenv("CONVJIT_WGMMA_A_SMEM");
  const std::string_view mode = env != nullptr ? env : "";
  if (!tma || t.split != 1 || mode == "0") return false;
  if (sixteen_bit(d)) return true;
  // Never TF32 over 32-byte rows: such a run did not finish in 100 s on the H200 (session 19,
  // not investigated).
  if (a_row_bytes(d) == 32) return false;
  return mode == "tf32" || (mode != "16" && t.bn >= 128 && a_row_bytes(d) == 128);
}

// The NHWC TMA kernel reads w through a tiled map (kBMap) instead of a packed copy made by
// <name>_pack on every call, where w's K,R,S,C/groups order already holds a stage's
// weights as kBN rows of one tap's channel run, which the map's swizzle lays out as
// wgmma's K-major B: 16-bit data as it is (the pack only moved it), TF32 rounded in shared
// memory by the producer's idle warps. That rounding is paid by every pixel tile that
// reads a stage, and the shared-memory traffic it adds slows a tile's stages by up to half
// (KernelBench 56: 1.64 -> 2.44 ms), while the pack rounds each weight once: TF32 takes
// the map only on grids of a few pixel tiles, where the pack is most of the weight traffic
// (measured faster at 2 tiles, slower from 7: docs/perf.md). Only 128-byte stage rows: a
// box of 64-byte rows is kBN reads of 64 bytes, filters apart, and measured 7% slower
// than the packed stage's one contiguous bulk copy (KernelBench 62 and 80 in 16-bit).
// Not for 3xTF32 (its big/small planes are the pack's work), nor the route (NCHW
// weights), nor a w the map cannot address.
constexpr std::int64_t kTf32MapMaxTiles = 4;
bool reads_w_through_map(const Conv2dDesc& d, const AlignmentNeeds& align, bool tma, bool via, int split,
                         std::int64_t pixel_tiles) {
  const auto e = static_cast<std::int64_t>(size_of(d.dtype));
  const bool rounds_few = d.dtype != DType::kFloat32 || pixel_tiles <= kTf32MapMaxTiles;
  return tma && !via && split == 1 && rounds_few && a_row_bytes(d) == 128 && wgmma_b_map_enabled() && align.w >= 16 &&
         d.c / d.groups * e % 16 == 0 && std::int64_t{d.k} * taps(d) * (d.c / d.groups) * e < (std::int64_t{1} << 40);
}
}  // namespace

std::optional<std::string> wgmma_tma_unsupported_reason(const Conv2dDesc& d, const AlignmentNeeds& align) {
  if (!nhwc(d)) return "TMA im2col reads NHWC channel runs; NCHW keeps its row copies";
  if (d.transposed) {
    return fmt::format("the map reads a forward problem; a transposed one runs as its forward twin ({})",
                       d.to_string());
  }
  const bool depth = has_depth(d);
  const std::int64_t e = static_cast<std::int64_t>(size_of(d.dtype));
  if (align.x < 16) return fmt::format("a tensor map needs x 16-byte aligned, this x is {}-byte aligned", align.x);
  if (d.c * e % 16 != 0) {
    return fmt::format("a tensor map's pixel stride (C x {} = {} bytes) must be a multiple of 16", e, d.c * e);
  }
  // The map zero-fills past C only: a group whose last chunk runs past its channels would
  // read the next group's instead of zeros (times zero weights, but Inf x 0 is NaN).
  if (const int per_group = d.c / d.groups; d.groups > 1 && per_group % stage_channels(d) != 0) {
    return fmt::format(
        "{} groups of {} channels: a group's run is not whole 128-byte chunks, and the map zero-fills "
        "only past C",
        d.groups, per_group);
  }
  if (d.stride_h > kTraversalStrideMax || d.stride_w > kTraversalStrideMax || d.stride_d > kTraversalStrideMax) {
    return fmt::format("stride {}x{}x{}: im2col traversal strides go up to {}", d.stride_d, d.stride_h, d.stride_w,
                       kTraversalStrideMax);
  }
  const int rank = depth ? 5 : 4;
  const int offset_max = depth ? kOffsetMax3d : kOffsetMax;
  const int corner_min = depth ? kCornerMin3d : kCornerMin, corner_max = depth ? kCornerMax3d : kCornerMax;
  const int reach_d = d.dilation_d * (d.t - 1);
  const int reach_h = d.dilation_h * (d.r - 1);
  const int reach_w = d.dilation_w * (d.s - 1);
  if (reach_h > offset_max || reach_w > offset_max || reach_d > offset_max) {
    return fmt::format("dilated filter reach {}x{}x{}: rank-{} im2col offsets go up to {}", reach_d, reach_h, reach_w,
                       rank, offset_max);
  }
  for (const int corner : {-d.pad_h, -d.pad_w, d.pad_h - reach_h, d.pad_w - reach_w, -d.pad_d, d.pad_d - reach_d}) {
    if (corner < corner_min || corner > corner_max) {
      return fmt::format(
          "padding {}x{}x{} with filter reach {}x{}x{}: a rank-{} im2col bounding box corner ({}) must lie in "
          "[{}, {}]",
          d.pad_d, d.pad_h, d.pad_w, reach_d, reach_h, reach_w, rank, corner, corner_min, corner_max);
    }
  }
  // Global strides below 2^40 bytes (one image of x); dimensions fit in 32 bits as ints.
  if (static_cast<std::int64_t>(d.d) * d.h * d.w * d.c * e >= (std::int64_t{1} << 40)) {
    return "one image of x spans 2^40 bytes or more, past a tensor map's strides";
  }
  return std::nullopt;
}

int wgmma_stage_channels(const Conv2dDesc& d) { return stage_channels(d); }

std::optional<WgmmaWork> wgmma_work(const Conv2dDesc& d) {
  if (d.transposed) {
    const auto f = forward_twin(d);
    return f.twin ? wgmma_work(*f.twin) : std::nullopt;
  }
  // 3-D: the NHWC TMA kernel only.
  if (has_depth(d) && (!nhwc(d) || !wgmma_tma_enabled() || wgmma_tma_unsupported_reason(d))) return std::nullopt;
  auto tile = choose_tile(d);
  if (!tile) return std::nullopt;
  // Where stream-K takes the grid, the tile as the kernel runs it (stream-K needs the TMA map).
  if (stream_k_mode(d) != StreamK::kOff && nhwc(d) && wgmma_tma_enabled() && !wgmma_tma_unsupported_reason(d)) {
    if (auto streamed = choose_tile(d, true); streamed && streamed->stream_workers > 0) tile = streamed;
  }
  const std::int64_t k_blocks = (d.k / d.groups + tile->bn - 1) / tile->bn;
  // The model prices a block by its products. A tile narrower than n64 drops only zero
  // products: its stages copy the same A, which bounds them, so it is priced as n64
  // (priced by its products, it sent layers the NCHW kernel runs faster to the route;
  // docs/perf.md, "n16 and n32 tiles").
  const int priced_channels = std::max(tile->bn, 64);
  // A slice's stages are (tap group, chunk) pairs in NHWC; NCHW has one slice of every stage.
  const std::int64_t per_stage = std::int64_t{stage_channels(d)} * (nhwc(d) ? tile->taps_per_stage : d.s);
  // Rows and columns past the image are zero-filled, not copied: a patch taller than the
  // output (7x7 layers, 8-row patches) copies the output's rows only.
  const std::int64_t rows = std::min<std::int64_t>(tile->bp, d.output_shape().p);
  if (tile->stream_workers > 0) {
    // Stream-K: one wave of workers, each the same share of every item's stages. The
    // fix-up is left out: with it, kAuto sent ResNet's 3x3 and 1x1 layers in NCHW 3xTF32
    // from the route's stream-K grids, measured faster, to the NCHW kernel and im2col.
    const std::int64_t stages = (tile->items * tile->slice_stages + tile->stream_workers - 1) / tile->stream_workers;
    return WgmmaWork{.blocks = tile->stream_workers,
                     .block_pixels = std::int64_t{tile->bp} * tile->bq,
                     .block_channels = priced_channels,
                     .block_reduction = stages * per_stage,
                     .slices = 1,
                     .partial_bytes = 0,
                     .stages = stages,
                     .stage_rows = 0,
                     .stage_copy_bytes = 0};
  }
  return WgmmaWork{.blocks = tile->patches * k_blocks * d.groups * tile->slices,
                   .block_pixels = std::int64_t{tile->bp} * tile->bq,
                   .block_channels = priced_channels,
                   .block_reduction = std::int64_t{tile->slice_stages} * per_stage,
                   .slices = tile->slices,
                   .partial_bytes = partial_bytes(d, tile->slices),
                   .stages = tile->slice_stages,
                   .stage_rows = nhwc(d) ? 0 : rows * chunk_channels(d),
                   .stage_copy_bytes = nhwc(d) ? 0
                                               : rows * std::min(halo_width(d, tile->bq), d.w) * chunk_channels(d) *
                                                     static_cast<std::int64_t>(size_of(d.dtype))};
}

// CONVJIT_NCHW_VIA_NHWC=0|1 turns the route off or forces it where it applies (for tests
// and timing runs of either path); unset, the cost model decides per problem. It changes
// the source, so the cache key.
NchwRoute nchw_via_nhwc_switch() { return nchw_route_switch("CONVJIT_NCHW_VIA_NHWC"); }

NchwRoute nchw_route_switch(const char* variable) {
  const char* env = std::getenv(variable);
  if (env == nullptr || *env == '\0') return NchwRoute::kByModel;
  if (std::string_view(env) == "0") return NchwRoute::kOff;
  if (std::string_view(env) == "1") return NchwRoute::kForced;
  fail(ErrorCode::kInvalidArgument, "{}: expected 0 (off) or 1 (wherever it applies), got '{}'", variable, env);
}

namespace {
std::uint64_t round_up(std::uint64_t bytes, std::uint64_t to) { return (bytes + to - 1) / to * to; }
}  // namespace

// 256 threads a block (device::kTransposeThreads), a block for each 32 x 32 tile
// (kTransposeTile) up to what a few waves hold; the kernel walks the rest, tile by tile, or
// (matrices of at most 8 rows or columns) a column or row a thread.
LayoutTranspose layout_transpose(std::string name, std::int64_t images, std::int64_t rows, std::int64_t cols,
                                 std::uint64_t element) {
  constexpr std::int64_t kTile = 32;
  const std::int64_t tiles = images * ((rows + kTile - 1) / kTile) * ((cols + kTile - 1) / kTile);
  return LayoutTranspose{
      .kernel_name = std::move(name),
      .region_bytes = round_up(static_cast<std::uint64_t>(images * rows * cols) * element, kRegionAlign),
      .block_x = 256,
      .grid_x = static_cast<unsigned>(std::clamp<std::int64_t>(tiles, 1, 132 * 16))};
}

namespace {

// `d` is the problem as the kernel computes it (for the route, NCHW's NHWC twin; for a
// transposed problem, its forward twin); `via` names the route: its own kernel name,
// weights read in K,C/g,R,S order, the transposes. `transposed` is the caller's transposed
// problem whose forward twin `d` is (nullptr: none): the kernel's name says it, and the
// pack reads w flipped, in C, K/g, R, S order.
Specialization specialize_wgmma_for(const Conv2dDesc& d, const AlignmentNeeds& align, bool via,
                                    const Conv2dDesc* transposed) {
  std::optional<std::string> tma_refused;
  if (wgmma_tma_enabled() && nhwc(d)) tma_refused = wgmma_tma_unsupported_reason(d, align);
  const bool tma = wgmma_tma_enabled() && nhwc(d) && !tma_refused;
  if (tma_refused) log::debug("wgmma: {} keeps cp.async copies of x: {}", d.to_string(), *tma_refused);
  if (via && !tma) {
    fail(ErrorCode::kInternal, "specialize_wgmma_via_nhwc: the NHWC kernel cannot read {} through its map ({})",
         d.to_string(), tma_refused.value_or("CONVJIT_WGMMA_TMA=0"));
  }
  const bool nhwc_map = tma && !via && !transposed;
  const auto tile = choose_tile(d, tma, nhwc_map, y_map_possible(d, nhwc_map, align.y));
  if (!tile) fail(ErrorCode::kInternal, "specialize_wgmma: {} has no wgmma tile", d.to_string());
  const int k_per_group = d.k / d.groups;
  // "f16", "bf16", "3xtf32" or "tf32": the kernel name's part; upper-cased TF32 in the tile text.
  const std::string_view math = sixteen_bit(d) ? to_string(d.dtype) : tile->split == 3 ? "3xtf32" : "tf32";

  const bool b_map = !transposed && reads_w_through_map(d, align, tma, via, tile->split, tile->patches);
  const bool a_smem = wgmma_a_smem(d, tma, *tile);
  // The route's kernel stores straight into the caller's NCHW y, one channel a store,
  // unless split-K's reduce pass writes y (then the reduce pass stores it NCHW).
  const bool y_nchw = via && tile->slices == 1;
  // A strided transposed problem's phase: its outputs stored s apart, by the kernel or
  // (split-K) its reduce pass, straight into the caller's y, the rest filled with the bias
  // first. No y transpose either way.
  const ForwardTwin phase = transposed ? forward_twin(*transposed) : ForwardTwin{};
  if (phase.phased() && !via) {
    fail(ErrorCode::kInternal, "specialize_wgmma: {}'s phase runs through the route only", transposed->to_string());
  }
  // NHWC channel pairs in one store where y's alignment allows; never into NCHW y.
  const bool y_map = tile->y_map;
  const bool pairs = !y_nchw && !y_map && pair_stores(d, align.y);
  const bool quads = pairs && quad_stores(d, align.y);
  const std::string passes = tile->y_passes == 1 ? ""
                             : tile->y_buffers > 1
                                 ? fmt::format(" ({} passes in {} buffers)", tile->y_passes, tile->y_buffers)
                                 : fmt::format(" ({} passes)", tile->y_passes);
  const std::string stores = y_map   ? fmt::format(", y by TMA from staged boxes{}", passes)
                             : quads ? ", four-channel stores"
                             : pairs ? ", channel-pair stores"
                                     : "";
  // The name's problem is the caller's: a transposed problem's kernel is never named as its twin's.
  const Conv2dDesc& named = transposed ? *transposed : d;

  Specialization src;
  src.launch.algorithm = "implicit_gemm";
  src.launch.tile = fmt::format(
      "wgmma: {}x{} pixels x {} channels (kBP x kBQ x kBN), {} m64 blocks a warpgroup, {} stages{}{}, {}{}{}{}{}{}",
      tile->bp, tile->bq, tile->bn, tile->mb, tile->stages,
      tile->row_halo             ? fmt::format(" (row tiles: one A copy of {} pixels a filter row, {} in a ring)",
                                               halo_rows(d, tile->bp * tile->bq), tile->halo_ring)
      : tile->taps_per_stage > 1 ? fmt::format(" of {} taps", tile->taps_per_stage)
                                 : std::string(),
      tile->store_warps  ? ", outputs staged for the store warps"
      : tile->persistent ? ", persistent blocks"
                         : "",
      sixteen_bit(d)     ? math
      : tile->split == 3 ? "3xTF32"
                         : "TF32",
      !nhwc(d) ? std::string()
      : tma    ? fmt::format(", NHWC: x by TMA im2col{}{}{}", a_smem ? " (wgmma reads it from shared memory)" : "",
                          b_map ? ", w by TMA (no pack)" : "", stores)
               : fmt::format(", NHWC: x in {}-byte pieces{}", x_copy_bytes(d, align.x), stores),
      tile->slices > 1 ? fmt::format(", split-K: {} slices of {} stages", tile->slices, tile->slice_stages)
      : tile->stream_workers > 0
          ? fmt::format(", stream-K: {} blocks, {} whole items, then {} items' stages shared", tile->stream_workers,
                        stream_k_whole_items(tile->items, tile->slice_stages, tile->stream_workers),
                        tile->items - stream_k_whole_items(tile->items, tile->slice_stages, tile->stream_workers))
          : std::string(),
      tma_refused ? fmt::format(" (TMA im2col refused: {})", *tma_refused) : std::string(),
      !via     ? std::string()
      : y_nchw ? std::string(", NCHW through NHWC: x transposed in the workspace, y stored NCHW by the kernel")
               : std::string(", NCHW through NHWC: x transposed in the workspace, y stored NCHW by the reduce pass"),
      transposed ? fmt::format(", transposed: the forward convolution of the flipped filter, padding {}{}x{}",
                               has_depth(d) ? fmt::format("{}x", d.pad_d) : std::string(), d.pad_h, d.pad_w)
                 : std::string());
  src.source.template_name = kTemplate;
  // NCHW kernels read the same pointers whatever their alignment: no alignment tag.
  // The route's name says the caller's layout and the route: its cache key and inspect
  // output are never the plain NHWC kernel's (whose source differs in kWeightsKcrs too).
  src.source.kernel_name =
      via ? fmt::format("conv2d_wgmma_{}_nchw_{}_via_nhwc", math, problem_tag(named))
          : fmt::format("conv2d_wgmma_{}_{}_{}{}{}", math, to_string(d.layout), problem_tag(named),
                        nhwc(d) ? alignment_tag(align, kFullAlignment) : std::string(), tma ? "_tma" : "");
  src.source.compile_arch = "sm_90a";
  // x in 4-byte copies (NCHW: pixel pairs for 16-bit data; NHWC: pieces of kXVecBytes);
  // the weights are read by the pack kernel, one element at a time, or (kBMap) by the
  // main kernel's tiled map, which needs w 16-byte aligned; bias one element at a time,
  // outputs too or (NHWC) in channel pairs, or (16-bit) runs of four.
  const auto e = static_cast<unsigned>(size_of(d.dtype));
  const int x_vec = nhwc(d) ? x_copy_bytes(d, align.x) : 4;
  src.launch.needs = {static_cast<unsigned>(x_vec), b_map ? 16u : e, e, y_map ? 16u : quads ? 8u : pairs ? 2 * e : e};
  // The route's main kernel reads x's workspace region only; the caller's x sees the
  // transpose's element copies, y the NCHW stores' (the kernel's or the reduce pass's),
  // one element each.
  if (via) src.launch.needs = {e, e, e, e};
  Prologue prologue(src.source.kernel_name);
  if (tile->slices > 1) prologue.define("CONVJIT_WGMMA_SPLIT_K");
  if (tile->stream_workers > 0) prologue.define("CONVJIT_WGMMA_STREAM_K");
  if (tma) prologue.define("CONVJIT_WGMMA_TMA");
  if (b_map) prologue.define("CONVJIT_WGMMA_B_MAP");
  if (y_map) prologue.define("CONVJIT_WGMMA_Y_MAP");
  if (via) prologue.define("CONVJIT_WGMMA_VIA_NHWC");
  if (transposed) prologue.define("CONVJIT_WGMMA_W_TRANSPOSED");
  if (y_nchw) prologue.define("CONVJIT_WGMMA_Y_NCHW");
  if (phase.phased()) {
    const auto full = transposed->output_shape();
    prologue.define("CONVJIT_WGMMA_Y_PHASE")
        .constant("kYPhaseH", phase.phase_h)
        .constant("kYPhaseW", phase.phase_w)
        .constant("kYStrideH", phase.out_stride_h)
        .constant("kYStrideW", phase.out_stride_w)
        .constant("kYFullP", static_cast<int>(full.p))
        .constant("kYFullQ", static_cast<int>(full.q))
        .constant("kYPhaseD", phase.phase_d)
        .constant("kYStrideD", phase.out_stride_d)
        .constant("kYFullZ", static_cast<int>(full.z));
  }
  src.source.text = prologue.problem(d)
                        .constant("kBN", tile->bn)
                        .constant("kMB", tile->mb)
                        .constant("kBP", tile->bp)
                        .constant("kBQ", tile->bq)
                        .constant("kStages", tile->stages)
                        .constant("kSplit", tile->split)
                        .constant("kStoreWarps", tile->store_warps)
                        .constant("kXVecBytes", x_vec)
                        .constant("kPairStores", pairs)
                        .constant("kQuadStores", quads)
                        .constant("kSplitK", tile->slices)
                        .constant("kStreamK", tile->stream_workers > 0)
                        .constant("kStreamWorkers", tile->stream_workers)
                        .constant("kATma", tma)
                        .constant("kBMap", b_map)
                        .constant("kARowBytes", a_row_bytes(d))
                        .constant("kStageBytes", tile->stage_bytes)
                        .constant("kSharedBytes", static_cast<int>(tile->shared_bytes))
                        .constant("kPackedBytes", static_cast<long long>(tile->packed_bytes))
                        // The weights' order apart from the stage layout: each layout's own,
                        // except the route's, whose NHWC stages read NCHW's weights.
                        .constant("kWeightsKcrs", via || !nhwc(d))
                        .constant("kPairedPartials", tile->split == 3 && paired_partials())
                        .constant("kTapsPerStage", tile->taps_per_stage)
                        .constant("kASmem", a_smem)
                        .constant("kYMap", y_map)
                        .constant("kYPasses", tile->y_passes)
                        .constant("kYBuffers", tile->y_buffers)
                        .constant("kRowHalo", tile->row_halo)
                        .constant("kHaloRing", tile->halo_ring)
                        .finish(template_text(kTemplate));
  const auto out = d.output_shape();
  src.launch.geometry = {
      .grid_x = static_cast<std::uint64_t>(tile->patches),
      .grid_y = static_cast<unsigned>((k_per_group + tile->bn - 1) / tile->bn),
      .grid_z = static_cast<unsigned>(d.groups * tile->slices),
      .block_x = kThreads,
      .shared_bytes = tile->shared_bytes,
      .persistent = tile->persistent,
      // A run's NCHW patches are whole images'; NHWC tiles run on
      // across images, kBM pixels each.
      .grid_x_per_image = nhwc(d) && !tile->row_halo ? static_cast<std::uint64_t>(out.z) * out.p * out.q
                                                     : static_cast<std::uint64_t>(tile->patches / d.n),
      .grid_x_divisor = nhwc(d) && !tile->row_halo ? static_cast<std::uint64_t>(tile->bp) * tile->bq : 1};
  if (tile->stream_workers > 0) {
    // One block a worker, each walking its run of every item's stages.
    src.launch.geometry.grid_x = static_cast<std::uint64_t>(tile->stream_workers);
    src.launch.geometry.grid_y = 1;
    src.launch.geometry.grid_z = 1;
    const auto accumulators = static_cast<std::uint64_t>(kConsumers) * 128 * tile->mb * (tile->bn / 2);
    src.launch.stream_k = StreamKWorkspace{
        .slot_bytes = static_cast<std::uint64_t>(tile->stream_workers) * 2 * accumulators * sizeof(float),
        .counters = static_cast<std::uint64_t>(tile->items)};
  }
  // x through the map: the driver wants its address 16-byte aligned, as x_copy_bytes' 16
  // already needs (the refusal checked align.x).
  if (tma) {
    src.launch.a_map = im2col_map(d, tile->bp * tile->bq, tile->row_halo ? halo_rows(d, tile->bp * tile->bq) : 0);
  }
  if (b_map) {
    const auto cg = static_cast<std::uint64_t>(d.c / d.groups);
    const auto taps = static_cast<std::uint64_t>(convjit::taps(d));
    TiledTensorMap m;
    m.dtype = d.dtype;
    m.dims[0] = cg;
    m.dims[1] = taps;
    m.dims[2] = static_cast<std::uint64_t>(d.k);
    m.strides[0] = cg * e;
    m.strides[1] = cg * taps * e;
    m.box[0] = static_cast<unsigned>(stage_channels(d));
    m.box[1] = 1;
    m.box[2] = static_cast<unsigned>(tile->bn);
    m.swizzle_bytes = static_cast<unsigned>(a_row_bytes(d));
    src.launch.b_map = m;
  }
  if (y_map) {
    // y as K, pixels (innermost first); a box is 128 bytes of channels of a tile's pixels.
    const auto pixels_per_image = static_cast<std::uint64_t>(out_pixels(d) / d.n);
    TiledTensorMap m;
    m.dtype = d.dtype;
    m.dims[0] = static_cast<std::uint64_t>(d.k);
    m.dims[1] = pixels_per_image;
    m.dims[2] = 1;
    m.strides[0] = static_cast<std::uint64_t>(d.k) * e;
    m.strides[1] = static_cast<std::uint64_t>(d.k) * e * pixels_per_image * static_cast<std::uint64_t>(d.n);
    m.box[0] = static_cast<unsigned>(y_box_channels(d));
    m.box[1] = static_cast<unsigned>(tile->bp * tile->bq);
    m.box[2] = 1;
    m.swizzle_bytes = 128;
    m.dim1_per_image = true;
    if (tile->row_halo) {
      // y as K, Q, N x P: a tile's box starts at its first column of one output row, and TMA
      // drops the pixels past the row's end (the next row's, in y).
      m.dims[1] = static_cast<std::uint64_t>(out.q);
      m.dims[2] = static_cast<std::uint64_t>(d.n) * out.p;
      m.strides[1] = static_cast<std::uint64_t>(d.k) * e * out.q;
      m.dim1_per_image = false;  // a static batch's
    }
    src.launch.y_map = m;
  }
  if (!b_map) {
    src.launch.weight_pack = WeightPack{
        .kernel_name = src.source.kernel_name + "_pack",
        .packed_bytes = tile->packed_bytes,
        .block_x = 256,
        // One 16-byte row of the packing a thread.
        .grid_x = static_cast<unsigned>(std::clamp<std::uint64_t>(tile->packed_bytes / 16 / 256, 1, 132 * 8))};
  }
  if (tile->slices > 1) {
    const std::uint64_t bytes = partial_bytes(d, tile->slices);
    const std::uint64_t outputs = bytes / sizeof(float) / tile->slices;
    // NHWC: an output a thread; the route: a 32-pixel x 32-channel tile a block.
    const std::uint64_t pixels = outputs / static_cast<std::uint64_t>(d.k);
    const std::uint64_t work = via ? (pixels + 31) / 32 * ((static_cast<std::uint64_t>(d.k) + 31) / 32) : outputs / 256;
    src.launch.split_reduce = SplitReduce{.kernel_name = src.source.kernel_name + "_reduce",
                                          .slices = tile->slices,
                                          .partial_bytes = bytes,
                                          .block_x = 256,
                                          .grid_x = static_cast<unsigned>(std::clamp<std::uint64_t>(work, 1, 132 * 8))};
  }
  if (phase.phased()) {
    const auto full = transposed->output_shape();
    const auto outputs = static_cast<std::uint64_t>(full.n) * full.k * full.z * full.p * full.q;
    src.launch.y_fill =
        OutputFill{.kernel_name = src.source.kernel_name + "_fill",
                   .block_x = 256,
                   .grid_x = static_cast<unsigned>(std::clamp<std::uint64_t>(outputs / 256, 1, 132 * 8))};
    fmt::format_to(std::back_inserter(src.launch.tile),
                   ", the phase ({}, {}, {}) of stride {}x{}x{}, the rest the bias", phase.phase_d, phase.phase_h,
                   phase.phase_w, phase.out_stride_d, phase.out_stride_h, phase.out_stride_w);
  }
  if (via) {
    // x per image: [C][D x H x W] -> [D x H x W][C] (2-D: D = 1).
    src.launch.x_to_nhwc = layout_transpose(src.source.kernel_name + "_x_to_nhwc", d.n, d.c,
                                            std::int64_t{d.d} * d.h * d.w, size_of(d.dtype));
  }
  return src;
}
}  // namespace

Specialization specialize_wgmma(const Conv2dDesc& d, const AlignmentNeeds& align) {
  if (d.transposed) {
    const auto f = forward_twin(d);
    if (!f.twin) fail(ErrorCode::kInternal, "specialize_wgmma: {}", f.why_not);
    if (f.phased()) fail(ErrorCode::kInternal, "specialize_wgmma: {} runs through the route only", d.to_string());
    return specialize_wgmma_for(*f.twin, align, /*via=*/false, &d);
  }
  return specialize_wgmma_for(d, align, /*via=*/false, nullptr);
}

Specialization specialize_wgmma_via_nhwc(const Conv2dDesc& d) {
  if (d.layout != Layout::kNCHW || d.dynamic_batch) {
    fail(ErrorCode::kInternal, "specialize_wgmma_via_nhwc: {} is not a static-batch NCHW problem", d.to_string());
  }
  const auto f = forward_twin(d);
  if (d.transposed && !f.twin) fail(ErrorCode::kInternal, "specialize_wgmma_via_nhwc: {}", f.why_not);
  Conv2dDesc twin = d.transposed ? *f.twin : d;
  twin.layout = Layout::kNHWC;
  // The main kernel reads the workspace's copy of x, which starts on a region boundary.
  return specialize_wgmma_for(twin, kFullAlignment, /*via=*/true, d.transposed ? &d : nullptr);
}

}  // namespace convjit
