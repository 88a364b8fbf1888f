// Implicit-GEMM 2D convolution on tensor cores with mma.sync, NCHW, for every element
// type (spec::kDType): float32 data in TF32 or 3xTF32 (m16n8k8), float16 and bfloat16
// data (m16n8k16); fp32 accumulation, 16-bit outputs rounded once, at the store.
//
// GEMM view, one group at a time:  Y[k][pixel] = sum_kk W[k][kk] * X[kk][pixel]
//   rows      k      output channels of the group              (kBM per block)
//   columns   pixel  (n, p, q) flattened, q fastest            (kBN per block)
//   reduction kk     (c, r, s) flattened, s fastest            (kBK per k tile)
// W is read as stored (kk contiguous); X is gathered straight from NCHW, so there is no
// im2col buffer and no transpose pass. Each thread gathers one pixel column and
// kBRowsPerThread reduction rows: the 32 threads of a warp read 32 neighbouring pixels
// of one (c, r, s) row, which for stride 1 is contiguous memory. The offsets of
// kk -> (c, r, s) come from a table built at compile time (constant memory, one
// broadcast load per row) rather than from divisions in the loop (convjit_device.cuh).
//
// Shared memory: kStages x [kBM][kAStride] of W, then kStages x [kBK][kBStride] of X,
// each row padded by 16 bytes (W) or 8 elements (X) so that fragment loads hit distinct
// banks. The host sizes the launch from the same layout and emits it in the prologue
// (kAStride, kBStride, kAStageElems, kBStageElems, kSharedBytes); the static_asserts
// below fail the compile if the two ever disagree.
//
// The pipelines differ where the element size forces them to:
//
// float32: kStages stages, both operands by cp.async (X in 4-byte copies, out-of-image
//   taps zero-filled; W in 16-byte copies where every row is whole 16-byte chunks).
//   A fragments by ldmatrix, B fragments by scalar loads.
//   kSplit == 1: TF32: each thread rounds the elements it copied into shared memory to
//                the nearest TF32 value once per tile (the tensor cores would otherwise
//                truncate, a bias that builds up over a reduction of all-positive data).
//   kSplit == 3: 3xTF32: a = big + small with big = a's top 19 bits (exact split);
//                big*big + big*small + small*big restores fp32 accuracy. Each k tile
//                sums into a fresh fragment that is then added with an fp32 FADD, so the
//                tensor cores' truncating accumulation never runs over a long chain.
//
// float16 / bfloat16: two stages and one barrier per k tile; while the warps multiply
//   tile t, tile t+1 is on its way. W: 16-byte cp.async copies issued before the math of
//   tile t (when every row of W is whole 16-byte chunks; otherwise through registers
//   like X). X: gathered into registers before the math of tile t and written to shared
//   memory after it: cp.async copies 4, 8 or 16 bytes, never the single 2-byte element a
//   gather needs, so the math of one tile is what hides the loads' latency. A pixel
//   whose whole window lies inside the image (every pixel when there is no padding)
//   skips the bounds tests; columns past the last pixel gather pixel 0's window (finite
//   values in columns whose outputs are never stored). Fragments by ldmatrix (W) and
//   ldmatrix.trans (X, stored pixel-fastest). Outputs of two neighbouring pixels go out
//   as one 32-bit store where they share an image and kAlignY allows it.
//
// Channels-last (kLayout 1: x[n][h][w][c], w[k][r][s][c/groups], y[n][p][q][k]): the
// reduction runs over (r, s, c), c fastest, so each pixel's slice of one k tile is a run
// of contiguous channels per tap, and W rows are contiguous as before. Both operands are
// then plain copies of contiguous rows: X lands in shared memory as [pixel][kk], like W
// as [k][kk], in kXVecBytes / kWVecBytes cp.async copies (16 bytes where the channel
// count and the pointer allow; the host picks the width, the static_asserts below check
// it), no per-element gather, every dtype on the kStages pipeline. The mma roles swap:
// pixels are the mma's M (A fragments of X by ldmatrix) and channels its N (B fragments
// of W by ldmatrix, non-transposed: [k][kk] is B's column-major form), so that an
// accumulator pair holds two neighbouring channels of one pixel, one store in NHWC.
// TF32 rounding happens in registers on the fragments.
//
// Transposed (kTransposed, PyTorch's nn.ConvTranspose2d / 1d), stride 1, NCHW: the
// forward convolution of x with the filter flipped in every spatial dimension and its
// two channel dimensions swapped, W'[k][c][r][s] = w[c][k][R-1-r][S-1-s] within a group,
// padded by dilation * (kernel - 1) - pad (kPadHF / kPadWF: negative when the padding
// crops more than the filter reaches; the bounds tests then see every tap). <name>_pack
// (compiled in only for transposed problems: CONVJIT_IGEMM_PACK_TRANSPOSED, so that the
// forward modules stay as they were) writes W' from w into the workspace each run, or
// once into the caller's buffer (Conv2dPlan::pack_weights), and the kernel reads W' as a
// forward filter. output_padding is only more output rows and columns (kP, kQ come from
// the transposed extents), which the bounds tests fill with what reaches them.
//
// Needs sm_80 or newer (cp.async, m16n8k16 bf16/f16 mma). Wide copies and stores only
// where kAlignX, kAlignW and kAlignY (what convjit knows of the pointers at this launch)
// allow.
//
// convjit prepends the prologue defining namespace `spec`; the values below let
// the file compile standalone under NVRTC for the tests.
// Namespace-scope constants are enumerators of unnamed enums with a fixed type, not constexpr
// variables: NVRTC emits each of those as a device global, and loading them is most of a
// module load (runtime/src/specialize/prologue.hpp).

