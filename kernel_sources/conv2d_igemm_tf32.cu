// Implicit-GEMM 2D convolution on tensor cores (mma.sync m16n8k8 TF32), float32 NCHW.
//
// GEMM view, one group at a time:  Y[k][pixel] = sum_kk W[k][kk] * X[kk][pixel]
//   rows      k      output channels of the group              (kBM per block)
//   columns   pixel  (n, p, q) flattened, q fastest            (kBN per block)
//   reduction kk     (c, r, s) flattened, s fastest            (kBK per pipeline stage)
// W is read as stored (kk contiguous); X is gathered straight from NCHW with
// cp.async (out-of-image taps zero-filled), so there is no im2col buffer and no
// transpose pass: neighbouring threads read neighbouring pixels, which for any
// stride-1 row is contiguous memory.
//
// kSplit == 1: TF32: each thread rounds the elements it copied into shared memory to
//              the nearest TF32 value once per tile (the tensor cores would
//              otherwise truncate, a bias that reaches 1e-3 on all-positive data);
//              fp32 accumulate.
// kSplit == 3: 3xTF32: a = big + small with big = a's top 19 bits (exact split);
//              big*big + big*small + small*big restores fp32 accuracy. Each k tile
//              sums into a fresh fragment that is then added with an fp32 FADD, so
//              the tensor cores' truncating accumulation never runs over a long chain.
//
// The reduction index kk -> (c, r, s) gather offsets come from a table built at
// compile time (constant memory, one broadcast load per row) rather than from
// divisions in the loop (convjit_device.cuh).
//
// convjit prepends the prologue defining namespace `spec`; the values below let
// the file compile standalone under NVRTC for the tests.

#ifndef CONVJIT_SPECIALIZED
#define CONVJIT_KERNEL_NAME conv2d_igemm_tf32_example
namespace spec {
constexpr int kN = 2, kC = 6, kH = 11, kW = 9, kK = 20, kR = 3, kS = 3;
constexpr int kStrideH = 1, kStrideW = 2, kPadH = 1, kPadW = 1, kDilationH = 1, kDilationW = 2;
constexpr int kGroups = 2, kP = 11, kQ = 4;
constexpr bool kHasBias = true, kRelu = false;
constexpr int kBM = 64, kBN = 128, kBK = 32, kStages = 3, kWarpsM = 1, kWarpsN = 4, kSplit = 3;
constexpr int kMinBlocksPerSm = 1;
constexpr bool kWideIndex = false;
constexpr int kAlignW = 16;
}  // namespace spec
#endif

// device::IndexType, smem_addr, cp_async16 / _commit / _wait, ldmatrix_x4.
#include "convjit_device.cuh"

namespace igemm {
using namespace spec;
using namespace device;

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
// Row pads chosen so the mma fragment loads hit 32 distinct banks.
constexpr int kAStride = kBK + 4;
constexpr int kBStride = kBN + 8;
constexpr int kAStageFloats = kBM * kAStride;
constexpr int kBStageFloats = kBK * kBStride;
constexpr int kKTiles = (kGemmK + kBK - 1) / kBK;
// 16-byte copies of W where every row is whole 16-byte chunks and w itself is 16-byte
// aligned (kAlignW: what convjit knows of the pointer at this launch).
constexpr bool kWeightsVectorizable = kGemmK % 4 == 0 && kAlignW >= 16;
constexpr int kBRowsPerPass = kThreads / kBN;
constexpr int kBRowsPerThread = kBK / kBRowsPerPass;
constexpr index_t kImagePlane = static_cast<index_t>(kH) * kW;

static_assert(kWarpTileM % 16 == 0 && kWarpTileN % 8 == 0, "warp tile must be a whole number of mma tiles");
static_assert(kThreads % kBN == 0 && kBK % kBRowsPerPass == 0, "X loader needs whole rows per pass");
static_assert(kBK % 8 == 0, "kBK must be a multiple of the mma k (8)");

// 4 bytes global -> shared (.ca: .cg takes only 16-byte copies); valid == false
// writes a zero (padding, tails). The 16-byte copy, the commit, the wait and
// ldmatrix_x4 come from convjit_device.cuh.
__device__ __forceinline__ void cp_async4(float* dst, const float* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 4 : 0));
}

