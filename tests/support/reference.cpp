#include "support/reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>

#include "base/float16.hpp"

namespace convjit::testing {

std::vector<float> random_nonzero(std::size_t count, std::mt19937_64& rng, float lo, float hi, DType dtype) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> out(count);
  for (auto& v : out) {
    do {
      v = rounded_to(dtype, dist(rng));
    } while (v == 0.0f);
  }
  return out;
}

namespace {
// The input coordinate that tap `tap` of output coordinate `out` reads along one
// dimension, or -1: forward out * stride - pad + tap * dilation; transposed the i with
// i * stride - pad + tap * dilation == out (the definition, not the kernels' form).
std::int64_t source(bool transposed, std::int64_t out, std::int64_t tap, int in, int stride, int pad, int dilation) {
  if (!transposed) {
    const std::int64_t i = out * stride - pad + tap * dilation;
    return i >= 0 && i < in ? i : -1;
  }
  for (std::int64_t i = 0; i < in; ++i) {
    if (i * stride - pad + tap * dilation == out) return i;
  }
  return -1;
}
}  // namespace

double reference_at(const Conv2dDesc& d, const std::vector<float>& x, const std::vector<float>& w,
                    const std::vector<float>& bias, std::int64_t n, std::int64_t k, std::int64_t p, std::int64_t q) {
  return reference_at(d, x, w, bias, n, k, 0, p, q);
}

double reference_at(const Conv2dDesc& d, const std::vector<float>& x, const std::vector<float>& w,
                    const std::vector<float>& bias, std::int64_t n, std::int64_t k, std::int64_t z, std::int64_t p,
                    std::int64_t q) {
  const std::int64_t cpg = d.c / d.groups;
  const std::int64_t kpg = d.k / d.groups;
  const std::int64_t g = k / kpg;
  double acc = bias.empty() ? 0.0 : static_cast<double>(bias[k]);
  for (std::int64_t c = 0; c < cpg; ++c) {
    const std::int64_t ci = g * cpg + c;
    for (std::int64_t t = 0; t < d.t; ++t) {
      const std::int64_t id = source(d.transposed, z, t, d.d, d.stride_d, d.pad_d, d.dilation_d);
      if (id < 0) continue;
      for (std::int64_t r = 0; r < d.r; ++r) {
        const std::int64_t ih = source(d.transposed, p, r, d.h, d.stride_h, d.pad_h, d.dilation_h);
        if (ih < 0) continue;
        for (std::int64_t s = 0; s < d.s; ++s) {
          const std::int64_t iw = source(d.transposed, q, s, d.w, d.stride_w, d.pad_w, d.dilation_w);
          if (iw < 0) continue;
          // Forward w[k][c / g][t][r][s]; transposed w[c][k / g][t][r][s] (PyTorch's).
          const std::int64_t filter = d.transposed ? ci * kpg + k % kpg : k * cpg + c;
          acc += static_cast<double>(x[(((n * d.c + ci) * d.d + id) * d.h + ih) * d.w + iw]) *
                 static_cast<double>(w[((filter * d.t + t) * d.r + r) * d.s + s]);
        }
      }
    }
  }
  return d.activation == Activation::kRelu ? std::max(acc, 0.0) : acc;
}

std::vector<double> reference_conv2d(const Conv2dDesc& d, const std::vector<float>& x, const std::vector<float>& w,
                                     const std::vector<float>& bias) {
  const auto o = d.output_shape();
  const std::int64_t planes = o.n * o.k;
  const std::int64_t plane = o.z * o.p * o.q;
  std::vector<double> y(static_cast<std::size_t>(planes * plane));
  // Each output is its own sum, so threads over (n, k) planes give the same numbers; the
  // GPU suite's larger problems wait on this reference, not on the GPU.
  auto fill = [&](std::int64_t first, std::int64_t last) {
    for (std::int64_t nk = first; nk < last; ++nk) {
      std::size_t i = static_cast<std::size_t>(nk * plane);
      for (std::int64_t z = 0; z < o.z; ++z)
        for (std::int64_t p = 0; p < o.p; ++p)
          for (std::int64_t q = 0; q < o.q; ++q) y[i++] = reference_at(d, x, w, bias, nk / o.k, nk % o.k, z, p, q);
    }
  };
  const std::int64_t work = planes * plane * d.c / d.groups * d.t * d.r * d.s;
  const std::int64_t threads = work < (std::int64_t{1} << 22)
                                   ? 1
                                   : std::min<std::int64_t>(planes, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (std::int64_t t = 1; t < threads; ++t) pool.emplace_back(fill, planes * t / threads, planes * (t + 1) / threads);
  fill(0, planes / threads);
  for (auto& t : pool) t.join();
  return y;
}

double relative_l2(const std::vector<float>& out, const std::vector<double>& ref) {
  if (out.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double diff = 0;
  double norm = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return std::numeric_limits<double>::infinity();
    const double e = static_cast<double>(out[i]) - ref[i];
    diff += e * e;
    norm += ref[i] * ref[i];
  }
  return norm == 0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

namespace {
// Moves dimension 1 of an [a][b][rest] tensor last ([a][rest][b]), or back (inverse).
std::vector<float> move_dim1(const std::vector<float>& v, std::int64_t a, std::int64_t b, std::int64_t rest,
                             bool inverse) {
  std::vector<float> out(v.size());
  for (std::int64_t i = 0; i < a; ++i) {
    for (std::int64_t j = 0; j < b; ++j) {
      for (std::int64_t k = 0; k < rest; ++k) {
        const std::int64_t first = (i * b + j) * rest + k;  // [a][b][rest]
        const std::int64_t last = (i * rest + k) * b + j;   // [a][rest][b]
        if (inverse) {
          out[first] = v[last];
        } else {
          out[last] = v[first];
        }
      }
    }
  }
  return out;
}
}  // namespace

std::vector<float> x_in_layout(const Conv2dDesc& d, const std::vector<float>& x) {
  if (d.layout == Layout::kNCHW) return x;
  return move_dim1(x, d.n, d.c, std::int64_t{d.d} * d.h * d.w, false);
}

std::vector<float> w_in_layout(const Conv2dDesc& d, const std::vector<float>& w) {
  if (d.layout == Layout::kNCHW) return w;
  if (d.transposed) return move_dim1(w, d.c, d.k / d.groups, d.taps(), false);
  return move_dim1(w, d.k, d.c / d.groups, d.taps(), false);
}

std::vector<float> y_from_layout(const Conv2dDesc& d, const std::vector<float>& y) {
  if (d.layout == Layout::kNCHW) return y;
  const auto o = d.output_shape();
  return move_dim1(y, o.n, o.k, o.z * o.p * o.q, true);
}

}  // namespace convjit::testing
