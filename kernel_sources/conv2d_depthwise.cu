// Depthwise and narrow-group 2D convolution, NCHW or NHWC (kLayout): few input
// channels a group (the specializer sends it problems with at most 4), few output
// channels a group (a depthwise multiplier up to 8). float32, float16 or bfloat16 data (kDType), always
// accumulated in float32 and rounded once, at the store. These problems do a handful
// of FMAs per byte, so the kernel is built to stream: read each input once, write each
// output once, both coalesced and as wide as alignment allows.
//
// convjit prepends a prologue that defines CONVJIT_SPECIALIZED, CONVJIT_KERNEL_NAME
// and the constexpr values of namespace `spec` below; with them every bound, index
// and trip count is a compile-time constant. Without the prologue this file still
// compiles (with the example values below), so a test can check it under NVRTC.
//
// Work split: a block owns one (image, group) pair and an output tile of
// kTileP rows x kTileQ columns. It copies the input the tile needs, for every input
// channel of the group, into shared memory as float (padding and the area past the
// image as zeros), 16 bytes a load where the row width allows; then each thread
// computes kOutPerThread consecutive outputs of a row for kRowsPerThread rows at a
// time (kPasses times down the tile), for every output channel of the group, reading
// its input window from shared memory as float4 and the filter taps into registers.
// Blocks are numbered column tile fastest, then row tile: the halo rows two row tiles
// share are read from L2, not from memory.
//
// NHWC: a pixel's channels are contiguous, so the work is split along them instead of
// through a shared tile. Each thread computes kVec consecutive output channels (16
// bytes of y) of kOutPerThread consecutive outputs of a row; a block is kThreadsC
// such channel vectors (fastest) x kThreadsQ column groups x kThreadsP rows, so a warp
// reads and writes contiguous runs of channels. The input window of neighbouring
// outputs and taps is re-read from L1. A pure depthwise problem (one input and one
// output channel a group) loads each input pixel's kVec channels in one 16-byte load
// when every row of channels is whole vectors and x is 16-byte aligned; otherwise, and
// for multipliers and narrow groups, one element a load. The same test on y chooses
// 16-byte or per-element stores, so any element-aligned pointer and any c work.

#ifndef CONVJIT_SPECIALIZED
#define CONVJIT_KERNEL_NAME conv2d_depthwise_example
namespace spec {
constexpr int kN = 2, kC = 6, kH = 13, kW = 16, kK = 12, kR = 3, kS = 3;
constexpr int kStrideH = 1, kStrideW = 2, kPadH = 1, kPadW = 1, kDilationH = 1, kDilationW = 2;
constexpr int kGroups = 3, kP = 13, kQ = 7;
constexpr bool kHasBias = true, kRelu = true;
constexpr int kThreadsQ = 2, kThreadsP = 4, kRowsPerThread = 2, kPasses = 2, kTilesQ = 1, kMinBlocks = 4;
constexpr int kThreadsC = 1;  // channel vectors a block (NHWC; 1 for NCHW)
constexpr bool kWideIndex = false;
constexpr int kDType = 0;   // f32 (0 f32, 1 f16, 2 bf16)
constexpr int kLayout = 0;  // nchw (0 nchw, 1 nhwc)
}  // namespace spec
#endif

// element::Traits (f16 / bf16 <-> float) and device::IndexType.
#include "convjit_device.cuh"

