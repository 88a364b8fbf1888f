// Depthwise and narrow-group 2D convolution, NCHW or NHWC (kLayout): few input
// channels a group (the specializer sends it problems with at most 4), few output
// channels a group (a depthwise multiplier up to 8). float32, float16 or bfloat16 data (kDType), always
// accumulated in float32 and rounded once, at the store. These problems do a handful
// of FMAs per byte, so the kernel is built to stream: read each input once, write each
// output once, both coalesced and as wide as alignment allows.
//
// convjit prepends a prologue that defines CONVJIT_SPECIALIZED, CONVJIT_KERNEL_NAME
// and the compile-time values of namespace `spec` below; with them every bound, index
// and trip count is a compile-time constant. Without the prologue this file still
// compiles (with the example values below), so a test can check it under NVRTC.
// Namespace-scope constants are enumerators of unnamed enums with a fixed type, not constexpr
// variables: NVRTC emits each of those as a device global, and loading them is most of a
// module load (runtime/src/specialize/prologue.hpp).
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
// Small planes (kPlanes > 1, one tile covers the whole plane): a block owns kPlanes
// consecutive (image, group) planes instead, so that it has real work and its loads
// are wide. Consecutive planes are contiguous in x and in y (the plane index is
// image * kGroups + group for both), so the block reads one run of x with 16-byte
// loads whatever the row width, scatters it into its tiles, and writes its outputs
// through shared memory as one run of y, 16 bytes a store, where the run's start is
// aligned (otherwise, and for the run's tail, one element at a time).
//
// NHWC: a pixel's channels are contiguous, so the work is split along them instead of
// through a shared tile. Each thread computes kCV consecutive output channels (one 16-
// or 8-byte vector of y: the specializer picks the width, since 8-byte vectors halve a
// thread's registers and so double the warps that hide the loads' latency) of
// kOutPerThread consecutive outputs of a row; a block is kThreadsC such channel
// vectors (fastest) x kThreadsQ column groups x kThreadsP rows, so a warp reads and
// writes contiguous runs of channels. The block's filter taps are copied once into
// shared memory, channel-fastest, so a thread reads its kCV channels of a tap as float4s
// (in w they are kTaps apart). Along a row a thread loads each input column its outputs
// share once and applies it to every (output, tap) pair it meets, so a stride-1 5-wide
// filter loads 8 columns for 4 outputs, not 20; the rows above and below, and the
// neighbouring threads' columns, are re-read from L1. A pure depthwise problem (one
// input and one output channel a group) loads each input pixel's kCV channels in one
// vector load when every row of channels is whole vectors and x is aligned to one;
// otherwise, and for multipliers and narrow groups, one element a load. The same test on
// y chooses vector or per-element stores, so any element-aligned pointer and any c work.
//
// NHWC pure depthwise (kStaged): the direct loads above re-read each input row once for
// every output row under it, through L2, which bounded them at a third of DRAM's rate.
// A staged block instead copies the input pixels under its kTileP x kTileQ outputs (its
// slab's channels of each, as x stores them) into shared memory once, with asynchronous
// 16- or 8-byte copies that are all in flight before the first wait (kPasses groups, one
// per pass down the tile), zero-filled outside the image; its threads then read their
// windows from there. A block whose x is not vector-aligned takes the direct loads.

#ifndef CONVJIT_SPECIALIZED
#define CONVJIT_KERNEL_NAME conv2d_depthwise_example
namespace spec {
enum : int { kN = 2, kC = 6, kH = 13, kW = 16, kK = 12, kR = 3, kS = 3 };
enum : int { kStrideH = 1, kStrideW = 2, kPadH = 1, kPadW = 1, kDilationH = 1, kDilationW = 2 };
enum : int { kGroups = 3, kP = 13, kQ = 7 };
enum : bool { kHasBias = true, kRelu = true };
enum : int { kThreadsQ = 2, kThreadsP = 4, kRowsPerThread = 2, kPasses = 2, kTilesQ = 1, kMinBlocks = 4 };
enum : int { kThreadsC = 1 };                     // channel vectors a block (NHWC; 1 for NCHW)
enum : int { kNhwcChannels = 4, kNhwcOuts = 4 };  // NHWC: channels (8 or 16 bytes) and row outputs a thread
enum : bool { kStaged = false };                  // NHWC: the block's input tile staged in shared memory
enum : int { kPlanes = 1 };                       // (image, group) planes a block (NCHW; more than 1: whole planes)
enum : bool { kWideIndex = false };
enum : int { kDType = 0 };   // f32 (0 f32, 1 f16, 2 bf16)
enum : int { kLayout = 0 };  // nchw (0 nchw, 1 nhwc)
}  // namespace spec
#endif

