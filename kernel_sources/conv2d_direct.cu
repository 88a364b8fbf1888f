// Direct convolution of 1, 2 or 3 spatial dimensions (a lower rank is extents of 1, whose
// constants fold away), forward or transposed (kTransposed), channels first or last
// (kLayout), every stride / padding / dilation / groups; float32, float16 or bfloat16
// data (kDType), always accumulated in float32 and rounded once, at the store.
// Forward: x[n][c][d][h][w], w[k][c / groups][t][r][s], y[n][k][z][p][q]; channels last
// moves c (k for y) innermost, and w to [k][t][r][s][c / groups] (PyTorch's channels-last
// weight). Transposed (nn.ConvTranspose*d): w[c][k / groups][t][r][s], channels last
// w[c][t][r][s][k / groups]; each output gathers the inputs whose taps land on it
// (output-stationary, no zero insertion): input i reaches output o through tap j when
// o = i * stride - pad + j * dilation.
//
// convjit prepends a prologue that defines CONVJIT_SPECIALIZED, CONVJIT_KERNEL_NAME
// and the constexpr values of namespace `spec` below; with them every bound, index
// and trip count is a compile-time constant. Without the prologue this file still
// compiles (with the example values below), so a test can check it under NVRTC.
//
// Work split: one thread computes kKPerThread output channels of one output pixel;
// a block is kBlockThreads consecutive pixels of one image and one channel block.
// Blocks are numbered channel-block fastest, so neighbouring blocks read the same
// input tile and share it through L2. The layout changes only the strides and the loop
// order: NCHW walks the filter taps of one input plane, NHWC walks the channels of one
// input pixel (its contiguous run), so each thread's successive loads share a sector.

#ifndef CONVJIT_SPECIALIZED
#define CONVJIT_KERNEL_NAME conv2d_direct_example
namespace spec {
constexpr int kN = 2, kC = 4, kH = 9, kW = 7, kK = 6, kR = 3, kS = 3;
constexpr int kStrideH = 1, kStrideW = 2, kPadH = 1, kPadW = 0, kDilationH = 1, kDilationW = 2;
constexpr int kGroups = 2, kP = 9, kQ = 2;
constexpr bool kHasBias = true, kRelu = true;
constexpr int kBlockThreads = 128, kKPerThread = 3;
constexpr bool kWideIndex = false;
constexpr int kDType = 0;   // f32 (0 f32, 1 f16, 2 bf16)
constexpr int kLayout = 0;  // nchw (0 nchw, 1 nhwc)
constexpr int kD = 1, kT = 1, kStrideD = 1, kPadD = 0, kDilationD = 1, kZ = 1;
constexpr bool kTransposed = false;
}  // namespace spec
#endif

// element::Traits (f16 / bf16 <-> float) and device::IndexType.
#include "convjit_device.cuh"