#ifndef CONVJIT_SPECIALIZED
#define CONVJIT_KERNEL_NAME conv2d_igemm_example
namespace spec {
enum : int { kN = 2, kC = 6, kH = 11, kW = 9, kK = 20, kR = 3, kS = 3 };
enum : int { kStrideH = 1, kStrideW = 2, kPadH = 1, kPadW = 1, kDilationH = 1, kDilationW = 2 };
enum : int { kGroups = 2, kP = 11, kQ = 4 };
enum : bool { kHasBias = true, kRelu = false };
enum : int { kDType = 0 };  // f32 (0 f32, 1 f16, 2 bf16)
enum : int { kBM = 64, kBN = 128, kBK = 32, kStages = 3, kWarpsM = 1, kWarpsN = 4, kSplit = 3 };
enum : int { kMinBlocksPerSm = 1 };
enum : bool { kWideIndex = false };
enum : int { kAlignW = 16, kAlignY = 16 };
enum : int { kLayout = 0 };  // nchw (0 nchw, 1 nhwc)
enum : int { kAlignX = 16, kXVecBytes = 4, kWVecBytes = 4 };
enum : int { kAStride = 36, kBStride = 136, kAStageElems = 2304, kBStageElems = 4352, kSharedBytes = 79872 };
enum : int { kD = 1, kT = 1, kStrideD = 1, kPadD = 0, kDilationD = 1, kZ = 1 };
enum : bool { kTransposed = false };
}  // namespace spec
#endif

// element::Traits; device::IndexType, opaque, smem_addr, the cp.async and ldmatrix
// wrappers, the gather table.
#include "convjit_device.cuh"

