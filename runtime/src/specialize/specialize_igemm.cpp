#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>

#include "base/fail.hpp"
#include "specialize/prologue.hpp"
#include "specialize/specialized_source.hpp"
#include "specialize/templates.hpp"

namespace convjit {

namespace {
constexpr const char* kTemplate = "conv2d_igemm_tf32.cu";

struct Tile {
  int bm, bn, bk, stages, warps_m, warps_n, min_blocks;
};

// Warp tiles of 64x32 (or 32x32); the channel tile shrinks with the group's channel
// count so few rows are padding.
Tile choose_tile(int k_per_group, int split) {
  // NOTE: a development override for tuning runs; it changes the source, so the
  // cache key changes with it. "bm,bn,bk,stages,warps_m,warps_n,min_blocks".
  if (const char* env = std::getenv("CONVJIT_IGEMM_TILE"); env != nullptr && *env != '\0') {
    Tile t{};
    if (std::sscanf(env, "%d,%d,%d,%d,%d,%d,%d", &t.bm, &t.bn, &t.bk, &t.stages, &t.warps_m, &t.warps_n,
                    &t.min_blocks) == 7) {
      return t;
    }
    fail(ErrorCode::kInvalidArgument, "CONVJIT_IGEMM_TILE: expected 7 integers bm,bn,bk,stages,wm,wn,minblocks, got '{}'",
         env);
  }
  // TF32 fits 128 registers (two blocks an SM, measured 5.0 vs 6.9 ms on the headline);
  // 3xTF32 keeps a second accumulator set and runs one block an SM without spilling.
  const int blocks = split == 1 ? 2 : 1;
  if (k_per_group > 64) return {128, 128, 32, 3, 2, 4, blocks};
  if (k_per_group > 32) return {64, 128, 32, 4, 1, 4, 2};
  return {32, 128, 32, 4, 1, 4, 2};
}
}  // namespace

SpecializedSource specialize_implicit_gemm(const Conv2dDesc& d, const AlignmentNeeds& align) {
  if (d.dtype != DType::kFloat32) return specialize_implicit_gemm_f16(d, align);
  const auto out = d.output_shape();
  const int k_per_group = d.k / d.groups;
  const int split = d.math == MathMode::kStrictFp32 ? 3 : 1;
  const Tile tile = choose_tile(k_per_group, split);
  const std::int64_t gemm_n = out.n * out.p * out.q;
  const std::int64_t grid_x = (gemm_n + tile.bn - 1) / tile.bn;
  if (grid_x > INT_MAX) fail(ErrorCode::kUnsupported, "{}: {} pixel tiles exceed the grid", d.to_string(), grid_x);
  const bool wide = std::max({d.x_elements(), d.y_elements(), d.w_elements()}) > INT_MAX;
  const unsigned smem = static_cast<unsigned>(tile.stages *
                                              (tile.bm * (tile.bk + 4) + tile.bk * (tile.bn + 8)) * sizeof(float));

  SpecializedSource src;
  src.algorithm = "implicit_gemm";
  src.tile = fmt::format("{}x{}x{} (channels x pixels x reduction), {} stages, {}x{} warps, {}", tile.bm, tile.bn,
                         tile.bk, tile.stages, tile.warps_m, tile.warps_n, split == 3 ? "3xTF32" : "TF32");
  src.template_name = kTemplate;
  // 16-byte copies of W rows where every row is whole 16-byte chunks and w allows them.
  const bool wide_w = d.c / d.groups * d.r * d.s % 4 == 0;
  src.needs = {4, wide_w && align.w >= 16 ? 16u : 4u, 4, 4};
  src.kernel_name = fmt::format("conv2d_igemm_{}_{}_{}{}", split == 3 ? "3xtf32" : "tf32", to_string(d.layout),
                                problem_tag(d), alignment_tag(align, kFullAlignment));
  src.text = Prologue(src.kernel_name)
                 .problem(d)
                 .constant("kBM", tile.bm)
                 .constant("kBN", tile.bn)
                 .constant("kBK", tile.bk)
                 .constant("kStages", tile.stages)
                 .constant("kWarpsM", tile.warps_m)
                 .constant("kWarpsN", tile.warps_n)
                 .constant("kSplit", split)
                 .constant("kMinBlocksPerSm", tile.min_blocks)
                 .constant("kWideIndex", wide)
                 .constant("kAlignW", static_cast<int>(align.w))
                 .finish(template_text(kTemplate));
  src.geometry = {.grid_x = static_cast<std::uint64_t>(grid_x),
                  .grid_y = static_cast<unsigned>((k_per_group + tile.bm - 1) / tile.bm),
                  .grid_z = static_cast<unsigned>(d.groups),
                  .block_x = static_cast<unsigned>(tile.warps_m * tile.warps_n * 32),
                  .shared_bytes = smem};
  return src;
}

}  // namespace convjit
