// Device helpers that several kernel templates share, kept in one place so a fix
// reaches every kernel. The templates include it like any CUDA header:
//
//   #include "convjit_device.cuh"
//
// At run time convjit hands this file to NVRTC from memory (it is embedded in the
// library with the templates, and its text is part of every kernel's cache key), so
// no include path is needed and a deployed runtime needs no files. For nvcc, add
// -I kernel_sources.
//
// Only what is identical in every user lives here; helpers one kernel tunes for
// itself (its wgmma wrappers, mbarriers) stay in that kernel's file. Nothing
// here depends on namespace `spec`: the header compiles before or after the prologue.

#ifndef CONVJIT_DEVICE_CUH
#define CONVJIT_DEVICE_CUH

// The batch. A dynamic-batch kernel (the prologue defines CONVJIT_DYNAMIC_BATCH) takes it
// as its last parameter, any value from 1 to spec::kN, so one compile serves every batch;
// a static kernel has no such parameter and reads spec::kN, a constant the compiler folds
// into every bound and offset. A template's main entry point ends its parameter list with
// CONVJIT_BATCH_PARAM and reads the batch as CONVJIT_BATCH(spec::kN).
#ifdef CONVJIT_DYNAMIC_BATCH
#define CONVJIT_BATCH_PARAM , const int convjit_batch
#define CONVJIT_BATCH(fixed) convjit_batch
#else
#define CONVJIT_BATCH_PARAM
#define CONVJIT_BATCH(fixed) (fixed)
#endif

// f16 and bf16 travel as their bit patterns, converted by the single PTX instruction
// each conversion is: NVRTC has no built-in cuda_fp16.h, and a deployed runtime may
// have no toolkit headers to point it at.
namespace element {
template <int DType>
struct Traits;  // 0 f32, 1 f16, 2 bf16 (spec::kDType)
template <>
struct Traits<0> {
  using Storage = float;
  static __device__ __forceinline__ float to_float(float v) { return v; }
  static __device__ __forceinline__ float from_float(float v) { return v; }
};
template <>
struct Traits<1> {  // IEEE half
  using Storage = unsigned short;
  static __device__ __forceinline__ float to_float(unsigned short bits) {
    float v;
    asm("cvt.f32.f16 %0, %1;" : "=f"(v) : "h"(bits));
    return v;
  }
  static __device__ __forceinline__ unsigned short from_float(float v) {
    unsigned short bits;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(v));
    return bits;
  }
};
template <>
struct Traits<2> {  // bfloat16: the upper half of a float
  using Storage = unsigned short;
  static __device__ __forceinline__ float to_float(unsigned short bits) {
    return __uint_as_float(static_cast<unsigned>(bits) << 16);
  }
  static __device__ __forceinline__ unsigned short from_float(float v) {
#if __CUDA_ARCH__ >= 800
    unsigned short bits;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(bits) : "f"(v));
    return bits;
#else
    // No bf16 conversion before sm_80: round to nearest even by hand, NaN kept quiet.
    const unsigned u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<unsigned short>((u >> 16) | 0x40u);
    return static_cast<unsigned short>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#endif
  }
};
}  // namespace element

