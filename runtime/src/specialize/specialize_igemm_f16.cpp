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
constexpr const char* kTemplate = "conv2d_igemm_f16.cu";

struct Tile {
  int bm, bn, bk, warps_m, warps_n, min_blocks;
};

void check_tile(const Tile& t, std::string_view where) {
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

// The reduction of one tile is 32 deep; the channel tile follows the group's output
// channels, so few rows are padding. The gather of X costs the same per tile whatever
// kBM is, so the biggest channel tile that is not mostly padding pays best: 128 rows
// (8 warps of 64x32, two blocks an SM) for more than 64 channels.
Tile choose_tile(int k_per_group) {
  // NOTE: a development override for tuning runs; it changes the source, so the cache
  // key changes with it. "bm,bn,bk,warps_m,warps_n,min_blocks".
  if (const char* env = std::getenv("CONVJIT_IGEMM_F16_TILE"); env != nullptr && *env != '\0') {
    Tile t{};
    if (std::sscanf(env, "%d,%d,%d,%d,%d,%d", &t.bm, &t.bn, &t.bk, &t.warps_m, &t.warps_n, &t.min_blocks) != 6) {
      fail(ErrorCode::kInvalidArgument,
           "CONVJIT_IGEMM_F16_TILE: expected 6 integers bm,bn,bk,warps_m,warps_n,min_blocks, got '{}'", env);
    }
    check_tile(t, "CONVJIT_IGEMM_F16_TILE");
    return t;
  }
  if (k_per_group > 64) return {128, 128, 32, 2, 4, 2};
  if (k_per_group > 32) return {64, 128, 32, 2, 4, 2};
  if (k_per_group > 16) return {32, 128, 32, 1, 4, 3};
  return {16, 128, 32, 1, 4, 4};
}
}  // namespace

SpecializedSource specialize_implicit_gemm_f16(const Conv2dDesc& d, const AlignmentNeeds& align) {
  if (d.dtype != DType::kFloat16 && d.dtype != DType::kBFloat16) {
    fail(ErrorCode::kInternal, "specialize_implicit_gemm_f16: {} is not 16-bit data", d.to_string());
  }
  const auto out = d.output_shape();
  const int k_per_group = d.k / d.groups;
  const Tile tile = choose_tile(k_per_group);
  const std::int64_t gemm_n = out.n * out.p * out.q;
  const std::int64_t grid_x = (gemm_n + tile.bn - 1) / tile.bn;
  if (grid_x > INT_MAX) fail(ErrorCode::kUnsupported, "{}: {} pixel tiles exceed the grid", d.to_string(), grid_x);
  const bool wide = std::max({d.x_elements(), d.y_elements(), d.w_elements()}) > INT_MAX;
  // Two stages of W (kBM x (kBK + 8)) and X (kBK x (kBN + 8)), 2 bytes an element.
  const unsigned smem = static_cast<unsigned>(2 * (tile.bm * (tile.bk + 8) + tile.bk * (tile.bn + 8)) * 2);
  const std::string_view type = to_string(d.dtype);

  SpecializedSource src;
  src.algorithm = "implicit_gemm";
  src.tile = fmt::format("{}x{}x{} (channels x pixels x reduction), 2 stages, {}x{} warps, {} mma m16n8k16, fp32 "
                         "accumulation",
                         tile.bm, tile.bn, tile.bk, tile.warps_m, tile.warps_n, type);
  src.template_name = kTemplate;
  // The template's kWeightsAsync (16-byte copies of whole W rows) and kPairStores
  // (two outputs a 32-bit store), each as far as the pointers allow.
  const bool async_w = d.c / d.groups * d.r * d.s % 8 == 0;
  const bool pair_y = out.p * out.q % 2 == 0;
  src.needs = {2, async_w && align.w >= 16 ? 16u : 2u, 2, pair_y && align.y >= 4 ? 4u : 2u};
  src.kernel_name =
      fmt::format("conv2d_igemm_{}_{}_{}{}", type, to_string(d.layout), problem_tag(d), alignment_tag(align, kFullAlignment));
  src.text = Prologue(src.kernel_name)
                 .problem(d)
                 .constant("kBM", tile.bm)
                 .constant("kBN", tile.bn)
                 .constant("kBK", tile.bk)
                 .constant("kWarpsM", tile.warps_m)
                 .constant("kWarpsN", tile.warps_n)
                 .constant("kMinBlocksPerSm", tile.min_blocks)
                 .constant("kWideIndex", wide)
                 .constant("kAlignW", static_cast<int>(align.w))
                 .constant("kAlignY", static_cast<int>(align.y))
                 .finish(template_text(kTemplate));
  src.geometry = {.grid_x = static_cast<std::uint64_t>(grid_x),
                  .grid_y = static_cast<unsigned>((k_per_group + tile.bm - 1) / tile.bm),
                  .grid_z = static_cast<unsigned>(d.groups),
                  .block_x = static_cast<unsigned>(tile.warps_m * tile.warps_n * 32),
                  .shared_bytes = smem};
  return src;
}

}  // namespace convjit