namespace igemm {
using namespace spec;
using namespace device;

static_assert(kDType == 0 || kDType == 1 || kDType == 2, "kDType: 0 f32, 1 f16, 2 bf16");
enum : bool { k16Bit = kDType != 0 };
using Traits = element::Traits<kDType>;
using Element = typename Traits::Storage;

using index_t = typename device::IndexType<kWideIndex>::type;

enum : int { kCPerGroup = kC / kGroups };
enum : int { kKPerGroup = kK / kGroups };
// A depth dimension (3-D, NCHW only): every depth-only step below sits behind kDepth, so
// that a 1-D / 2-D kernel is what it was.
enum : bool { kDepth = kD > 1 || kT > 1 || kZ > 1 };
static_assert(!kDepth || kLayout == 0, "a 3-D problem runs here in NCDHW");
static_assert(!kTransposed || (kStrideD == 1 && kStrideH == 1 && kStrideW == 1 && kLayout == 0),
              "a transposed problem runs here with stride 1, NCHW");
// The forward convolution's padding (transposed: of the flipped filter's).
enum : int { kPadDF = kTransposed ? kDilationD * (kT - 1) - kPadD : kPadD };
enum : int { kPadHF = kTransposed ? kDilationH * (kR - 1) - kPadH : kPadH };
enum : int { kPadWF = kTransposed ? kDilationW * (kS - 1) - kPadW : kPadW };
enum : int { kTaps = kT * kR * kS };
enum : int { kGemmK = kCPerGroup * kTaps };
enum : long long { kPixelsPerImage = static_cast<long long>(kZ) * kP * kQ };
enum : int { kThreads = kWarpsM * kWarpsN * 32 };
enum : int { kWarpTileM = kBM / kWarpsM };
enum : int { kWarpTileN = kBN / kWarpsN };
enum : int { kMmaM = kWarpTileM / 16 };
enum : int { kMmaN = kWarpTileN / 8 };
enum : int { kMmaK = k16Bit ? 16 : 8 };
enum : int { kChunkElems = 16 / static_cast<int>(sizeof(Element)) };  // one 16-byte copy or ldmatrix row
enum : int { kKTiles = (kGemmK + kBK - 1) / kBK };
// Every W row is whole 16-byte chunks and w is 16-byte aligned.
enum : bool { kWeightChunks = kGemmK % kChunkElems == 0 && kAlignW >= 16 };
enum : int { kBRowsPerPass = kThreads / kBN };
enum : int { kBRowsPerThread = kBK / kBRowsPerPass };
enum : index_t { kImagePlane = static_cast<index_t>(kD) * kH * kW };  // one channel of x
enum : index_t { kDepthSlice = static_cast<index_t>(kH) * kW };

// The layout the host emitted, checked against this template's. W rows: +16 bytes keeps
// the eight rows of each ldmatrix in distinct banks. X rows: +8 elements keeps them so
// for 16-bit ldmatrix.trans, and puts the 4 k rows x 8 pixels of an f32 B fragment on 32
// distinct banks. NHWC stores X like W, [pixel][kk], with W's padding, for the same reason.
enum : bool { kNhwc = kLayout == 1 };
static_assert(kAStride == kBK + kChunkElems, "spec::kAStride disagrees with the template's W row stride");
static_assert(kBStride == (kNhwc ? kBK + kChunkElems : kBN + 8),
              "spec::kBStride disagrees with the template's X row stride");
static_assert(kAStageElems == kBM * kAStride, "spec::kAStageElems disagrees with the template's W stage");
static_assert(kBStageElems == (kNhwc ? kBN : kBK) * kBStride,
              "spec::kBStageElems disagrees with the template's X stage");
static_assert(kSharedBytes == kStages * (kAStageElems + kBStageElems) * static_cast<int>(sizeof(Element)),
              "spec::kSharedBytes disagrees with the template's shared memory");

static_assert(kWarpTileM % 16 == 0, "warp tile rows must be whole m16 tiles");
static_assert(kWarpTileN % (k16Bit ? 16 : 8) == 0,
              "warp tile columns must be whole n8 tiles (16-bit: pairs of them, one ldmatrix.x4.trans)");
static_assert(kBK % kMmaK == 0, "kBK must be a multiple of the mma k (8 for TF32, 16 for 16-bit data)");
static_assert(kNhwc || (kThreads % kBN == 0 && kBK % kBRowsPerPass == 0), "X gather needs whole rows per pass");
static_assert(kSplit == 1 || (kSplit == 3 && !k16Bit), "TF32 or 3xTF32; 16-bit data takes one product");
static_assert(kNhwc || !k16Bit || kStages == 2, "the NCHW 16-bit pipeline has two stages");

// The 16-bit pipeline's W copy: 16-byte chunks of W rows, or single elements through
// registers.
enum : int { kAChunksPerRow = kBK / kChunkElems };
enum : int { kARowsPerPass = kThreads / kAChunksPerRow };
enum : int { kAPasses = (kBM + kARowsPerPass - 1) / kARowsPerPass };
enum : int { kAElemsPerThread = (kBM * kBK + kThreads - 1) / kThreads };
enum : bool { kPadded = kTransposed || kPadD > 0 || kPadH > 0 || kPadW > 0 };
// Two outputs of neighbouring pixels (even, odd) share an image and a 4-byte word.
enum : bool { kPairStores = kPixelsPerImage % 2 == 0 && kAlignY >= 4 };
static_assert(!k16Bit || kThreads % kAChunksPerRow == 0, "W copy needs whole rows per pass");

// The copy widths the host chose (and reported as the kernel's alignment needs). NCHW
// reads X one element at a time and W in 16-byte chunks or single elements; NHWC copies
// runs of kXVec channels of X and kWVec reduction elements of W, which must divide the
// group's channels (so a run never straddles a tap or a group) resp. W's rows, and
// which the pointers must be aligned to.
enum : int { kElementBytes = static_cast<int>(sizeof(Element)) };
enum : int { kXVec = kXVecBytes / kElementBytes };
enum : int { kWVec = kWVecBytes / kElementBytes };
__host__ __device__ constexpr bool copy_width_ok(int bytes, int align, long long run) {
  return (bytes == kElementBytes || bytes == 4 || bytes == 8 || bytes == 16) && bytes >= kElementBytes &&
         (bytes == kElementBytes || bytes <= align) && run % (bytes / kElementBytes) == 0 &&
         kBK % (bytes / kElementBytes) == 0;
}
static_assert(kNhwc || (kXVecBytes == kElementBytes && kWVecBytes == (kWeightChunks ? 16 : kElementBytes)),
              "spec::kXVecBytes / kWVecBytes disagree with the NCHW kernel's copies");
static_assert(!kNhwc || copy_width_ok(kXVecBytes, kAlignX, kCPerGroup),
              "spec::kXVecBytes: X copies must divide the group's channels and fit x's alignment");
static_assert(!kNhwc || copy_width_ok(kWVecBytes, kAlignW, kGemmK),
              "spec::kWVecBytes: W copies must divide its rows and fit w's alignment");
// NHWC copy mapping: each thread copies one column of runs, in rows a pass apart.
enum : int { kXRunsPerRow = kBK / kXVec };
enum : int { kWRunsPerRow = kBK / kWVec };
enum : int { kXRowsPerPass = kThreads / kXRunsPerRow };
enum : int { kWRowsPerPass = kThreads / kWRunsPerRow };
enum : int { kXRowsPerThread = (kBN + kXRowsPerPass - 1) / kXRowsPerPass };
enum : int { kWRowsPerThread = (kBM + kWRowsPerPass - 1) / kWRowsPerPass };
// A thread keeps its rows' windows in registers when it has few of them (wide copies);
// narrow copies mean many rows a thread, each decoded when it is copied.
enum : bool { kKeepWindows = kXRowsPerThread <= 8 };
// NHWC warp tiles: m16 tiles of pixels, pairs of n8 tiles of channels (one ldmatrix.x4).
enum : int { kFragP = kWarpTileN / 16 };
enum : int { kFragK = kWarpTileM / 8 };
// Two neighbouring output channels of one pixel share an aligned 2-element word.
enum : bool { kChannelPairStores = kKPerGroup % 2 == 0 && kAlignY >= 2 * kElementBytes };
// NCHW through this NHWC kernel (CONVJIT_IGEMM_VIA_NHWC): x is the workspace's NHWC copy
// of the caller's NCHW x (<name>_x_to_nhwc), W the caller's K,C/g,R,S filter, read an
// element at a time in the NHWC reduction's (r, s, c) order, and each output is stored
// into the caller's NCHW y, a channel at a time: lanes g = 0..7 of a fragment hold eight
// neighbouring pixels of one channel, so a warp's store still writes runs of a row.
#ifdef CONVJIT_IGEMM_VIA_NHWC
enum : bool { kViaNhwc = true };
#ifdef CONVJIT_DYNAMIC_BATCH
static_assert(false, "the route is for static batches: x's region is sized once");
#endif
#else
enum : bool { kViaNhwc = false };
#endif
static_assert(!kViaNhwc || (kNhwc && !kDepth && !kTransposed && kWVecBytes == kElementBytes && !kChannelPairStores),
              "the route's NHWC kernel reads NCHW weights an element at a time and stores NCHW y a channel at a time");
static_assert(!kNhwc || (kThreads % kXRunsPerRow == 0 && kThreads % kWRunsPerRow == 0),
              "NHWC copies need whole rows of runs per pass");
static_assert(!kNhwc || (kWarpTileN % 16 == 0 && kWarpTileM % 16 == 0),
              "NHWC warp tiles: whole m16 pixel tiles and pairs of n8 channel tiles");
static_assert(!kNhwc || kStages >= 2, "the NHWC pipeline needs two stages at least");

// Gather table (convjit_device.cuh): kk -> (c, r, s) offsets and displacements.
enum : bool {
  kUseTable = !kNhwc && !kDepth && gather_table_fits(kGemmK, kCPerGroup, kImagePlane, kR, kS, kDilationH, kDilationW)
};
enum : int { kTableEntries = kUseTable ? kGemmK : 1 };
__constant__ GatherTable<kTableEntries> kGather =
    make_gather_table<kTableEntries>(kUseTable, kR, kS, kDilationH, kDilationW, kImagePlane, kW);

// d += a * b, one m16n8 tile: k8 TF32, or k16 f16 / bf16 (convjit_device.cuh).
__device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  mma_m16n8<kDType>(d, a, b);
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

// The partial sums of one k tile's 3xTF32 products, added to the running accumulators
// once a tile (a fresh chain keeps the small products' error down); a placeholder for one
// product.
template <int M, int N>
using Partial = float[kSplit == 3 ? M : 1][kSplit == 3 ? N : 1][4];

template <int M, int N>
__device__ __forceinline__ void clear_partial(Partial<M, N>& part) {
  if constexpr (kSplit == 3) {
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int j = 0; j < N; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) part[i][j][e] = 0.0f;
  }
}

