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

// Element offsets in desc.layout: NCHW x[n][c][h][w], w[k][c/g][r][s], y[n][k][p][q];
// NHWC x[n][h][w][c], w[k][r][s][c/g], y[n][p][q][k].
std::size_t x_at(const Conv2dDesc& d, std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) {
  if (d.layout == Layout::kNHWC) return static_cast<std::size_t>(((n * d.h + h) * d.w + w) * d.c + c);
  return static_cast<std::size_t>(((n * d.c + c) * d.h + h) * d.w + w);
}
std::size_t w_at(const Conv2dDesc& d, std::int64_t k, std::int64_t c, std::int64_t r, std::int64_t s) {
  const std::int64_t c_per_group = d.c / d.groups;
  if (d.layout == Layout::kNHWC) return static_cast<std::size_t>(((k * d.r + r) * d.s + s) * c_per_group + c);
  return static_cast<std::size_t>(((k * c_per_group + c) * d.r + r) * d.s + s);
}
std::size_t y_at(const Conv2dDesc& d, std::int64_t n, std::int64_t k, std::int64_t p, std::int64_t q) {
  const auto o = d.output_shape();
  if (d.layout == Layout::kNHWC) return static_cast<std::size_t>(((n * o.p + p) * o.q + q) * o.k + k);
  return static_cast<std::size_t>(((n * o.k + k) * o.p + p) * o.q + q);
}

double reference_at(const Conv2dDesc& d, const std::vector<float>& x, const std::vector<float>& w,
                    const std::vector<float>& bias, std::int64_t n, std::int64_t k, std::int64_t p, std::int64_t q) {
  const int c_per_group = d.c / d.groups;
  const int k_per_group = d.k / d.groups;
  const std::int64_t group = k / k_per_group;
  double acc = d.bias ? double(bias[static_cast<std::size_t>(k)]) : 0.0;
  for (int ci = 0; ci < c_per_group; ++ci) {
    const std::int64_t c = group * c_per_group + ci;
    for (int r = 0; r < d.r; ++r) {
      const std::int64_t ih = p * d.stride_h - d.pad_h + std::int64_t{r} * d.dilation_h;
      if (ih < 0 || ih >= d.h) continue;
      for (int s = 0; s < d.s; ++s) {
        const std::int64_t iw = q * d.stride_w - d.pad_w + std::int64_t{s} * d.dilation_w;
        if (iw < 0 || iw >= d.w) continue;
        acc += double(x[x_at(d, n, c, ih, iw)]) * double(w[w_at(d, k, ci, r, s)]);
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
  const std::int64_t pixels = o.n * o.p * o.q;
  const double macs = static_cast<double>(d.y_elements()) * (d.c / d.groups) * d.r * d.s;
  const bool full = macs <= kFullCheckMacs;

  // The pixels (n, p, q) to check, each with all k output channels.
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
          const std::int64_t n = pixel / (o.p * o.q), p = pixel / o.q % o.p, q = pixel % o.q;
          for (std::int64_t k = 0; k < o.k; ++k) {
            const double ref = reference_at(d, x, w, bias, n, k, p, q);
            const double got = y[y_at(d, n, k, p, q)];
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
