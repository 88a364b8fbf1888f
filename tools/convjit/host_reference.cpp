#include "host_reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <thread>

namespace convjit::cli {

namespace {
// Multiply-adds beyond which the whole output is no longer worth a CPU pass.
constexpr double kFullCheckMacs = 2e8;
constexpr std::int64_t kSampledPixels = 4096;

// Element offsets in desc.layout: NCHW x[n][c][d][h][w], y[n][k][z][p][q], and w
// [k][c/g][t][r][s] (transposed [c][k/g][t][r][s]); NHWC moves the channel innermost:
// x[n][d][h][w][c], y[n][z][p][q][k], w[k][t][r][s][c/g] (transposed [c][t][r][s][k/g]).
// `spatial` and `tap` are the flattened (d, h, w) and (t, r, s) indices.
std::size_t x_at(const Conv2dDesc& d, std::int64_t n, std::int64_t c, std::int64_t spatial) {
  const std::int64_t plane = std::int64_t{d.d} * d.h * d.w;
  if (d.layout == Layout::kNHWC) return static_cast<std::size_t>((n * plane + spatial) * d.c + c);
  return static_cast<std::size_t>((n * d.c + c) * plane + spatial);
}
std::size_t w_at(const Conv2dDesc& d, std::int64_t k, std::int64_t c, std::int64_t tap) {
  const std::int64_t c_per_group = d.c / d.groups, k_per_group = d.k / d.groups, taps = d.taps();
  if (d.transposed) {
    const std::int64_t ci = k / k_per_group * c_per_group + c, kk = k % k_per_group;
    if (d.layout == Layout::kNHWC) return static_cast<std::size_t>((ci * taps + tap) * k_per_group + kk);
    return static_cast<std::size_t>((ci * k_per_group + kk) * taps + tap);
  }
  if (d.layout == Layout::kNHWC) return static_cast<std::size_t>((k * taps + tap) * c_per_group + c);
  return static_cast<std::size_t>((k * c_per_group + c) * taps + tap);
}
std::size_t y_at(const Conv2dDesc& d, std::int64_t n, std::int64_t k, std::int64_t spatial) {
  const auto o = d.output_shape();
  const std::int64_t plane = o.z * o.p * o.q;
  if (d.layout == Layout::kNHWC) return static_cast<std::size_t>((n * plane + spatial) * o.k + k);
  return static_cast<std::size_t>((n * o.k + k) * plane + spatial);
}

// The input coordinate tap `j` of output `out` reads along one dimension, or -1: forward
// out * stride - pad + j * dilation; transposed the i with i * stride - pad + j * dilation
// == out.
std::int64_t source(bool transposed, std::int64_t out, std::int64_t j, int in, int stride, int pad, int dilation) {
  if (!transposed) {
    const std::int64_t i = out * stride - pad + j * dilation;
    return i >= 0 && i < in ? i : -1;
  }
  const std::int64_t scaled = out + pad - j * dilation;
  if (scaled < 0 || scaled % stride != 0 || scaled / stride >= in) return -1;
  return scaled / stride;
}

double reference_at(const Conv2dDesc& d, const std::vector<float>& x, const std::vector<float>& w,
                    const std::vector<float>& bias, std::int64_t n, std::int64_t k, std::int64_t z, std::int64_t p,
                    std::int64_t q) {
  const int c_per_group = d.c / d.groups;
  const int k_per_group = d.k / d.groups;
  const std::int64_t group = k / k_per_group;
  double acc = d.bias ? double(bias[static_cast<std::size_t>(k)]) : 0.0;
  for (int ci = 0; ci < c_per_group; ++ci) {
    const std::int64_t c = group * c_per_group + ci;
    for (int t = 0; t < d.t; ++t) {
      const std::int64_t id = source(d.transposed, z, t, d.d, d.stride_d, d.pad_d, d.dilation_d);
      if (id < 0) continue;
      for (int r = 0; r < d.r; ++r) {
        const std::int64_t ih = source(d.transposed, p, r, d.h, d.stride_h, d.pad_h, d.dilation_h);
        if (ih < 0) continue;
        for (int s = 0; s < d.s; ++s) {
          const std::int64_t iw = source(d.transposed, q, s, d.w, d.stride_w, d.pad_w, d.dilation_w);
          if (iw < 0) continue;
          const std::int64_t tap = (std::int64_t{t} * d.r + r) * d.s + s;
          acc += double(x[x_at(d, n, c, (id * d.h + ih) * d.w + iw)]) * double(w[w_at(d, k, ci, tap)]);
        }
      }
    }
  }
  return d.activation == Activation::kRelu ? std::max(acc, 0.0) : acc;
}

struct Partial {
  double diff2 = 0;
  double ref2 = 0;
  double max_abs = 0;
  std::int64_t checked = 0;
};
}  // namespace

CheckResult check_against_reference(const Conv2dDesc& d, const std::vector<float>& x, const std::vector<float>& w,
                                    const std::vector<float>& bias, const std::vector<float>& y, std::uint64_t seed) {
  const auto o = d.output_shape();
  const std::int64_t plane = o.z * o.p * o.q;
  const std::int64_t pixels = o.n * plane;
  const double macs = static_cast<double>(d.y_elements()) * (d.c / d.groups) * d.taps();
  const bool full = macs <= kFullCheckMacs;

  // The pixels (n, z, p, q) to check, each with all k output channels.
  std::vector<std::int64_t> chosen;
  if (full) {
    chosen.resize(static_cast<std::size_t>(pixels));
    for (std::int64_t i = 0; i < pixels; ++i) chosen[static_cast<std::size_t>(i)] = i;
  } else {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<std::int64_t> pick(0, pixels - 1);
    for (std::int64_t i = 0; i < kSampledPixels; ++i) chosen.push_back(pick(rng));
  }

  const unsigned threads = std::max(1u, std::min<unsigned>(std::thread::hardware_concurrency(), 64));
  std::vector<Partial> partial(threads);
  {
    std::vector<std::jthread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        Partial& mine = partial[t];
        for (std::size_t i = t; i < chosen.size(); i += threads) {
          const std::int64_t pixel = chosen[i];
          const std::int64_t n = pixel / plane, spatial = pixel % plane;
          const std::int64_t z = spatial / (o.p * o.q), p = spatial / o.q % o.p, q = spatial % o.q;
          for (std::int64_t k = 0; k < o.k; ++k) {
            const double ref = reference_at(d, x, w, bias, n, k, z, p, q);
            const double got = y[y_at(d, n, k, spatial)];
            const double e = std::isfinite(got) ? std::abs(got - ref) : std::numeric_limits<double>::infinity();
            mine.diff2 += e * e;
            mine.ref2 += ref * ref;
            mine.max_abs = std::max(mine.max_abs, e);
            ++mine.checked;
          }
        }
      });
    }
  }
  Partial sum;
  for (const auto& p : partial) {
    sum.diff2 += p.diff2;
    sum.ref2 += p.ref2;
    sum.max_abs = std::max(sum.max_abs, p.max_abs);
    sum.checked += p.checked;
  }
  const double rel = sum.ref2 > 0 ? std::sqrt(sum.diff2 / sum.ref2) : std::sqrt(sum.diff2);
  return CheckResult{rel, sum.max_abs, sum.checked, full};
}

}  // namespace convjit::cli