// One k step of M x N fragment products: into acc (16-bit operands, or ones already
// rounded to TF32), or for 3xTF32 the three products of the split operands into part.
template <int M, int N>
__device__ __forceinline__ void fragment_products(float (&acc)[M][N][4], Partial<M, N>& part, const unsigned (&a)[M][4],
                                                  const unsigned (&b)[N][2]) {
  if constexpr (kSplit == 1) {
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int j = 0; j < N; ++j) mma(acc[i][j], a[i], b[j]);
  } else {
    unsigned a_big[M][4], a_small[M][4];
    unsigned b_big[N][2], b_small[N][2];
#pragma unroll
    for (int i = 0; i < M; ++i) split(a[i], a_big[i], a_small[i]);
#pragma unroll
    for (int j = 0; j < N; ++j) split(b[j], b_big[j], b_small[j]);
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int j = 0; j < N; ++j) {
        mma(part[i][j], a_small[i], b_big[j]);
        mma(part[i][j], a_big[i], b_small[j]);
        mma(part[i][j], a_big[i], b_big[j]);
      }
  }
}

template <int M, int N>
__device__ __forceinline__ void add_partial(float (&acc)[M][N][4], const Partial<M, N>& part) {
  if constexpr (kSplit == 3) {
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int j = 0; j < N; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] += part[i][j][e];
  }
}

}  // namespace igemm

