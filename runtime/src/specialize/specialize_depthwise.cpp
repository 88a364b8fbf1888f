// The depthwise / narrow-group kernel (conv2d_depthwise.cu): which problems it takes
// and the tile it runs them with. The direct algorithm hands it every problem it takes.
#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <string>
#include <variant>

#include "base/env_switch.hpp"
#include "base/fail.hpp"
#include "specialize/prologue.hpp"
#include "specialize/specialized_source.hpp"
#include "specialize/templates.hpp"

namespace convjit {

namespace {
constexpr const char* kDepthwiseTemplate = "conv2d_depthwise.cu";
// These mirror the template's own constants (kOutPerThread, the float4 window).
constexpr int kOutPerThread = 4;
constexpr int kMaxThreads = 256;
constexpr int kMaxCPerGroup = 4;
constexpr int kMaxKPerGroup = 8;
constexpr int kMaxTaps = 64;          // the filter of one channel lives in registers
constexpr int kMaxWindowFloats = 32;  // one row window, in registers
// The input tile is static shared memory (48 KiB at most); 40 KiB leaves room for five
// blocks an SM on Hopper, so one block's loads overlap the others' arithmetic.
constexpr int kSharedBudget = 40 * 1024;
constexpr int kMaxRowsPerThread = 4;
constexpr int kMaxPasses = 16;
// Taller tiles re-read fewer halo rows, but a grid must still fill the GPU: tiles get
// shorter until there are this many blocks (a few waves on a 132-SM part) or one pass.
constexpr std::int64_t kFillBlocks = 4 * 132 * 4;

int ceil_div(std::int64_t a, std::int64_t b) { return static_cast<int>((a + b - 1) / b); }

int vec_of(const Conv2dDesc& d) { return d.dtype == DType::kFloat32 ? 4 : 8; }

int window_lead(const Conv2dDesc& d) {
  const int vec = vec_of(d);
  return ((-d.pad_w) % vec + vec) % vec;
}

int window_floats(const Conv2dDesc& d) {
  const int lead = window_lead(d) % 4;
  const int window = (kOutPerThread - 1) * d.stride_w + (d.s - 1) * d.dilation_w + 1;
  return (lead + window + 3) / 4 * 4;
}

// The same arithmetic as the template's kTileFloats, in bytes.
std::int64_t shared_bytes(const Conv2dDesc& d, int threads_q, int tile_p) {
  const int vec = vec_of(d);
  const int lead = window_lead(d);
  const std::int64_t cols =
      std::int64_t{threads_q - 1} * kOutPerThread * d.stride_w + (lead - lead % 4) + window_floats(d);
  const std::int64_t pitch = (cols + vec - 1) / vec * vec;
  const std::int64_t in_rows = std::int64_t{tile_p - 1} * d.stride_h + std::int64_t{d.r - 1} * d.dilation_h + 1;
  return std::int64_t{d.c / d.groups} * in_rows * pitch * 4;
}

struct DepthwiseTile {
  int threads_c = 1, threads_q = 0, threads_p = 0, rows_per_thread = 0, passes = 0, tiles_q = 0, tiles_p = 0;
  int planes = 1;
  int min_blocks = 1;
  int channels = 0, outs = kOutPerThread;  // NHWC: channels and row outputs a thread
  bool staged = false;                     // NHWC: the input tile staged in shared memory
  std::int64_t blocks = 0, shared = 0;
};

// NHWC: no input tile. A block is a slab of channel vectors (fastest) x a run of output
// columns x rows. 128 bytes of a pixel a slab (eight 16-byte vectors or sixteen 8-byte
// ones) keep a warp's accesses whole cache lines while the slab's taps stay small in
// shared memory and the rest of the block goes down the rows, whose inputs the block's
// threads share in L1.
constexpr int kSlabBytes = 128;
// The slab's taps (kTapPitch floats a tap and input channel of the group) in shared memory.
constexpr std::int64_t kTapBudget = 16 * 1024;
// Blocks to fill a 132-SM GPU a few times over before a block gets more rows.
constexpr std::int64_t kNhwcFillBlocks = 4 * 132;
// The staged tile's rule for large problems (choose_staged_tile): at least this many
// waves of blocks of the two-row tile, three blocks an SM on 132 SMs, take the tall one.
constexpr std::int64_t kTallTileWaves = 20, kNominalSms = 132, kStagedBlocksPerSm = 3;
constexpr std::int64_t kTallStageBudget = 100 * 1024;

std::int64_t tap_bytes(const Conv2dDesc& d, int threads_c, int channels) {
  return std::int64_t{threads_c * channels + 4} * d.r * d.s * (d.c / d.groups) * 4;
}

// NOTE: a development override for tuning runs, CONVJIT_DEPTHWISE_NHWC="channels,outs,
// min_blocks" (a thread's channel vector, 8 or 16 bytes; its outputs along a row, 1-8;
// the blocks an SM asked of ptxas); it changes the source, so the cache key.
void nhwc_thread_override(const Conv2dDesc& d, DepthwiseTile& t) {
  const char* env = std::getenv("CONVJIT_DEPTHWISE_NHWC");
  if (env == nullptr || *env == '\0') return;
  const auto element = static_cast<int>(size_of(d.dtype));
  int channels = 0, outs = 0, min_blocks = 0;
  if (std::sscanf(env, "%d,%d,%d", &channels, &outs, &min_blocks) != 3 || channels % 4 != 0 ||
      (channels * element != 8 && channels * element != 16) || outs < 1 || outs > 8 || min_blocks < 1 ||
      min_blocks > 8) {
    fail(ErrorCode::kInvalidArgument,
         "CONVJIT_DEPTHWISE_NHWC: expected channels,outs,min_blocks with channels a multiple of 4 making an 8- or "
         "16-byte vector, outs 1-8 and min_blocks 1-8, got '{}'",
         env);
  }
  t.channels = channels;
  t.outs = outs;
  t.min_blocks = min_blocks;
}

// NOTE: a development override for tuning runs, CONVJIT_DEPTHWISE_NHWC_TILE="rows,passes,
// column_threads" (a staged block's output rows a thread in one pass, 1-4; its passes down
// the tile, each one group of copies, 1-4; the most column groups a block, 1-256, the rest
// of its threads going down the rows); it changes the source, so the cache key.
bool staged_tile_override(int& rows, int& passes, int& max_threads_q) {
  const char* env = std::getenv("CONVJIT_DEPTHWISE_NHWC_TILE");
  if (env == nullptr || *env == '\0') return false;
  int r = 0, p = 0, q = 0;
  if (std::sscanf(env, "%d,%d,%d", &r, &p, &q) != 3 || r < 1 || r > 4 || p < 1 || p > 4 || q < 1 || q > kMaxThreads) {
    fail(ErrorCode::kInvalidArgument,
         "CONVJIT_DEPTHWISE_NHWC_TILE: expected rows,passes,column_threads with rows and passes 1-4 and "
         "column_threads 1-{}, got '{}'",
         kMaxThreads, env);
  }
  rows = r;
  passes = p;
  max_threads_q = q;
  return true;
}

// NHWC, staged: the input tile's bytes (the template's kStageBytes).
std::int64_t stage_bytes(const Conv2dDesc& d, const DepthwiseTile& t) {
  const std::int64_t slab = std::int64_t{t.threads_c} * t.channels * static_cast<std::int64_t>(size_of(d.dtype));
  const std::int64_t pitch = slab + (slab < 128 ? 16 : 0);
  const std::int64_t rows = std::int64_t{t.threads_p * t.rows_per_thread * t.passes - 1} * d.stride_h +
                            std::int64_t{d.r - 1} * d.dilation_h + 1;
  const std::int64_t cols =
      std::int64_t{t.threads_q * t.outs - 1} * d.stride_w + std::int64_t{d.s - 1} * d.dilation_w + 1;
  return rows * cols * pitch;
}

// Shared memory a block has for its staged input tile and taps: 46 KiB, three blocks an SM
// (measured, docs/perf.md), unless CONVJIT_DEPTHWISE_STAGE_KB (a development override,
// 8-200) sets another, for taller tiles with less halo at fewer blocks an SM (the tile is
// dynamic shared memory; the source does not change, only its constants): its bytes, or
// nothing where it is unset.
constexpr std::int64_t kStageBudget = 46 * 1024;
std::optional<std::int64_t> stage_budget_override() {
  const char* env = std::getenv("CONVJIT_DEPTHWISE_STAGE_KB");
  if (env == nullptr || *env == '\0') return std::nullopt;
  int kb = 0;
  if (std::sscanf(env, "%d", &kb) != 1 || kb < 8 || kb > 200) {
    fail(ErrorCode::kInvalidArgument, "CONVJIT_DEPTHWISE_STAGE_KB: expected 8-200 (KiB), got '{}'", env);
  }
  return std::int64_t{kb} * 1024;
}

// NOTE: CONVJIT_DEPTHWISE_STAGED=0 keeps every NHWC depthwise problem on the direct
// loads, for timing runs (changes the source, so the cache key).
bool nhwc_staged_wanted() { return env_switch_on("CONVJIT_DEPTHWISE_STAGED"); }

// NHWC, staged: a block of threads_c vectors x threads_q column groups x threads_p rows
// of threads, rows_per_thread rows each, that goes down its tile in `passes` steps, each
// step's input rows one group of asynchronous copies (all issued first, so that later
// steps' copies could run under earlier steps' products; one step measured as fast at the
// same tile and spills less, docs/perf.md), whose input tile fits `budget` and whose
// grid still fills the GPU; false where no such tile fits.
bool fit_staged_tile(const Conv2dDesc& d, DepthwiseTile& t, std::int64_t slabs, int rows, int passes, int max_threads_q,
                     std::int64_t budget) {
  const auto out = d.output_shape();
  t.threads_q = std::min({ceil_div(out.q, t.outs), kMaxThreads / t.threads_c, max_threads_q});
  t.rows_per_thread = static_cast<int>(std::min<std::int64_t>(rows, out.p));
  t.passes = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(passes, out.p / t.rows_per_thread)));
  auto tile_rows = [&] { return std::int64_t{t.rows_per_thread} * t.passes; };
  t.threads_p = static_cast<int>(std::max<std::int64_t>(
      1,
      std::min<std::int64_t>(ceil_div(out.p, tile_rows()), kMaxThreads / (std::int64_t{t.threads_c} * t.threads_q))));
  const std::int64_t taps = tap_bytes(d, t.threads_c, t.channels);
  while (stage_bytes(d, t) + taps > budget) {
    if (t.passes > 1) {
      --t.passes;
    } else if (t.rows_per_thread > 1) {
      --t.rows_per_thread;
    } else if (t.threads_p > 1) {
      --t.threads_p;
    } else if (t.threads_q > 1) {
      --t.threads_q;
    } else {
      return false;
    }
  }
  t.tiles_q = ceil_div(out.q, std::int64_t{t.threads_q} * t.outs);
  auto blocks = [&] { return std::int64_t{d.n} * slabs * t.tiles_q * ceil_div(out.p, t.threads_p * tile_rows()); };
  while (blocks() < kNhwcFillBlocks && (t.passes > 1 || t.rows_per_thread > 1 || t.threads_p > 1)) {
    if (t.passes > 1) {
      --t.passes;
    } else if (t.rows_per_thread > 1) {
      --t.rows_per_thread;
    } else {
      t.threads_p = ceil_div(t.threads_p, 2);
    }
  }
  t.tiles_p = ceil_div(out.p, t.threads_p * tile_rows());
  t.blocks = blocks();
  t.shared = taps + stage_bytes(d, t);
  t.staged = true;
  return true;
}