namespace conv2d_depthwise {
using namespace spec;

using index_t = typename device::IndexType<kWideIndex>::type;
using Convert = element::Traits<kDType>;
using Element = Convert::Storage;

constexpr int kCPerGroup = kC / kGroups;
constexpr int kKPerGroup = kK / kGroups;
constexpr int kTaps = kR * kS;
constexpr int kOutPerThread = 4;            // consecutive outputs of one row
constexpr int kVec = 16 / sizeof(Element);  // elements in one 16-byte load
constexpr bool kNHWC = kLayout == 1;
constexpr int kBlockThreads = kThreadsC * kThreadsQ * kThreadsP;
constexpr int kTileQ = kThreadsQ * kOutPerThread;
constexpr int kTileP = kThreadsP * kRowsPerThread * kPasses;
constexpr int kTilesP = (kP + kTileP - 1) / kTileP;

// The shared tile: kInRows input rows of kPitch floats a channel. Its column 0 is the
// input column rounded down to a multiple of kVec (so 16-byte chunks of a row land
// whole), kLead columns before the first column the tile's outputs read.
constexpr int kLead = ((-kPadW) % kVec + kVec) % kVec;
constexpr int kInRows = (kTileP - 1) * kStrideH + (kR - 1) * kDilationH + 1;
// One thread's window in a row: the inputs under its kOutPerThread outputs, read as
// float4 from a 16-byte aligned column, starting kWinLead floats early.
constexpr int kWinLead = kLead % 4;
constexpr int kWindow = (kOutPerThread - 1) * kStrideW + (kS - 1) * kDilationW + 1;
constexpr int kWindow4 = (kWinLead + kWindow + 3) / 4;
constexpr int kThreadStride = kOutPerThread * kStrideW;  // columns between two threads' windows
constexpr int kColsNeeded = (kThreadsQ - 1) * kThreadStride + (kLead - kWinLead) + 4 * kWindow4;
constexpr int kPitch = (kColsNeeded + kVec - 1) / kVec * kVec;
constexpr int kChunksPerRow = kPitch / kVec;
constexpr int kPlaneFloats = kInRows * kPitch;
constexpr int kTileFloats = kCPerGroup * kPlaneFloats;
constexpr int kLoadBatch = 8;  // loads in flight per thread before their stores
// A row's 16-byte chunks are all inside the image or all outside when rows are whole chunks.
constexpr bool kVectorRows = kW % kVec == 0;

// NHWC: output channels in vectors of kVec, kThreadsC vectors a block.
constexpr int kKVecs = (kK + kVec - 1) / kVec;
constexpr int kChannelBlocks = (kKVecs + kThreadsC - 1) / kThreadsC;
// One input channel per output channel: a vector of outputs reads a vector of inputs.
constexpr bool kChannelwise = kCPerGroup == 1 && kKPerGroup == 1;

static_assert(kLayout == 0 || kLayout == 1, "kLayout: 0 nchw, 1 nhwc");
static_assert(kC % kGroups == 0 && kK % kGroups == 0, "groups must divide c and k");
static_assert(kNHWC || kThreadsC == 1, "the NCHW tile has no channel dimension");
static_assert(kNHWC || kTilesQ == 1 || (kTileQ * kStrideW) % kVec == 0, "column tiles must start on a 16-byte chunk");
static_assert(kTilesQ * kTileQ >= kQ && kTilesP * kTileP >= kP, "the tiles must cover the output");
static_assert(kNHWC || kTileFloats * 4 <= 48 * 1024, "the input tile must fit static shared memory");

__device__ __forceinline__ void store_chunk(float* dst, uint4 raw) {
  if constexpr (kDType == 0) {
    *reinterpret_cast<float4*>(dst) =
        make_float4(__uint_as_float(raw.x), __uint_as_float(raw.y), __uint_as_float(raw.z), __uint_as_float(raw.w));
  } else {
    const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
    float f[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // little-endian: the lower half is the earlier element
      f[2 * i] = Convert::to_float(static_cast<unsigned short>(words[i] & 0xffffu));
      f[2 * i + 1] = Convert::to_float(static_cast<unsigned short>(words[i] >> 16));
    }
    *reinterpret_cast<float4*>(dst) = make_float4(f[0], f[1], f[2], f[3]);
    *reinterpret_cast<float4*>(dst + 4) = make_float4(f[4], f[5], f[6], f[7]);
  }
}

// 16-byte chunks: kLoadBatch loads issued before the first store, so each thread keeps
// that many in flight.
__device__ __forceinline__ void load_tile_vector(float* tile, const Element* x_group, int ih0, int col0) {
  constexpr int kChunks = kCPerGroup * kInRows * kChunksPerRow;
  for (int base = 0; base < kChunks; base += kLoadBatch * kBlockThreads) {
    uint4 v[kLoadBatch];
#pragma unroll
    for (int b = 0; b < kLoadBatch; ++b) {
      const int e = base + b * kBlockThreads + static_cast<int>(threadIdx.x);
      v[b] = make_uint4(0u, 0u, 0u, 0u);
      if (e < kChunks) {
        const int c = e / (kInRows * kChunksPerRow);
        const int rest = e % (kInRows * kChunksPerRow);
        const int ih = ih0 + rest / kChunksPerRow;
        const int iw = col0 + (rest % kChunksPerRow) * kVec;
        if (static_cast<unsigned>(ih) < static_cast<unsigned>(kH) &&
            static_cast<unsigned>(iw) < static_cast<unsigned>(kW)) {
          const Element* src = x_group + (static_cast<index_t>(c) * kH + ih) * static_cast<index_t>(kW) + iw;
          v[b] = __ldg(reinterpret_cast<const uint4*>(src));
        }
      }
    }
#pragma unroll
    for (int b = 0; b < kLoadBatch; ++b) {
      const int e = base + b * kBlockThreads + static_cast<int>(threadIdx.x);
      if (e < kChunks) store_chunk(tile + e * kVec, v[b]);  // chunks are laid out as the tile is
    }
  }
}

// One element a load: rows that are not whole chunks, or an unaligned x.
__device__ __forceinline__ void load_tile_scalar(float* tile, const Element* x_group, int ih0, int col0) {
  for (int base = 0; base < kTileFloats; base += kLoadBatch * kBlockThreads) {
    float v[kLoadBatch];
#pragma unroll
    for (int b = 0; b < kLoadBatch; ++b) {
      const int e = base + b * kBlockThreads + static_cast<int>(threadIdx.x);
      v[b] = 0.0f;
      if (e < kTileFloats) {
        const int c = e / kPlaneFloats;
        const int rest = e % kPlaneFloats;
        const int ih = ih0 + rest / kPitch;
        const int iw = col0 + rest % kPitch;
        if (static_cast<unsigned>(ih) < static_cast<unsigned>(kH) &&
            static_cast<unsigned>(iw) < static_cast<unsigned>(kW)) {
          v[b] =
              Convert::to_float(__ldg(x_group + (static_cast<index_t>(c) * kH + ih) * static_cast<index_t>(kW) + iw));
        }
      }
    }
#pragma unroll
    for (int b = 0; b < kLoadBatch; ++b) {
      const int e = base + b * kBlockThreads + static_cast<int>(threadIdx.x);
      if (e < kTileFloats) tile[e] = v[b];
    }
  }
}

__device__ __forceinline__ unsigned pack2(float a, float b) {
  return static_cast<unsigned>(Convert::from_float(a)) | (static_cast<unsigned>(Convert::from_float(b)) << 16);
}

// The kVec elements of one 16-byte load, as floats.
__device__ __forceinline__ void unpack_vector(uint4 raw, float (&f)[kVec]) {
  const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
  if constexpr (kDType == 0) {
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = __uint_as_float(words[i]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // little-endian: the lower half is the earlier element
      f[2 * i] = Convert::to_float(static_cast<unsigned short>(words[i] & 0xffffu));
      f[2 * i + 1] = Convert::to_float(static_cast<unsigned short>(words[i] >> 16));
    }
  }
}

// NHWC: the input values output channels k0 .. k0 + kVec - 1 read at one pixel (its
// channels start at `pixel`) for input channel c of their group; 0 past kK.
__device__ __forceinline__ void load_channels(const Element* pixel, int k0, int c, bool vector_x, float (&v)[kVec]) {
  if constexpr (kChannelwise) {
    if (vector_x) {
      unpack_vector(__ldg(reinterpret_cast<const uint4*>(pixel + k0)), v);
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    const int k = k0 + j;
    v[j] = 0.0f;
    if (kK % kVec == 0 || k < kK) v[j] = Convert::to_float(__ldg(pixel + (k / kKPerGroup) * kCPerGroup + c));
  }
}

// NHWC: one block's outputs; see the work split at the top of the file.
__device__ __forceinline__ void nhwc_block(const Element* __restrict__ x, const Element* __restrict__ w,
                                           const Element* __restrict__ bias, Element* __restrict__ y) {
  int block = static_cast<int>(blockIdx.x);
  const int tile_q = block % kTilesQ;
  block /= kTilesQ;
  const int tile_p = block % kTilesP;
  block /= kTilesP;
  const int channel_block = block % kChannelBlocks;
  const int n = block / kChannelBlocks;

  const int tc = static_cast<int>(threadIdx.x) % kThreadsC;
  const int tq = static_cast<int>(threadIdx.x) / kThreadsC % kThreadsQ;
  const int tp = static_cast<int>(threadIdx.x) / (kThreadsC * kThreadsQ);
  const int k0 = (channel_block * kThreadsC + tc) * kVec;
  const int ow0 = tile_q * kTileQ + tq * kOutPerThread;
  if (k0 >= kK || ow0 >= kQ) return;  // no barrier follows
  // Whole 16-byte vectors: every pixel's channels start on one when the row of channels
  // is whole vectors and the tensor starts on one.
  const bool vector_x = kC % kVec == 0 && (reinterpret_cast<unsigned long long>(x) & 15u) == 0;
  const bool vector_y = kK % kVec == 0 && (reinterpret_cast<unsigned long long>(y) & 15u) == 0;

  float b[kVec];
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    b[j] = 0.0f;
    if constexpr (kHasBias) {
      if (kK % kVec == 0 || k0 + j < kK) b[j] = Convert::to_float(__ldg(bias + k0 + j));
    }
  }

  for (int pass = 0; pass < kPasses; ++pass) {
    const int oh0 = tile_p * kTileP + (pass * kThreadsP + tp) * kRowsPerThread;
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int oh = oh0 + i;
      if (oh >= kP) break;
      float acc[kOutPerThread][kVec];
#pragma unroll
      for (int o = 0; o < kOutPerThread; ++o) {
#pragma unroll
        for (int j = 0; j < kVec; ++j) acc[o][j] = 0.0f;
      }
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const int ih = oh * kStrideH - kPadH + r * kDilationH;
        if (static_cast<unsigned>(ih) >= static_cast<unsigned>(kH)) continue;
        const Element* x_row = x + (static_cast<index_t>(n) * kH + ih) * static_cast<index_t>(kW) * kC;
#pragma unroll
        for (int s = 0; s < kS; ++s) {
#pragma unroll
          for (int c = 0; c < kCPerGroup; ++c) {
            float tap[kVec];
#pragma unroll
            for (int j = 0; j < kVec; ++j) {
              const int k = k0 + j;
              tap[j] = 0.0f;
              if (kK % kVec == 0 || k < kK) {
                tap[j] = Convert::to_float(__ldg(w + ((static_cast<index_t>(k) * kR + r) * kS + s) * kCPerGroup + c));
              }
            }
#pragma unroll
            for (int o = 0; o < kOutPerThread; ++o) {
              const int iw = (ow0 + o) * kStrideW - kPadW + s * kDilationW;
              if (ow0 + o >= kQ || static_cast<unsigned>(iw) >= static_cast<unsigned>(kW)) continue;
              float v[kVec];
              load_channels(x_row + static_cast<index_t>(iw) * kC, k0, c, vector_x, v);
#pragma unroll
              for (int j = 0; j < kVec; ++j) acc[o][j] = fmaf(v[j], tap[j], acc[o][j]);
            }
          }
        }
      }

      Element* y_row = y + (static_cast<index_t>(n) * kP + oh) * static_cast<index_t>(kQ) * kK;
#pragma unroll
      for (int o = 0; o < kOutPerThread; ++o) {
        if (ow0 + o >= kQ) break;
        float out[kVec];
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          out[j] = acc[o][j] + b[j];
          if constexpr (kRelu) out[j] = fmaxf(out[j], 0.0f);
        }
        Element* dst = y_row + static_cast<index_t>(ow0 + o) * kK + k0;
        if (vector_y) {
          if constexpr (kDType == 0) {
            *reinterpret_cast<float4*>(dst) = make_float4(out[0], out[1], out[2], out[3]);
          } else {
            *reinterpret_cast<uint4*>(dst) =
                make_uint4(pack2(out[0], out[1]), pack2(out[2], out[3]), pack2(out[4], out[5]), pack2(out[6], out[7]));
          }
        } else {
#pragma unroll
          for (int j = 0; j < kVec; ++j) {
            if (kK % kVec == 0 || k0 + j < kK) dst[j] = Convert::from_float(out[j]);
          }
        }
      }
    }
  }
}

}  // namespace conv2d_depthwise

