// The first tier: one convolution kernel for every problem the descriptor allows, its
// extents read at run time (conv_generic_params.h). Unlike the other templates it is
// compiled ahead of time, when convjit is built (nvcc, a fatbin for each supported
// arch), so a process serves a problem's first calls with it while NVRTC compiles the
// specialized kernel behind it: it costs no compile, only its own (slower) run.
//
// The GEMM view every algorithm shares: rows are output pixels (batch, z, p, q), columns
// the output channels of one group, the reduction runs over the group's input channels
// and the filter taps, tap-major with the channel fastest (channels-last x is then read
// in runs). A block computes a kRows x kCols tile through shared memory, kDepth
// reduction steps at a time; each thread a 4 x 4 sub-tile in float32 registers, on the
// FMA units for every dtype and math mode (at least as accurate as any of them asks).
// A tile's rows gather x with every bound checked (padding, stride, dilation, the
// transposed problem's landing rule), so any extent, offset and alignment of its dtype
// is legal.

#include "conv_generic_params.h"
#include "convjit_device.cuh"

namespace conv_generic {

constexpr int kThreads = 256;
constexpr int kDepth = 16;  // reduction steps per shared-memory stage

// Where output pixel `row` reads its input from: the batch's offset in x and, per
// dimension, its origin (forward: o stride - pad; transposed: o + pad); and where it
// writes y. `valid` false past the last pixel.
struct RowInfo {
  long long x_base;
  long long y_base;
  int origin[3];
  int valid;
};

// One reduction step: the channel's offset in x and in w, the tap's offset in w and
// its coordinates; `valid` false past the reduction's end.
struct StepInfo {
  long long x_offset;
  long long w_offset;
  int tap[3];
  int valid;
};

// Along one dimension, the input coordinate that tap j of an output at `origin` reads;
// false where it lands outside the input or (transposed) between input positions.
__device__ __forceinline__ bool source(const convjit_generic::Params& p, int dim, int origin, int j, int extent,
                                       int& in) {
  if (!p.transposed) {
    in = origin + j * p.dilation[dim];
    return static_cast<unsigned>(in) < static_cast<unsigned>(extent);
  }
  const int scaled = origin - j * p.dilation[dim];
  if (scaled < 0 || scaled % p.stride[dim] != 0) return false;
  in = scaled / p.stride[dim];
  return in < extent;
}

template <int kDType, int kCols>
__device__ __forceinline__ void convolve(const typename element::Traits<kDType>::Storage* __restrict__ x,
                                         const typename element::Traits<kDType>::Storage* __restrict__ w,
                                         const typename element::Traits<kDType>::Storage* __restrict__ bias,
                                         typename element::Traits<kDType>::Storage* __restrict__ y,
                                         const convjit_generic::Params& p) {
  using Convert = element::Traits<kDType>;
  constexpr int kRows = kThreads * 16 / kCols;  // 4 x 4 outputs a thread
  constexpr int kRowThreads = kRows / 4;
  static_assert(kRows * kCols == kThreads * 16 && kCols % 4 == 0, "a 4 x 4 sub-tile a thread");

  __shared__ __align__(16) float a_tile[kDepth][kRows];
  __shared__ __align__(16) float b_tile[kDepth][kCols];
  __shared__ RowInfo rows[kRows];
  __shared__ StepInfo steps[2][kDepth];

  // Column tile fastest, then the group, so the blocks that read the same rows of x run side by side.
  const long long block = blockIdx.x;
  const int col_tile = static_cast<int>(block % p.col_tiles);
  const long long rest = block / p.col_tiles;
  const int group = static_cast<int>(rest % p.groups);
  const long long row_tile = rest / p.groups;
  const int tid = threadIdx.x;

  const long long out_plane = static_cast<long long>(p.out_z) * p.out_p * p.out_q;
  for (int i = tid; i < kRows; i += kThreads) {
    const long long row = row_tile * kRows + i;
    RowInfo info{};
    info.valid = row < p.pixels;
    if (info.valid) {
      const long long n = row / out_plane;
      long long o = row - n * out_plane;
      const int oq = static_cast<int>(o % p.out_q);
      o /= p.out_q;
      const int op = static_cast<int>(o % p.out_p);
      const int oz = static_cast<int>(o / p.out_p);
      const int out[3] = {oz, op, oq};
      for (int dim = 0; dim < 3; ++dim) {
        info.origin[dim] = p.transposed ? out[dim] + p.pad[dim] : out[dim] * p.stride[dim] - p.pad[dim];
      }
      info.x_base = n * p.x_stride[0] + static_cast<long long>(group) * p.c_per_group * p.x_stride[1];
      info.y_base = n * p.y_stride[0] + static_cast<long long>(group) * p.k_per_group * p.y_stride[1] +
                    oz * p.y_stride[2] + op * p.y_stride[3] + oq * p.y_stride[4];
    }
    rows[i] = info;
  }
  const int taps_rs = p.r * p.s;
  const auto decode = [&](int buffer, int first) {
    if (tid < kDepth) {
      const int j = first + tid;
      StepInfo info{};
      info.valid = j < p.reduction;
      if (info.valid) {
        const int tap = j / p.c_per_group;
        const int c = j - tap * p.c_per_group;
        info.tap[0] = tap / taps_rs;
        const int rs = tap - info.tap[0] * taps_rs;
        info.tap[1] = rs / p.s;
        info.tap[2] = rs - info.tap[1] * p.s;
        info.x_offset = c * p.x_stride[1];
        info.w_offset =
            c * p.w_stride_c + info.tap[0] * p.w_stride_t + info.tap[1] * p.w_stride_r + info.tap[2] * p.w_stride_s;
      }
      steps[buffer][tid] = info;
    }
  };
  decode(0, 0);
  __syncthreads();

  const int col0 = col_tile * kCols;
  const long long w_group = static_cast<long long>(group) * p.w_stride_g;
  // Channels-last x: neighbouring threads take neighbouring steps (channels) of one
  // pixel; channels-first: neighbouring pixels of one step.
  const bool step_fastest = p.x_stride[1] == 1;
  const int in_extent[3] = {p.in_d, p.in_h, p.in_w};

  float acc[4][4] = {};
  const int tr = tid % kRowThreads;
  const int tc = tid / kRowThreads;
  int buffer = 0;
  for (int first = 0; first < p.reduction; first += kDepth) {
    for (int e = tid; e < kRows * kDepth; e += kThreads) {
      const int i = step_fastest ? e / kDepth : e % kRows;
      const int k = step_fastest ? e % kDepth : e / kRows;
      const RowInfo& row = rows[i];
      const StepInfo& step = steps[buffer][k];
      float v = 0.0f;
      int in[3];
      if (row.valid && step.valid && source(p, 0, row.origin[0], step.tap[0], in_extent[0], in[0]) &&
          source(p, 1, row.origin[1], step.tap[1], in_extent[1], in[1]) &&
          source(p, 2, row.origin[2], step.tap[2], in_extent[2], in[2])) {
        v = Convert::to_float(
            x[row.x_base + step.x_offset + in[0] * p.x_stride[2] + in[1] * p.x_stride[3] + in[2] * p.x_stride[4]]);
      }
      a_tile[k][i] = v;
    }
    for (int e = tid; e < kCols * kDepth; e += kThreads) {
      const int col = e % kCols;
      const int k = e / kCols;
      const StepInfo& step = steps[buffer][k];
      float v = 0.0f;
      if (step.valid && col0 + col < p.k_per_group) {
        v = Convert::to_float(w[w_group + (col0 + col) * p.w_stride_k + step.w_offset]);
      }
      b_tile[k][col] = v;
    }
    __syncthreads();
    // The next stage's steps go to the other buffer while this one is read.
    decode(buffer ^ 1, first + kDepth);
#pragma unroll
    for (int k = 0; k < kDepth; ++k) {
      const float4 a = *reinterpret_cast<const float4*>(&a_tile[k][tr * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&b_tile[k][tc * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w};
      const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
    }
    buffer ^= 1;
    __syncthreads();
  }

#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int col = col0 + tc * 4 + j;
    if (col >= p.k_per_group) continue;
    const float b = p.has_bias ? Convert::to_float(bias[group * p.k_per_group + col]) : 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const RowInfo& row = rows[tr * 4 + i];
      if (!row.valid) continue;
      float v = acc[i][j] + b;
      if (p.relu) v = fmaxf(v, 0.0f);
      y[row.y_base + col * p.y_stride[1]] = Convert::from_float(v);
    }
  }
}

}  // namespace conv_generic