// The staged tile: two rows a thread within 46 KiB (three blocks an SM), or where the
// grid of that tile runs many waves (large images), three rows a thread within 100 KiB,
// which reads fewer halo rows for each output row; on smaller layers the taller tile's
// grid fills fewer waves and loses (measured both ways: docs/perf.md, "Session 16").
// CONVJIT_DEPTHWISE_NHWC_TILE and CONVJIT_DEPTHWISE_STAGE_KB set the tile and the budget
// instead.
bool choose_staged_tile(const Conv2dDesc& d, DepthwiseTile& t, std::int64_t slabs) {
  int rows = 2, passes = 1, max_threads_q = 8;
  const bool tile_set = staged_tile_override(rows, passes, max_threads_q);
  const std::optional<std::int64_t> budget = stage_budget_override();
  if (!fit_staged_tile(d, t, slabs, rows, passes, max_threads_q, budget.value_or(kStageBudget))) return false;
  if (tile_set || budget || t.blocks < kTallTileWaves * kNominalSms * kStagedBlocksPerSm) return true;
  DepthwiseTile tall = t;
  if (fit_staged_tile(d, tall, slabs, 3, 1, 8, kTallStageBudget)) t = tall;
  return true;
}

std::variant<DepthwiseTile, std::string> choose_nhwc_tile(const Conv2dDesc& d) {
  const auto out = d.output_shape();
  DepthwiseTile t{.rows_per_thread = 1, .passes = 1, .tiles_q = 1, .tiles_p = 1};
  // Four outputs x 16 bytes of accumulators and the taps of a filter row as floats: a
  // row of three taps leaves room for three blocks an SM by registers (the kernel waits
  // on its loads, so occupancy pays; docs/perf.md), a longer row for two without spills.
  t.channels = vec_of(d);
  t.min_blocks = d.s <= 3 ? 3 : 2;
  // 16-bit rows of four or five taps: 8-byte vectors (four channels) halve the taps and
  // accumulators a thread holds, so four blocks an SM fit without spills, or with stride
  // 1 eight outputs a thread at three (twelve columns loaded for eight outputs, not two
  // loads of eight for four each). Measured faster on every such layer of the networks
  // set; three-tap rows and float32 measured no faster (docs/perf.md, "NHWC depthwise: a
  // thread's channels and outputs").
  if (d.dtype != DType::kFloat32 && d.s >= 4 && d.s <= 5) {
    t.channels = 4;
    t.outs = d.stride_w == 1 ? 8 : 4;
    t.min_blocks = d.stride_w == 1 ? 3 : 4;
  }
  nhwc_thread_override(d, t);
  const auto element = static_cast<int>(size_of(d.dtype));
  // As many slabs as a slab's taps allow, with the vectors spread evenly over them.
  auto spread_slabs = [&](DepthwiseTile& tile) {
    const std::int64_t vectors = ceil_div(d.k, tile.channels);
    int max_c = kSlabBytes / (tile.channels * element);
    while (max_c > 1 && tap_bytes(d, max_c, tile.channels) > kTapBudget) --max_c;
    tile.threads_c = ceil_div(vectors, ceil_div(vectors, max_c));
    return static_cast<std::int64_t>(ceil_div(vectors, tile.threads_c));  // the template's kChannelBlocks
  };
  const std::int64_t slabs = spread_slabs(t);
  // Pure depthwise problems whose filter row fits registers: the block's input tile in
  // shared memory, read from x once (the direct loads re-read each input row for every
  // output row under it, and neighbouring columns, through L1 and L2).
  // Rows of channels that are not whole vectors keep the direct loads (an element a load);
  // 16-bit rows of whole 8-byte vectors stage those.
  const bool channelwise = d.c == d.groups && d.k == d.groups;
  DepthwiseTile staged = t;
  if (d.c % staged.channels != 0 && d.dtype != DType::kFloat32 && d.c % 4 == 0) staged.channels = 4;
  const std::int64_t staged_slabs = spread_slabs(staged);
  // A pixel's slab of one 16-byte vector (8 channels of 16-bit data) staged at half the
  // speed of the direct loads (KernelBench 83, docs/perf.md): two vectors at least.
  const bool wide_slab = std::int64_t{staged.threads_c} * staged.channels * element >= 32;
  if (channelwise && wide_slab && d.c % staged.channels == 0 && d.s * staged.channels <= 64 && nhwc_staged_wanted() &&
      choose_staged_tile(d, staged, staged_slabs)) {
    t = staged;
    if (t.blocks > INT_MAX) return fmt::format("{} thread blocks, over the grid limit", t.blocks);
    return t;
  }
  t.threads_q = std::min(ceil_div(out.q, t.outs), kMaxThreads / t.threads_c);
  t.threads_p = static_cast<int>(std::max<std::int64_t>(
      1, std::min<std::int64_t>(out.p, kMaxThreads / (std::int64_t{t.threads_c} * t.threads_q))));
  t.tiles_q = ceil_div(out.q, std::int64_t{t.threads_q} * t.outs);
  auto blocks_for = [&](int threads_p) { return std::int64_t{d.n} * slabs * t.tiles_q * ceil_div(out.p, threads_p); };
  while (t.threads_p > 1 && blocks_for(t.threads_p) < kNhwcFillBlocks) t.threads_p = ceil_div(t.threads_p, 2);
  t.tiles_p = ceil_div(out.p, t.threads_p);
  t.blocks = blocks_for(t.threads_p);
  t.shared = tap_bytes(d, t.threads_c, t.channels);
  if (t.blocks > INT_MAX) return fmt::format("{} thread blocks, over the grid limit", t.blocks);
  return t;
}