namespace device {

// Index arithmetic in int unless a tensor has more than 2^31 elements
// (spec::kWideIndex): 32-bit indices keep address math to one instruction.
template <bool Wide>
struct IndexType {
  using type = int;
};
template <>
struct IndexType<true> {
  using type = long long;
};

// The 32-bit shared-memory address PTX's shared-state-space instructions take.
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// The pointer as an opaque register value: without it the compiler folds every
// address derived from it back into "argument + 64-bit index" (four instructions a
// gathered tap, not one).
template <typename T>
__device__ __forceinline__ const T* opaque(const T* p) {
  asm("" : "+l"(p));
  return p;
}

// --- cp.async (sm_80+) ---
// 16 bytes global -> shared; valid == false writes zeros (padding, tails).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0));
}
// 4 bytes global -> shared (.ca: .cg takes only 16-byte copies), to a shared-memory
// address or a pointer; valid == false writes a zero.
__device__ __forceinline__ void cp_async4(unsigned dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src, bool valid) {
  cp_async4(smem_addr(dst), src, valid);
}
// 8 bytes global -> shared (.ca, as for 4); valid == false writes zeros.
__device__ __forceinline__ void cp_async8(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 8 : 0));
}
// One run of Bytes / sizeof(T) elements global -> shared, as wide a copy as the run (the
// templates' vector-width constants); an invalid run is zeros. cp.async copies 4 bytes at
// least: a lone 16-bit element goes through a register.
template <int Bytes, typename T>
__device__ __forceinline__ void copy_run(T* dst, const T* src, bool valid) {
  if constexpr (Bytes == 16) {
    cp_async16(dst, src, valid);
  } else if constexpr (Bytes == 8) {
    cp_async8(dst, src, valid);
  } else if constexpr (Bytes == 4) {
    cp_async4(dst, src, valid);
  } else {
    *dst = valid ? __ldg(src) : T{0};
  }
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Four 8x8 16-bit matrices from shared memory; lane i gives the address of row i % 8
// of matrix i / 8. (For fp32 data: four 8x4 tiles, an m16n8k8 TF32 A fragment.)
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row_address)));
}
// The same, transposed: 16-bit B fragments from a tile stored [k][column].
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row_address)));
}

