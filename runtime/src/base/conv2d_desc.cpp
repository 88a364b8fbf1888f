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

// nn.ConvTranspose*d's output extent; may be <= 0 for bad input.
std::int64_t transposed_extent(int in, int pad, int dilation, int kernel, int stride, int output_padding) noexcept {
  const std::int64_t out = (std::int64_t{in} - 1) * stride - 2 * std::int64_t{pad} +
                           std::int64_t{dilation} * (kernel - 1) + output_padding + 1;
  return out > 0 ? out : 0;
}

void require_positive(std::string_view name, int value) {
  if (value < 1) fail(ErrorCode::kInvalidArgument, "Conv2dDesc.{}: expected >= 1, got {}", name, value);
}

// A field a lower rank does not have must keep its neutral value.
void require_neutral(std::string_view name, int value, int neutral, int dims) {
  if (value != neutral) {
    fail(ErrorCode::kInvalidArgument, "Conv2dDesc.{}: expected {} for a {}-D convolution (spatial_dims {}), got {}",
         name, neutral, dims, dims, value);
  }
}

struct Dim {
  std::string_view in, kernel, stride, pad, dilation, output_padding;
};
}  // namespace

void Conv2dDesc::validate() const {
  if (spatial_dims < 1 || spatial_dims > 3) {
    fail(ErrorCode::kInvalidArgument, "Conv2dDesc.spatial_dims: expected 1, 2 or 3, got {}", spatial_dims);
  }
  require_positive("n", n);
  require_positive("c", c);
  require_positive("d", d);
  require_positive("h", h);
  require_positive("w", w);
  require_positive("k", k);
  require_positive("t", t);
  require_positive("r", r);
  require_positive("s", s);
  require_positive("stride_d", stride_d);
  require_positive("stride_h", stride_h);
  require_positive("stride_w", stride_w);
  require_positive("dilation_d", dilation_d);
  require_positive("dilation_h", dilation_h);
  require_positive("dilation_w", dilation_w);
  require_positive("groups", groups);
  if (pad_d < 0) fail(ErrorCode::kInvalidArgument, "Conv2dDesc.pad_d: expected >= 0, got {}", pad_d);
  if (pad_h < 0) fail(ErrorCode::kInvalidArgument, "Conv2dDesc.pad_h: expected >= 0, got {}", pad_h);
  if (pad_w < 0) fail(ErrorCode::kInvalidArgument, "Conv2dDesc.pad_w: expected >= 0, got {}", pad_w);
  // A lower rank is the higher one with extents 1: the fields it lacks keep the values
  // that make that so, and the kernels fold them away.
  if (spatial_dims < 3) {
    require_neutral("d", d, 1, spatial_dims);
    require_neutral("t", t, 1, spatial_dims);
    require_neutral("stride_d", stride_d, 1, spatial_dims);
    require_neutral("pad_d", pad_d, 0, spatial_dims);
    require_neutral("dilation_d", dilation_d, 1, spatial_dims);
    require_neutral("output_padding_d", output_padding_d, 0, spatial_dims);
  }
  if (spatial_dims < 2) {
    require_neutral("h", h, 1, spatial_dims);
    require_neutral("r", r, 1, spatial_dims);
    require_neutral("stride_h", stride_h, 1, spatial_dims);
    require_neutral("pad_h", pad_h, 0, spatial_dims);
    require_neutral("dilation_h", dilation_h, 1, spatial_dims);
    require_neutral("output_padding_h", output_padding_h, 0, spatial_dims);
  }
  const struct {
    std::string_view name;
    int value, stride, dilation;
  } output_paddings[] = {{"output_padding_d", output_padding_d, stride_d, dilation_d},
                         {"output_padding_h", output_padding_h, stride_h, dilation_h},
                         {"output_padding_w", output_padding_w, stride_w, dilation_w}};
  for (const auto& op : output_paddings) {
    if (!transposed && op.value != 0) {
      fail(ErrorCode::kInvalidArgument,
           "Conv2dDesc.{}: expected 0 for a forward convolution (transposed = false), got {}", op.name, op.value);
    }
    if (op.value < 0) fail(ErrorCode::kInvalidArgument, "Conv2dDesc.{}: expected >= 0, got {}", op.name, op.value);
    // PyTorch's rule: the extra extent must stay below the stride or the dilation.
    if (op.value > 0 && op.value >= op.stride && op.value >= op.dilation) {
      fail(ErrorCode::kInvalidArgument,
           "Conv2dDesc.{}: expected less than the stride ({}) or the dilation ({}) of its dimension, got {}", op.name,
           op.stride, op.dilation, op.value);
    }
  }
  if (c % groups != 0) {
    fail(ErrorCode::kInvalidArgument, "Conv2dDesc.groups: expected a divisor of c = {}, got {}", c, groups);
  }
  if (k % groups != 0) {
    fail(ErrorCode::kInvalidArgument, "Conv2dDesc.groups: expected a divisor of k = {}, got {}", k, groups);
  }
  // The kernels hold coordinates within one channel plane (volume), and the reduction
  // length, in int; everything that multiplies past them is 64-bit (kWideIndex). So these
  // are bounded here, each naming its field, rather than overflowing in a kernel.
  constexpr std::int64_t kIntMax = std::numeric_limits<int>::max();
  const struct {
    std::string_view pad_name, dilation_name, extent;
    int in, pad, dilation, kernel;
  } dims[] = {{"pad_d", "dilation_d", "depth", d, pad_d, dilation_d, t},
              {"pad_h", "dilation_h", "height", h, pad_h, dilation_h, r},
              {"pad_w", "dilation_w", "width", w, pad_w, dilation_w, s}};
  for (const auto& dim : dims) {
    if (std::int64_t{dim.in} + 2 * std::int64_t{dim.pad} > kIntMax) {
      fail(ErrorCode::kInvalidArgument, "Conv2dDesc.{}: {} + 2 * {} = {} is over 2^31 - 1", dim.pad_name,
           dim.pad_name.substr(4), dim.pad_name, std::int64_t{dim.in} + 2 * std::int64_t{dim.pad});
    }
    if (std::int64_t{dim.dilation} * (dim.kernel - 1) + 1 > kIntMax) {
      fail(ErrorCode::kInvalidArgument, "Conv2dDesc.{}: the dilated filter {} {} is over 2^31 - 1", dim.dilation_name,
           dim.extent, std::int64_t{dim.dilation} * (dim.kernel - 1) + 1);
    }
  }
  if (std::int64_t{d} * h * w > kIntMax) {
    fail(ErrorCode::kInvalidArgument,
         "Conv2dDesc.h: an input plane of d x h x w = {} x {} x {} = {} pixels is over 2^31 - 1, the kernels' "
         "per-plane index",
         d, h, w, std::int64_t{d} * h * w);
  }
  const std::int64_t reduction = std::int64_t{c / groups} * t * r * s;
  if (c % groups == 0 && reduction > kIntMax) {
    fail(ErrorCode::kInvalidArgument, "Conv2dDesc.c: the reduction (c / groups) x t x r x s = {} is over 2^31 - 1",
         reduction);
  }
  const auto out = output_shape();
  const struct {
    std::int64_t extent;
    std::string_view field, what;
    int in, pad, span;
  } outs[] = {{out.z, "d", "depth", d, pad_d, dilation_d * (t - 1) + 1},
              {out.p, "h", "height", h, pad_h, dilation_h * (r - 1) + 1},
              {out.q, "w", "width", w, pad_w, dilation_w * (s - 1) + 1}};
  for (const auto& o : outs) {
    if (o.extent >= 1) continue;
    if (transposed) {
      fail(ErrorCode::kInvalidArgument,
           "Conv2dDesc.{}: the transposed output {} (in - 1) * stride - 2 * pad + dilated filter + output_padding is "
           "{} < 1 (pad {} too large)",
           o.field, o.what, o.extent, o.pad);
    }
    fail(ErrorCode::kInvalidArgument,
         "Conv2dDesc.{}: padded input {} {} + 2*{} is smaller than the dilated filter {} {}", o.field, o.what, o.in,
         o.pad, o.what, o.span);
  }
  if (out.z * out.p * out.q > kIntMax) {
    fail(ErrorCode::kInvalidArgument,
         "Conv2dDesc.h: an output plane of z x p x q = {} x {} x {} = {} pixels is over 2^31 - 1, the kernels' "
         "per-plane index",
         out.z, out.p, out.q, out.z * out.p * out.q);
  }
  // Kernels index with 64-bit offsets past 2^31 elements; beyond 2^62 even that overflows.
  constexpr std::int64_t kMaxElements = std::int64_t{1} << 62;
  const double biggest = std::max(
      {double(n) * c * d * h * w, double(n) * k * out.z * out.p * out.q, double(k) * (c / groups) * t * r * s});
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
  if (transposed) {
    return {n, k, transposed_extent(h, pad_h, dilation_h, r, stride_h, output_padding_h),
            transposed_extent(w, pad_w, dilation_w, s, stride_w, output_padding_w),
            transposed_extent(d, pad_d, dilation_d, t, stride_d, output_padding_d)};
  }
  return {n, k, out_extent(h, pad_h, dilation_h, r, stride_h), out_extent(w, pad_w, dilation_w, s, stride_w),
          out_extent(d, pad_d, dilation_d, t, stride_d)};
}