// NCHW planes whose tile is the whole plane: several a block, up to a full block of
// threads, while the grid keeps kFillBlocks blocks.
void gather_planes(const Conv2dDesc& d, DepthwiseTile& t) {
  const auto out = d.output_shape();
  const std::int64_t all_planes = std::int64_t{d.n} * d.groups;
  // Whole planes: the rows split that pads the plane least (fewer threads on a tie).
  int best_rows = 0;
  std::int64_t best_cover = 0;
  for (int rows = kMaxRowsPerThread; rows >= 1; rows /= 2) {
    const std::int64_t threads_p = ceil_div(out.p, rows);
    if (threads_p * t.threads_q > kMaxThreads) continue;
    if (best_rows == 0 || threads_p * rows < best_cover) {
      best_rows = rows;
      best_cover = threads_p * rows;
    }
  }
  if (best_rows == 0) return;
  const int threads_p = ceil_div(out.p, best_rows);
  const std::int64_t tile_bytes = shared_bytes(d, t.threads_q, threads_p * best_rows);
  const std::int64_t stage_bytes = std::int64_t{d.k / d.groups} * out.p * out.q * 4;
  std::int64_t planes = std::min({std::int64_t{kMaxThreads / (t.threads_q * threads_p)},
                                  kSharedBudget / (tile_bytes + stage_bytes), all_planes / kFillBlocks});
  // A multiple of the planes that make whole 16-byte chunks of x and of y, where that
  // leaves several: then every block's runs start aligned when the tensors do.
  const auto element = static_cast<std::int64_t>(size_of(d.dtype));
  const std::int64_t in_bytes = std::int64_t{d.c / d.groups} * d.h * d.w * element;
  const std::int64_t out_bytes = std::int64_t{d.k / d.groups} * out.p * out.q * element;
  const std::int64_t align =
      std::lcm(16 / std::gcd(std::int64_t{16}, in_bytes), 16 / std::gcd(std::int64_t{16}, out_bytes));
  if (planes >= 2 * align) planes = planes / align * align;
  if (planes < 2) return;
  t.planes = static_cast<int>(planes);
  t.rows_per_thread = best_rows;
  t.threads_p = threads_p;
  t.passes = 1;
  t.tiles_p = 1;
  t.blocks = ceil_div(all_planes, planes);
  t.shared = planes * (tile_bytes + stage_bytes);
}