extern "C" __global__ void __launch_bounds__(igemm::kThreads, igemm::kMinBlocksPerSm)
    CONVJIT_KERNEL_NAME(const igemm::Element* __restrict__ x, const igemm::Element* __restrict__ w,
                        const igemm::Element* __restrict__ bias, igemm::Element* __restrict__ y CONVJIT_BATCH_PARAM) {
  using namespace igemm;
  const long long gemm_n = static_cast<long long>(CONVJIT_BATCH(kN)) * kPixelsPerImage;  // pixels of the run
  extern __shared__ __align__(16) Element smem[];
  Element* a_smem = smem;                           // [kStages][kBM][kAStride]
  Element* b_smem = smem + kStages * kAStageElems;  // [kStages][kBK][kBStride]

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

  if constexpr (kNhwc) {
    // ---------------- channels-last ----------------
    // A window: the pixel's top-left tap as an offset into x (negative in the padding;
    // only in-image taps are read through it), with the tap's row and column.
    struct Window {
      index_t base;
      int ih0, iw0;
      bool valid;
    };
    const auto window_of = [&](int row) {
      const long long pixel = n0 + row;
      Window win;
      win.valid = pixel < gemm_n;
      const index_t px = win.valid ? static_cast<index_t>(pixel) : 0;
      const index_t img = px / static_cast<index_t>(kPixelsPerImage);
      const int pq = static_cast<int>(px - img * static_cast<index_t>(kPixelsPerImage));
      win.ih0 = (pq / kQ) * kStrideH - kPadH;
      win.iw0 = (pq % kQ) * kStrideW - kPadW;
      win.base = ((img * kH + win.ih0) * kW + win.iw0) * kC + static_cast<index_t>(group) * kCPerGroup;
      return win;
    };
    const int x_row0 = tid / kXRunsPerRow;
    const int x_col = (tid % kXRunsPerRow) * kXVec;
    const int w_row0 = tid / kWRunsPerRow;
    const int w_col = (tid % kWRunsPerRow) * kWVec;
    Window windows[kKeepWindows ? kXRowsPerThread : 1];
    if constexpr (kKeepWindows) {
#pragma unroll
      for (int j = 0; j < kXRowsPerThread; ++j) windows[j] = window_of(x_row0 + j * kXRowsPerPass);
    }

    auto load_stage = [&](int stage, int k_tile) {
      const int k0 = k_tile * kBK;
      // W: rows as stored, (r, s, c) already contiguous.
      {
        Element* dst = a_smem + stage * kAStageElems + w_col;
        const int kk = k0 + w_col;
        const bool in_k = kGemmK % kBK == 0 || kk < kGemmK;
#pragma unroll
        for (int j = 0; j < kWRowsPerThread; ++j) {
          const int m = w_row0 + j * kWRowsPerPass;
          if (kBM % kWRowsPerPass != 0 && m >= kBM) break;
          const bool valid = in_k && m0 + m < kKPerGroup;
          // The route's (r, s, c) element kk sits at c * kTaps + tap in a K,C,R,S filter row.
          const int w_kk = kViaNhwc ? kk % kCPerGroup * kTaps + kk / kCPerGroup : kk;
          const Element* src = valid ? w_group + (static_cast<index_t>(m0 + m) * kGemmK + w_kk) : w;
          copy_run<kWVecBytes>(dst + m * kAStride, src, valid);
        }
      }
      // X: this thread's run of channels of one tap, for each of its pixels.
      {
        Element* dst = b_smem + stage * kBStageElems + x_col;
        const int kk = k0 + x_col;
        const bool in_k = kGemmK % kBK == 0 || kk < kGemmK;
        const int tap = kk / kCPerGroup;
        const int c = kk - tap * kCPerGroup;
        const int dh = tap / kS * kDilationH;
        const int dw = tap % kS * kDilationW;
        const index_t tap_offset = (static_cast<index_t>(dh) * kW + dw) * kC + c;
#pragma unroll
        for (int j = 0; j < kXRowsPerThread; ++j) {
          const int row = x_row0 + j * kXRowsPerPass;
          if (kBN % kXRowsPerPass != 0 && row >= kBN) break;
          const Window win = kKeepWindows ? windows[kKeepWindows ? j : 0] : window_of(row);
          const bool valid = in_k && win.valid && static_cast<unsigned>(win.ih0 + dh) < static_cast<unsigned>(kH) &&
                             static_cast<unsigned>(win.iw0 + dw) < static_cast<unsigned>(kW);
          const Element* src = valid ? x + (win.base + tap_offset) : x;
          copy_run<kXVecBytes>(dst + row * kBStride, src, valid);
        }
      }
    };

    float acc_t[kFragP][kFragK][4];
#pragma unroll
    for (int i = 0; i < kFragP; ++i)
#pragma unroll
      for (int j = 0; j < kFragK; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_t[i][j][e] = 0.0f;

    // ldmatrix row addresses of this lane. A (pixels, from X): matrices (rows 0-7 | 8-15)
    // x (k low | high half), a0..a3. B (channels, from W): (rows 0-7, k low | high) then
    // rows 8-15: b0, b1 of one n8 tile, then of the next. A k step is 32 bytes either way
    // (k8 of f32, k16 of 16-bit), so a half is one 16-byte chunk.
    const Element* x_lane =
        b_smem + (warp_n * kWarpTileN + (lane & 7) + ((lane >> 3) & 1) * 8) * kBStride + (lane >> 4) * kChunkElems;
    const Element* w_lane =
        a_smem + (warp_m * kWarpTileM + (lane & 7) + (lane >> 4) * 8) * kAStride + ((lane >> 3) & 1) * kChunkElems;
    auto multiply = [&](int stage) {
      Partial<kFragP, kFragK> part;
      clear_partial<kFragP, kFragK>(part);
#pragma unroll
      for (int k = 0; k < kBK; k += kMmaK) {
        unsigned a_frag[kFragP][4];
        unsigned b_frag[kFragK][2];
#pragma unroll
        for (int i = 0; i < kFragP; ++i) ldmatrix_x4(a_frag[i], x_lane + stage * kBStageElems + i * 16 * kBStride + k);
#pragma unroll
        for (int j = 0; j < kFragK; j += 2) {
          unsigned r[4];
          ldmatrix_x4(r, w_lane + stage * kAStageElems + j * 8 * kAStride + k);
          b_frag[j][0] = r[0];
          b_frag[j][1] = r[1];
          b_frag[j + 1][0] = r[2];
          b_frag[j + 1][1] = r[3];
        }
        if constexpr (!k16Bit && kSplit == 1) {
#pragma unroll
          for (int i = 0; i < kFragP; ++i)
#pragma unroll
            for (int e = 0; e < 4; ++e) a_frag[i][e] = __float_as_uint(round_tf32(__uint_as_float(a_frag[i][e])));
#pragma unroll
          for (int j = 0; j < kFragK; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) b_frag[j][e] = __float_as_uint(round_tf32(__uint_as_float(b_frag[j][e])));
        }
        fragment_products(acc_t, part, a_frag, b_frag);
      }
      add_partial(acc_t, part);
    };

#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < kKTiles) load_stage(s, s);
      cp_async_commit();
    }
    for (int k_tile = 0; k_tile < kKTiles; ++k_tile) {
      cp_async_wait<kStages - 2>();
      // Tile k_tile is in shared memory for every warp (the register copies of lone
      // 16-bit elements too), and every warp is done with the stage refilled below.
      __syncthreads();
      const int next = k_tile + kStages - 1;
      if (next < kKTiles) load_stage(next % kStages, next);
      cp_async_commit();
      multiply(k_tile % kStages);
    }
    cp_async_wait<0>();

    // Epilogue in registers: accumulators c0, c1 (c2, c3) are channels 2t, 2t + 1 of
    // pixel row g (g + 8): bias, optional ReLU, one rounding (16-bit), a pair a store.
    const int g = lane >> 2;
    const int t = lane & 3;
#pragma unroll
    for (int j = 0; j < kFragK; ++j) {
      const int m = m0 + warp_m * kWarpTileM + j * 8 + 2 * t;  // even
      if (m >= kKPerGroup) continue;
      const bool second = kKPerGroup % 2 == 0 || m + 1 < kKPerGroup;
      const int k_out = group * kKPerGroup + m;
      float b_val[2] = {0.0f, 0.0f};
      if constexpr (kHasBias) {
        b_val[0] = Traits::to_float(__ldg(bias + k_out));
        if (second) b_val[1] = Traits::to_float(__ldg(bias + k_out + 1));
      }
#pragma unroll
      for (int i = 0; i < kFragP; ++i) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const long long pixel = n0 + warp_n * kWarpTileN + i * 16 + g + half * 8;
          if (pixel >= gemm_n) continue;
          float v[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            v[e] = acc_t[i][j][half * 2 + e] + b_val[e];
            if constexpr (kRelu) v[e] = fmaxf(v[e], 0.0f);
          }
          if constexpr (kViaNhwc) {
            const index_t img = static_cast<index_t>(pixel / kPixelsPerImage);
            const index_t pq = static_cast<index_t>(pixel - static_cast<long long>(img) * kPixelsPerImage);
            Element* out = y + ((img * kK + k_out) * static_cast<index_t>(kPixelsPerImage) + pq);
            out[0] = Traits::from_float(v[0]);
            if (second) out[static_cast<index_t>(kPixelsPerImage)] = Traits::from_float(v[1]);
            continue;
          }
          Element* out = y + (static_cast<index_t>(pixel) * kK + k_out);
          if constexpr (kChannelPairStores) {
            if constexpr (k16Bit) {
              *reinterpret_cast<unsigned*>(out) = static_cast<unsigned>(Traits::from_float(v[0])) |
                                                  static_cast<unsigned>(Traits::from_float(v[1])) << 16;
            } else {
              *reinterpret_cast<float2*>(out) = make_float2(v[0], v[1]);
            }
          } else {
            out[0] = Traits::from_float(v[0]);
            if (second) out[1] = Traits::from_float(v[1]);
          }
        }
      }
    }
    return;
  }

  // This thread's gather column: one pixel and its window's top-left corner.
  const int b_col = tid % kBN;
  const int b_row0 = tid / kBN;
  const long long pixel = n0 + b_col;
  const bool pixel_valid = pixel < gemm_n;
  const int img = pixel_valid ? static_cast<int>(pixel / kPixelsPerImage) : 0;
  const int pq = pixel_valid ? static_cast<int>(pixel % kPixelsPerImage) : 0;
  const int ih0 = (kDepth ? pq / kQ % kP : pq / kQ) * kStrideH - kPadHF;
  const int iw0 = (pq % kQ) * kStrideW - kPadWF;
  // 3-D: the window's first depth slice, and its offset in x.
  const int id0 = kDepth ? pq / (kP * kQ) * kStrideD - kPadDF : 0;
  const index_t depth_base = kDepth ? static_cast<index_t>(id0) * kDepthSlice : 0;

  float acc[kMmaM][kMmaN][4];

  // Outside a template, if constexpr still type-checks the branch it discards: both
  // pipelines are written in Element so that each compiles (unused) for the other type.
  if constexpr (!k16Bit) {
    const Element* x_pixel = x_group + static_cast<index_t>(img) * kC * kImagePlane;

    auto load_stage = [&](int stage, int k_tile) {
      const int k0 = k_tile * kBK;
      Element* a_dst = a_smem + stage * kAStageElems;
      if constexpr (kWeightChunks) {
#pragma unroll
        for (int i = tid; i < kBM * kBK / 4; i += kThreads) {
          const int m = i / (kBK / 4);
          const int kq = (i % (kBK / 4)) * 4;
          const bool valid = m0 + m < kKPerGroup && k0 + kq < kGemmK;
          const Element* src = valid ? w_group + static_cast<index_t>(m0 + m) * kGemmK + k0 + kq : w;
          cp_async16(a_dst + m * kAStride + kq, src, valid);
        }
      } else {
#pragma unroll 4
        for (int i = tid; i < kBM * kBK; i += kThreads) {
          const int m = i / kBK;
          const int kk = i % kBK;
          const bool valid = m0 + m < kKPerGroup && k0 + kk < kGemmK;
          const Element* src = valid ? w_group + static_cast<index_t>(m0 + m) * kGemmK + k0 + kk : w;
          cp_async4(a_dst + m * kAStride + kk, src, valid);
        }
      }
      Element* b_dst = b_smem + stage * kBStageElems;
#pragma unroll
      for (int i = 0; i < kBRowsPerThread; ++i) {
        const int row = b_row0 + i * kBRowsPerPass;
        const int kk = k0 + row;
        const bool in_k = kGemmK % kBK == 0 || kk < kGemmK;
        index_t offset;
        int ih, iw;
        [[maybe_unused]] int id = 0;
        if constexpr (kUseTable) {
          const int entry = in_k ? kk : 0;
          const int shift = kGather.shift[entry];
          offset = kGather.offset[entry];
          ih = ih0 + (shift >> 16);
          iw = iw0 + (shift & 0xffff);
        } else if constexpr (kDepth) {
          const int c = kk / kTaps;
          const int t = kk % kTaps / (kR * kS);
          const int rs = kk % (kR * kS);
          id = id0 + t * kDilationD;
          ih = ih0 + (rs / kS) * kDilationH;
          iw = iw0 + (rs % kS) * kDilationW;
          offset = c * kImagePlane + static_cast<index_t>(t * kDilationD) * kDepthSlice + depth_base +
                   (rs / kS) * kDilationH * kW + (rs % kS) * kDilationW;
        } else {
          const int c = kk / kTaps;
          const int rs = kk % kTaps;
          ih = ih0 + (rs / kS) * kDilationH;
          iw = iw0 + (rs % kS) * kDilationW;
          offset = c * kImagePlane + (rs / kS) * kDilationH * kW + (rs % kS) * kDilationW;
        }
        bool valid = pixel_valid && in_k && static_cast<unsigned>(ih) < static_cast<unsigned>(kH) &&
                     static_cast<unsigned>(iw) < static_cast<unsigned>(kW);
        if constexpr (kDepth) valid = valid && static_cast<unsigned>(id) < static_cast<unsigned>(kD);
        const Element* src = valid ? x_pixel + offset + static_cast<index_t>(ih0) * kW + iw0 : x;
        cp_async4(b_dst + row * kBStride + b_col, src, valid);
      }
    };

    // TF32 rounding of the elements this thread copied (same mapping as load_stage), so
    // it needs only this thread's own cp.async completion, not a barrier.
    auto round_own_stage = [&](int stage) {
      Element* a_dst = a_smem + stage * kAStageElems;
      if constexpr (kWeightChunks) {
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
          Element* p = a_dst + (i / kBK) * kAStride + i % kBK;
          *p = round_tf32(*p);
        }
      }
      Element* b_dst = b_smem + stage * kBStageElems;
#pragma unroll
      for (int i = 0; i < kBRowsPerThread; ++i) {
        Element* p = b_dst + (b_row0 + i * kBRowsPerPass) * kBStride + b_col;
        *p = round_tf32(*p);
      }
    };

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
      // The stage refilled below was consumed in the previous iteration; this barrier
      // is what makes overwriting it safe.
      __syncthreads();
      const int next = k_tile + kStages - 1;
      if (next < kKTiles) load_stage(next % kStages, next);
      cp_async_commit();

      const Element* a_stage = a_smem + (k_tile % kStages) * kAStageElems + (warp_m * kWarpTileM) * kAStride;
      const Element* b_stage = b_smem + (k_tile % kStages) * kBStageElems + warp_n * kWarpTileN;
      // ldmatrix row address of this lane: matrices (rows 0-7 | 8-15) x (k 0-3 | 4-7).
      const Element* a_lane = a_stage + ((lane & 7) + ((lane >> 3) & 1) * 8) * kAStride + (lane >> 4) * 4;
      Partial<kMmaM, kMmaN> part;
      clear_partial<kMmaM, kMmaN>(part);
