#pragma once
// The run-time description the shape-generic kernel (conv_generic.cu) reads: every
// extent, stride and flag the specialized templates take as constants. Shared by the
// kernel and the host code that fills it (runtime/src/runtime/first_tier.cpp), so the two
// cannot disagree on its layout. Plain C++: no CUDA type.

namespace convjit_generic {

struct Params {
  // Element strides of x's and y's dimensions in their layout (batch, channel, depth,
  // height, width), and of w's per filter coordinate: group, output channel within the
  // group, input channel within the group, then the three taps. Transposed problems
  // swap which of c and k is w's outer dimension; the strides carry that.
  long long x_stride[5];
  long long y_stride[5];
  long long w_stride_g, w_stride_k, w_stride_c, w_stride_t, w_stride_r, w_stride_s;
  long long pixels;  // the GEMM's rows: batch x output depth x height x width
  // Input extents (d, h, w) and output extents (z, p, q), filter (t, r, s).
  int in_d, in_h, in_w;
  int out_z, out_p, out_q;
  int t, r, s;
  int stride[3], pad[3], dilation[3];  // depth, height, width
  int groups, c_per_group, k_per_group;
  int reduction;   // c_per_group x t x r x s
  int row_tiles;   // ceil(pixels / the kernel's row tile), in blocks
  int col_tiles;   // ceil(k_per_group / the kernel's column tile)
  int transposed;  // nn.ConvTranspose: input i reaches output o when o = i stride - pad + j dilation
  int has_bias;
  int relu;
};

}  // namespace convjit_generic