std::variant<DepthwiseTile, std::string> choose_tile(const Conv2dDesc& d) {
  const int c_per_group = d.c / d.groups;
  const int k_per_group = d.k / d.groups;
  if (d.groups == 1) return std::string("a dense convolution (groups 1)");
  if (auto why = beyond_2d_forward_reason(d)) return *why;
  if (c_per_group > kMaxCPerGroup)
    return fmt::format("{} input channels a group (at most {})", c_per_group, kMaxCPerGroup);
  if (k_per_group > kMaxKPerGroup) {
    return fmt::format("{} output channels a group (at most {})", k_per_group, kMaxKPerGroup);
  }
  if (d.r * d.s > kMaxTaps) return fmt::format("a {}x{} filter (at most {} taps)", d.r, d.s, kMaxTaps);
  if (d.layout == Layout::kNHWC) return choose_nhwc_tile(d);
  if (window_floats(d) > kMaxWindowFloats) {
    return fmt::format("a row window of {} floats (stride {}, dilation {}; at most {})", window_floats(d), d.stride_w,
                       d.dilation_w, kMaxWindowFloats);
  }
  const auto out = d.output_shape();
  const std::int64_t p = out.p, q = out.q;
  const int vec = vec_of(d);

  int threads_q = std::min(ceil_div(q, kOutPerThread), kMaxThreads);
  while (true) {
    const int tiles_q = ceil_div(q, std::int64_t{threads_q} * kOutPerThread);
    // Column tiles after the first must start on a whole 16-byte chunk of the row.
    if (tiles_q > 1 && threads_q * kOutPerThread * d.stride_w % vec != 0) ++threads_q;
    for (int rows = kMaxRowsPerThread; rows >= 1; rows /= 2) {
      const int th = static_cast<int>(std::min<std::int64_t>(rows, p));
      const int threads_p = std::max(1, std::min(kMaxThreads / threads_q, ceil_div(p, th)));
      if (shared_bytes(d, threads_q, threads_p * th) > kSharedBudget) continue;
      DepthwiseTile t{.threads_q = threads_q, .threads_p = threads_p, .rows_per_thread = th, .passes = 1};
      t.tiles_q = ceil_div(q, std::int64_t{threads_q} * kOutPerThread);
      const int max_passes = std::min(kMaxPasses, ceil_div(p, std::int64_t{threads_p} * th));
      auto blocks_for = [&](int passes) {
        return std::int64_t{d.n} * d.groups * t.tiles_q * ceil_div(p, std::int64_t{threads_p} * th * passes);
      };
      while (t.passes < max_passes && shared_bytes(d, threads_q, threads_p * th * (t.passes + 1)) <= kSharedBudget &&
             blocks_for(t.passes + 1) >= kFillBlocks) {
        ++t.passes;
      }
      t.tiles_p = ceil_div(p, std::int64_t{threads_p} * th * t.passes);
      t.blocks = blocks_for(t.passes);
      t.shared = shared_bytes(d, threads_q, threads_p * th * t.passes);
      if (t.tiles_q == 1 && t.tiles_p == 1) gather_planes(d, t);
      if (t.blocks > INT_MAX) return fmt::format("{} thread blocks, over the grid limit", t.blocks);
      // Up to four blocks an SM by registers (64 a thread); the filter of a big kernel needs more.
      t.min_blocks = d.r * d.s <= 27 ? 4 : 2;
      return t;
    }
    if (threads_q <= 8) return std::string("no input tile fits shared memory");
    threads_q = (ceil_div(threads_q, 2) + 1) / 2 * 2;
  }
}
}  // namespace

