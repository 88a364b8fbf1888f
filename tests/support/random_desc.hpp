#pragma once
// What the convolution tests draw problems from: the four dtype and math-mode kinds every
// kernel family is held to, and a random problem's geometry.

#include <random>

#include "convjit/convjit.hpp"

namespace convjit::testing {

struct Kind {
  DType dtype;
  MathMode math;
};
inline constexpr Kind kKinds[] = {{DType::kFloat32, MathMode::kTF32},
                                  {DType::kFloat32, MathMode::kStrictFp32},
                                  {DType::kFloat16, MathMode::kTF32},
                                  {DType::kBFloat16, MathMode::kTF32}};

// Channels in one 128-byte chunk of `dtype`: one stage of the NHWC wgmma kernel.
inline int chunk_channels(DType dtype) { return 128 / static_cast<int>(size_of(dtype)); }

// Input channels a group that the NHWC wgmma kernel's map reads: grouped, whole chunks (one,
// or 1 to max_chunks drawn); otherwise a multiple of 16 bytes from one chunk to about
// max_channels, drawn.
inline int draw_map_channels(std::mt19937_64& rng, DType dtype, int groups, int max_channels, int max_chunks) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int chunk = chunk_channels(dtype);
  const int sixteen_bytes = 16 / static_cast<int>(size_of(dtype));
  if (groups > 1) return max_chunks > 1 ? chunk * pick(1, max_chunks) : chunk;
  return sixteen_bytes * pick(chunk / sixteen_bytes, max_channels / sixteen_bytes);
}

// Upper bounds of the geometry draw_geometry draws (lower bounds: 1, padding 0).
struct GeometryBounds {
  int n = 3, h = 20, w = 24, r = 5, s = 5, stride = 3, pad = 2, dilation = 2;
};

// Draws d's batch, extents, filter, strides, padding, dilation, bias and ReLU, in that
// order, each uniformly up to its bound; d's channels, groups, dtype and layout are the
// caller's. False when the dilated filter overhangs the padded input: draw again.
inline bool draw_geometry(std::mt19937_64& rng, Conv2dDesc& d, const GeometryBounds& max = {}) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  d.n = pick(1, max.n);
  d.h = pick(1, max.h);
  d.w = pick(1, max.w);
  d.r = pick(1, max.r);
  d.s = pick(1, max.s);
  d.stride_h = pick(1, max.stride);
  d.stride_w = pick(1, max.stride);
  d.pad_h = pick(0, max.pad);
  d.pad_w = pick(0, max.pad);
  d.dilation_h = pick(1, max.dilation);
  d.dilation_w = pick(1, max.dilation);
  d.bias = pick(0, 1) == 1;
  d.activation = pick(0, 1) == 1 ? Activation::kRelu : Activation::kNone;
  try {
    d.validate();
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace convjit::testing