std::int64_t Conv2dDesc::x_elements() const noexcept { return std::int64_t{n} * c * d * h * w; }
std::int64_t Conv2dDesc::w_elements() const noexcept {
  // Forward k x c/g x taps; transposed c x k/g x taps: the same count.
  return std::int64_t{k} * (groups > 0 ? c / groups : 0) * t * r * s;
}
std::int64_t Conv2dDesc::y_elements() const noexcept {
  const auto o = output_shape();
  return o.n * o.k * o.z * o.p * o.q;
}
double Conv2dDesc::flops() const noexcept {
  if (groups <= 0) return 0.0;
  // Transposed: every input element meets k/g filters of t*r*s taps, the count cuDNN and
  // PyTorch's profiler use for the data gradient (taps landing in the cropped border
  // included).
  if (transposed) return 2.0 * static_cast<double>(x_elements()) * (k / groups) * t * r * s;
  return 2.0 * static_cast<double>(y_elements()) * (c / groups) * t * r * s;
}

std::string Conv2dDesc::to_string() const {
  std::string out;
  if (spatial_dims == 1) {
    out = fmt::format("n{}c{}w{}k{}s{}", n, c, w, k, s);
  } else if (spatial_dims == 3) {
    out = fmt::format("n{}c{}d{}h{}w{}k{}t{}r{}s{}", n, c, d, h, w, k, t, r, s);
  } else {
    out = fmt::format("n{}c{}h{}w{}k{}r{}s{}", n, c, h, w, k, r, s);
  }
  // One value when every dimension has it, as PyTorch's int-or-tuple arguments.
  auto dims = [&](std::string_view name, int a_d, int a_h, int a_w) {
    if (spatial_dims == 1 || (a_h == a_w && (spatial_dims == 2 || a_d == a_h))) {
      fmt::format_to(std::back_inserter(out), " {}={}", name, a_w);
    } else if (spatial_dims == 2) {
      fmt::format_to(std::back_inserter(out), " {}={},{}", name, a_h, a_w);
    } else {
      fmt::format_to(std::back_inserter(out), " {}={},{},{}", name, a_d, a_h, a_w);
    }
  };
  dims("stride", stride_d, stride_h, stride_w);
  dims("pad", pad_d, pad_h, pad_w);
  dims("dilation", dilation_d, dilation_h, dilation_w);
  fmt::format_to(std::back_inserter(out), " groups={} bias={} dtype={} layout={} math={}", groups, bias ? 1 : 0,
                 convjit::to_string(dtype), convjit::to_string(layout), convjit::to_string(math));
  if (activation != Activation::kNone)
    fmt::format_to(std::back_inserter(out), " act={}", convjit::to_string(activation));
  if (transposed) {
    out += " transposed=1";
    if (output_padding_d != 0 || output_padding_h != 0 || output_padding_w != 0)
      dims("output_padding", output_padding_d, output_padding_h, output_padding_w);
  }
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
  for (int v : {d.n,
                d.c,
                d.h,
                d.w,
                d.k,
                d.r,
                d.s,
                d.stride_h,
                d.stride_w,
                d.pad_h,
                d.pad_w,
                d.dilation_h,
                d.dilation_w,
                d.groups,
                d.spatial_dims,
                d.d,
                d.t,
                d.stride_d,
                d.pad_d,
                d.dilation_d,
                d.output_padding_d,
                d.output_padding_h,
                d.output_padding_w}) {
    mix(static_cast<std::uint32_t>(v));
  }
  mix(d.transposed);
  mix(d.bias);
  mix(static_cast<std::uint64_t>(d.dtype));
  mix(static_cast<std::uint64_t>(d.layout));
  mix(static_cast<std::uint64_t>(d.math));
  mix(static_cast<std::uint64_t>(d.activation));
  mix(d.dynamic_batch);
  return static_cast<std::size_t>(hash);
}

}  // namespace convjit
