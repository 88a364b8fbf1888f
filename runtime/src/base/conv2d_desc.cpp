#include "convjit/conv2d_desc.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <limits>

#include "base/fail.hpp"

namespace convjit {

std::string_view to_string(DType dtype) noexcept {
  switch (dtype) {
    case DType::kFloat32:
      return "f32";
    case DType::kFloat16:
      return "f16";
    case DType::kBFloat16:
      return "bf16";
  }
  return "?";
}

std::string_view to_string(Layout layout) noexcept {
  switch (layout) {
    case Layout::kNCHW:
      return "nchw";
    case Layout::kNHWC:
      return "nhwc";
  }
  return "?";
}

std::string_view to_string(MathMode math) noexcept { return math == MathMode::kTF32 ? "tf32" : "strict"; }

std::string_view to_string(Activation activation) noexcept { return activation == Activation::kRelu ? "relu" : "none"; }

std::size_t size_of(DType dtype) noexcept { return dtype == DType::kFloat32 ? 4 : 2; }

namespace {
// Output extent of one spatial dimension, PyTorch's formula; may be <= 0 for bad input.
std::int64_t out_extent(int in, int pad, int dilation, int kernel, int stride) noexcept {
  const std::int64_t span = std::int64_t{dilation} * (kernel - 1) + 1;
  const std::int64_t padded = std::int64_t{in} + 2 * std::int64_t{pad};
  if (stride <= 0 || padded < span) return 0;
  return (padded - span) / stride + 1;
}

void require_positive(std::string_view name, int value) {
  if (value < 1) fail(ErrorCode::kInvalidArgument, "Conv2dDesc.{}: expected >= 1, got {}", name, value);
}
}  // namespace

void Conv2dDesc::validate() const {
  require_positive("n", n);
  require_positive("c", c);
  require_positive("h", h);
  require_positive("w", w);
  require_positive("k", k);
  require_positive("r", r);
  require_positive("s", s);
  require_positive("stride_h", stride_h);
  require_positive("stride_w", stride_w);
  require_positive("dilation_h", dilation_h);
  require_positive("dilation_w", dilation_w);
  require_positive("groups", groups);
  if (pad_h < 0) fail(ErrorCode::kInvalidArgument, "Conv2dDesc.pad_h: expected >= 0, got {}", pad_h);
  if (pad_w < 0) fail(ErrorCode::kInvalidArgument, "Conv2dDesc.pad_w: expected >= 0, got {}", pad_w);
  if (c % groups != 0) {
    fail(ErrorCode::kInvalidArgument, "Conv2dDesc.groups: expected a divisor of c = {}, got {}", c, groups);
  }
  if (k % groups != 0) {
    fail(ErrorCode::kInvalidArgument, "Conv2dDesc.groups: expected a divisor of k = {}, got {}", k, groups);
  }
  // The kernels hold coordinates within one channel plane, and the reduction length, in
  // int; everything that multiplies past them is 64-bit (kWideIndex). So these are
  // bounded here, each naming its field, rather than overflowing in a kernel.
  constexpr std::int64_t kIntMax = std::numeric_limits<int>::max();
  if (std::int64_t{h} + 2 * std::int64_t{pad_h} > kIntMax) {
    fail(ErrorCode::kInvalidArgument, "Conv2dDesc.pad_h: h + 2 * pad_h = {} is over 2^31 - 1",
         std::int64_t{h} + 2 * std::int64_t{pad_h});
  }
  if (std::int64_t{w} + 2 * std::int64_t{pad_w} > kIntMax) {
    fail(ErrorCode::kInvalidArgument, "Conv2dDesc.pad_w: w + 2 * pad_w = {} is over 2^31 - 1",
         std::int64_t{w} + 2 * std::int64_t{pad_w});
  }
  if (std::int64_t{dilation_h} * (r - 1) + 1 > kIntMax) {
    fail(ErrorCode::kInvalidArgument, "Conv2dDesc.dilation_h: the dilated filter height {} is over 2^31 - 1",
         std::int64_t{dilation_h} * (r - 1) + 1);
  }
  if (std::int64_t{dilation_w} * (s - 1) + 1 > kIntMax) {
    fail(ErrorCode::kInvalidArgument, "Conv2dDesc.dilation_w: the dilated filter width {} is over 2^31 - 1",
         std::int64_t{dilation_w} * (s - 1) + 1);
  }
  if (std::int64_t{h} * w > kIntMax) {
    fail(ErrorCode::kInvalidArgument,
         "Conv2dDesc.h: an input plane of h x w = {} x {} = {} pixels is over 2^31 - 1, the kernels' per-plane index",
         h, w, std::int64_t{h} * w);
  }
  if (c % groups == 0 && std::int64_t{c / groups} * r * s > kIntMax) {
    fail(ErrorCode::kInvalidArgument, "Conv2dDesc.c: the reduction (c / groups) x r x s = {} is over 2^31 - 1",
         std::int64_t{c / groups} * r * s);
  }
  const auto out = output_shape();
  if (out.p < 1) {
    fail(ErrorCode::kInvalidArgument,
         "Conv2dDesc.h: padded input height {} + 2*{} is smaller than the dilated filter height {}", h, pad_h,
         std::int64_t{dilation_h} * (r - 1) + 1);
  }
  if (out.q < 1) {
    fail(ErrorCode::kInvalidArgument,
         "Conv2dDesc.w: padded input width {} + 2*{} is smaller than the dilated filter width {}", w, pad_w,
         std::int64_t{dilation_w} * (s - 1) + 1);
  }
  if (out.p * out.q > kIntMax) {
    fail(ErrorCode::kInvalidArgument,
         "Conv2dDesc.h: an output plane of p x q = {} x {} = {} pixels is over 2^31 - 1, the kernels' per-plane index",
         out.p, out.q, out.p * out.q);
  }
  // Kernels index with 64-bit offsets past 2^31 elements; beyond 2^62 even that overflows.
  constexpr std::int64_t kMaxElements = std::int64_t{1} << 62;
  const double biggest =
      std::max({double(n) * c * h * w, double(n) * k * out.p * out.q, double(k) * (c / groups) * r * s});
  if (biggest >= double(kMaxElements)) {
    fail(ErrorCode::kInvalidArgument, "Conv2dDesc: a tensor of {:.3g} elements is over the 2^62 limit", biggest);
  }
  // f32, f16 and bf16 all pass: every algorithm handles each of them.
  switch (dtype) {
    case DType::kFloat32:
    case DType::kFloat16:
    case DType::kBFloat16:
      break;
    default:
      fail(ErrorCode::kInvalidArgument, "Conv2dDesc.dtype: expected f32, f16 or bf16, got enum value {}",
           static_cast<int>(dtype));
  }
  // Which algorithms read a layout is the algorithms' business (unsupported_reason).
  switch (layout) {
    case Layout::kNCHW:
    case Layout::kNHWC:
      break;
    default:
      fail(ErrorCode::kInvalidArgument, "Conv2dDesc.layout: expected nchw or nhwc, got enum value {}",
           static_cast<int>(layout));
  }
}

Conv2dOutputShape Conv2dDesc::output_shape() const noexcept {
  return {n, k, out_extent(h, pad_h, dilation_h, r, stride_h), out_extent(w, pad_w, dilation_w, s, stride_w)};
}

std::int64_t Conv2dDesc::x_elements() const noexcept { return std::int64_t{n} * c * h * w; }
std::int64_t Conv2dDesc::w_elements() const noexcept { return std::int64_t{k} * (groups > 0 ? c / groups : 0) * r * s; }
std::int64_t Conv2dDesc::y_elements() const noexcept {
  const auto o = output_shape();
  return o.n * o.k * o.p * o.q;
}
double Conv2dDesc::flops() const noexcept {
  return 2.0 * static_cast<double>(y_elements()) * (groups > 0 ? c / groups : 0) * r * s;
}

std::string Conv2dDesc::to_string() const {
  std::string out = fmt::format("n{}c{}h{}w{}k{}r{}s{}", n, c, h, w, k, r, s);
  auto pair = [&](std::string_view name, int a, int b) {
    if (a == b) {
      fmt::format_to(std::back_inserter(out), " {}={}", name, a);
    } else {
      fmt::format_to(std::back_inserter(out), " {}={},{}", name, a, b);
    }
  };
  pair("stride", stride_h, stride_w);
  pair("pad", pad_h, pad_w);
  pair("dilation", dilation_h, dilation_w);
  fmt::format_to(std::back_inserter(out), " groups={} bias={} dtype={} layout={} math={}", groups, bias ? 1 : 0,
                 convjit::to_string(dtype), convjit::to_string(layout), convjit::to_string(math));
  if (activation != Activation::kNone)
    fmt::format_to(std::back_inserter(out), " act={}", convjit::to_string(activation));
  if (dynamic_batch) out += " batch=dynamic";
  return out;
}

std::size_t Conv2dDescHash::operator()(const Conv2dDesc& d) const noexcept {
  // FNV-1a over the fields: cheap enough for the hot path, exact equality decides.
  std::uint64_t hash = 1469598103934665603ull;
  auto mix = [&](std::uint64_t v) {
    hash ^= v;
    hash *= 1099511628211ull;
  };
  for (int v : {d.n, d.c, d.h, d.w, d.k, d.r, d.s, d.stride_h, d.stride_w, d.pad_h, d.pad_w, d.dilation_h, d.dilation_w,
                d.groups}) {
    mix(static_cast<std::uint32_t>(v));
  }
  mix(d.bias);
  mix(static_cast<std::uint64_t>(d.dtype));
  mix(static_cast<std::uint64_t>(d.layout));
  mix(static_cast<std::uint64_t>(d.math));
  mix(static_cast<std::uint64_t>(d.activation));
  mix(d.dynamic_batch);
  return static_cast<std::size_t>(hash);
}

}  // namespace convjit
