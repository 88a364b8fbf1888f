#pragma once
// What the convolution tests draw problems from: the four dtype and math-mode kinds every
// kernel family is held to, and a random problem's geometry.

#include <algorithm>
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

// `d` in `kind`'s element type and math mode.
inline Conv2dDesc of_kind(Conv2dDesc d, const Kind& kind) {
  d.dtype = kind.dtype;
  d.math = kind.math;
  return d;
}
// `d` in `dtype` and `math`.
inline Conv2dDesc with_dtype(Conv2dDesc d, DType dtype, MathMode math = MathMode::kTF32) {
  d.dtype = dtype;
  d.math = math;
  return d;
}

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

inline int draw_int(std::mt19937_64& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

// A random problem of one rank and direction, kind 0: 1-D forward, 1: 3-D forward,
// 2: transposed 1-D, 3: transposed 2-D, 4: transposed 3-D, 5: 2-D forward. Odd sizes,
// strides 1-3, padding, output_padding, dilation 1-3, groups, bias, ReLU and layout
// drawn; dtype and math mode the caller's.
inline Conv2dDesc random_nd_desc(std::mt19937_64& rng, int kind) {
  const bool transposed = kind >= 2 && kind <= 4;
  const int dims = kind == 0 || kind == 2 ? 1 : kind == 1 || kind == 4 ? 3 : 2;
  while (true) {
    Conv2dDesc d{.spatial_dims = dims, .transposed = transposed};
    d.n = draw_int(rng, 1, 3);
    d.groups = draw_int(rng, 0, 2) == 0 ? draw_int(rng, 2, 3) : 1;
    d.c = d.groups * draw_int(rng, 1, 9);
    d.k = d.groups * draw_int(rng, 1, 11);
    d.bias = draw_int(rng, 0, 1) == 1;
    d.activation = draw_int(rng, 0, 3) == 0 ? Activation::kRelu : Activation::kNone;
    d.layout = draw_int(rng, 0, 1) == 0 ? Layout::kNCHW : Layout::kNHWC;
    // One spatial dimension: extent, filter, stride, padding, dilation, output_padding.
    auto draw = [&](int& in, int& kernel, int& stride, int& pad, int& dilation, int& output_padding, int max_in) {
      in = draw_int(rng, 1, max_in);
      kernel = draw_int(rng, 1, 5);
      stride = draw_int(rng, 1, 3);
      pad = draw_int(rng, 0, 2);
      dilation = draw_int(rng, 1, 3);
      output_padding = transposed ? draw_int(rng, 0, std::max(stride, dilation) - 1) : 0;
    };
    draw(d.w, d.s, d.stride_w, d.pad_w, d.dilation_w, d.output_padding_w, dims == 1 ? 37 : dims == 2 ? 15 : 9);
    if (dims >= 2) draw(d.h, d.r, d.stride_h, d.pad_h, d.dilation_h, d.output_padding_h, dims == 2 ? 13 : 7);
    if (dims == 3) draw(d.d, d.t, d.stride_d, d.pad_d, d.dilation_d, d.output_padding_d, 6);
    try {
      d.validate();
      return d;
    } catch (const Error&) {
      // an output extent below 1, or output_padding not below stride or dilation: draw again
    }
  }
}

}  // namespace convjit::testing
