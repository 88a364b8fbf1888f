// Implicit-GEMM 2D convolution on tensor cores for float16 and bfloat16 data
// (mma.sync m16n8k16, float32 accumulation, one rounding at the store), NCHW.
//
// GEMM view, one group at a time (as conv2d_igemm_tf32.cu):
//   Y[k][pixel] = sum_kk W[k][kk] * X[kk][pixel]
//   rows      k      output channels of the group              (kBM per block)
//   columns   pixel  (n, p, q) flattened, q fastest            (kBN per block)
//   reduction kk     (c, r, s) flattened, s fastest            (kBK per k tile)
//
// Pipeline: two shared-memory stages and one barrier per k tile. While the warps
// multiply tile t, tile t+1 is on its way:
//   W: 16-byte cp.async copies, issued before the math of tile t (when every row of W
//      is whole 16-byte chunks; otherwise through registers like X);
//   X: gathered straight from NCHW into registers, issued before the math of tile t and
//      written to shared memory after it. cp.async copies 4, 8 or 16 bytes, never the
//      single 2-byte element a gather needs, so the loads go through registers, and the
//      math of one tile is what hides their latency.
// Fragments come out of shared memory with ldmatrix (W) and ldmatrix.trans (X, stored
// pixel-fastest); rows are padded by 16 bytes so the eight rows of each ldmatrix
// fall in distinct banks.
//
// The gather: each thread owns one pixel column and kBRowsPerThread reduction rows;
// the 32 threads of a warp read 32 neighbouring pixels of one (c, r, s) row, which for
// stride 1 is contiguous memory. The offsets of kk -> (c, r, s) come from a table built
// at compile time (constant memory, one broadcast load per row). A pixel whose whole
// window lies inside the image (every pixel when there is no padding) skips the bounds
// tests. Columns past the last pixel gather pixel 0's window: finite values in columns
// whose outputs are never stored.
//
// Epilogue in registers: float32 accumulator + bias, optional ReLU, rounded to nearest
// even into the 16-bit type, two neighbouring pixels per 32-bit store where they share
// an image.
//
// Needs sm_80 or newer (m16n8k16 bf16/f16 mma, cvt.rn.bf16). Any 2-byte aligned pointers:
// wide copies and stores only where kAlignW and kAlignY allow them.
//
// convjit prepends the prologue defining namespace `spec`; the values below let
// the file compile standalone under NVRTC for the tests.

#ifndef CONVJIT_SPECIALIZED
#define CONVJIT_KERNEL_NAME conv2d_igemm_f16_example
namespace spec {
constexpr int kN = 2, kC = 6, kH = 11, kW = 9, kK = 20, kR = 3, kS = 3;
constexpr int kStrideH = 1, kStrideW = 2, kPadH = 1, kPadW = 1, kDilationH = 1, kDilationW = 2;
constexpr int kGroups = 2, kP = 11, kQ = 4;
constexpr bool kHasBias = true, kRelu = true;
constexpr int kDType = 1;  // f16 (0 f32, 1 f16, 2 bf16)
constexpr int kBM = 32, kBN = 128, kBK = 32, kWarpsM = 1, kWarpsN = 4;
constexpr int kMinBlocksPerSm = 2;
constexpr bool kWideIndex = false;
constexpr int kAlignW = 16, kAlignY = 16;
}  // namespace spec
#endif

// device::IndexType, smem_addr, cp_async16 / _commit / _wait, ldmatrix_x4.
#include "convjit_device.cuh"