// element::Traits (f16 / bf16 <-> float) and device::IndexType.
#include "convjit_device.cuh"

namespace conv2d_depthwise {
using namespace spec;

using index_t = typename device::IndexType<kWideIndex>::type;
using Convert = element::Traits<kDType>;
using Element = Convert::Storage;

enum : int { kCPerGroup = kC / kGroups };
enum : int { kKPerGroup = kK / kGroups };
enum : int { kTaps = kR * kS };
enum : bool { kNHWC = kLayout == 1 };
enum : int { kOutPerThread = kNHWC ? kNhwcOuts : 4 };  // consecutive outputs of one row
enum : int { kVec = 16 / sizeof(Element) };            // elements in one 16-byte load
// NHWC: the output channels a thread computes, one 16- or 8-byte vector of y.
enum : int { kCV = kNHWC ? kNhwcChannels : kVec };
enum : int { kCVBytes = kCV * static_cast<int>(sizeof(Element)) };
enum : int { kPlaneThreads = kThreadsQ * kThreadsP };
enum : int { kBlockThreads = kThreadsC * kPlanes * kPlaneThreads };
enum : int { kTileQ = kThreadsQ * kOutPerThread };
enum : int { kTileP = kThreadsP * kRowsPerThread * kPasses };
enum : int { kTilesP = (kP + kTileP - 1) / kTileP };

// The shared tile: kInRows input rows of kPitch floats a channel. Its column 0 is the
// input column rounded down to a multiple of kVec (so 16-byte chunks of a row land
// whole), kLead columns before the first column the tile's outputs read.
enum : int { kLead = ((-kPadW) % kVec + kVec) % kVec };
enum : int { kInRows = (kTileP - 1) * kStrideH + (kR - 1) * kDilationH + 1 };
// One thread's window in a row: the inputs under its kOutPerThread outputs, read as
// float4 from a 16-byte aligned column, starting kWinLead floats early.
enum : int { kWinLead = kLead % 4 };
enum : int { kWindow = (kOutPerThread - 1) * kStrideW + (kS - 1) * kDilationW + 1 };
enum : int { kWindow4 = (kWinLead + kWindow + 3) / 4 };
enum : int { kThreadStride = kOutPerThread * kStrideW };  // columns between two threads' windows
enum : int { kColsNeeded = (kThreadsQ - 1) * kThreadStride + (kLead - kWinLead) + 4 * kWindow4 };
enum : int { kPitch = (kColsNeeded + kVec - 1) / kVec * kVec };
enum : int { kChunksPerRow = kPitch / kVec };
enum : int { kPlaneFloats = kInRows * kPitch };
enum : int { kTileFloats = kCPerGroup * kPlaneFloats };
enum : int { kLoadBatch = 8 };  // loads in flight per thread before their stores
// A row's 16-byte chunks are all inside the image or all outside when rows are whole chunks.
enum : bool { kVectorRows = kW % kVec == 0 };

// Several whole planes a block: the runs of x and y one plane is, and the block's
// outputs, staged as floats in the layout y has.
enum : bool { kManyPlanes = !kNHWC && kPlanes > 1 };
enum : int { kInPlaneElements = kCPerGroup * kH * kW };
enum : int { kOutPlaneElements = kKPerGroup * kP * kQ };
enum : long long { kAllPlanes = static_cast<long long>(kN) * kGroups };
enum : int { kStageFloats = kManyPlanes ? kPlanes * kOutPlaneElements : 1 };

// NHWC: output channels in vectors of kVec, kThreadsC vectors a block.
enum : int { kKVecs = (kK + kCV - 1) / kCV };
enum : int { kChannelBlocks = (kKVecs + kThreadsC - 1) / kThreadsC };
// One input channel per output channel: a vector of outputs reads a vector of inputs.
enum : bool { kChannelwise = kCPerGroup == 1 && kKPerGroup == 1 };
// The block's taps in shared memory: one row of kTapPitch floats per (tap, input
// channel of the group), the block's output channels along it. The 4 floats past the
// kSlab channels keep the transposing stores to few bank conflicts and the rows 16-byte aligned.
enum : int { kSlab = kThreadsC * kCV };
enum : int { kTapPitch = kSlab + 4 };
enum : int { kTapRows = kTaps * kCPerGroup };
enum : int { kTapFloats = kNHWC ? kTapRows * kTapPitch : 1 };
// The input columns one thread's row of outputs reads (NHWC), first to last.
enum : int { kRowWindow = (kOutPerThread - 1) * kStrideW + (kS - 1) * kDilationW + 1 };
// A filter row's taps (kS x kCV floats) stay in registers while its columns stream by,
// up to 64 floats; a wider row goes a tap at a time.
enum : bool { kTapsInRegisters = kS * kCV <= 64 };
// NHWC, kStaged (pure depthwise): the input pixels under the block's kTileP x kTileQ
// outputs, the slab's channels of each as stored in x, copied once into shared memory
// with zero fill for padding; a slab narrower than 128 bytes gets 16 bytes of pitch more
// a pixel, so the pixels a warp reads at once fall on different banks.
enum : int { kStageRows = kStaged ? (kTileP - 1) * kStrideH + (kR - 1) * kDilationH + 1 : 1 };
enum : int { kStageCols = kStaged ? (kTileQ - 1) * kStrideW + (kS - 1) * kDilationW + 1 : 1 };
enum : int { kSlabBytes = kSlab * static_cast<int>(sizeof(Element)) };
enum : int { kPixelPitch = kSlabBytes + (kSlabBytes < 128 ? 16 : 0) };
enum : int { kStageBytes = kStaged ? kStageRows * kStageCols * kPixelPitch : 16 };

static_assert(kLayout == 0 || kLayout == 1, "kLayout: 0 nchw, 1 nhwc");
static_assert(kC % kGroups == 0 && kK % kGroups == 0, "groups must divide c and k");
static_assert(kNHWC || kThreadsC == 1, "the NCHW tile has no channel dimension");
static_assert(!kNHWC || kPlanes == 1, "NHWC blocks split channels, not planes");
static_assert(kPlanes == 1 || (kTilesQ == 1 && kTileP >= kP), "several planes a block: a tile is a whole plane");
static_assert(kNHWC || kTilesQ == 1 || (kTileQ * kStrideW) % kVec == 0, "column tiles must start on a 16-byte chunk");
static_assert(kTilesQ * kTileQ >= kQ && kTilesP * kTileP >= kP, "the tiles must cover the output");
static_assert(kNHWC || (kPlanes * kTileFloats + kStageFloats) * 4 <= 48 * 1024,
              "the input tiles must fit static shared memory");
// The staged tile is dynamic shared memory (the launch's), up to what an SM has beside the taps.
static_assert(!kNHWC || (kTapFloats * 4 <= 48 * 1024 && kTapFloats * 4 + kStageBytes <= 227 * 1024),
              "the taps must fit static shared memory and the input tile an SM's dynamic shared memory beside them");
static_assert(!kStaged || (kNHWC && kChannelwise && kTapsInRegisters && kPasses <= 4),
              "a staged input tile: NHWC, one channel a group, a filter row's taps in registers, at most four passes");
static_assert(!kNHWC || ((kCVBytes == 16 || kCVBytes == 8) && kCV % 4 == 0),
              "NHWC: a thread's channels are one 16- or 8-byte vector of at least 4 elements");
static_assert(kNHWC || kOutPerThread == 4, "the NCHW tiles take four outputs a thread");

// The N elements of one 16- or 8-byte vector, given as its 32-bit words, as floats.
template <int N>
__device__ __forceinline__ void unpack_words(const unsigned (&words)[4], float (&f)[N]) {
  if constexpr (kDType == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) f[i] = __uint_as_float(words[i]);
  } else {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) {  // little-endian: the lower half is the earlier element
      f[2 * i] = Convert::to_float(static_cast<unsigned short>(words[i] & 0xffffu));
      f[2 * i + 1] = Convert::to_float(static_cast<unsigned short>(words[i] >> 16));
    }
  }
}