// One entry point per dtype (0 f32, 1 f16, 2 bf16) and column tile: 64 output channels
// a tile, or 16 for groups of few filters (depthwise and small grouped convolutions).
#define CONVJIT_GENERIC_KERNEL(NAME, DTYPE, COLS)                                                                   \
  extern "C" __global__ void __launch_bounds__(conv_generic::kThreads) NAME(                                        \
      const element::Traits<DTYPE>::Storage* __restrict__ x, const element::Traits<DTYPE>::Storage* __restrict__ w, \
      const element::Traits<DTYPE>::Storage* __restrict__ bias, element::Traits<DTYPE>::Storage* __restrict__ y,    \
      const convjit_generic::Params p) {                                                                            \
    conv_generic::convolve<DTYPE, COLS>(x, w, bias, y, p);                                                          \
  }

CONVJIT_GENERIC_KERNEL(convjit_generic_f32_c64, 0, 64)
CONVJIT_GENERIC_KERNEL(convjit_generic_f32_c16, 0, 16)
CONVJIT_GENERIC_KERNEL(convjit_generic_f16_c64, 1, 64)
CONVJIT_GENERIC_KERNEL(convjit_generic_f16_c16, 1, 16)
CONVJIT_GENERIC_KERNEL(convjit_generic_bf16_c64, 2, 64)
CONVJIT_GENERIC_KERNEL(convjit_generic_bf16_c16, 2, 16)