#pragma unroll
      for (int k8 = 0; k8 < kBK; k8 += 8) {
        unsigned a_frag[kMmaM][4];
        unsigned b_frag[kMmaN][2];
#pragma unroll
        for (int i = 0; i < kMmaM; ++i) ldmatrix_x4(a_frag[i], a_lane + i * 16 * kAStride + k8);
#pragma unroll
        for (int j = 0; j < kMmaN; ++j) {
          const Element* b = b_stage + (k8 + t) * kBStride + j * 8 + g;
          b_frag[j][0] = __float_as_uint(b[0]);
          b_frag[j][1] = __float_as_uint(b[4 * kBStride]);
        }
        fragment_products(acc, part, a_frag, b_frag);
      }
      add_partial(acc, part);
    }
    cp_async_wait<0>();
  } else {
    // The window's top-left tap, which may lie in the padding (before x, even): only
    // in-image taps are ever read through it. A pointer here, so that each tap's address
    // is one multiply-add of its table offset.
    const Element* x_pixel =
        opaque(x_group + (static_cast<index_t>(img) * kC * kImagePlane + static_cast<index_t>(ih0) * kW + iw0));
    bool interior =
        !kPadded || (ih0 >= 0 && ih0 + (kR - 1) * kDilationH < kH && iw0 >= 0 && iw0 + (kS - 1) * kDilationW < kW);
    if constexpr (kDepth) {
      x_pixel = opaque(x_pixel + depth_base);
      interior = interior && (!kPadded || (id0 >= 0 && id0 + (kT - 1) * kDilationD < kD));
    }

    Element x_regs[kBRowsPerThread];
    auto gather_x = [&](int k_tile) {
      const int k0 = k_tile * kBK;
#pragma unroll
      for (int i = 0; i < kBRowsPerThread; ++i) {
        const int kk = k0 + b_row0 + i * kBRowsPerPass;
        const bool in_k = kGemmK % kBK == 0 || kk < kGemmK;
        index_t offset;
        int dh, dw;
        [[maybe_unused]] int dd = 0;
        if constexpr (kUseTable) {
          const int entry = in_k ? kk : 0;
          offset = kGather.offset[entry];
          const int shift = kGather.shift[entry];
          dh = shift >> 16;
          dw = shift & 0xffff;
        } else if constexpr (kDepth) {
          const int c = kk / kTaps;
          const int rs = kk % (kR * kS);
          dd = kk % kTaps / (kR * kS) * kDilationD;
          dh = (rs / kS) * kDilationH;
          dw = (rs % kS) * kDilationW;
          offset = c * kImagePlane + static_cast<index_t>(dd) * kDepthSlice + dh * kW + dw;
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
            if constexpr (kDepth) valid = valid && static_cast<unsigned>(id0 + dd) < static_cast<unsigned>(kD);
          }
        }
        x_regs[i] = valid ? __ldg(x_pixel + offset) : Element{0};
      }
    };
    auto store_x = [&](int stage) {
      Element* dst = b_smem + stage * kBStageElems + b_col;
#pragma unroll
      for (int i = 0; i < kBRowsPerThread; ++i) dst[(b_row0 + i * kBRowsPerPass) * kBStride] = x_regs[i];
    };

    // This thread's W chunks: columns w_kq.. of the tile in rows w_row + j * kARowsPerPass.
    const int w_row = tid / kAChunksPerRow;
    const int w_kq = (tid % kAChunksPerRow) * kChunkElems;
    // Rows past the group's last channel are never read through it (zero-filled instead).
    const Element* w_thread = opaque(w_group + (static_cast<index_t>(m0 + w_row) * kGemmK + w_kq));
    auto copy_w_async = [&](int stage, int k_tile) {
      const int k0 = k_tile * kBK;
      Element* dst = a_smem + stage * kAStageElems + w_row * kAStride + w_kq;
#pragma unroll
      for (int j = 0; j < kAPasses; ++j) {
        if (kBM % kARowsPerPass != 0 && w_row + j * kARowsPerPass >= kBM) break;
        const bool valid = m0 + w_row + j * kARowsPerPass < kKPerGroup && (kGemmK % kBK == 0 || k0 + w_kq < kGemmK);
        const Element* src = valid ? w_thread + (static_cast<index_t>(j) * kARowsPerPass * kGemmK + k0) : w;
        cp_async16(dst + j * kARowsPerPass * kAStride, src, valid);
      }
    };
    Element w_regs[kWeightChunks ? 1 : kAElemsPerThread];
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
      Element* dst = a_smem + stage * kAStageElems;
