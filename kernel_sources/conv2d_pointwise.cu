// Pointwise convolutions (1x1, stride 1, unpadded, one group) as a streaming GEMM on
// tensor cores with mma.sync, both layouts: float32 data in TF32 (m16n8k8), float16 and
// bfloat16 data (m16n8k16); fp32 accumulation, 16-bit outputs rounded once, at the store.
//
// With few input channels such a convolution reads x once and writes y once, and DRAM is
// its bound (docs/perf.md, "A streaming kernel for pointwise layers"). The implicit-GEMM
// kernels give each block one tile whose single stage arrives, is multiplied and then
// stored, so the copies of the next tile wait for the stores of this one. Here the
// weights (a few kilobytes) sit in registers for the whole kernel, and persistent blocks
// walk tiles of pixels through a kStages-deep cp.async pipeline: while the warps multiply
// one tile and store its outputs, the next kStages - 1 tiles' copies are in flight.
//
// GEMM view (per image in NCHW, over every pixel of the batch in NHWC):
//   Y[k][pixel] = sum_c W[k][c] * X[c][pixel]
//   mma M  output channels  kBM a block (blockIdx.y), kWarpM a warp: W, the A operand, in registers
//   mma N  pixels           kBN a tile, kWarpN a warp: X, the B operand, from shared memory
//   mma K  input channels   all kC of them, padded with zeros to the mma's k step (kCPad)
//
// Shared memory: kStages tiles of x, each as x stores it, NCHW [kCPad][kXStride] (pixel
// fastest) and NHWC [kBN][kXStride] (channel fastest), rows padded so that fragment loads
// hit distinct banks; then one staging tile a warp, through which its outputs reach y as
// kYVecBytes vectors of one y row (NCHW: a channel's pixels; NHWC: a pixel's channels)
// rather than as the accumulators' scattered pairs. The host emits the layout (kXStride,
// kStagingStride, kSharedBytes) and the static_asserts below check it.
//
// x arrives in kXVecBytes copies (16, 8 or 4 bytes by cp.async, or one 16-bit element
// through a register when the pointer allows no more); the host picks the widest that the
// pointer's alignment and x's rows allow, so a copy never straddles a row's end. Pixels
// past the last are zero-filled (their outputs are never stored), and so are the padding
// channels, once, before the first copy.
//
// Work items: NCHW, one (image, kBN-pixel tile) each, so that a tile's rows are runs of
// one image's planes; NHWC, kBN consecutive pixels of the whole batch, one run of memory.
//
// Needs sm_80 or newer (cp.async, m16n8k16 bf16 mma).
//
// convjit prepends the prologue defining namespace `spec`; the values below let the file
// compile standalone under NVRTC for the tests.

#ifndef CONVJIT_SPECIALIZED
#define CONVJIT_KERNEL_NAME conv2d_pointwise_example
namespace spec {
enum : int { kN = 2, kC = 20, kH = 7, kW = 9, kK = 40, kR = 1, kS = 1 };
enum : int { kStrideH = 1, kStrideW = 1, kPadH = 0, kPadW = 0, kDilationH = 1, kDilationW = 1 };
enum : int { kGroups = 1, kP = 7, kQ = 9 };
enum : bool { kHasBias = true, kRelu = false };
enum : int { kDType = 0 };   // f32 (0 f32, 1 f16, 2 bf16)
enum : int { kLayout = 0 };  // nchw (0 nchw, 1 nhwc)
enum : int { kBM = 48, kBN = 64, kWarpsM = 3, kWarpsN = 2, kStages = 4 };
enum : bool { kWideIndex = false };
enum : int { kXVecBytes = 4, kYVecBytes = 4 };
enum : int { kXStride = 72, kStagingStride = 36, kSharedBytes = 41472 };
}  // namespace spec
#endif

// element::Traits; device::IndexType, smem_addr, the cp.async and ldmatrix wrappers,
// mma_m16n8.
#include "convjit_device.cuh"