// The kVec elements of one 16-byte load, as floats.
__device__ __forceinline__ void unpack_vector(uint4 raw, float (&f)[kVec]) {
  const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
  unpack_words(words, f);
}

__device__ __forceinline__ void store_chunk(float* dst, uint4 raw) {
  float f[kVec];
  unpack_vector(raw, f);
#pragma unroll
  for (int i = 0; i < kVec; i += 4)
    *reinterpret_cast<float4*>(dst + i) = make_float4(f[i], f[i + 1], f[i + 2], f[i + 3]);
}

__device__ __forceinline__ unsigned pack2(float a, float b) {
  return static_cast<unsigned>(Convert::from_float(a)) | (static_cast<unsigned>(Convert::from_float(b)) << 16);
}

// N floats as the 16 or 8 bytes of y they round to, one store (float32: 16 bytes only).
template <int N>
__device__ __forceinline__ void store_elements(Element* dst, const float (&out)[N]) {
  constexpr int kBytes = N * static_cast<int>(sizeof(Element));
  static_assert(kBytes == 16 || (kBytes == 8 && kDType != 0), "one 16-byte vector, or 8 bytes of 16-bit data");
  if constexpr (kDType == 0) {
    *reinterpret_cast<float4*>(dst) = make_float4(out[0], out[1], out[2], out[3]);
  } else if constexpr (kBytes == 16) {
    *reinterpret_cast<uint4*>(dst) =
        make_uint4(pack2(out[0], out[1]), pack2(out[2], out[3]), pack2(out[4], out[5]), pack2(out[6], out[7]));
  } else {
    *reinterpret_cast<uint2*>(dst) = make_uint2(pack2(out[0], out[1]), pack2(out[2], out[3]));
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

// One thread's outputs of one output channel, from the tile: kRowsPerThread rows from
// tile row lp0 (output rows, counted in the tile) x kOutPerThread columns. `thread_tile`
// is the thread's first window column in channel 0 of the group; `w_k` output channel
// k's taps (kCPerGroup x kTaps).
__device__ __forceinline__ void tile_outputs(const float* thread_tile, int lp0, const Element* w_k,
                                             float (&acc)[kRowsPerThread][kOutPerThread]) {
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
    for (int j = 0; j < kOutPerThread; ++j) acc[i][j] = 0.0f;
  }
#pragma unroll
  for (int c = 0; c < kCPerGroup; ++c) {
    float taps[kTaps];
#pragma unroll
    for (int t = 0; t < kTaps; ++t) taps[t] = Convert::to_float(__ldg(w_k + c * kTaps + t));
    const float* plane = thread_tile + c * kPlaneFloats;
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const float4* row = reinterpret_cast<const float4*>(plane + ((lp0 + i) * kStrideH + r * kDilationH) * kPitch);
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
}

__device__ __forceinline__ float epilogue(float acc, float b) {
  float out = acc;
  if constexpr (kHasBias) out += b;
  if constexpr (kRelu) out = fmaxf(out, 0.0f);
  return out;
}

// NCHW, one (image, group) pair a block: see the work split at the top of the file.
__device__ __forceinline__ void nchw_tiled_block(float* tile, const Element* __restrict__ x,
                                                 const Element* __restrict__ w, const Element* __restrict__ bias,
                                                 Element* __restrict__ y) {
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
      tile_outputs(thread_tile, lp0, w + static_cast<index_t>(k) * kCPerGroup * kTaps, acc);

      float b = 0.0f;
      if constexpr (kHasBias) b = Convert::to_float(__ldg(bias + k));
      Element* y_plane = y + (static_cast<index_t>(n) * kK + k) * (static_cast<index_t>(kP) * kQ);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int oh = oh0 + i;
        if (oh >= kP) break;
        float out[kOutPerThread];
#pragma unroll
        for (int j = 0; j < kOutPerThread; ++j) out[j] = epilogue(acc[i][j], b);
        Element* dst = y_plane + static_cast<index_t>(oh) * kQ + ow0;
        if (vector_store) {
          store_elements(dst, out);
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

// Element e of a run of whole planes of x (e < kPlanes * kInPlaneElements) into its
// place in the block's tiles; inputs no output reads are dropped.
__device__ __forceinline__ void scatter_input(float* tiles, int e, float v) {
  const int plane = e / kInPlaneElements;
  const int rest = e % kInPlaneElements;
  const int c = rest / (kH * kW);
  const int ih = rest % (kH * kW) / kW;
  const int iw = rest % kW;
  const int row = ih + kPadH;          // the tile's first row is input row -kPadH
  const int col = iw + kPadW + kLead;  // and its first column -kPadW - kLead
  if (row < kInRows && col < kPitch) tiles[plane * kTileFloats + c * kPlaneFloats + row * kPitch + col] = v;
}

// NCHW, kPlanes whole (image, group) planes a block: see the work split at the top.
__device__ __forceinline__ void nchw_planes_block(float* tiles, float* stage, const Element* __restrict__ x,
                                                  const Element* __restrict__ w, const Element* __restrict__ bias,
                                                  Element* __restrict__ y) {
  const index_t first = static_cast<index_t>(blockIdx.x) * kPlanes;  // the grid ends at kAllPlanes
  const int planes = static_cast<int>(kAllPlanes - first < kPlanes ? kAllPlanes - first : kPlanes);
  const int tid = static_cast<int>(threadIdx.x);

  // Padding and the columns past the image stay zero; the copy below writes the rest.
  for (int i = tid; i < kPlanes * kTileFloats / 4; i += kBlockThreads) {
    reinterpret_cast<float4*>(tiles)[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  __syncthreads();

  const Element* src = x + first * kInPlaneElements;
  const int count = planes * kInPlaneElements;
  int scalar_from = 0;
  if ((reinterpret_cast<unsigned long long>(src) & 15u) == 0) {
    const int chunks = count / kVec;
    for (int base = 0; base < chunks; base += kLoadBatch * kBlockThreads) {
      uint4 v[kLoadBatch];
#pragma unroll
      for (int b = 0; b < kLoadBatch; ++b) {
        const int e = base + b * kBlockThreads + tid;
        if (e < chunks) v[b] = __ldg(reinterpret_cast<const uint4*>(src) + e);
      }
#pragma unroll
      for (int b = 0; b < kLoadBatch; ++b) {
        const int e = base + b * kBlockThreads + tid;
        if (e < chunks) {
          float f[kVec];
          unpack_vector(v[b], f);
#pragma unroll
          for (int j = 0; j < kVec; ++j) scatter_input(tiles, e * kVec + j, f[j]);
        }
      }
    }
    scalar_from = chunks * kVec;
  }
  for (int e = scalar_from + tid; e < count; e += kBlockThreads)
    scatter_input(tiles, e, Convert::to_float(__ldg(src + e)));
  __syncthreads();

  const int plane = tid / kPlaneThreads;
  const int tq = tid % kPlaneThreads % kThreadsQ;
  const int tp = tid % kPlaneThreads / kThreadsQ;
  if (plane < planes) {
    const int group = static_cast<int>((first + plane) % kGroups);
    const int ow0 = tq * kOutPerThread;
    const float* thread_tile = tiles + plane * kTileFloats + tq * kThreadStride + (kLead - kWinLead);
    float* plane_stage = stage + plane * kOutPlaneElements;
    for (int pass = 0; pass < kPasses; ++pass) {
      const int oh0 = (pass * kThreadsP + tp) * kRowsPerThread;
      for (int kk = 0; kk < kKPerGroup; ++kk) {
        const int k = group * kKPerGroup + kk;
        float acc[kRowsPerThread][kOutPerThread];
        tile_outputs(thread_tile, oh0, w + static_cast<index_t>(k) * kCPerGroup * kTaps, acc);
        float b = 0.0f;
        if constexpr (kHasBias) b = Convert::to_float(__ldg(bias + k));
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
          for (int j = 0; j < kOutPerThread; ++j) {
            if (oh0 + i < kP && ow0 + j < kQ) {
              plane_stage[(kk * kP + oh0 + i) * kQ + ow0 + j] = epilogue(acc[i][j], b);
            }
          }
        }
      }
    }
  }
  __syncthreads();

  Element* dst = y + first * kOutPlaneElements;
  const int out_count = planes * kOutPlaneElements;
  int out_scalar_from = 0;
  if ((reinterpret_cast<unsigned long long>(dst) & 15u) == 0) {
    const int chunks = out_count / kVec;
    for (int e = tid; e < chunks; e += kBlockThreads) {
      float out[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) out[j] = stage[e * kVec + j];
      store_elements(dst + e * kVec, out);
    }
    out_scalar_from = chunks * kVec;
  }
  for (int e = out_scalar_from + tid; e < out_count; e += kBlockThreads) dst[e] = Convert::from_float(stage[e]);
}

// NHWC: one kCVBytes vector of x as stored (16 or 8 bytes).
template <bool Sixteen>
struct RawVector {
  using type = uint4;
};
template <>
struct RawVector<false> {
  using type = uint2;
};
using CVRaw = RawVector<kCVBytes == 16>::type;

__device__ __forceinline__ void unpack_cv(const uint4& raw, float (&f)[kCV]) {
  const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
  unpack_words(words, f);
}
__device__ __forceinline__ void unpack_cv(const uint2& raw, float (&f)[kCV]) {
  const unsigned words[4] = {raw.x, raw.y, 0u, 0u};
  unpack_words(words, f);
}

// NHWC: kCV consecutive elements from one aligned kCVBytes load, as floats.
__device__ __forceinline__ void load_cv(const Element* src, float (&f)[kCV]) {
  unpack_cv(__ldg(reinterpret_cast<const CVRaw*>(src)), f);
}

// NHWC: the input values output channels k0 .. k0 + kCV - 1 read at one pixel (its
// channels start at `pixel`) for input channel c of their group; 0 past kK.
__device__ __forceinline__ void load_channels(const Element* pixel, int k0, int c, bool vector_x, float (&v)[kCV]) {
  if constexpr (kChannelwise) {
    if (vector_x) {
      load_cv(pixel + k0, v);
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < kCV; ++j) {
    const int k = k0 + j;
    v[j] = 0.0f;
    if (kK % kCV == 0 || k < kK) v[j] = Convert::to_float(__ldg(pixel + (k / kKPerGroup) * kCPerGroup + c));
  }
}

// NHWC: whether column u of a thread's row window feeds one of its outputs through some
// tap (with stride or dilation over 1, some columns feed none and are not loaded).
__device__ constexpr bool column_used(int u) {
  for (int s = 0; s < kS; ++s) {
    const int d = u - s * kDilationW;
    if (d >= 0 && d % kStrideW == 0 && d / kStrideW < kOutPerThread) return true;
  }
  return false;
}

// NHWC: input column u of a thread's row window (v, its kCV channels) times every tap
// of the filter row (tap) that takes it to one of the thread's outputs.
__device__ __forceinline__ void apply_column(int u, const float (&v)[kCV], const float (&tap)[kS][kCV],
                                             float (&acc)[kOutPerThread][kCV]) {
#pragma unroll
  for (int s = 0; s < kS; ++s) {
    const int d = u - s * kDilationW;
    if (d < 0 || d % kStrideW != 0 || d / kStrideW >= kOutPerThread) continue;
#pragma unroll
    for (int j = 0; j < kCV; ++j) acc[d / kStrideW][j] = fmaf(v[j], tap[s][j], acc[d / kStrideW][j]);
  }
}

// NHWC: the block's taps, output channels kb .. kb + kSlab - 1 (zeros past kK). They are
// contiguous in w (K, R, S, C/g), so the copy reads w coalesced and transposes into
// taps[(t * kCPerGroup + c) * kTapPitch + channel].
__device__ __forceinline__ void load_taps(float* taps, const Element* __restrict__ w, int kb) {
  const Element* src = w + static_cast<index_t>(kb) * kTapRows;
  for (int e = static_cast<int>(threadIdx.x); e < kSlab * kTapRows; e += kBlockThreads) {
    const int channel = e / kTapRows;
    float v = 0.0f;
    if (kK % kSlab == 0 || kb + channel < kK) v = Convert::to_float(__ldg(src + e));
    taps[e % kTapRows * kTapPitch + channel] = v;
  }
}

// NHWC: the kCV channels of tap t (r * kS + s) for input channel c, from the thread's
// column of the shared taps.
__device__ __forceinline__ void load_tap(const float* thread_taps, int t, int c, float (&tap)[kCV]) {
  const float* row = thread_taps + (t * kCPerGroup + c) * kTapPitch;
#pragma unroll
  for (int j = 0; j < kCV; j += 4) {
    const float4 v = *reinterpret_cast<const float4*>(row + j);
    tap[j] = v.x;
    tap[j + 1] = v.y;
    tap[j + 2] = v.z;
    tap[j + 3] = v.w;
  }
}

// NHWC, kStaged: one pass's rows of the block's input tile (tile rows row_begin ..
// row_end - 1 of the tile at ih0, iw0, channels kb..) into shared memory as one group of
// asynchronous copies; zeros outside the image and past kK. The block issues every
// pass's group before its first wait, so later passes' copies run under earlier passes'
// products.
__device__ __forceinline__ void stage_rows(unsigned char* stage, const Element* __restrict__ x, int n, int ih0, int iw0,
                                           int kb, int row_begin, int row_end) {
  const int copies = (row_end - row_begin) * kStageCols * kThreadsC;
  for (int e = static_cast<int>(threadIdx.x); e < copies; e += kBlockThreads) {
    const int v = e % kThreadsC;
    const int pixel = row_begin * kStageCols + e / kThreadsC;
    const int ih = ih0 + pixel / kStageCols;
    const int iw = iw0 + pixel % kStageCols;
    const int k = kb + v * kCV;
    const bool valid = static_cast<unsigned>(ih) < static_cast<unsigned>(kH) &&
                       static_cast<unsigned>(iw) < static_cast<unsigned>(kW) && (kK % kSlab == 0 || k < kK);
    const Element* src = valid ? x + ((static_cast<index_t>(n) * kH + ih) * kW + iw) * static_cast<index_t>(kC) + k : x;
    unsigned char* dst = stage + pixel * kPixelPitch + v * kCVBytes;
    if constexpr (kCVBytes == 16) {
      device::cp_async16(dst, src, valid);
    } else {
      device::cp_async8(dst, src, valid);
    }
  }
  device::cp_async_commit();
}

// NHWC, kStaged: the tile rows pass `pass` reads end before this row.
__device__ constexpr int stage_rows_end(int pass) {
  const int last = ((pass + 1) * kThreadsP * kRowsPerThread - 1) * kStrideH + (kR - 1) * kDilationH + 1;
  return last < kStageRows ? last : kStageRows;
}

// Waits until at most `pending` of this thread's copy groups are in flight (waiting for
// more than asked where pending is over 3).
__device__ __forceinline__ void wait_copy_groups(int pending) {
  if (pending <= 0) {
    device::cp_async_wait<0>();
  } else if (pending == 1) {
    device::cp_async_wait<1>();
  } else if (pending == 2) {
    device::cp_async_wait<2>();
  } else {
    device::cp_async_wait<3>();
  }
}

// NHWC, kStaged: a thread's kOutPerThread outputs of local output row lp, from the
// staged tile (no bounds: padding is zeros there).
__device__ __forceinline__ void staged_row(const unsigned char* stage, int lp, int tq, int tc, const float* thread_taps,
                                           float (&acc)[kOutPerThread][kCV]) {
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const unsigned char* row =
        stage + ((lp * kStrideH + r * kDilationH) * kStageCols + tq * kOutPerThread * kStrideW) * kPixelPitch +
        tc * kCVBytes;
    float tap[kS][kCV];
#pragma unroll
    for (int s = 0; s < kS; ++s) load_tap(thread_taps, r * kS + s, 0, tap[s]);
#pragma unroll
    for (int u = 0; u < kRowWindow; ++u) {
      if (!column_used(u)) continue;
      float v[kCV];
      unpack_cv(*reinterpret_cast<const CVRaw*>(row + u * kPixelPitch), v);
      apply_column(u, v, tap, acc);
    }
  }
}

// NHWC: a thread's kOutPerThread outputs of output row oh, its inputs read from x (L1
// holds what neighbouring threads and rows share).
__device__ __forceinline__ void direct_row(const Element* __restrict__ x, int n, int oh, int iw0, int k0, bool vector_x,
                                           const float* thread_taps, float (&acc)[kOutPerThread][kCV]) {
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int ih = oh * kStrideH - kPadH + r * kDilationH;
    if (static_cast<unsigned>(ih) >= static_cast<unsigned>(kH)) continue;
    const Element* x_row = x + (static_cast<index_t>(n) * kH + ih) * static_cast<index_t>(kW) * kC;
#pragma unroll
    for (int c = 0; c < kCPerGroup; ++c) {
      if constexpr (kTapsInRegisters) {
        float tap[kS][kCV];
#pragma unroll
        for (int s = 0; s < kS; ++s) load_tap(thread_taps, r * kS + s, c, tap[s]);
#pragma unroll
        for (int u = 0; u < kRowWindow; ++u) {
          if (!column_used(u)) continue;
          const int iw = iw0 + u;
          if (static_cast<unsigned>(iw) >= static_cast<unsigned>(kW)) continue;
          float v[kCV];
          load_channels(x_row + static_cast<index_t>(iw) * kC, k0, c, vector_x, v);
          apply_column(u, v, tap, acc);
        }
      } else {
        // A wide filter row: one tap at a time, each output loading its own column.
#pragma unroll 1
        for (int s = 0; s < kS; ++s) {
          float tap[kCV];
          load_tap(thread_taps, r * kS + s, c, tap);
#pragma unroll
          for (int o = 0; o < kOutPerThread; ++o) {
            const int iw = iw0 + o * kStrideW + s * kDilationW;
            if (static_cast<unsigned>(iw) >= static_cast<unsigned>(kW)) continue;
            float v[kCV];
            load_channels(x_row + static_cast<index_t>(iw) * kC, k0, c, vector_x, v);
#pragma unroll
            for (int j = 0; j < kCV; ++j) acc[o][j] = fmaf(v[j], tap[j], acc[o][j]);
          }
        }
      }
    }
  }
}

// NHWC: the bias of output channels k0 .. k0 + kCV - 1 (0 past kK, or without a bias).
__device__ __forceinline__ void load_bias(const Element* __restrict__ bias, int k0, bool active, float (&b)[kCV]) {
#pragma unroll
  for (int j = 0; j < kCV; ++j) {
    b[j] = 0.0f;
    if constexpr (kHasBias) {
      if (active && (kK % kCV == 0 || k0 + j < kK)) b[j] = Convert::to_float(__ldg(bias + k0 + j));
    }
  }
}

// NHWC: one block's outputs; see the work split at the top of the file.
__device__ __forceinline__ void nhwc_block(float* taps, unsigned char* stage, const Element* __restrict__ x,
                                           const Element* __restrict__ w, const Element* __restrict__ bias,
                                           Element* __restrict__ y) {
  int block = static_cast<int>(blockIdx.x);
  const int tile_q = block % kTilesQ;
  block /= kTilesQ;
  const int tile_p = block % kTilesP;
  block /= kTilesP;
  const int channel_block = block % kChannelBlocks;
  const int n = block / kChannelBlocks;

  load_taps(taps, w, channel_block * kSlab);
  // Whole vectors: every pixel's channels start on one when the row of channels is whole
  // vectors and the tensor starts on one.
  const bool vector_x = kC % kCV == 0 && (reinterpret_cast<unsigned long long>(x) & (kCVBytes - 1u)) == 0;
  // The same for every thread, so every thread of a staged block reaches its barriers below.
  const bool staged = kStaged && vector_x;
  if (staged) {
    for (int pass = 0; pass < kPasses; ++pass) {
      stage_rows(stage, x, n, tile_p * kTileP * kStrideH - kPadH, tile_q * kTileQ * kStrideW - kPadW,
                 channel_block * kSlab, pass == 0 ? 0 : stage_rows_end(pass - 1), stage_rows_end(pass));
    }
  } else {
    __syncthreads();
  }

  const int tc = static_cast<int>(threadIdx.x) % kThreadsC;
  const int tq = static_cast<int>(threadIdx.x) / kThreadsC % kThreadsQ;
  const int tp = static_cast<int>(threadIdx.x) / (kThreadsC * kThreadsQ);
  const int k0 = (channel_block * kThreadsC + tc) * kCV;
  const int ow0 = tile_q * kTileQ + tq * kOutPerThread;
  // A staged block's threads all reach its barriers below; the others' threads meet none.
  const bool active = k0 < kK && ow0 < kQ;
  if (!active && !staged) return;
  const bool vector_y = kK % kCV == 0 && (reinterpret_cast<unsigned long long>(y) & (kCVBytes - 1u)) == 0;
  const float* thread_taps = taps + tc * kCV;
  const int iw0 = ow0 * kStrideW - kPadW;  // the thread's first window column

  float b[kCV];
  load_bias(bias, k0, active, b);

  for (int pass = 0; pass < kPasses; ++pass) {
    if (kStaged && staged) {
      wait_copy_groups(kPasses - 1 - pass);
      __syncthreads();
      if (!active) continue;
    }
    const int oh0 = tile_p * kTileP + (pass * kThreadsP + tp) * kRowsPerThread;
    // Rows one after another: their accumulators need not live together.
#pragma unroll 1
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int oh = oh0 + i;
      if (oh >= kP) break;
      float acc[kOutPerThread][kCV];
#pragma unroll
      for (int o = 0; o < kOutPerThread; ++o) {
#pragma unroll
        for (int j = 0; j < kCV; ++j) acc[o][j] = 0.0f;
      }
      if (kStaged && staged) {
        staged_row(stage, oh - tile_p * kTileP, tq, tc, thread_taps, acc);
      } else {
        direct_row(x, n, oh, iw0, k0, vector_x, thread_taps, acc);
      }

      Element* y_row = y + (static_cast<index_t>(n) * kP + oh) * static_cast<index_t>(kQ) * kK;
#pragma unroll
      for (int o = 0; o < kOutPerThread; ++o) {
        if (ow0 + o >= kQ) break;
        // A staged block's registers go to its accumulators and taps: the bias is read
        // again at each store (from L1) instead of held through the rows.
        if constexpr (kStaged) load_bias(bias, k0, active, b);
        float out[kCV];
#pragma unroll
        for (int j = 0; j < kCV; ++j) out[j] = epilogue(acc[o][j], b[j]);
        Element* dst = y_row + static_cast<index_t>(ow0 + o) * kK + k0;
        if (vector_y) {
          store_elements(dst, out);
        } else {
#pragma unroll
          for (int j = 0; j < kCV; ++j) {
            if (kK % kCV == 0 || k0 + j < kK) dst[j] = Convert::from_float(out[j]);
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
    __shared__ __align__(16) float taps[kTapFloats];
    extern __shared__ __align__(16) unsigned char stage[];  // kStageBytes where kStaged
    nhwc_block(taps, stage, x, w, bias, y);
  } else if constexpr (kManyPlanes) {
    __shared__ __align__(16) float tiles[kPlanes * kTileFloats];
    __shared__ float stage[kStageFloats];
    nchw_planes_block(tiles, stage, x, w, bias, y);
  } else {
    __shared__ __align__(16) float tile[kTileFloats];
    nchw_tiled_block(tile, x, w, bias, y);
  }
}