// --- mma.sync (sm_80+), fp32 accumulation ---
// d += a * b, one m16n8 tile: k8 TF32 for f32 data (DType 0, operands already TF32 bit
// patterns), k16 for f16 (1) and bf16 (2).
template <int DType>
__device__ __forceinline__ void mma_m16n8(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  if constexpr (DType == 2) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else if constexpr (DType == 1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// --- implicit-GEMM gather table (the mma.sync template) ---
// For reduction row kk = (c, r, s), s fastest: the input offset of tap (c, r, s)
// relative to a pixel's top-left tap, and the tap's displacement (r * dilation_h) << 16 |
// s * dilation_w for the bounds tests. Built at compile time into constant memory, one
// broadcast load per row instead of divisions in the loop. It applies only while it
// stays small and every entry fits its int: an offset of c x H x W past 2^31 (one image
// of 64 x 6000 x 6000, say) would be truncated, so such problems index without it.
__host__ __device__ constexpr bool gather_table_fits(long long gemm_k, long long c_per_group, long long plane, int r,
                                                     int s, int dilation_h, int dilation_w) {
  return gemm_k <= 6144 && static_cast<long long>(dilation_h) * (r - 1) < 32768 &&
         static_cast<long long>(dilation_w) * (s - 1) < 65536 && c_per_group * plane < (1ll << 31);
}

// The NCHW routes' layout transposes: kImages matrices of kRows x kCols (x per image
// [C][D x H x W] -> [D x H x W][C]; y per image [Z x P x Q][K] -> [K][Z x P x Q]), one
// kTransposeTile-square tile a block at a time, 256 threads (the host's LayoutTranspose),
// tiles blockIdx.x, + gridDim.x, ... in (image, tile row, tile column) order. Through
// shared memory so that global reads and writes both run along rows; the tile's column of
// padding puts a column read on 32 distinct banks for 4-byte elements (at most two threads
// a bank word for 2-byte ones).
// A matrix of at most kNarrowTranspose rows (a stem's 3 or 4 channels) or columns (a
// 4-channel output) fills a tile's sliver only, and a block walking such tiles one after
// the other waits a global load's latency for every few dozen elements: there one thread
// takes a whole column (or row) instead, reading a row (column) apart, and a warp's loads
// of one row stay contiguous while its stores interleave into whole sectors in L2.
enum : int { kTransposeTile = 32, kTransposeThreads = 256, kNarrowTranspose = 8, kNarrowUnroll = 4 };
template <typename T, long long kImages, long long kRows, long long kCols>
__device__ __forceinline__ void transpose_images(const T* __restrict__ src, T* __restrict__ dst) {
  constexpr long long kImage = kRows * kCols;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  const long long first = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if constexpr (kRows <= kNarrowTranspose || kCols <= kNarrowTranspose) {
    // Item i: column i of the narrow-row case (kRows elements kCols apart, written
    // together), row i of the narrow-column one. kNarrowUnroll items a thread have their
    // loads in flight together.
    constexpr bool kByColumn = kRows <= kNarrowTranspose;
    constexpr long long kItems = kByColumn ? kCols : kRows;  // per image
    constexpr int kRun = static_cast<int>(kByColumn ? kRows : kCols);
    constexpr long long kReadStep = kByColumn ? kCols : 1, kWriteStep = kByColumn ? 1 : kRows;
    for (long long base = first; base < kImages * kItems; base += kNarrowUnroll * stride) {
      T v[kNarrowUnroll][kRun];
#pragma unroll
      for (int u = 0; u < kNarrowUnroll; ++u) {
        const long long i = base + u * stride;
        if (i >= kImages * kItems) break;
        const long long image = i / kItems, item = i - image * kItems;
        const T* s = src + image * kImage + (kByColumn ? item : item * kCols);
#pragma unroll
        for (int e = 0; e < kRun; ++e) v[u][e] = s[e * kReadStep];
      }
#pragma unroll
      for (int u = 0; u < kNarrowUnroll; ++u) {
        const long long i = base + u * stride;
        if (i >= kImages * kItems) break;
        const long long image = i / kItems, item = i - image * kItems;
        T* d = dst + image * kImage + (kByColumn ? item * kRows : item);
#pragma unroll
        for (int e = 0; e < kRun; ++e) d[e * kWriteStep] = v[u][e];
      }
    }
  } else {
    constexpr int kRowsPerPass = kTransposeThreads / kTransposeTile;
    __shared__ T tile[kTransposeTile][kTransposeTile + 1];
    constexpr long long kTilesR = (kRows + kTransposeTile - 1) / kTransposeTile;
    constexpr long long kTilesC = (kCols + kTransposeTile - 1) / kTransposeTile;
    constexpr long long kTiles = kImages * kTilesR * kTilesC;
    const int lane = threadIdx.x % kTransposeTile;
    const int row = threadIdx.x / kTransposeTile;
    for (long long t = blockIdx.x; t < kTiles; t += gridDim.x) {
      const long long image = t / (kTilesR * kTilesC);
      const long long in_image = t % (kTilesR * kTilesC);
      const long long r0 = in_image / kTilesC * kTransposeTile;
      const long long c0 = in_image % kTilesC * kTransposeTile;
      const T* s = src + image * kImage;
      T* d = dst + image * kImage;
#pragma unroll
      for (int i = row; i < kTransposeTile; i += kRowsPerPass) {
        const long long r = r0 + i, c = c0 + lane;
        if (r < kRows && c < kCols) tile[i][lane] = s[r * kCols + c];
      }
      __syncthreads();
#pragma unroll
      for (int i = row; i < kTransposeTile; i += kRowsPerPass) {
        const long long c = c0 + i, r = r0 + lane;
        if (r < kRows && c < kCols) d[c * kRows + r] = tile[lane][i];
      }
      // The next tile's loads overwrite what this one's stores read.
      __syncthreads();
    }
  }
}

template <int Entries>
struct GatherTable {
  int offset[Entries];
  int shift[Entries];
};

// The table for a gemm_k-row reduction over taps r x s of a w-wide, plane-sized channel.
template <int Entries>
__host__ __device__ constexpr GatherTable<Entries> make_gather_table(bool use, int r, int s, int dilation_h,
                                                                     int dilation_w, long long plane, int w) {
  GatherTable<Entries> t{};
  if (use) {
    const int taps = r * s;
    for (int kk = 0; kk < Entries; ++kk) {
      const int c = kk / taps, tr = (kk % taps) / s, ts = kk % s;
      t.offset[kk] = static_cast<int>(c * plane) + tr * dilation_h * w + ts * dilation_w;
      t.shift[kk] = (tr * dilation_h) << 16 | (ts * dilation_w);
    }
  }
  return t;
}

}  // namespace device

#endif  // CONVJIT_DEVICE_CUH