std::optional<std::string> depthwise_unsupported_reason(const Conv2dDesc& d) {
  auto tile = choose_tile(d);
  if (auto* why = std::get_if<std::string>(&tile)) return *why;
  return std::nullopt;
}

std::string depthwise_kernel_name(const Conv2dDesc& d) {
  return fmt::format("conv2d_depthwise_{}_{}_{}", to_string(d.dtype), to_string(d.layout), problem_tag(d));
}

Specialization specialize_depthwise(const Conv2dDesc& d) {
  auto chosen = choose_tile(d);
  if (auto* why = std::get_if<std::string>(&chosen)) {
    fail(ErrorCode::kUnsupported, "{}: the depthwise kernel cannot run it: {}", d.to_string(), *why);
  }
  const DepthwiseTile& t = std::get<DepthwiseTile>(chosen);
  const bool wide = std::max({d.x_elements(), d.y_elements(), d.w_elements()}) > INT_MAX;
  const int threads = t.threads_c * t.planes * t.threads_q * t.threads_p;

  Specialization src;
  src.launch.algorithm = "direct";
  if (d.layout == Layout::kNHWC) {
    src.launch.tile = fmt::format(
        "depthwise NHWC: {}x{} outputs x {} channels per block ({} threads, {} channels x {} columns x {} rows "
        "each, {} passes), {} B shared {}",
        t.threads_p * t.rows_per_thread * t.passes, t.threads_q * t.outs, t.threads_c * t.channels, threads, t.channels,
        t.outs, t.rows_per_thread, t.passes, t.shared, t.staged ? "taps and input tile" : "taps");
  } else if (t.planes > 1) {
    src.launch.tile = fmt::format(
        "depthwise: {} whole planes of {}x{} outputs per block ({} threads, {} rows x {} columns each), {} B shared "
        "input tiles and outputs",
        t.planes, t.threads_p * t.rows_per_thread, t.threads_q * kOutPerThread, threads, t.rows_per_thread,
        kOutPerThread, t.shared);
  } else {
    src.launch.tile = fmt::format(
        "depthwise: {}x{} outputs per block ({} threads, {} rows x {} columns each, {} passes), {} B shared input "
        "tile",
        t.threads_p * t.rows_per_thread * t.passes, t.threads_q * kOutPerThread, threads, t.rows_per_thread,
        kOutPerThread, t.passes, t.shared);
  }
  src.source.template_name = kDepthwiseTemplate;
  src.source.kernel_name = depthwise_kernel_name(d);
  src.source.text = Prologue(src.source.kernel_name)
                        .problem(d)
                        .constant("kThreadsQ", t.threads_q)
                        .constant("kThreadsP", t.threads_p)
                        .constant("kRowsPerThread", t.rows_per_thread)
                        .constant("kPasses", t.passes)
                        .constant("kTilesQ", t.tiles_q)
                        .constant("kMinBlocks", t.min_blocks)
                        .constant("kThreadsC", t.threads_c)
                        .constant("kNhwcChannels", d.layout == Layout::kNHWC ? t.channels : vec_of(d))
                        .constant("kNhwcOuts", t.outs)
                        .constant("kStaged", t.staged)
                        .constant("kPlanes", t.planes)
                        .constant("kWideIndex", wide)
                        .finish(template_text(kDepthwiseTemplate));
  // Blocks are numbered image slowest, the same count for every image.
  // A staged block's input tile is the launch's dynamic shared memory.
  src.launch.geometry = {.grid_x = static_cast<std::uint64_t>(t.blocks),
                         .block_x = static_cast<unsigned>(threads),
                         .shared_bytes = t.staged ? static_cast<unsigned>(stage_bytes(d, t)) : 0u,
                         .grid_x_per_image = static_cast<std::uint64_t>(t.blocks / d.n)};
  return src;
}

}  // namespace convjit
