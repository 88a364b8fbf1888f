#pragma once
// Float64 CPU reference and the error metric every correctness test uses.

#include <cstdint>
#include <random>
#include <vector>

#include "convjit/conv2d_desc.hpp"

namespace convjit::testing {

// Uniform in [-1, 1) with no exact zeros: zeros would hide unwritten outputs. With a
// 16-bit `dtype` every value is already rounded to that type (and still not zero), so
// the float64 reference sees exactly what the GPU reads.
std::vector<float> random_nonzero(std::size_t count, std::mt19937_64& rng, float lo = -1.0f, float hi = 1.0f,
                                  DType dtype = DType::kFloat32);

// y[n][k][p][q] in float64 from float32 inputs; bias may be empty. Every rank and
// transposed problems too (w as PyTorch's ConvTranspose weight, c x k/groups x taps);
// the second form takes the output depth z.
double reference_at(const Conv2dDesc& d, const std::vector<float>& x, const std::vector<float>& w,
                    const std::vector<float>& bias, std::int64_t n, std::int64_t k, std::int64_t p, std::int64_t q);
double reference_at(const Conv2dDesc& d, const std::vector<float>& x, const std::vector<float>& w,
                    const std::vector<float>& bias, std::int64_t n, std::int64_t k, std::int64_t z, std::int64_t p,
                    std::int64_t q);
std::vector<double> reference_conv2d(const Conv2dDesc& d, const std::vector<float>& x, const std::vector<float>& w,
                                     const std::vector<float>& bias);

// Tests hold tensors in logical order: x as N,C,[D,]H,W, w as K,C/groups,[T,]R,S
// (transposed: C,K/groups,[T,]R,S), y as N,K,[Z,]P,Q.
// These reorder them to and from what desc.layout stores (identity for NCHW; for NHWC x as
// N,H,W,C, w as K,R,S,C/groups like PyTorch's channels-last weight, y as N,P,Q,K).
std::vector<float> x_in_layout(const Conv2dDesc& d, const std::vector<float>& x);
std::vector<float> w_in_layout(const Conv2dDesc& d, const std::vector<float>& w);
std::vector<float> y_from_layout(const Conv2dDesc& d, const std::vector<float>& y);

// ||out - ref|| / ||ref||; +inf when any output is NaN or infinite.
double relative_l2(const std::vector<float>& out, const std::vector<double>& ref);

}  // namespace convjit::testing
