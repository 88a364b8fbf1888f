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
// and the compile-time values of namespace `spec` below; with them every bound, index
// and trip count is a compile-time constant. Without the prologue this file still
// compiles (with the example values below), so a test can check it under NVRTC.
// Namespace-scope constants are enumerators of unnamed enums with a fixed type, not constexpr
// variables: NVRTC emits each of those as a device global, and loading them is most of a
// module load (runtime/src/specialize/prologue.hpp).
//
// Work split: one thread computes kKPerThread output channels of one output pixel (of
// stride_w consecutive pixels, transposed); a block is kBlockThreads threads of one image
// and one channel block. Blocks are numbered channel-block fastest, so neighbouring
// blocks read the same input tile and share it through L2. A strided transposed
// problem's outputs fall into phases (o mod stride), each reached by its own taps: a
// block takes one depth and height phase, so its warps agree on which filter rows land,
// and a thread's stride_w outputs are one of each width phase, whose taps are
// compile-time constants (see kOutW). The layout changes only the strides and the loop
// order: NCHW walks the filter taps of one input plane, NHWC walks the channels of one
// input pixel (its contiguous run), so each thread's successive loads share a sector.

#ifndef CONVJIT_SPECIALIZED
#define CONVJIT_KERNEL_NAME conv2d_direct_example
namespace spec {
enum : int { kN = 2, kC = 4, kH = 9, kW = 7, kK = 6, kR = 3, kS = 3 };
enum : int { kStrideH = 1, kStrideW = 2, kPadH = 1, kPadW = 0, kDilationH = 1, kDilationW = 2 };
enum : int { kGroups = 2, kP = 9, kQ = 2 };
enum : bool { kHasBias = true, kRelu = true };
enum : int { kBlockThreads = 128, kKPerThread = 3 };
enum : bool { kWideIndex = false };
enum : int { kDType = 0 };   // f32 (0 f32, 1 f16, 2 bf16)
enum : int { kLayout = 0 };  // nchw (0 nchw, 1 nhwc)
enum : int { kD = 1, kT = 1, kStrideD = 1, kPadD = 0, kDilationD = 1, kZ = 1 };
enum : bool { kTransposed = false };
}  // namespace spec
#endif

// element::Traits (f16 / bf16 <-> float) and device::IndexType.
#include "convjit_device.cuh"

