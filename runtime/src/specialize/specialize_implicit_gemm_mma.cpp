// The mma.sync implicit-GEMM kernel (kernel_sources/conv2d_implicit_gemm_mma.cu) for
// every element type: its tile, its shared-memory layout and its prologue.
#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <iterator>

#include "base/fail.hpp"
#include "specialize/prologue.hpp"
#include "specialize/specialized_source.hpp"
#include "specialize/templates.hpp"

namespace convjit {

namespace {
constexpr const char* kTemplate = "conv2d_implicit_gemm_mma.cu";

struct Tile {
  int bm, bn, bk, stages, warps_m, warps_n, min_blocks;
};

// The template's shared memory: kStages stages of W ([kBM][kAStride]) and then of X
// ([kBK][kBStride] for NCHW, [kBN][kBStride] for NHWC). Emitted in the prologue, where the
// template static_asserts its own derivation against it, and the launch is sized by it:
// the two cannot drift apart.
struct SharedLayout {
  int a_stride, b_stride, a_stage_elems, b_stage_elems, shared_bytes;
};

SharedLayout shared_layout(const Tile& t, int element_bytes, Layout layout) {
  SharedLayout l{};
  const bool nhwc = layout == Layout::kNHWC;
  l.a_stride = t.bk + 16 / element_bytes;  // a 16-byte pad a row: ldmatrix conflict-free
  l.b_stride = nhwc ? l.a_stride : t.bn + 8;
  l.a_stage_elems = t.bm * l.a_stride;
  l.b_stage_elems = (nhwc ? t.bn : t.bk) * l.b_stride;
  l.shared_bytes = t.stages * (l.a_stage_elems + l.b_stage_elems) * element_bytes;
  return l;
}

// float32. Warp tiles of 64x32 (or 32x32); the channel tile shrinks with the group's
// channel count so few rows are padding.
Tile choose_tile_fp32(int k_per_group, int split) {
  // NOTE: a development override for tuning runs; it changes the source, so the
  // cache key changes with it. "bm,bn,bk,stages,warps_m,warps_n,min_blocks".
  if (const char* env = std::getenv("CONVJIT_IGEMM_TILE"); env != nullptr && *env != '\0') {
    Tile t{};
    if (std::sscanf(env, "%d,%d,%d,%d,%d,%d,%d", &t.bm, &t.bn, &t.bk, &t.stages, &t.warps_m, &t.warps_n,
                    &t.min_blocks) == 7) {
      return t;
    }
    fail(ErrorCode::kInvalidArgument,
         "CONVJIT_IGEMM_TILE: expected 7 integers bm,bn,bk,stages,wm,wn,minblocks, got '{}'", env);
  }
  // TF32 fits 128 registers, so two blocks an SM; 3xTF32 keeps a second accumulator set
  // and runs one block an SM without spilling.
  const int blocks = split == 1 ? 2 : 1;
  if (k_per_group > 64) return {128, 128, 32, 3, 2, 4, blocks};
  if (k_per_group > 32) return {64, 128, 32, 4, 1, 4, 2};
  return {32, 128, 32, 4, 1, 4, 2};
}

void check_tile_16bit(const Tile& t, std::string_view where) {
  const int threads = t.warps_m * t.warps_n * 32;
  const bool ok = t.bm > 0 && t.bn > 0 && t.bk > 0 && t.warps_m > 0 && t.warps_n > 0 && t.min_blocks > 0 &&
                  t.bm % t.warps_m == 0 && (t.bm / t.warps_m) % 16 == 0 && t.bn % t.warps_n == 0 &&
                  (t.bn / t.warps_n) % 16 == 0 && t.bk % 16 == 0 && threads <= 1024 && threads % t.bn == 0 &&
                  t.bk % (threads / t.bn) == 0;
  if (!ok) {
    fail(ErrorCode::kInvalidArgument,
         "{}: tile {}x{}x{} with {}x{} warps does not fit the f16 implicit-GEMM kernel (warp tile rows and "
         "columns multiples of 16, kBK a multiple of 16, threads a multiple of kBN)",
         where, t.bm, t.bn, t.bk, t.warps_m, t.warps_n);
  }
}

// float16 / bfloat16: two stages. The reduction of one tile is 32 deep; the channel tile
// follows the group's output channels, so few rows are padding. The gather of X costs the
// same per tile whatever kBM is, so the biggest channel tile that is not mostly padding
// pays best: 128 rows (8 warps of 64x32, two blocks an SM) for more than 64 channels.
Tile choose_tile_16bit(int k_per_group) {
  // NOTE: a development override for tuning runs; it changes the source, so the cache
  // key changes with it. "bm,bn,bk,warps_m,warps_n,min_blocks".
  if (const char* env = std::getenv("CONVJIT_IGEMM_F16_TILE"); env != nullptr && *env != '\0') {
    Tile t{.stages = 2};
    if (std::sscanf(env, "%d,%d,%d,%d,%d,%d", &t.bm, &t.bn, &t.bk, &t.warps_m, &t.warps_n, &t.min_blocks) != 6) {
      fail(ErrorCode::kInvalidArgument,
           "CONVJIT_IGEMM_F16_TILE: expected 6 integers bm,bn,bk,warps_m,warps_n,min_blocks, got '{}'", env);
    }
    check_tile_16bit(t, "CONVJIT_IGEMM_F16_TILE");
    return t;
  }
  if (k_per_group > 64) return {128, 128, 32, 2, 2, 4, 2};
  if (k_per_group > 32) return {64, 128, 32, 2, 2, 4, 2};
  if (k_per_group > 16) return {32, 128, 32, 2, 1, 4, 3};
  return {16, 128, 32, 2, 1, 4, 4};
}
// NHWC runs every dtype on the kStages cp.async pipeline (the NCHW 16-bit kernel keeps
// two stages because its X gather goes through registers).
constexpr int kStagesNhwc16Bit = 3;
}  // namespace

unsigned copy_width(std::int64_t run, unsigned align, unsigned element) {
  for (const unsigned bytes : {16u, 8u, 4u}) {
    if (bytes >= element && align >= bytes && run % (bytes / element) == 0) return bytes;
  }
  return element;
}

namespace {
// `d` is the problem as the kernel computes it (for the route, NCHW's NHWC twin); `via`
// names the route: its own kernel name, W read in the caller's K,C/g,R,S order an element
// at a time, y stored NCHW, x's transpose.
Specialization specialize_igemm_for(const Conv2dDesc& d, const AlignmentNeeds& align, bool via) {
  const bool sixteen_bit = d.dtype != DType::kFloat32;
  const auto out = d.output_shape();
  const int k_per_group = d.k / d.groups;
  const int split = !sixteen_bit && d.math == MathMode::kStrictFp32 ? 3 : 1;
  const bool nhwc = d.layout == Layout::kNHWC;
  Tile tile = sixteen_bit ? choose_tile_16bit(k_per_group) : choose_tile_fp32(k_per_group, split);
  if (const char* env = std::getenv("CONVJIT_IGEMM_F16_TILE");
      nhwc && sixteen_bit && (env == nullptr || *env == '\0')) {
    tile.stages = kStagesNhwc16Bit;
  }
  // 3-D: the depth gather decodes (c, t, r, s) with divisions (the 2-D offset table has no
  // room for a depth), which needs more registers than two blocks an SM leave a thread.
  if (d.d != 1 || d.t != 1 || out.z != 1) tile.min_blocks = 1;
  const std::int64_t gemm_n = out.n * out.z * out.p * out.q;
  const std::int64_t grid_x = (gemm_n + tile.bn - 1) / tile.bn;
  if (grid_x > INT_MAX) fail(ErrorCode::kUnsupported, "{}: {} pixel tiles exceed the grid", d.to_string(), grid_x);
  const bool wide = std::max({d.x_elements(), d.y_elements(), d.w_elements()}) > INT_MAX;
  const int element = static_cast<int>(size_of(d.dtype));
  const SharedLayout layout = shared_layout(tile, element, d.layout);

  Specialization src;
  src.launch.algorithm = "implicit_gemm";
  if (sixteen_bit) {
    src.launch.tile = fmt::format(
        "{}x{}x{} (channels x pixels x reduction), {} stages, {}x{} warps, {} mma m16n8k16, fp32 "
        "accumulation",
        tile.bm, tile.bn, tile.bk, tile.stages, tile.warps_m, tile.warps_n, to_string(d.dtype));
  } else {
    src.launch.tile =
        fmt::format("{}x{}x{} (channels x pixels x reduction), {} stages, {}x{} warps, {}", tile.bm, tile.bn, tile.bk,
                    tile.stages, tile.warps_m, tile.warps_n, split == 3 ? "3xTF32" : "TF32");
  }
  src.source.template_name = kTemplate;
  // The template's kWeightChunks (16-byte copies of W rows that are whole 16-byte chunks)
  // and, for 16-bit data, kPairStores (two outputs a 32-bit store), each as far as the
  // pointers allow.
  // NHWC: X and W in runs of kXVecBytes / kWVecBytes, two channels a store where kAlignY
  // allows (the template's kChannelPairStores).
  const auto e = static_cast<unsigned>(element);
  const std::int64_t gemm_k = std::int64_t{d.c / d.groups} * d.t * d.r * d.s;
  const bool whole_chunks = gemm_k % (16 / element) == 0;
  const bool pair_y = sixteen_bit && out.z * out.p * out.q % 2 == 0;
  unsigned x_vec = e;
  // Transposed: the kernel reads W' from the pack kernel's output, in the workspace or the
  // caller's packed buffer, both 16-byte aligned; w itself is read element by element.
  const unsigned w_align = d.transposed ? 16u : align.w;
  unsigned w_vec = whole_chunks && w_align >= 16 ? 16u : e;
  if (nhwc) {
    x_vec = copy_width(d.c / d.groups, align.x, e);
    w_vec = copy_width(gemm_k, align.w, e);
    const bool pair_channels = k_per_group % 2 == 0 && align.y >= 2 * e;
    src.launch.needs = {x_vec, w_vec, e, pair_channels ? 2 * e : e};
    fmt::format_to(std::back_inserter(src.launch.tile), ", NHWC: x in {}-byte and w in {}-byte copies", x_vec, w_vec);
    if (via) {
      src.launch.tile += ", NCHW through NHWC: x transposed in the workspace, w read in K,C,R,S order, y stored NCHW";
      // The main kernel reads x's copy in the workspace; the caller's pointers see element
      // copies only.
      src.launch.needs = {e, e, e, e};
    }
  } else {
    src.launch.needs = {e, d.transposed ? e : w_vec, e, pair_y && align.y >= 4 ? 4u : e};
  }
  const std::string_view math = sixteen_bit ? to_string(d.dtype) : split == 3 ? "3xtf32" : "tf32";
  // The route's name says the caller's layout and the route: its cache key and inspect
  // output are never the plain NHWC kernel's.
  src.source.kernel_name = via ? fmt::format("conv2d_igemm_{}_nchw_{}_via_nhwc", math, problem_tag(d))
                               : fmt::format("conv2d_igemm_{}_{}_{}{}", math, to_string(d.layout), problem_tag(d),
                                             alignment_tag(align, kFullAlignment));
  Prologue prologue(src.source.kernel_name);
  if (d.transposed) prologue.define("CONVJIT_IGEMM_PACK_TRANSPOSED");
  if (via) prologue.define("CONVJIT_IGEMM_VIA_NHWC");
  src.source.text = prologue.problem(d)
                        .constant("kBM", tile.bm)
                        .constant("kBN", tile.bn)
                        .constant("kBK", tile.bk)
                        .constant("kStages", tile.stages)
                        .constant("kWarpsM", tile.warps_m)
                        .constant("kWarpsN", tile.warps_n)
                        .constant("kSplit", split)
                        .constant("kMinBlocksPerSm", tile.min_blocks)
                        .constant("kWideIndex", wide)
                        .constant("kAlignW", static_cast<int>(w_align))
                        .constant("kAlignY", static_cast<int>(align.y))
                        .constant("kAlignX", static_cast<int>(align.x))
                        .constant("kXVecBytes", static_cast<int>(x_vec))
                        .constant("kWVecBytes", static_cast<int>(w_vec))
                        .constant("kAStride", layout.a_stride)
                        .constant("kBStride", layout.b_stride)
                        .constant("kAStageElems", layout.a_stage_elems)
                        .constant("kBStageElems", layout.b_stage_elems)
                        .constant("kSharedBytes", layout.shared_bytes)
                        .finish(template_text(kTemplate));
  src.launch.geometry = {.grid_x = static_cast<std::uint64_t>(grid_x),
                         .grid_y = static_cast<unsigned>((k_per_group + tile.bm - 1) / tile.bm),
                         .grid_z = static_cast<unsigned>(d.groups),
                         .block_x = static_cast<unsigned>(tile.warps_m * tile.warps_n * 32),
                         .shared_bytes = static_cast<unsigned>(layout.shared_bytes),
                         .grid_x_per_image = static_cast<std::uint64_t>(out.z * out.p * out.q),
                         .grid_x_divisor = static_cast<std::uint64_t>(tile.bn)};
  if (d.transposed) {
    const std::uint64_t packed = static_cast<std::uint64_t>(d.w_elements());
    src.launch.weight_pack =
        WeightPack{.kernel_name = src.source.kernel_name + "_pack",
                   .packed_bytes = packed * static_cast<std::uint64_t>(element),
                   .block_x = 256,
                   .grid_x = static_cast<unsigned>(std::clamp<std::uint64_t>((packed + 255) / 256, 1, 132 * 8))};
  }
  if (via) {
    // x per image: [C][H x W] -> [H x W][C].
    src.launch.x_to_nhwc = layout_transpose(src.source.kernel_name + "_x_to_nhwc", d.n, d.c, std::int64_t{d.h} * d.w,
                                            static_cast<std::uint64_t>(element));
  }
  return src;
}
}  // namespace

Specialization specialize_implicit_gemm(const Conv2dDesc& d, const AlignmentNeeds& align) {
  return specialize_igemm_for(d, align, /*via=*/false);
}

NchwRoute nchw_mma_via_nhwc_switch() { return nchw_route_switch("CONVJIT_NCHW_MMA_VIA_NHWC"); }

Specialization specialize_implicit_gemm_via_nhwc(const Conv2dDesc& d) {
  if (d.layout != Layout::kNCHW || d.dynamic_batch || d.transposed || d.d != 1 || d.t != 1 || d.pad_d != 0) {
    fail(ErrorCode::kInternal, "specialize_implicit_gemm_via_nhwc: {} is not a static-batch 2-D forward NCHW problem",
         d.to_string());
  }
  Conv2dDesc twin = d;
  twin.layout = Layout::kNHWC;
  // x's copy starts on a region boundary. w and y are the caller's, copied an element at a
  // time: its K,C/g,R,S filter's (r, s, c) runs are kR x kS apart, and its NCHW y is stored a
  // channel at a time (the alignment below gives exactly those widths).
  const auto e = static_cast<unsigned>(size_of(d.dtype));
  return specialize_igemm_for(twin, AlignmentNeeds{.x = kFullAlignment.x, .w = e, .bias = e, .y = e}, /*via=*/true);
}

}  // namespace convjit