namespace pointwise {
using namespace spec;
using namespace device;

static_assert(kDType == 0 || kDType == 1 || kDType == 2, "kDType: 0 f32, 1 f16, 2 bf16");
static_assert(kR == 1 && kS == 1 && kStrideH == 1 && kStrideW == 1 && kPadH == 0 && kPadW == 0 && kGroups == 1,
              "a pointwise problem: 1x1, stride 1, unpadded, one group");
enum : bool { k16Bit = kDType != 0 };
enum : bool { kNhwc = kLayout == 1 };
using Traits = element::Traits<kDType>;
using Element = typename Traits::Storage;
using index_t = typename device::IndexType<kWideIndex>::type;

enum : int { kElementBytes = static_cast<int>(sizeof(Element)) };
enum : int { kThreads = kWarpsM * kWarpsN * 32 };
enum : int { kWarps = kWarpsM * kWarpsN };
enum : int { kWarpM = kBM / kWarpsM };  // output channels a warp
enum : int { kWarpN = kBN / kWarpsN };  // pixels a warp
enum : int { kMmaK = k16Bit ? 16 : 8 };
enum : int { kCPad = (kC + kMmaK - 1) / kMmaK * kMmaK };
enum : int { kKSteps = kCPad / kMmaK };
enum : int { kFragM = kWarpM / 16 };
enum : int { kFragN = kWarpN / 8 };
enum : long long { kPixels = static_cast<long long>(kP) * kQ };  // an image's, in x and in y
enum : long long { kTilesPerImage = (kPixels + kBN - 1) / kBN };
static_assert(kBM % kWarpsM == 0 && kWarpM % 16 == 0, "warp tiles of whole m16 channel tiles");
static_assert(kBN % kWarpsN == 0 && kWarpN % (k16Bit ? 16 : 8) == 0,
              "warp tiles of whole n8 pixel tiles (pairs of them for 16-bit ldmatrix)");

// A stage's tile of x: NCHW kCPad channel rows of kBN pixels, NHWC kBN pixel rows of
// kCPad channels; kC rows (NCHW) or kC columns (NHWC) of it are copied from x.
enum : int { kXRows = kNhwc ? kBN : kCPad };
enum : int { kXCols = kNhwc ? kCPad : kBN };
enum : int { kXStageElems = kXRows * kXStride };
enum : int { kXVec = kXVecBytes >= kElementBytes ? kXVecBytes / kElementBytes : 1 };
enum : int { kCopyRows = kNhwc ? kBN : kC };
enum : int { kCopyCols = kNhwc ? kC : kBN };
enum : int { kVecsPerRow = kCopyCols / kXVec };
enum : int { kCopies = kCopyRows * kVecsPerRow };
static_assert(kCopyCols % kXVec == 0, "x's copies never straddle a row's end");
static_assert(kXStride >= kXCols && kXStride * kElementBytes % 16 == 0, "x's stage rows: whole 16-byte chunks");

// A warp's staging tile: NCHW kWarpM channel rows of kWarpN pixels; NHWC the transpose.
enum : int { kStagingRows = kNhwc ? kWarpN : kWarpM };
enum : int { kStagingCols = kNhwc ? kWarpM : kWarpN };
enum : int { kStagingElems = kStagingRows * kStagingStride };
enum : int { kYVec = kYVecBytes / kElementBytes };
enum : int { kYVecsPerRow = kStagingCols / kYVec };
static_assert(kYVecBytes >= kElementBytes && kStagingCols % kYVec == 0, "y's stores: whole vectors of a row");
static_assert(kStagingStride >= kStagingCols && kStagingStride * kElementBytes % 16 == 0,
              "staging rows: whole 16-byte chunks");
static_assert(kSharedBytes == (kStages * kXStageElems + kWarps * kStagingElems) * kElementBytes,
              "the host's shared-memory size matches the template's layout");
static_assert(kStages >= 2, "the pipeline needs two stages at least");
// y's rows hold whole vectors (the host picks kYVecBytes so), and so do x's.
static_assert(kNhwc ? kK % kYVec == 0 : kPixels % kYVec == 0, "y's rows are whole vectors");
static_assert(kNhwc ? kC % kXVec == 0 : kPixels % kXVec == 0, "x's rows are whole vectors");

// One vector of x global -> shared; invalid ones are zeros. cp.async copies 4 bytes at
// least: a lone 16-bit element goes through a register.
__device__ __forceinline__ void copy_vec(Element* dst, const Element* src, bool valid) {
  if constexpr (kXVecBytes == 16) {
    cp_async16(dst, src, valid);
  } else if constexpr (kXVecBytes == 8) {
    cp_async8(dst, src, valid);
  } else if constexpr (kXVecBytes == 4) {
    cp_async4(dst, src, valid);
  } else {
    *dst = valid ? __ldg(src) : Element{0};
  }
}

// One vector of y shared -> global.
__device__ __forceinline__ void store_vec(Element* dst, const Element* src) {
  if constexpr (kYVecBytes == 16) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  } else if constexpr (kYVecBytes == 8) {
    *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(src);
  } else if constexpr (kYVecBytes == 4) {
    *reinterpret_cast<unsigned*>(dst) = *reinterpret_cast<const unsigned*>(src);
  } else {
    *dst = *src;
  }
}

__device__ __forceinline__ unsigned to_tf32(float v) {
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}

__device__ __forceinline__ unsigned pack16(Element lo, Element hi) {
  return static_cast<unsigned>(lo) | static_cast<unsigned>(hi) << 16;
}

}  // namespace pointwise