extern "C" __global__ void __launch_bounds__(conv2d_depthwise::kBlockThreads, spec::kMinBlocks)
    CONVJIT_KERNEL_NAME(const conv2d_depthwise::Element* __restrict__ x,
                        const conv2d_depthwise::Element* __restrict__ w,
                        const conv2d_depthwise::Element* __restrict__ bias,
                        conv2d_depthwise::Element* __restrict__ y CONVJIT_BATCH_PARAM) {
  using namespace conv2d_depthwise;
  if constexpr (kNHWC) {
    nhwc_block(x, w, bias, y);
  } else {
    __shared__ __align__(16) float tile[kTileFloats];

    int block = static_cast<int>(blockIdx.x);
    const int tile_q = block % kTilesQ;
    block /= kTilesQ;
    const int tile_p = block % kTilesP;
    block /= kTilesP;
    const int group = block % kGroups;
    const int n = block / kGroups;

    const int ih0 = tile_p * kTileP * kStrideH - kPadH;
    const int col0 = tile_q * kTileQ * kStrideW - kPadW - kLead;  // a multiple of kVec
    const Element* x_group = x + (static_cast<index_t>(n) * kC + group * kCPerGroup) * (static_cast<index_t>(kH) * kW);
    if (kVectorRows && (reinterpret_cast<unsigned long long>(x) & 15u) == 0) {
      load_tile_vector(tile, x_group, ih0, col0);
    } else {
      load_tile_scalar(tile, x_group, ih0, col0);
    }
    __syncthreads();

    const int tq = static_cast<int>(threadIdx.x) % kThreadsQ;
    const int tp = static_cast<int>(threadIdx.x) / kThreadsQ;
    const int ow0 = tile_q * kTileQ + tq * kOutPerThread;
    if (ow0 >= kQ) return;  // no barrier follows
    // Whole-vector stores: outputs start on a multiple of 4 and rows are whole vectors.
    constexpr unsigned kStoreAlign = kOutPerThread * sizeof(Element);
    const bool vector_store = kQ % kOutPerThread == 0 && (reinterpret_cast<unsigned long long>(y) % kStoreAlign) == 0;
    const float* thread_tile = tile + tq * kThreadStride + (kLead - kWinLead);

    for (int pass = 0; pass < kPasses; ++pass) {
      const int lp0 = (pass * kThreadsP + tp) * kRowsPerThread;  // first output row, in the tile
      const int oh0 = tile_p * kTileP + lp0;
      if (oh0 >= kP) break;
      for (int kk = 0; kk < kKPerGroup; ++kk) {
        const int k = group * kKPerGroup + kk;
        float acc[kRowsPerThread][kOutPerThread];
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
          for (int j = 0; j < kOutPerThread; ++j) acc[i][j] = 0.0f;
        }
#pragma unroll
        for (int c = 0; c < kCPerGroup; ++c) {
          const Element* w_taps = w + (static_cast<index_t>(k) * kCPerGroup + c) * kTaps;
          float taps[kTaps];
#pragma unroll
          for (int t = 0; t < kTaps; ++t) taps[t] = Convert::to_float(__ldg(w_taps + t));
          const float* plane = thread_tile + c * kPlaneFloats;
#pragma unroll
          for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
            for (int r = 0; r < kR; ++r) {
              const float4* row =
                  reinterpret_cast<const float4*>(plane + ((lp0 + i) * kStrideH + r * kDilationH) * kPitch);
              float win[4 * kWindow4];
#pragma unroll
              for (int v = 0; v < kWindow4; ++v) {
                const float4 t = row[v];
                win[4 * v] = t.x;
                win[4 * v + 1] = t.y;
                win[4 * v + 2] = t.z;
                win[4 * v + 3] = t.w;
              }
#pragma unroll
              for (int s = 0; s < kS; ++s) {
#pragma unroll
                for (int j = 0; j < kOutPerThread; ++j) {
                  acc[i][j] = fmaf(win[kWinLead + j * kStrideW + s * kDilationW], taps[r * kS + s], acc[i][j]);
                }
              }
            }
          }
        }

        float b = 0.0f;
        if constexpr (kHasBias) b = Convert::to_float(__ldg(bias + k));
        Element* y_plane = y + (static_cast<index_t>(n) * kK + k) * (static_cast<index_t>(kP) * kQ);
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) {
          const int oh = oh0 + i;
          if (oh >= kP) break;
          float out[kOutPerThread];
#pragma unroll
          for (int j = 0; j < kOutPerThread; ++j) {
            out[j] = acc[i][j];
            if constexpr (kHasBias) out[j] += b;
            if constexpr (kRelu) out[j] = fmaxf(out[j], 0.0f);
          }
          Element* dst = y_plane + static_cast<index_t>(oh) * kQ + ow0;
          if (vector_store) {
            if constexpr (kDType == 0) {
              *reinterpret_cast<float4*>(dst) = make_float4(out[0], out[1], out[2], out[3]);
            } else {
              *reinterpret_cast<uint2*>(dst) = make_uint2(pack2(out[0], out[1]), pack2(out[2], out[3]));
            }
          } else {
#pragma unroll
            for (int j = 0; j < kOutPerThread; ++j) {
              if (ow0 + j < kQ) dst[j] = Convert::from_float(out[j]);
            }
          }
        }
      }
    }
  }
}