namespace conv2d_direct {
using namespace spec;

using index_t = typename device::IndexType<kWideIndex>::type;
using Convert = element::Traits<kDType>;
using Element = Convert::Storage;

constexpr int kCPerGroup = kC / kGroups;
constexpr int kKPerGroup = kK / kGroups;
constexpr int kKBlocksPerGroup = (kKPerGroup + kKPerThread - 1) / kKPerThread;
constexpr int kKBlocks = kKBlocksPerGroup * kGroups;
constexpr long long kPixels = static_cast<long long>(kZ) * kP * kQ;
constexpr long long kPixelTiles = (kPixels + kBlockThreads - 1) / kBlockThreads;
constexpr int kFilterTaps = kT * kR * kS;
constexpr bool kRaggedK = kKPerGroup % kKPerThread != 0;

// Element strides of each tensor's dimensions in the layout.
constexpr bool kNHWC = kLayout == 1;
constexpr index_t kXPlane = static_cast<index_t>(kD) * kH * kW;
constexpr index_t kXStrideC = kNHWC ? 1 : kXPlane;
constexpr index_t kXStrideD = kNHWC ? static_cast<index_t>(kH) * kW * kC : static_cast<index_t>(kH) * kW;
constexpr index_t kXStrideH = kNHWC ? static_cast<index_t>(kW) * kC : kW;
constexpr index_t kXStrideW = kNHWC ? kC : 1;
constexpr index_t kXStrideN = static_cast<index_t>(kC) * kXPlane;
// Weights: a filter tap's elements sit kWStrideTap apart; forward filters are
// [k][c][taps] (channels last [k][taps][c]), transposed ones [c][k][taps] (channels
// last [c][taps][k]). Each group's block starts at group * kCPerGroup * kKPerGroup * taps
// either way.
constexpr int kWStrideTap = kNHWC ? (kTransposed ? kKPerGroup : kCPerGroup) : 1;
constexpr int kWStrideC = kTransposed ? kKPerGroup * kFilterTaps : (kNHWC ? 1 : kFilterTaps);
constexpr int kWStrideK = kTransposed ? (kNHWC ? 1 : kFilterTaps) : kCPerGroup * kFilterTaps;
constexpr int kWStrideR = kS * kWStrideTap;
constexpr int kWStrideS = kWStrideTap;
constexpr int kWStrideT = kR * kS * kWStrideTap;
constexpr index_t kYStrideK = kNHWC ? 1 : static_cast<index_t>(kPixels);

static_assert(kLayout == 0 || kLayout == 1, "kLayout: 0 nchw, 1 nhwc");

static_assert(kC % kGroups == 0 && kK % kGroups == 0, "groups must divide c and k");

// Along one dimension, output coordinate `out` reads input `in` through tap `tap`:
// forward in = origin + tap * dilation with origin = out * stride - pad, inside the input;
// transposed, the in with in * stride - pad + tap * dilation == out, from origin = out + pad.
// (The origins are computed inline in the kernel: through a helper, NVRTC unrolls the 2-D
// kernels' channel loops differently.)
template <int kIn, int kStride, int kDilation>
__device__ __forceinline__ bool source(int origin, int tap, int& in) {
  if constexpr (!kTransposed) {
    in = origin + tap * kDilation;
    return static_cast<unsigned>(in) < static_cast<unsigned>(kIn);
  } else {
    const int scaled = origin - tap * kDilation;
    if (scaled < 0 || scaled % kStride != 0) return false;
    in = scaled / kStride;
    return in < kIn;
  }
}
}  // namespace conv2d_direct

