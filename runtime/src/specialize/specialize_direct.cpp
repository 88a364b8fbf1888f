#include <fmt/format.h>

#include <algorithm>
#include <climits>

#include "base/fail.hpp"
#include "specialize/prologue.hpp"
#include "specialize/specialized_source.hpp"
#include "specialize/templates.hpp"

namespace convjit {

namespace {
constexpr const char* kDirectTemplate = "conv2d_direct.cu";
constexpr int kBlockThreads = 256;
// Eight channels per thread: each input load feeds eight FMAs while the
// accumulators stay in registers.
constexpr int kMaxKPerThread = 8;
}  // namespace

std::string direct_kernel_name(const Conv2dDesc& d) {
  return fmt::format("conv2d_direct_{}_{}_{}", to_string(d.dtype), to_string(d.layout), problem_tag(d));
}

Specialization specialize_direct(const Conv2dDesc& d) {
  // Few channels a group: a memory-bound problem, streamed by the depthwise kernel.
  if (!depthwise_unsupported_reason(d)) return specialize_depthwise(d);
  const auto out = d.output_shape();
  const int k_per_group = d.k / d.groups;
  const int k_per_thread = std::min(kMaxKPerThread, k_per_group);
  const std::int64_t k_blocks = std::int64_t{(k_per_group + k_per_thread - 1) / k_per_thread} * d.groups;
  // A strided transposed problem's blocks each take one depth and height phase of the
  // output (the template's kPhases), over the first phase's grid; a thread, stride_w
  // consecutive outputs along w.
  const std::int64_t phases = d.transposed ? std::int64_t{d.stride_d} * d.stride_h : 1;
  const auto phase_extent = [&](std::int64_t extent, int stride) {
    return d.transposed ? (extent + stride - 1) / stride : extent;
  };
  const std::int64_t phase_pixels =
      phase_extent(out.z, d.stride_d) * phase_extent(out.p, d.stride_h) * phase_extent(out.q, d.stride_w);
  const std::int64_t pixel_tiles = phases * ((phase_pixels + kBlockThreads - 1) / kBlockThreads);
  const std::int64_t blocks = k_blocks * pixel_tiles * d.n;
  if (blocks > INT_MAX) {
    fail(ErrorCode::kUnsupported, "{}: needs {} thread blocks, over the grid limit of {}", d.to_string(), blocks,
         INT_MAX);
  }
  const bool wide = std::max({d.x_elements(), d.y_elements(), d.w_elements()}) > INT_MAX;

  Specialization out_source;
  out_source.launch.algorithm = "direct";
  // Transposed: a block per depth and height phase, stride_w consecutive outputs a thread.
  const int out_w = d.transposed ? d.stride_w : 1;
  out_source.launch.tile =
      phases > 1 || out_w > 1
          ? fmt::format(
                "{} threads x {} channels per block, one of {} depth x height phases; {} consecutive output "
                "pixel(s) x {} channels per thread",
                kBlockThreads, k_per_thread, phases, out_w, k_per_thread)
          : fmt::format("{} output pixels x {} channels per block, 1 pixel x {} channels per thread", kBlockThreads,
                        k_per_thread, k_per_thread);
  out_source.source.template_name = kDirectTemplate;
  out_source.source.kernel_name = direct_kernel_name(d);
  out_source.source.text = Prologue(out_source.source.kernel_name)
                               .problem(d)
                               .constant("kBlockThreads", kBlockThreads)
                               .constant("kKPerThread", k_per_thread)
                               .constant("kWideIndex", wide)
                               .finish(template_text(kDirectTemplate));
  out_source.launch.geometry = {.grid_x = static_cast<std::uint64_t>(blocks),
                                .block_x = kBlockThreads,
                                .grid_x_per_image = static_cast<std::uint64_t>(k_blocks * pixel_tiles)};
  return out_source;
}

}  // namespace convjit