namespace igemm {
using namespace spec;
using namespace device;

static_assert(kDType == 1 || kDType == 2, "this kernel is for f16 (kDType 1) and bf16 (kDType 2) data");
constexpr bool kBFloat16 = kDType == 2;
// Both types travel as their bit patterns: NVRTC has no built-in cuda_fp16.h, and a
// deployed runtime may have no toolkit headers to point it at.
using Element = unsigned short;

using index_t = typename device::IndexType<kWideIndex>::type;

constexpr int kCPerGroup = kC / kGroups;
constexpr int kKPerGroup = kK / kGroups;
constexpr int kTaps = kR * kS;
constexpr int kGemmK = kCPerGroup * kTaps;
constexpr long long kPixelsPerImage = static_cast<long long>(kP) * kQ;
constexpr long long kGemmN = kN * kPixelsPerImage;
constexpr int kThreads = kWarpsM * kWarpsN * 32;
constexpr int kWarpTileM = kBM / kWarpsM;
constexpr int kWarpTileN = kBN / kWarpsN;
constexpr int kMmaM = kWarpTileM / 16;
constexpr int kMmaN = kWarpTileN / 8;
constexpr int kAStride = kBK + 8;  // elements; +16 bytes per row keeps ldmatrix conflict-free
constexpr int kBStride = kBN + 8;
constexpr int kAStage = kBM * kAStride;
constexpr int kBStage = kBK * kBStride;
constexpr int kKTiles = (kGemmK + kBK - 1) / kBK;
// Every W row is whole 16-byte chunks and w is 16-byte aligned (kAlignW, kAlignY: what
// convjit knows of the pointers at this launch).
constexpr bool kWeightsAsync = kGemmK % 8 == 0 && kAlignW >= 16;
constexpr int kAChunksPerRow = kBK / 8;  // 16-byte chunks of one W row in a tile
constexpr int kARowsPerPass = kThreads / kAChunksPerRow;
constexpr int kAPasses = (kBM + kARowsPerPass - 1) / kARowsPerPass;
constexpr int kAElemsPerThread = (kBM * kBK + kThreads - 1) / kThreads;
constexpr int kBRowsPerPass = kThreads / kBN;
constexpr int kBRowsPerThread = kBK / kBRowsPerPass;
constexpr index_t kImagePlane = static_cast<index_t>(kH) * kW;
constexpr bool kPadded = kPadH > 0 || kPadW > 0;
// Two outputs of neighbouring pixels (even, odd) share an image and a 4-byte word.
constexpr bool kPairStores = kPixelsPerImage % 2 == 0 && kAlignY >= 4;

static_assert(kWarpTileM % 16 == 0, "warp tile rows must be whole m16 tiles");
static_assert(kWarpTileN % 16 == 0, "warp tile columns must be whole pairs of n8 tiles (one ldmatrix.x4.trans)");
static_assert(kBK % 16 == 0, "kBK must be a multiple of the mma k (16)");
static_assert(kThreads % kBN == 0 && kBK % kBRowsPerPass == 0, "X gather needs whole rows per pass");
static_assert(kThreads % kAChunksPerRow == 0, "W copy needs whole rows per pass");

// The pointer as an opaque register value: without it the compiler folds every tap's
// address back into "argument + 64-bit index" (four instructions a tap, not one).
template <typename T>
__device__ __forceinline__ const T* opaque(const T* p) {
  asm("" : "+l"(p));
  return p;
}

// The transposed ldmatrix (B fragments from the [k][pixel] tile); ldmatrix_x4 and the
// cp.async helpers come from convjit_device.cuh.
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const Element* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row_address)));
}

__device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  if constexpr (kBFloat16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

__device__ __forceinline__ float to_float(Element bits) {
  if constexpr (kBFloat16) {
    return __uint_as_float(static_cast<unsigned>(bits) << 16);
  } else {
    float v;
    asm("cvt.f32.f16 %0, %1;" : "=f"(v) : "h"(bits));
    return v;
  }
}

// Round to nearest even.
__device__ __forceinline__ Element from_float(float v) {
  Element bits;
  if constexpr (kBFloat16) {
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(bits) : "f"(v));
  } else {
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(v));
  }
  return bits;
}

// Gather table (convjit_device.cuh): kk -> (c, r, s) offsets and displacements.
constexpr bool kUseTable = gather_table_fits(kGemmK, kCPerGroup, kImagePlane, kR, kS, kDilationH, kDilationW);
constexpr int kTableEntries = kUseTable ? kGemmK : 1;
__constant__ GatherTable<kTableEntries> kGather =
    make_gather_table<kTableEntries>(kUseTable, kR, kS, kDilationH, kDilationW, kImagePlane, kW);

}  // namespace igemm