extern "C" __global__ void __launch_bounds__(pointwise::kThreads, 1)
    CONVJIT_KERNEL_NAME(const pointwise::Element* __restrict__ x, const pointwise::Element* __restrict__ w,
                        const pointwise::Element* __restrict__ bias,
                        pointwise::Element* __restrict__ y CONVJIT_BATCH_PARAM) {
  using namespace pointwise;
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  Element* x_tiles = reinterpret_cast<Element*>(smem_bytes);  // [kStages][kXRows][kXStride]
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int warp_m = warp / kWarpsN;
  const int warp_n = warp % kWarpsN;
  const int g = lane >> 2;  // the mma fragments' row group
  const int t = lane & 3;   // and thread in the group
  Element* staging = x_tiles + kStages * kXStageElems + warp * kStagingElems;
  const int k_warp = blockIdx.y * kBM + warp_m * kWarpM;  // the warp's first output channel

  const long long batch = CONVJIT_BATCH(kN);
  const long long items = kNhwc ? (batch * kPixels + kBN - 1) / kBN : batch * kTilesPerImage;
  const long long first = blockIdx.x;
  const long long step = gridDim.x;

  // Padding channels are zeros in every stage; the copies never write them.
  if constexpr (kCPad > kC) {
    for (int i = tid; i < kStages * kBN * (kCPad - kC); i += kThreads) {
      const int stage = i / (kBN * (kCPad - kC));
      const int rest = i % (kBN * (kCPad - kC));
      // NCHW: rows kC..kCPad-1 are whole padding rows (kBN of each); NHWC: columns.
      const int row = kNhwc ? rest / (kCPad - kC) : kC + rest / kBN;
      const int col = kNhwc ? kC + rest % (kCPad - kC) : rest % kBN;
      x_tiles[stage * kXStageElems + row * kXStride + col] = Element{0};
    }
  }

  const auto load_tile = [&](int stage, long long item) {
    Element* tile = x_tiles + stage * kXStageElems;
#pragma unroll 4
    for (int v = tid; v < kCopies; v += kThreads) {
      const int row = v / kVecsPerRow;
      const int col = (v - row * kVecsPerRow) * kXVec;
      const Element* src = x;
      bool valid;
      if constexpr (kNhwc) {
        const long long pixel = item * kBN + row;
        valid = pixel < batch * kPixels;
        if (valid) src = x + (static_cast<index_t>(pixel) * kC + col);
      } else {
        const long long image = item / kTilesPerImage;
        const long long pixel = (item - image * kTilesPerImage) * kBN + col;
        valid = pixel < kPixels;
        if (valid) src = x + ((static_cast<index_t>(image) * kC + row) * static_cast<index_t>(kPixels) + pixel);
      }
      copy_vec(tile + row * kXStride + col, src, valid);
    }
  };

  // The warp's weights as A fragments, once: rows k_warp + 16 i + g (+ 8), reduction
  // columns as the mma's k step lays them out; zeros past kK and kC.
  unsigned a[kFragM][kKSteps][4];
  {
    const auto weight = [&](int k, int c) -> Element {
      return k < kK && c < kC ? __ldg(w + (static_cast<index_t>(k) * kC + c)) : Element{0};
    };
#pragma unroll
    for (int i = 0; i < kFragM; ++i) {
      const int k0 = k_warp + i * 16 + g;
#pragma unroll
      for (int s = 0; s < kKSteps; ++s) {
        if constexpr (k16Bit) {
          const int c0 = s * 16 + 2 * t;
          a[i][s][0] = pack16(weight(k0, c0), weight(k0, c0 + 1));
          a[i][s][1] = pack16(weight(k0 + 8, c0), weight(k0 + 8, c0 + 1));
          a[i][s][2] = pack16(weight(k0, c0 + 8), weight(k0, c0 + 9));
          a[i][s][3] = pack16(weight(k0 + 8, c0 + 8), weight(k0 + 8, c0 + 9));
        } else {
          const int c0 = s * 8 + t;
          a[i][s][0] = to_tf32(weight(k0, c0));
          a[i][s][1] = to_tf32(weight(k0 + 8, c0));
          a[i][s][2] = to_tf32(weight(k0, c0 + 4));
          a[i][s][3] = to_tf32(weight(k0 + 8, c0 + 4));
        }
      }
    }
  }
  // The bias of the two channel rows a thread holds in each m16 tile.
  float bias_of[kFragM][2];
#pragma unroll
  for (int i = 0; i < kFragM; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int k = k_warp + i * 16 + g + 8 * h;
      bias_of[i][h] = kHasBias && k < kK ? Traits::to_float(__ldg(bias + k)) : 0.0f;
    }

    // The pipeline's first kStages - 1 tiles; a group is committed for every stage, filled
    // or not, so that the wait below counts the same groups on every block.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    const long long item = first + s * step;
    if (item < items) load_tile(s, item);
    cp_async_commit();
  }

  int stage = 0;
  for (long long item = first; item < items; item += step) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // this tile is in, and every warp is done with the stage refilled next
    {
      const long long ahead = item + (kStages - 1) * step;
      const int ahead_stage = stage == 0 ? kStages - 1 : stage - 1;
      if (ahead < items) load_tile(ahead_stage, ahead);
      cp_async_commit();
    }

    float acc[kFragM][kFragN][4];
