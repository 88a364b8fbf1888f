// Issue 12 on a real GPU: tensors past 2^31 elements in x, in y, and one image whose
// c x H x W passes 2^31, through every algorithm that accepts them, TF32 and strict,
// checked against float64 on sampled outputs. The data come from a counter-based hash,
// so the host recomputes any input it needs for a sample and never holds a 9 GB copy.
#include <cuda_runtime.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <thread>

#include "convjit/convjit.hpp"
#include "support/gpu.hpp"
#include "support/temp_dir.hpp"

namespace convjit {
namespace {

// splitmix64: uniform in [-1, 1), never exactly zero.
float value_at(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const float v = static_cast<float>(z >> 40) / static_cast<float>(1ull << 23) - 1.0f;
  return v == 0.0f ? 0.5f : v;
}

// Fills `count` floats at `device` with value_at(seed, 0..count-1), in chunks made by
// every host core.
void fill(float* device, std::uint64_t count, std::uint64_t seed) {
  constexpr std::uint64_t kChunk = std::uint64_t{1} << 26;
  std::vector<float> host(std::min(count, kChunk));
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  for (std::uint64_t start = 0; start < count; start += kChunk) {
    const std::uint64_t n = std::min(kChunk, count - start);
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (std::uint64_t i = t; i < n; i += threads) host[i] = value_at(seed, start + i);
      });
    }
    for (auto& th : pool) th.join();
    ASSERT_EQ(cudaMemcpy(device + start, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  }
}

struct Sample {
  std::int64_t n, k, p, q;
};

double reference_at(const Conv2dDesc& d, std::uint64_t x_seed, std::uint64_t w_seed, const Sample& s) {
  double sum = 0;
  const std::int64_t c_per_group = d.c / d.groups;
  const std::int64_t group = s.k / (d.k / d.groups);
  for (std::int64_t c = 0; c < c_per_group; ++c) {
    for (int r = 0; r < d.r; ++r) {
      for (int t = 0; t < d.s; ++t) {
        const std::int64_t ih = s.p * d.stride_h - d.pad_h + r * d.dilation_h;
        const std::int64_t iw = s.q * d.stride_w - d.pad_w + t * d.dilation_w;
        if (ih < 0 || ih >= d.h || iw < 0 || iw >= d.w) continue;
        const std::int64_t xi = ((s.n * d.c + group * c_per_group + c) * d.h + ih) * d.w + iw;
        const std::int64_t wi = ((s.k * c_per_group + c) * d.r + r) * d.s + t;
        sum += static_cast<double>(value_at(x_seed, xi)) * value_at(w_seed, wi);
      }
    }
  }
  return sum;
}

class LargeTensors : public ::testing::Test {
 protected:
  void SetUp() override { CONVJIT_REQUIRE_GPU(); }
  testing::TempDir dir_;
};

// Corners, the last outputs (past 2^31 in y), and random ones.
std::vector<Sample> samples(const Conv2dDesc& d, std::mt19937_64& rng) {
  const auto o = d.output_shape();
  std::vector<Sample> out{{0, 0, 0, 0},
                          {o.n - 1, o.k - 1, o.p - 1, o.q - 1},
                          {o.n - 1, o.k - 1, o.p - 1, 0},
                          {o.n - 1, o.k / 2, o.p / 2, o.q - 1},
                          {0, o.k - 1, 0, o.q - 1}};
  for (int i = 0; i < 2000; ++i) {
    out.push_back({static_cast<std::int64_t>(rng() % o.n), static_cast<std::int64_t>(rng() % o.k),
                   static_cast<std::int64_t>(rng() % o.p), static_cast<std::int64_t>(rng() % o.q)});
  }
  return out;
}

void check_problem(Runtime& rt, Conv2dDesc d, const testing::TempDir&) {
  const std::uint64_t x_seed = 0x1234 + d.c, w_seed = 0x9876 + d.k;
  float *x = nullptr, *w = nullptr, *y = nullptr;
  ASSERT_EQ(cudaMalloc(&x, d.x_elements() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&w, d.w_elements() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&y, d.y_elements() * sizeof(float)), cudaSuccess);
  fill(x, d.x_elements(), x_seed);
  fill(w, d.w_elements(), w_seed);
  std::mt19937_64 rng(std::random_device{}());
  const auto picks = samples(d, rng);
  for (MathMode math : {MathMode::kTF32, MathMode::kStrictFp32}) {
    d.math = math;
    for (Algorithm algorithm :
         {Algorithm::kAuto, Algorithm::kDirect, Algorithm::kImplicitGemm, Algorithm::kIm2colGemm}) {
      SCOPED_TRACE(fmt::format("{} {}", d.to_string(), to_string(algorithm)));
      std::optional<Conv2dPlan> plan;
      try {
        plan.emplace(rt.plan(d, PlanOptions{.algorithm = algorithm}));
      } catch (const Error& e) {
        // An algorithm may decline a problem; it must say so as kUnsupported, never fault.
        EXPECT_EQ(e.code(), ErrorCode::kUnsupported) << e.what();
        std::printf("  %s declines %s: %s\n", std::string(to_string(algorithm)).c_str(), d.to_string().c_str(),
                    e.what());
        continue;
      }
      ASSERT_EQ(cudaMemset(y, 0xff, d.y_elements() * sizeof(float)), cudaSuccess);  // NaN
      plan->run(x, w, nullptr, y);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const auto o = d.output_shape();
      double err2 = 0, ref2 = 0;
      for (const Sample& s : picks) {
        const std::int64_t at = ((s.n * o.k + s.k) * o.p + s.p) * o.q + s.q;
        float got = 0;
        ASSERT_EQ(cudaMemcpy(&got, y + at, sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
        const double ref = reference_at(d, x_seed, w_seed, s);
        ASSERT_TRUE(std::isfinite(got)) << "output " << at << " was not written";
        err2 += (got - ref) * (got - ref);
        ref2 += ref * ref;
      }
      const double rel = std::sqrt(err2 / ref2);
      std::printf("  %-14s %-6s %s: sampled relative error %.3g (%s)\n", std::string(to_string(algorithm)).c_str(),
                  std::string(to_string(math)).c_str(), d.to_string().c_str(), rel, plan->kernel_name().c_str());
      EXPECT_LT(rel, math == MathMode::kStrictFp32 ? 1e-5 : 1e-3) << plan->kernel_name();
    }
  }
  cudaFree(x);
  cudaFree(w);
  cudaFree(y);
}

TEST_F(LargeTensors, InputPast2To31ElementsInOneImageIsComputedCorrectly) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  // c x H x W = 64 x 6000 x 6000 = 2.3e9 elements in one image (issue 12's crash).
  check_problem(rt, Conv2dDesc{.n = 1, .c = 64, .h = 6000, .w = 6000, .k = 16, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
                dir_);
}

TEST_F(LargeTensors, OutputPast2To31ElementsIsComputedCorrectly) {
  Runtime rt(RuntimeOptions{.cache_dir = dir_.path()});
  check_problem(rt, Conv2dDesc{.n = 1, .c = 16, .h = 6000, .w = 6000, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1},
                dir_);
  check_problem(rt, Conv2dDesc{.n = 1, .c = 16, .h = 6000, .w = 6000, .k = 64, .r = 1, .s = 1}, dir_);
}

}  // namespace
}  // namespace convjit