#pragma unroll
      for (int j = 0; j < kAElemsPerThread; ++j) {
        const int i = tid + j * kThreads;
        if (kBM * kBK % kThreads == 0 || i < kBM * kBK) dst[(i / kBK) * kAStride + i % kBK] = w_regs[j];
      }
    };

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
      const Element* a_lane = a_smem + stage * kAStageElems + (warp_m * kWarpTileM + lane_row) * kAStride + lane_col;
      const Element* b_lane = b_smem + stage * kBStageElems + lane_row * kBStride + warp_n * kWarpTileN + lane_col;
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
    if constexpr (kWeightChunks) {
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
        if constexpr (kWeightChunks) {
          copy_w_async(stage ^ 1, k_tile + 1);
        } else {
          load_w(k_tile + 1);
        }
        gather_x(k_tile + 1);
      }
      cp_async_commit();
      multiply(stage);
      if (more) {
        if constexpr (!kWeightChunks) store_w(stage ^ 1);
        store_x(stage ^ 1);
      }
    }
  }

  // Epilogue in registers: bias, optional ReLU, one rounding (16-bit), store to NCHW.
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
      if constexpr (kHasBias) b_val = Traits::to_float(__ldg(bias + k_out));
#pragma unroll
      for (int j = 0; j < kMmaN; ++j) {
        if constexpr (!k16Bit) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const long long col = n0 + warp_n * kWarpTileN + j * 8 + 2 * t + e;
            if (col >= gemm_n) continue;
            float v = acc[i][j][half * 2 + e] + b_val;
            if constexpr (kRelu) v = fmaxf(v, 0.0f);
            const index_t img_out = static_cast<index_t>(col / kPixelsPerImage);
            const index_t pq_out = static_cast<index_t>(col % kPixelsPerImage);
            y[(img_out * kK + k_out) * static_cast<index_t>(kPixelsPerImage) + pq_out] = v;
          }
        } else {
          const long long col = n0 + warp_n * kWarpTileN + j * 8 + 2 * t;  // even
          if (col >= gemm_n) continue;
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
            // col is even and gemm_n is even, so col + 1 is a pixel of the same image.
            *reinterpret_cast<unsigned*>(out) =
                static_cast<unsigned>(Traits::from_float(v[0])) | static_cast<unsigned>(Traits::from_float(v[1])) << 16;
          } else {
            out[0] = Traits::from_float(v[0]);
            if (col + 1 < gemm_n) {
              const index_t next =
                  (col + 1) % kPixelsPerImage == 0 ? static_cast<index_t>(kK - 1) * kPixelsPerImage : 0;
              out[1 + next] = Traits::from_float(v[1]);
            }
          }
        }
      }
    }
  }
}