extern "C" __global__ void __launch_bounds__(spec::kBlockThreads)
    CONVJIT_KERNEL_NAME(const conv2d_direct::Element* __restrict__ x, const conv2d_direct::Element* __restrict__ w,
                        const conv2d_direct::Element* __restrict__ bias,
                        conv2d_direct::Element* __restrict__ y CONVJIT_BATCH_PARAM) {
  using namespace conv2d_direct;
  const long long block = blockIdx.x;
  const int k_block = static_cast<int>(block % kKBlocks);
  const long long tile = (block / kKBlocks) % kPixelTiles;
  const int n = static_cast<int>(block / (static_cast<long long>(kKBlocks) * kPixelTiles));
  const long long pixel = tile * kBlockThreads + threadIdx.x;
  if (pixel >= kPixels) return;

  // The output depth is 0 unless the problem is 3-D: written so that it folds away.
  const int oz = kZ == 1 ? 0 : static_cast<int>(pixel / (static_cast<long long>(kP) * kQ));
  const int oh = static_cast<int>(kZ == 1 ? pixel / kQ : pixel / kQ % kP);
  const int ow = static_cast<int>(pixel % kQ);
  const int group = k_block / kKBlocksPerGroup;
  const int k_in_group = (k_block % kKBlocksPerGroup) * kKPerThread;

  // The group's first input channel of image n, and the thread's first filter.
  const Element* x_group;
  if constexpr (kNHWC) {
    x_group = x + static_cast<index_t>(n) * kXStrideN + group * kCPerGroup;
  } else {
    x_group = x + (static_cast<index_t>(n) * kC + group * kCPerGroup) * kXPlane;
  }
  const Element* w_block;
  if constexpr (kTransposed) {
    w_block = w + static_cast<index_t>(group) * kKPerGroup * kCPerGroup * kFilterTaps +
              static_cast<index_t>(k_in_group) * kWStrideK;
  } else {
    w_block = w + (static_cast<index_t>(group) * kKPerGroup + k_in_group) * kWStrideK;
  }
  const int id0 = kTransposed ? oz + kPadD : oz * kStrideD - kPadD;
  const int ih0 = kTransposed ? oh + kPadH : oh * kStrideH - kPadH;
  const int iw0 = kTransposed ? ow + kPadW : ow * kStrideW - kPadW;

  float acc[kKPerThread];
#pragma unroll
  for (int j = 0; j < kKPerThread; ++j) acc[j] = 0.0f;

  if constexpr (kNHWC) {
#pragma unroll
    for (int t = 0; t < kT; ++t) {
      int id = 0;
      if (!source<kD, kStrideD, kDilationD>(id0, t, id)) continue;
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        int ih = 0;
        if (!source<kH, kStrideH, kDilationH>(ih0, r, ih)) continue;
#pragma unroll
        for (int s = 0; s < kS; ++s) {
          int iw = 0;
          if (!source<kW, kStrideW, kDilationW>(iw0, s, iw)) continue;
          const Element* x_pixel = x_group + static_cast<index_t>(id) * kXStrideD +
                                   static_cast<index_t>(ih) * kXStrideH + static_cast<index_t>(iw) * kXStrideW;
          const Element* w_tap = w_block + t * kWStrideT + r * kWStrideR + s * kWStrideS;
          for (int c = 0; c < kCPerGroup; ++c) {
            const float v = Convert::to_float(__ldg(x_pixel + c));
#pragma unroll
            for (int j = 0; j < kKPerThread; ++j) {
              if (kRaggedK && k_in_group + j >= kKPerGroup) break;
              acc[j] = fmaf(v, Convert::to_float(__ldg(w_tap + j * kWStrideK + c * kWStrideC)), acc[j]);
            }
          }
        }
      }
    }
  } else {
    for (int c = 0; c < kCPerGroup; ++c) {
      const Element* x_plane = x_group + static_cast<index_t>(c) * kXStrideC;
      const Element* w_plane = w_block + c * kWStrideC;
#pragma unroll
      for (int t = 0; t < kT; ++t) {
        int id = 0;
        if (!source<kD, kStrideD, kDilationD>(id0, t, id)) continue;
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          int ih = 0;
          if (!source<kH, kStrideH, kDilationH>(ih0, r, ih)) continue;
#pragma unroll
          for (int s = 0; s < kS; ++s) {
            int iw = 0;
            if (!source<kW, kStrideW, kDilationW>(iw0, s, iw)) continue;
            const float v = Convert::to_float(
                __ldg(x_plane + static_cast<index_t>(id) * kXStrideD + static_cast<index_t>(ih) * kW + iw));
#pragma unroll
            for (int j = 0; j < kKPerThread; ++j) {
              if (kRaggedK && k_in_group + j >= kKPerGroup) break;
              acc[j] = fmaf(v, Convert::to_float(__ldg(w_plane + j * kWStrideK + (t * kR + r) * kS + s)), acc[j]);
            }
          }
        }
      }
    }
  }

  const int k0 = group * kKPerGroup + k_in_group;
  Element* y_pixel;
  if constexpr (kNHWC) {
    y_pixel = y + (static_cast<index_t>(n) * static_cast<index_t>(kPixels) + static_cast<index_t>(pixel)) * kK + k0;
  } else {
    y_pixel = y + (static_cast<index_t>(n) * kK + k0) * static_cast<index_t>(kPixels) + pixel;
  }
#pragma unroll
  for (int j = 0; j < kKPerThread; ++j) {
    if (kRaggedK && k_in_group + j >= kKPerGroup) break;
    float out = acc[j];
    if constexpr (kHasBias) out += Convert::to_float(__ldg(bias + k0 + j));
    if constexpr (kRelu) out = fmaxf(out, 0.0f);
    y_pixel[static_cast<index_t>(j) * kYStrideK] = Convert::from_float(out);
  }
}