// Gather table (convjit_device.cuh): kk -> (c, r, s) offsets and displacements.
constexpr bool kUseTable = gather_table_fits(kGemmK, kCPerGroup, kImagePlane, kR, kS, kDilationH, kDilationW);
constexpr int kTableEntries = kUseTable ? kGemmK : 1;
__constant__ GatherTable<kTableEntries> kGather =
    make_gather_table<kTableEntries>(kUseTable, kR, kS, kDilationH, kDilationW, kImagePlane, kW);

__device__ __forceinline__ void mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Round to nearest TF32 (ties away from zero), kept in fp32 storage.
__device__ __forceinline__ float round_tf32(float v) {
  return __uint_as_float((__float_as_uint(v) + 0x1000u) & 0xffffe000u);
}

// Splits fp32 bit patterns into TF32 parts: v == big + small exactly.
template <int N>
__device__ __forceinline__ void split(const unsigned (&v)[N], unsigned (&big)[N], unsigned (&small)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    big[i] = v[i] & 0xffffe000u;
    small[i] = __float_as_uint(__uint_as_float(v[i]) - __uint_as_float(big[i]));
  }
}

}  // namespace igemm

extern "C" __global__ void __launch_bounds__(igemm::kThreads, igemm::kMinBlocksPerSm)
CONVJIT_KERNEL_NAME(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                    float* __restrict__ y) {
  using namespace igemm;
  extern __shared__ __align__(16) float smem[];
  float* a_smem = smem;                                 // [kStages][kBM][kAStride]
  float* b_smem = smem + kStages * kAStageFloats;       // [kStages][kBK][kBStride]

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int warp_m = warp / kWarpsN;
  const int warp_n = warp % kWarpsN;
  const int group = blockIdx.z;
  const int m0 = blockIdx.y * kBM;                                  // first output channel (in group)
  const long long n0 = static_cast<long long>(blockIdx.x) * kBN;    // first pixel

  const float* w_group = w + static_cast<index_t>(group) * kKPerGroup * kGemmK;
  const float* x_group = x + static_cast<index_t>(group) * kCPerGroup * kImagePlane;

  // This thread gathers X for one pixel column and kBRowsPerThread reduction rows.
  const int b_col = tid % kBN;
  const int b_row0 = tid / kBN;
  const long long pixel = n0 + b_col;
  const bool pixel_valid = pixel < kGemmN;
  const int img = pixel_valid ? static_cast<int>(pixel / kPixelsPerImage) : 0;
  const int pq = pixel_valid ? static_cast<int>(pixel % kPixelsPerImage) : 0;
  const int ih0 = (pq / kQ) * kStrideH - kPadH;
  const int iw0 = (pq % kQ) * kStrideW - kPadW;
  const float* x_pixel = x_group + static_cast<index_t>(img) * kC * kImagePlane;

  auto load_stage = [&](int stage, int k_tile) {
    const int k0 = k_tile * kBK;
    float* a_dst = a_smem + stage * kAStageFloats;
    if constexpr (kWeightsVectorizable) {
#pragma unroll
      for (int i = tid; i < kBM * kBK / 4; i += kThreads) {
        const int m = i / (kBK / 4);
        const int kq = (i % (kBK / 4)) * 4;
        const bool valid = m0 + m < kKPerGroup && k0 + kq < kGemmK;
        const float* src = valid ? w_group + static_cast<index_t>(m0 + m) * kGemmK + k0 + kq : w;
        cp_async16(a_dst + m * kAStride + kq, src, valid);
      }
    } else {
#pragma unroll 4
      for (int i = tid; i < kBM * kBK; i += kThreads) {
        const int m = i / kBK;
        const int kk = i % kBK;
        const bool valid = m0 + m < kKPerGroup && k0 + kk < kGemmK;
        const float* src = valid ? w_group + static_cast<index_t>(m0 + m) * kGemmK + k0 + kk : w;
        cp_async4(a_dst + m * kAStride + kk, src, valid);
      }
    }
    float* b_dst = b_smem + stage * kBStageFloats;
#pragma unroll
    for (int i = 0; i < kBRowsPerThread; ++i) {
      const int row = b_row0 + i * kBRowsPerPass;
      const int kk = k0 + row;
      const bool in_k = kGemmK % kBK == 0 || kk < kGemmK;
      index_t offset;
      int ih, iw;
      if constexpr (kUseTable) {
        const int entry = in_k ? kk : 0;
        const int shift = kGather.shift[entry];
        offset = kGather.offset[entry];
        ih = ih0 + (shift >> 16);
        iw = iw0 + (shift & 0xffff);
      } else {
        const int c = kk / kTaps;
        const int rs = kk % kTaps;
        ih = ih0 + (rs / kS) * kDilationH;
        iw = iw0 + (rs % kS) * kDilationW;
        offset = c * kImagePlane + (rs / kS) * kDilationH * kW + (rs % kS) * kDilationW;
      }
      const bool valid = pixel_valid && in_k && static_cast<unsigned>(ih) < static_cast<unsigned>(kH) &&
                         static_cast<unsigned>(iw) < static_cast<unsigned>(kW);
      const float* src = valid ? x_pixel + offset + static_cast<index_t>(ih0) * kW + iw0 : x;
      cp_async4(b_dst + row * kBStride + b_col, src, valid);
    }
  };

  // TF32 rounding of the elements this thread copied (same mapping as load_stage), so
  // it needs only this thread's own cp.async completion, not a barrier.
  auto round_own_stage = [&](int stage) {
    float* a_dst = a_smem + stage * kAStageFloats;
    if constexpr (kWeightsVectorizable) {
#pragma unroll
      for (int i = tid; i < kBM * kBK / 4; i += kThreads) {
        float4* p = reinterpret_cast<float4*>(a_dst + (i / (kBK / 4)) * kAStride + (i % (kBK / 4)) * 4);
        float4 v = *p;
        v.x = round_tf32(v.x);
        v.y = round_tf32(v.y);
        v.z = round_tf32(v.z);
        v.w = round_tf32(v.w);
        *p = v;
      }
    } else {
#pragma unroll 4
      for (int i = tid; i < kBM * kBK; i += kThreads) {
        float* p = a_dst + (i / kBK) * kAStride + i % kBK;
        *p = round_tf32(*p);
      }
    }
    float* b_dst = b_smem + stage * kBStageFloats;
#pragma unroll
    for (int i = 0; i < kBRowsPerThread; ++i) {
      float* p = b_dst + (b_row0 + i * kBRowsPerPass) * kBStride + b_col;
      *p = round_tf32(*p);
    }
  };

  float acc[kMmaM][kMmaN][4];
#pragma unroll
  for (int i = 0; i < kMmaM; ++i)
#pragma unroll
    for (int j = 0; j < kMmaN; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < kKTiles) load_stage(s, s);
    cp_async_commit();
  }

  const int g = lane >> 2;  // mma "group" row
  const int t = lane & 3;   // thread in group

  for (int k_tile = 0; k_tile < kKTiles; ++k_tile) {
    cp_async_wait<kStages - 2>();
    if constexpr (kSplit == 1) round_own_stage(k_tile % kStages);
    __syncthreads();
    // NOTE: the stage refilled here was consumed in the previous iteration; the
    // barrier above is what makes overwriting it safe.
    const int next = k_tile + kStages - 1;
    if (next < kKTiles) load_stage(next % kStages, next);
    cp_async_commit();

    const float* a_stage = a_smem + (k_tile % kStages) * kAStageFloats + (warp_m * kWarpTileM) * kAStride;
    const float* b_stage = b_smem + (k_tile % kStages) * kBStageFloats + warp_n * kWarpTileN;
    // ldmatrix row address of this lane: matrices (rows 0-7 | 8-15) x (k 0-3 | 4-7).
    const float* a_lane = a_stage + ((lane & 7) + ((lane >> 3) & 1) * 8) * kAStride + (lane >> 4) * 4;
    float part[kSplit == 3 ? kMmaM : 1][kSplit == 3 ? kMmaN : 1][4];
    if constexpr (kSplit == 3) {
#pragma unroll
      for (int i = 0; i < kMmaM; ++i)
#pragma unroll
        for (int j = 0; j < kMmaN; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) part[i][j][e] = 0.0f;
    }
#pragma unroll
    for (int k8 = 0; k8 < kBK; k8 += 8) {
      unsigned a_frag[kMmaM][4];
      unsigned b_frag[kMmaN][2];
#pragma unroll
      for (int i = 0; i < kMmaM; ++i) ldmatrix_x4(a_frag[i], a_lane + i * 16 * kAStride + k8);
#pragma unroll
      for (int j = 0; j < kMmaN; ++j) {
        const float* b = b_stage + (k8 + t) * kBStride + j * 8 + g;
        b_frag[j][0] = __float_as_uint(b[0]);
        b_frag[j][1] = __float_as_uint(b[4 * kBStride]);
      }
      if constexpr (kSplit == 1) {
#pragma unroll
        for (int i = 0; i < kMmaM; ++i)
#pragma unroll
          for (int j = 0; j < kMmaN; ++j) mma_tf32(acc[i][j], a_frag[i], b_frag[j]);
      } else {
        unsigned a_big[kMmaM][4], a_small[kMmaM][4];
        unsigned b_big[kMmaN][2], b_small[kMmaN][2];
#pragma unroll
        for (int i = 0; i < kMmaM; ++i) split(a_frag[i], a_big[i], a_small[i]);
#pragma unroll
        for (int j = 0; j < kMmaN; ++j) split(b_frag[j], b_big[j], b_small[j]);
#pragma unroll
        for (int i = 0; i < kMmaM; ++i)
#pragma unroll
          for (int j = 0; j < kMmaN; ++j) {
            mma_tf32(part[i][j], a_small[i], b_big[j]);
            mma_tf32(part[i][j], a_big[i], b_small[j]);
            mma_tf32(part[i][j], a_big[i], b_big[j]);
          }
      }
    }
    if constexpr (kSplit == 3) {
#pragma unroll
      for (int i = 0; i < kMmaM; ++i)
#pragma unroll
        for (int j = 0; j < kMmaN; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[i][j][e] += part[i][j][e];
    }
  }
  cp_async_wait<0>();

  // Epilogue in registers: bias, optional ReLU, store to NCHW.
#pragma unroll
  for (int i = 0; i < kMmaM; ++i) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = m0 + warp_m * kWarpTileM + i * 16 + g + half * 8;
      if (m >= kKPerGroup) continue;
      const int k_out = group * kKPerGroup + m;
      float b_val = 0.0f;
      if constexpr (kHasBias) b_val = __ldg(bias + k_out);
#pragma unroll
      for (int j = 0; j < kMmaN; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const long long col = n0 + warp_n * kWarpTileN + j * 8 + 2 * t + e;
          if (col >= kGemmN) continue;
          float v = acc[i][j][half * 2 + e] + b_val;
          if constexpr (kRelu) v = fmaxf(v, 0.0f);
          const index_t img_out = static_cast<index_t>(col / kPixelsPerImage);
          const index_t pq_out = static_cast<index_t>(col % kPixelsPerImage);
          y[(img_out * kK + k_out) * static_cast<index_t>(kPixelsPerImage) + pq_out] = v;
        }
      }
    }
  }
}