#define CONVJIT_IGEMM_CAT2(a, b) a##b
#define CONVJIT_IGEMM_CAT(a, b) CONVJIT_IGEMM_CAT2(a, b)
#ifdef CONVJIT_IGEMM_PACK_TRANSPOSED
// Transposed: W'[group][k][c][r][s] = w[group][c][k][R-1-r][S-1-s], one thread an element
// of W' (its writes coalesce; the reads of one warp span a few rows of w).
extern "C" __global__ void __launch_bounds__(256)
    CONVJIT_IGEMM_CAT(CONVJIT_KERNEL_NAME, _pack)(const igemm::Element* __restrict__ w,
                                                  igemm::Element* __restrict__ packed) {
  using namespace igemm;
  static_assert(kTransposed, "CONVJIT_IGEMM_PACK_TRANSPOSED is for transposed problems");
  constexpr long long kGroupElems = static_cast<long long>(kKPerGroup) * kGemmK;
  for (long long i = blockIdx.x * 256ll + threadIdx.x; i < kGroupElems * kGroups; i += 256ll * gridDim.x) {
    const long long group_base = i / kGroupElems * kGroupElems;
    const long long k = i % kGroupElems / kGemmK;
    const int kk = static_cast<int>(i % kGemmK);
    packed[i] = w[group_base + (kk / kTaps * kKPerGroup + k) * kTaps + (kTaps - 1 - kk % kTaps)];
  }
}
#endif

#ifdef CONVJIT_IGEMM_VIA_NHWC
// The route's first step: the caller's x, one [C][H x W] matrix an image, into the
// workspace as [H x W][C].
extern "C" __global__ void __launch_bounds__(device::kTransposeThreads)
    CONVJIT_IGEMM_CAT(CONVJIT_KERNEL_NAME, _x_to_nhwc)(const igemm::Element* __restrict__ x,
                                                       igemm::Element* __restrict__ x_nhwc) {
  device::transpose_images<igemm::Element, igemm::kN, igemm::kC, static_cast<long long>(igemm::kH) * igemm::kW>(x,
                                                                                                                x_nhwc);
}
#endif