extern "C" __global__ void __launch_bounds__(igemm::kThreads, igemm::kMinBlocksPerSm)
CONVJIT_KERNEL_NAME(const igemm::Element* __restrict__ x, const igemm::Element* __restrict__ w,
                    const igemm::Element* __restrict__ bias, igemm::Element* __restrict__ y) {
  using namespace igemm;
  extern __shared__ __align__(16) Element smem[];
  Element* a_smem = smem;                // [2][kBM][kAStride]
  Element* b_smem = smem + 2 * kAStage;  // [2][kBK][kBStride]

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int warp_m = warp / kWarpsN;
  const int warp_n = warp % kWarpsN;
  const int group = blockIdx.z;
  const int m0 = blockIdx.y * kBM;                                // first output channel (in group)
  const long long n0 = static_cast<long long>(blockIdx.x) * kBN;  // first pixel

  const Element* w_group = w + static_cast<index_t>(group) * kKPerGroup * kGemmK;
  const Element* x_group = x + static_cast<index_t>(group) * kCPerGroup * kImagePlane;

  // This thread's gather column: one pixel and its window's top-left corner.
  const int b_col = tid % kBN;
  const int b_row0 = tid / kBN;
  const long long pixel = n0 + b_col;
  const bool pixel_valid = pixel < kGemmN;
  const int img = pixel_valid ? static_cast<int>(pixel / kPixelsPerImage) : 0;
  const int pq = pixel_valid ? static_cast<int>(pixel % kPixelsPerImage) : 0;
  const int ih0 = (pq / kQ) * kStrideH - kPadH;
  const int iw0 = (pq % kQ) * kStrideW - kPadW;
  // The window's top-left tap, which may lie in the padding (before x, even): only
  // in-image taps are ever read through it. A pointer here, so that each tap's address
  // is one multiply-add of its table offset.
  const Element* x_pixel =
      opaque(x_group + (static_cast<index_t>(img) * kC * kImagePlane + static_cast<index_t>(ih0) * kW + iw0));
  const bool interior = !kPadded || (ih0 >= 0 && ih0 + (kR - 1) * kDilationH < kH && iw0 >= 0 &&
                                     iw0 + (kS - 1) * kDilationW < kW);

  Element x_regs[kBRowsPerThread];
  auto gather_x = [&](int k_tile) {
    const int k0 = k_tile * kBK;
#pragma unroll
    for (int i = 0; i < kBRowsPerThread; ++i) {
      const int kk = k0 + b_row0 + i * kBRowsPerPass;
      const bool in_k = kGemmK % kBK == 0 || kk < kGemmK;
      index_t offset;
      int dh, dw;
      if constexpr (kUseTable) {
        const int entry = in_k ? kk : 0;
        offset = kGather.offset[entry];
        const int shift = kGather.shift[entry];
        dh = shift >> 16;
        dw = shift & 0xffff;
      } else {
        const int c = kk / kTaps;
        const int rs = kk % kTaps;
        dh = (rs / kS) * kDilationH;
        dw = (rs % kS) * kDilationW;
        offset = c * kImagePlane + dh * kW + dw;
      }
      bool valid = in_k;
      if constexpr (kPadded) {
        if (!interior) {
          valid = valid && static_cast<unsigned>(ih0 + dh) < static_cast<unsigned>(kH) &&
                  static_cast<unsigned>(iw0 + dw) < static_cast<unsigned>(kW);
        }
      }
      x_regs[i] = valid ? __ldg(x_pixel + offset) : Element{0};
    }
  };
  auto store_x = [&](int stage) {
    Element* dst = b_smem + stage * kBStage + b_col;
#pragma unroll
    for (int i = 0; i < kBRowsPerThread; ++i) dst[(b_row0 + i * kBRowsPerPass) * kBStride] = x_regs[i];
  };

  // This thread's W chunks: columns w_kq..w_kq+7 of the tile in rows w_row + j * kARowsPerPass.
  const int w_row = tid / kAChunksPerRow;
  const int w_kq = (tid % kAChunksPerRow) * 8;
  // Rows past the group's last channel are never read through it (zero-filled instead).
  const Element* w_thread = opaque(w_group + (static_cast<index_t>(m0 + w_row) * kGemmK + w_kq));
  auto copy_w_async = [&](int stage, int k_tile) {
    const int k0 = k_tile * kBK;
    Element* dst = a_smem + stage * kAStage + w_row * kAStride + w_kq;
#pragma unroll
    for (int j = 0; j < kAPasses; ++j) {
      if (kBM % kARowsPerPass != 0 && w_row + j * kARowsPerPass >= kBM) break;
      const bool valid = m0 + w_row + j * kARowsPerPass < kKPerGroup && (kGemmK % kBK == 0 || k0 + w_kq < kGemmK);
      const Element* src = valid ? w_thread + (static_cast<index_t>(j) * kARowsPerPass * kGemmK + k0) : w;
      cp_async16(dst + j * kARowsPerPass * kAStride, src, valid);
    }
  };
  Element w_regs[kWeightsAsync ? 1 : kAElemsPerThread];
  auto load_w = [&](int k_tile) {
    const int k0 = k_tile * kBK;
#pragma unroll
    for (int j = 0; j < kAElemsPerThread; ++j) {
      const int i = tid + j * kThreads;
      const int m = i / kBK;
      const int kk = i % kBK;
      const bool valid = (kBM * kBK % kThreads == 0 || i < kBM * kBK) && m0 + m < kKPerGroup && k0 + kk < kGemmK;
      w_regs[j] = valid ? __ldg(w_group + static_cast<index_t>(m0 + m) * kGemmK + k0 + kk) : Element{0};
    }
  };
  auto store_w = [&](int stage) {
    Element* dst = a_smem + stage * kAStage;
#pragma unroll
    for (int j = 0; j < kAElemsPerThread; ++j) {
      const int i = tid + j * kThreads;
      if (kBM * kBK % kThreads == 0 || i < kBM * kBK) dst[(i / kBK) * kAStride + i % kBK] = w_regs[j];
    }
  };

  float acc[kMmaM][kMmaN][4];
#pragma unroll
  for (int i = 0; i < kMmaM; ++i)
#pragma unroll
    for (int j = 0; j < kMmaN; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  // ldmatrix row addresses of this lane: matrices (rows 0-7 | 8-15) x (cols 0-7 | 8-15).
  // For W that is exactly the A fragment (a0..a3); for X, stored [kk][pixel] and loaded
  // transposed, it is b0, b1 of one n8 tile, then b0, b1 of the next.
  const int lane_row = (lane & 7) + ((lane >> 3) & 1) * 8;
  const int lane_col = (lane >> 4) * 8;
  auto multiply = [&](int stage) {
    const Element* a_lane = a_smem + stage * kAStage + (warp_m * kWarpTileM + lane_row) * kAStride + lane_col;
    const Element* b_lane = b_smem + stage * kBStage + lane_row * kBStride + warp_n * kWarpTileN + lane_col;
#pragma unroll
    for (int k16 = 0; k16 < kBK; k16 += 16) {
      unsigned a_frag[kMmaM][4];
      unsigned b_frag[kMmaN][2];
#pragma unroll
      for (int i = 0; i < kMmaM; ++i) ldmatrix_x4(a_frag[i], a_lane + i * 16 * kAStride + k16);
#pragma unroll
      for (int j = 0; j < kMmaN; j += 2) {
        unsigned r[4];
        ldmatrix_x4_trans(r, b_lane + k16 * kBStride + j * 8);
        b_frag[j][0] = r[0];
        b_frag[j][1] = r[1];
        b_frag[j + 1][0] = r[2];
        b_frag[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < kMmaM; ++i)
#pragma unroll
        for (int j = 0; j < kMmaN; ++j) mma(acc[i][j], a_frag[i], b_frag[j]);
    }
  };

  // Tile 0 into stage 0.
  if constexpr (kWeightsAsync) {
    copy_w_async(0, 0);
  } else {
    load_w(0);
    store_w(0);
  }
  cp_async_commit();
  gather_x(0);
  store_x(0);

  for (int k_tile = 0; k_tile < kKTiles; ++k_tile) {
    const int stage = k_tile & 1;
    cp_async_wait<0>();
    // Tile k_tile is now in shared memory for every warp, and every warp is done with
    // tile k_tile - 1, whose stage the next tile overwrites.
    __syncthreads();
    const bool more = k_tile + 1 < kKTiles;
    if (more) {
      if constexpr (kWeightsAsync) {
        copy_w_async(stage ^ 1, k_tile + 1);
      } else {
        load_w(k_tile + 1);
      }
      gather_x(k_tile + 1);
    }
    cp_async_commit();
    multiply(stage);
    if (more) {
      if constexpr (!kWeightsAsync) store_w(stage ^ 1);
      store_x(stage ^ 1);
    }
  }

  // Epilogue: bias, optional ReLU, one rounding, store to NCHW.
  const int g = lane >> 2;  // mma "group": accumulator rows g and g + 8
  const int t = lane & 3;   // accumulator columns 2t and 2t + 1
#pragma unroll
  for (int i = 0; i < kMmaM; ++i) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = m0 + warp_m * kWarpTileM + i * 16 + g + half * 8;
      if (m >= kKPerGroup) continue;
      const int k_out = group * kKPerGroup + m;
      float b_val = 0.0f;
      if constexpr (kHasBias) b_val = to_float(__ldg(bias + k_out));
#pragma unroll
      for (int j = 0; j < kMmaN; ++j) {
        const long long col = n0 + warp_n * kWarpTileN + j * 8 + 2 * t;  // even
        if (col >= kGemmN) continue;
        float v[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          v[e] = acc[i][j][half * 2 + e] + b_val;
          if constexpr (kRelu) v[e] = fmaxf(v[e], 0.0f);
        }
        const index_t img_out = static_cast<index_t>(col / kPixelsPerImage);
        const index_t pq_out = static_cast<index_t>(col % kPixelsPerImage);
        Element* out = y + (img_out * kK + k_out) * static_cast<index_t>(kPixelsPerImage) + pq_out;
        if constexpr (kPairStores) {
          // col is even and kGemmN is even, so col + 1 is a pixel of the same image.
          *reinterpret_cast<unsigned*>(out) =
              static_cast<unsigned>(from_float(v[0])) | static_cast<unsigned>(from_float(v[1])) << 16;
        } else {
          out[0] = from_float(v[0]);
          if (col + 1 < kGemmN) {
            const index_t next = (col + 1) % kPixelsPerImage == 0 ? static_cast<index_t>(kK - 1) * kPixelsPerImage : 0;
            out[1 + next] = from_float(v[1]);
          }
        }
      }
    }
  }
}