#pragma unroll
    for (int i = 0; i < kFragM; ++i)
#pragma unroll
      for (int j = 0; j < kFragN; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    const Element* tile = x_tiles + stage * kXStageElems;
    const int n_warp = warp_n * kWarpN;  // the warp's first pixel in the tile
#pragma unroll
    for (int s = 0; s < kKSteps; ++s) {
      unsigned b[kFragN][2];
      if constexpr (k16Bit) {
        // ldmatrix: matrix q of lane l's row l % 8 covers channels s*16 + 8 (q & 1) and
        // pixels 8 (q >> 1) on from the pair's first; .trans where pixels are fastest.
        const int q = lane >> 3, r = lane & 7;
#pragma unroll
        for (int j = 0; j < kFragN; j += 2) {
          const int c = s * 16 + (q & 1) * 8;
          const int p = n_warp + j * 8 + (q >> 1) * 8;
          unsigned m[4];
          if constexpr (kNhwc) {
            ldmatrix_x4(m, tile + (p + r) * kXStride + c);
          } else {
            ldmatrix_x4_trans(m, tile + (c + r) * kXStride + p);
          }
          b[j][0] = m[0];
          b[j][1] = m[1];
          b[j + 1][0] = m[2];
          b[j + 1][1] = m[3];
        }
      } else {
#pragma unroll
        for (int j = 0; j < kFragN; ++j) {
          const int c = s * 8 + t;
          const int p = n_warp + j * 8 + g;
          const float b0 = kNhwc ? tile[p * kXStride + c] : tile[c * kXStride + p];
          const float b1 = kNhwc ? tile[p * kXStride + c + 4] : tile[(c + 4) * kXStride + p];
          b[j][0] = to_tf32(b0);
          b[j][1] = to_tf32(b1);
        }
      }
#pragma unroll
      for (int i = 0; i < kFragM; ++i)
#pragma unroll
        for (int j = 0; j < kFragN; ++j) mma_m16n8<kDType>(acc[i][j], a[i][s], b[j]);
    }

    // Epilogue: bias and activation, rounded once into the warp's staging tile, then
    // whole vectors of y's rows.
    __syncwarp();  // the warp's stores of the last tile have read its staging tile
#pragma unroll
    for (int i = 0; i < kFragM; ++i)
#pragma unroll
      for (int j = 0; j < kFragN; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = i * 16 + g + (e >> 1) * 8;  // the warp's channel
          const int col = j * 8 + 2 * t + (e & 1);    // the warp's pixel
          float v = acc[i][j][e] + bias_of[i][e >> 1];
          if constexpr (kRelu) v = fmaxf(v, 0.0f);
          staging[kNhwc ? col * kStagingStride + row : row * kStagingStride + col] = Traits::from_float(v);
        }
    __syncwarp();
    if constexpr (kNhwc) {
      const long long pixel0 = item * kBN + n_warp;
#pragma unroll 4
      for (int v = lane; v < kStagingRows * kYVecsPerRow; v += 32) {
        const int row = v / kYVecsPerRow;
        const int col = (v - row * kYVecsPerRow) * kYVec;
        const long long pixel = pixel0 + row;
        if (pixel < batch * kPixels && k_warp + col < kK) {
          store_vec(y + (static_cast<index_t>(pixel) * kK + k_warp + col), staging + row * kStagingStride + col);
        }
      }
    } else {
      const long long image = item / kTilesPerImage;
      const long long pixel0 = (item - image * kTilesPerImage) * kBN + n_warp;
#pragma unroll 4
      for (int v = lane; v < kStagingRows * kYVecsPerRow; v += 32) {
        const int row = v / kYVecsPerRow;
        const int col = (v - row * kYVecsPerRow) * kYVec;
        const long long pixel = pixel0 + col;
        const int k = k_warp + row;
        if (pixel < kPixels && k < kK) {
          store_vec(y + ((static_cast<index_t>(image) * kK + k) * static_cast<index_t>(kPixels) + pixel),
                    staging + row * kStagingStride + col);
        }
      }
    }
    stage = stage == kStages - 1 ? 0 : stage + 1;
  }
  cp_async_wait<0>();  // no copy outlives the block
}