namespace conv2d_direct {
using namespace spec;

using index_t = typename device::IndexType<kWideIndex>::type;
using Convert = element::Traits<kDType>;
using Element = Convert::Storage;

enum : int { kCPerGroup = kC / kGroups };
enum : int { kKPerGroup = kK / kGroups };
enum : int { kKBlocksPerGroup = (kKPerGroup + kKPerThread - 1) / kKPerThread };
enum : int { kKBlocks = kKBlocksPerGroup * kGroups };
enum : long long { kPixels = static_cast<long long>(kZ) * kP * kQ };
// A strided transposed problem's outputs fall into phases (o mod stride), each reached by
// its own taps. Depth and height phases are a block's (block-uniform taps); a thread takes
// kOutW consecutive outputs along w, one of each width phase, which are then compile-time
// constants: each tap lands on one of them, and the stores stay contiguous.
enum : int { kPhaseD = kTransposed ? kStrideD : 1 };
enum : int { kPhaseH = kTransposed ? kStrideH : 1 };
enum : int { kOutW = kTransposed ? kStrideW : 1 };
enum : int { kPhases = kPhaseD * kPhaseH };
// A phase's output grid, the largest phase's (the first): later ones may be a row short;
// along w, groups of kOutW outputs (the last one may be short).
enum : int { kZPhase = (kZ + kPhaseD - 1) / kPhaseD };
enum : int { kPPhase = (kP + kPhaseH - 1) / kPhaseH };
enum : int { kQGroups = (kQ + kOutW - 1) / kOutW };
enum : long long { kPhasePixels = static_cast<long long>(kZPhase) * kPPhase * kQGroups };
enum : long long { kPixelTiles = (kPhasePixels + kBlockThreads - 1) / kBlockThreads };
enum : int { kFilterTaps = kT * kR * kS };
enum : bool { kRaggedK = kKPerGroup % kKPerThread != 0 };

// Element strides of each tensor's dimensions in the layout.
enum : bool { kNHWC = kLayout == 1 };
enum : index_t { kXPlane = static_cast<index_t>(kD) * kH * kW };
enum : index_t { kXStrideC = kNHWC ? 1 : kXPlane };
enum : index_t { kXStrideD = kNHWC ? static_cast<index_t>(kH) * kW * kC : static_cast<index_t>(kH) * kW };
enum : index_t { kXStrideH = kNHWC ? static_cast<index_t>(kW) * kC : kW };
enum : index_t { kXStrideW = kNHWC ? kC : 1 };
enum : index_t { kXStrideN = static_cast<index_t>(kC) * kXPlane };
// Weights: a filter tap's elements sit kWStrideTap apart; forward filters are
// [k][c][taps] (channels last [k][taps][c]), transposed ones [c][k][taps] (channels
// last [c][taps][k]). Each group's block starts at group * kCPerGroup * kKPerGroup * taps
// either way.
enum : int { kWStrideTap = kNHWC ? (kTransposed ? kKPerGroup : kCPerGroup) : 1 };
enum : int { kWStrideC = kTransposed ? kKPerGroup * kFilterTaps : (kNHWC ? 1 : kFilterTaps) };
enum : int { kWStrideK = kTransposed ? (kNHWC ? 1 : kFilterTaps) : kCPerGroup * kFilterTaps };
enum : int { kWStrideR = kS * kWStrideTap };
enum : int { kWStrideS = kWStrideTap };
enum : int { kWStrideT = kR * kS * kWStrideTap };
enum : index_t { kYStrideK = kNHWC ? 1 : static_cast<index_t>(kPixels) };

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

// Along w, thread output ow0 + o reads input column `in` through tap s (kOutW outputs a
// thread; see kOutW): forward in = iw0 + s dilation with iw0 = ow0 stride - pad;
// transposed, when o + pad - s dilation is a multiple of the stride (constants once the
// loops unroll), in = iw0 + (o + pad - s dilation) / stride with iw0 the thread's column
// group. False where no input lands or the output is past the row's end.
__device__ __forceinline__ bool column(int iw0, int ow0, int o, int s, int& in) {
  const int lands = o + kPadW - s * kDilationW;
  if (kTransposed && lands % kStrideW != 0) return false;
  in = kTransposed ? iw0 + lands / kStrideW : iw0 + s * kDilationW;
  return static_cast<unsigned>(in) < static_cast<unsigned>(kW) && ow0 + o < kQ;
}

// Whether a phase coordinate of one dimension receives any tap (some j with
// phase + pad - j dilation a multiple of the stride): a phase that none reaches is the
// bias alone, and its blocks skip the filters and the reduction.
template <int kKernel, int kStride, int kPad, int kDilation>
__device__ __forceinline__ bool phase_receives(int phase) {
  bool any = false;
#pragma unroll
  for (int j = 0; j < kKernel; ++j) any |= (phase + kPad - j * kDilation) % kStride == 0;
  return any;
}

// The taps a thread walks a channel (a phase takes about one in stride of the depth's and
// the height's); where they are few, channels are unrolled so that a thread keeps several
// input loads in flight instead of one.
enum : int { kPhaseTaps = ((kT + kPhaseD - 1) / kPhaseD) * ((kR + kPhaseH - 1) / kPhaseH) * kS };
// The factor divides the channel count: a remainder iteration would let ptxas merge its
// loads of the filters with the last full iteration's, reading past w_shared's end.
__host__ __device__ constexpr int channel_unroll(int most) {
  int u = most < 1 ? 1 : most;
  while (kCPerGroup % u != 0) --u;
  return u;
}
enum : int { kCUnroll = channel_unroll(8 / kPhaseTaps) };

// A block's filters (kKPerThread of one group, every input channel and tap) as float in
// shared memory, [c][tap][j], where they fit: each tap's kKPerThread weights are then one
// or two 16-byte loads that every thread of the block shares, instead of a global load
// (and a conversion) per multiply-add. Filters past the group's last are zero.
enum : int { kWTile = kCPerGroup * kFilterTaps * kKPerThread };
enum : bool { kSharedW = kWTile * sizeof(float) <= 32 * 1024 };
enum : bool { kVectorW = kSharedW && kKPerThread % 4 == 0 };

// The kKPerThread weights of input channel c and tap `tap` (t x R x S + r x S + s).
__device__ __forceinline__ void tap_weights(const float* w_shared, const Element* w_block, int k_in_group, int c,
                                            int tap, float (&wv)[kKPerThread]) {
  if constexpr (kVectorW) {
    const float4* v = reinterpret_cast<const float4*>(w_shared + (c * kFilterTaps + tap) * kKPerThread);
#pragma unroll
    for (int j = 0; j < kKPerThread / 4; ++j) {
      const float4 q = v[j];
      wv[4 * j] = q.x;
      wv[4 * j + 1] = q.y;
      wv[4 * j + 2] = q.z;
      wv[4 * j + 3] = q.w;
    }
  } else if constexpr (kSharedW) {
#pragma unroll
    for (int j = 0; j < kKPerThread; ++j) wv[j] = w_shared[(c * kFilterTaps + tap) * kKPerThread + j];
  } else {
#pragma unroll
    for (int j = 0; j < kKPerThread; ++j) {
      wv[j] = kRaggedK && k_in_group + j >= kKPerGroup
                  ? 0.0f
                  : Convert::to_float(__ldg(w_block + j * kWStrideK + c * kWStrideC + tap * kWStrideTap));
    }
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
  const int phase = kPhases == 1 ? 0 : static_cast<int>(block / kKBlocks % kPhases);
  const long long tile = (block / (static_cast<long long>(kKBlocks) * kPhases)) % kPixelTiles;
  const int n = static_cast<int>(block / (static_cast<long long>(kKBlocks) * kPhases * kPixelTiles));
  const long long phase_pixel = tile * kBlockThreads + threadIdx.x;

  // The output depth is 0 unless the problem is 3-D: written so that it folds away.
  const int pz = kZPhase == 1 ? 0 : static_cast<int>(phase_pixel / (static_cast<long long>(kPPhase) * kQGroups));
  const int ph = static_cast<int>(kZPhase == 1 ? phase_pixel / kQGroups : phase_pixel / kQGroups % kPPhase);
  const int q_group = static_cast<int>(phase_pixel % kQGroups);
  const int phase_d = kPhaseD == 1 ? 0 : phase / kPhaseH;
  const int phase_h = kPhaseH == 1 ? 0 : phase % kPhaseH;
  const int oz = pz * kPhaseD + phase_d;
  const int oh = ph * kPhaseH + phase_h;
  const int ow0 = q_group * kOutW;
  // Threads past the output still help fill the shared filters below.
  const bool active = phase_pixel < kPhasePixels && (kPhases == 1 || (oz < kZ && oh < kP));
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
  const bool receives = kPhases == 1 || (phase_receives<kT, kStrideD, kPadD, kDilationD>(phase_d) &&
                                         phase_receives<kR, kStrideH, kPadH, kDilationH>(phase_h));
  __shared__ __align__(16) float w_shared[kSharedW ? kWTile : 4];
  if (kSharedW && receives) {
    for (int i = threadIdx.x; i < kWTile; i += kBlockThreads) {
      const int j = i % kKPerThread;
      const int c_tap = i / kKPerThread;
      const bool real = !kRaggedK || k_in_group + j < kKPerGroup;
      w_shared[i] = real ? Convert::to_float(__ldg(w_block + j * kWStrideK + (c_tap / kFilterTaps) * kWStrideC +
                                                   (c_tap % kFilterTaps) * kWStrideTap))
                         : 0.0f;
    }
    __syncthreads();
  }
  if (!active) return;
  float acc[kOutW][kKPerThread];
#pragma unroll
  for (int o = 0; o < kOutW; ++o) {
#pragma unroll
    for (int j = 0; j < kKPerThread; ++j) acc[o][j] = 0.0f;
  }
  float wv[kKPerThread];
  if (receives) {
    const int id0 = kTransposed ? oz + kPadD : oz * kStrideD - kPadD;
    const int ih0 = kTransposed ? oh + kPadH : oh * kStrideH - kPadH;
    // The first input column (column()): forward, the thread's output's; transposed, its group's.
    const int iw0 = kTransposed ? q_group : ow0 * kStrideW - kPadW;
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
#pragma unroll
            for (int o = 0; o < kOutW; ++o) {
              int iw = 0;
              if (!column(iw0, ow0, o, s, iw)) continue;
              const Element* x_pixel = x_group + static_cast<index_t>(id) * kXStrideD +
                                       static_cast<index_t>(ih) * kXStrideH + static_cast<index_t>(iw) * kXStrideW;
#pragma unroll(kCUnroll)
              for (int c = 0; c < kCPerGroup; ++c) {
                const float v = Convert::to_float(__ldg(x_pixel + c));
                tap_weights(w_shared, w_block, k_in_group, c, (t * kR + r) * kS + s, wv);
#pragma unroll
                for (int j = 0; j < kKPerThread; ++j) acc[o][j] = fmaf(v, wv[j], acc[o][j]);
              }
            }
          }
        }
      }
    } else {
#pragma unroll(kCUnroll)
      for (int c = 0; c < kCPerGroup; ++c) {
        const Element* x_plane = x_group + static_cast<index_t>(c) * kXStrideC;
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
#pragma unroll
              for (int o = 0; o < kOutW; ++o) {
                int iw = 0;
                if (!column(iw0, ow0, o, s, iw)) continue;
                const float v = Convert::to_float(
                    __ldg(x_plane + static_cast<index_t>(id) * kXStrideD + static_cast<index_t>(ih) * kW + iw));
                tap_weights(w_shared, w_block, k_in_group, c, (t * kR + r) * kS + s, wv);
#pragma unroll
                for (int j = 0; j < kKPerThread; ++j) acc[o][j] = fmaf(v, wv[j], acc[o][j]);
              }
            }
          }
        }
      }
    }
  }

  const int k0 = group * kKPerGroup + k_in_group;
  const long long pixel0 = (static_cast<long long>(oz) * kP + oh) * kQ + ow0;
  Element* y_pixel;
  if constexpr (kNHWC) {
    y_pixel = y + (static_cast<index_t>(n) * static_cast<index_t>(kPixels) + static_cast<index_t>(pixel0)) * kK + k0;
  } else {
    y_pixel = y + (static_cast<index_t>(n) * kK + k0) * static_cast<index_t>(kPixels) + pixel0;
  }
  constexpr index_t kYStrideW = kNHWC ? kK : 1;
#pragma unroll
  for (int j = 0; j < kKPerThread; ++j) {
    if (kRaggedK && k_in_group + j >= kKPerGroup) break;
    const float b = kHasBias ? Convert::to_float(__ldg(bias + k0 + j)) : 0.0f;
#pragma unroll
    for (int o = 0; o < kOutW; ++o) {
      if (ow0 + o >= kQ) break;
      float out = acc[o][j] + b;
      if constexpr (kRelu) out = fmaxf(out, 0.0f);
      y_pixel[static_cast<index_t>(j) * kYStrideK + o * kYStrideW] = Convert::from_float(out);
    }
  }
}
