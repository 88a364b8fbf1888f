#include "reference_check.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <limits>
#include <random>

#include "bench_util.hpp"
#include "tooling/tooling.hpp"

namespace convjit::bench {

namespace {

constexpr std::int64_t kGenChunk = std::int64_t{1} << 20;

// splitmix64: decorrelates the per-chunk seeds of one stream from the next.
std::uint64_t mix(std::uint64_t v) noexcept {
  v += 0x9e3779b97f4a7c15ull;
  v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ull;
  v = (v ^ (v >> 27)) * 0x94d049bb133111ebull;
  return v ^ (v >> 31);
}

// Chunks of 2^20 values, each from its own generator, so that the data depend on the
// seed alone and not on how many threads filled them.
std::vector<float> random_nonzero(std::int64_t count, std::uint64_t seed, float lo, float hi) {
  std::vector<float> out(static_cast<std::size_t>(count));
  const std::int64_t chunks = (count + kGenChunk - 1) / kGenChunk;
  parallel_for(chunks, [&](std::int64_t first, std::int64_t last) {
    for (std::int64_t chunk = first; chunk < last; ++chunk) {
      std::mt19937_64 rng(mix(seed ^ mix(static_cast<std::uint64_t>(chunk))));
      std::uniform_real_distribution<float> dist(lo, hi);
      const std::int64_t end = std::min(count, (chunk + 1) * kGenChunk);
      for (std::int64_t i = chunk * kGenChunk; i < end; ++i) {
        float v;
        do v = dist(rng);
        while (v == 0.0f);
        out[static_cast<std::size_t>(i)] = v;
      }
    }
  });
  return out;
}

}  // namespace

HostInputs random_inputs(const Conv2dDesc& d, std::uint64_t seed, bool positive) {
  HostInputs in;
  in.x = random_nonzero(d.x_elements(), mix(seed + 1), positive ? 0.0f : -1.0f, 1.0f);
  in.w = random_nonzero(d.w_elements(), mix(seed + 2), -1.0f, 1.0f);
  if (d.bias) in.bias = random_nonzero(d.k, mix(seed + 3), -1.0f, 1.0f);
  return in;
}

HostInputs rounded_to(const HostInputs& in, DType dtype) {
  if (dtype == DType::kFloat32) return in;
  auto round = [dtype](std::vector<float> v) {
    parallel_for(static_cast<std::int64_t>(v.size()), [&](std::int64_t first, std::int64_t last) {
      for (std::int64_t i = first; i < last; ++i) {
        float& e = v[static_cast<std::size_t>(i)];
        e = convjit::rounded_to(dtype, e);
      }
    });
    return v;
  };
  return HostInputs{round(in.x), round(in.w), round(in.bias)};
}

std::vector<unsigned char> encode(const std::vector<float>& values, DType dtype) {
  const std::size_t esz = size_of(dtype);
  std::vector<unsigned char> out(values.size() * esz);
  parallel_for(static_cast<std::int64_t>(values.size()), [&](std::int64_t first, std::int64_t last) {
    for (std::int64_t i = first; i < last; ++i) {
      store_element(out.data(), static_cast<std::size_t>(i), dtype, values[static_cast<std::size_t>(i)]);
    }
  });
  return out;
}

ReferenceSample::ReferenceSample(const Conv2dDesc& d, const HostInputs& in, int pixels, std::uint64_t seed) {
  const auto o = d.output_shape();
  const std::int64_t plane = o.z * o.p * o.q;
  const std::int64_t total_pixels = o.n * plane;
  std::vector<std::int64_t> chosen;
  if (total_pixels <= pixels) {
    full_ = true;
    chosen.resize(static_cast<std::size_t>(total_pixels));
    for (std::int64_t i = 0; i < total_pixels; ++i) chosen[static_cast<std::size_t>(i)] = i;
  } else {
    std::mt19937_64 rng(mix(seed + 4));
    std::uniform_int_distribution<std::int64_t> pick(0, total_pixels - 1);
    while (chosen.size() < static_cast<std::size_t>(pixels)) {
      chosen.push_back(pick(rng));
      if (chosen.size() == static_cast<std::size_t>(pixels)) {
        std::sort(chosen.begin(), chosen.end());
        chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
      }
    }
  }

  const std::int64_t cpg = d.c / d.groups;
  const std::int64_t kpg = d.k / d.groups;
  const std::int64_t filter = d.taps();  // t x r x s
  const std::int64_t taps = cpg * filter;
  const bool nhwc = d.layout == Layout::kNHWC;
  // The input coordinate tap `j` of output `out` reads along one dimension, or -1:
  // forward out * stride - pad + j * dilation; transposed the i with i * stride - pad +
  // j * dilation == out.
  auto source = [&](std::int64_t out, std::int64_t j, int in, int stride, int pad, int dilation) -> std::int64_t {
    if (!d.transposed) {
      const std::int64_t i = out * stride - pad + j * dilation;
      return i >= 0 && i < in ? i : -1;
    }
    const std::int64_t scaled = out + pad - j * dilation;
    if (scaled < 0 || scaled % stride != 0 || scaled / stride >= in) return -1;
    return scaled / stride;
  };
  // The weight of (output channel k in group g, input channel c in group, tap) as the
  // layout stores it: forward k,c,taps (NHWC k,taps,c); transposed c,k,taps (NHWC c,taps,k).
  auto weight_at = [&](std::int64_t g, std::int64_t kk, std::int64_t c, std::int64_t tap) -> std::int64_t {
    const std::int64_t block = g * kpg * taps;
    if (!d.transposed) return block + (nhwc ? kk * taps + tap * cpg + c : kk * taps + c * filter + tap);
    return block + (nhwc ? (c * filter + tap) * kpg + kk : (c * kpg + kk) * filter + tap);
  };
  const std::int64_t plane_in = std::int64_t{d.d} * d.h * d.w;
  const auto count = static_cast<std::size_t>(chosen.size() * o.k);
  std::vector<std::pair<std::int64_t, double>> entries(count);
  parallel_for(static_cast<std::int64_t>(chosen.size()), [&](std::int64_t first, std::int64_t last) {
    std::vector<double> patch(static_cast<std::size_t>(taps));
    for (std::int64_t i = first; i < last; ++i) {
      const std::int64_t pixel = chosen[static_cast<std::size_t>(i)];
      const std::int64_t n = pixel / plane, in_plane = pixel % plane;
      const std::int64_t z = in_plane / (o.p * o.q), p = in_plane / o.q % o.p, q = in_plane % o.q;
      for (std::int64_t g = 0; g < d.groups; ++g) {
        // The input window of this pixel and group once, zero where no input reaches
        // (padding, or a transposed tap between input positions), as (c, tap).
        for (std::int64_t c = 0; c < cpg; ++c) {
          for (std::int64_t t = 0; t < d.t; ++t) {
            const std::int64_t id = source(z, t, d.d, d.stride_d, d.pad_d, d.dilation_d);
            for (std::int64_t r = 0; r < d.r; ++r) {
              const std::int64_t ih = source(p, r, d.h, d.stride_h, d.pad_h, d.dilation_h);
              for (std::int64_t s = 0; s < d.s; ++s) {
                const std::int64_t iw = source(q, s, d.w, d.stride_w, d.pad_w, d.dilation_w);
                const bool inside = id >= 0 && ih >= 0 && iw >= 0;
                const std::int64_t channel = g * cpg + c;
                const std::int64_t spatial = (id * d.h + ih) * d.w + iw;
                const std::int64_t x_at =
                    nhwc ? (n * plane_in + spatial) * d.c + channel : (n * d.c + channel) * plane_in + spatial;
                patch[static_cast<std::size_t>(c * filter + (t * d.r + r) * d.s + s)] =
                    inside ? double(in.x[static_cast<std::size_t>(x_at)]) : 0.0;
              }
            }
          }
        }
        for (std::int64_t kk = 0; kk < kpg; ++kk) {
          const std::int64_t k = g * kpg + kk;
          double acc = in.bias.empty() ? 0.0 : double(in.bias[static_cast<std::size_t>(k)]);
          for (std::int64_t c = 0; c < cpg; ++c) {
            for (std::int64_t tap = 0; tap < filter; ++tap) {
              acc += patch[static_cast<std::size_t>(c * filter + tap)] *
                     double(in.w[static_cast<std::size_t>(weight_at(g, kk, c, tap))]);
            }
          }
          if (d.activation == Activation::kRelu) acc = std::max(acc, 0.0);
          const std::int64_t y_at = nhwc ? pixel * o.k + k : (n * o.k + k) * plane + in_plane;
          entries[static_cast<std::size_t>(i * o.k + k)] = {y_at, acc};
        }
      }
    }
  });
  std::sort(entries.begin(), entries.end());
  indices_.reserve(count);
  values_.reserve(count);
  for (const auto& [index, value] : entries) {
    indices_.push_back(index);
    values_.push_back(value);
  }
}

CheckResult check_device_output(CUdeviceptr y, DType dtype, std::int64_t count, const ReferenceSample& ref) {
  constexpr std::int64_t kChunk = std::int64_t{1} << 25;  // elements per copy: 128 MiB of f32
  const std::int64_t esz = static_cast<std::int64_t>(size_of(dtype));
  std::vector<unsigned char> host(static_cast<std::size_t>(std::min(count, kChunk) * esz));
  CheckResult out;
  out.full = ref.full();
  double diff2 = 0, ref2 = 0;
  std::size_t next = 0;  // first sampled index not yet compared
  const auto& indices = ref.indices();
  const auto& values = ref.values();
  for (std::int64_t start = 0; start < count; start += kChunk) {
    const std::int64_t n = std::min(kChunk, count - start);
    CONVJIT_CU_CHECK(cuMemcpyDtoH(host.data(), y + static_cast<CUdeviceptr>(start * esz), static_cast<size_t>(n * esz)),
                     "reading back outputs {}..{}", start, start + n);
    std::atomic<std::int64_t> bad{0};
    parallel_for(n, [&](std::int64_t first, std::int64_t last) {
      std::int64_t local = 0;
      for (std::int64_t i = first; i < last; ++i)
        local += !std::isfinite(load_element(host.data(), static_cast<std::size_t>(i), dtype));
      bad += local;
    });
    out.nonfinite += bad.load();
    for (; next < indices.size() && indices[next] < start + n; ++next) {
      const double got = load_element(host.data(), static_cast<std::size_t>(indices[next] - start), dtype);
      const double e = got - values[next];
      if (std::isfinite(e)) out.max_abs = std::max(out.max_abs, std::abs(e));
      diff2 += e * e;
      ref2 += values[next] * values[next];
      ++out.checked;
    }
  }
  if (out.nonfinite > 0) {
    out.rel_l2 = std::numeric_limits<double>::infinity();
  } else {
    out.rel_l2 = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  }
  return out;
}

}  // namespace convjit::bench
