// The kernels around cuBLAS for the im2col + GEMM algorithm, NCHW or NHWC (kLayout),
// in the data's own type (kDType: float32, float16 or bfloat16); cuBLAS accumulates in
// float32. 1, 2 or 3 spatial dimensions (a missing one has extent 1 and folds away),
// forward or transposed (kTransposed, PyTorch's nn.ConvTranspose*d).
//
// im2col: for a chunk of `images` images starting at n0 and output rows
// [p0, p0 + rows), writes one group's column matrix, zero where the tap falls in the
// padding, with pixel = (p - p0) * Q + q. A 3-D output's rows are its (z, p) pairs, z
// slowest, so a row index p runs over Z * P and a chunk of rows may span depths.
// Transposed, the column of output o holds, for each tap, the input that reaches o
// through it (o = i * stride - pad + tap * dilation), zero where none does: the same
// gather as the direct kernel's, so the GEMM needs no flipped weights, only W with its
// first two dimensions swapped (pack_w).
//   NCHW: col[image][kk][pixel], kk = (c, t, r, s); the GEMM reads it as a
//         (pixels x kk) column-major matrix per image. With `merged` set,
//         col[kk][image][pixel] instead: one (images * pixels x kk) matrix for one GEMM
//         over every image of the chunk, whose output the scatter kernel puts in place.
//   NHWC: col[image][pixel][kk], kk = (t, r, s, c), so each row is the (r, s) runs of the
//         group's contiguous channels, read and written along c; the chunk's pixels
//         are one (pixels x kk) row-major matrix, as the chunk's rows of y are.
//
// scatter (NCHW, merged chunks): y[n0 + image][group's k][pixel] = scratch[k][image][pixel],
// with the bias and the activation, in float32.
//
// pack_w (transposed only): the group's weights as the GEMM's W[k][kk] with the
// forward order of kk, from PyTorch's w[c][k / groups][t][r][s] (channels last
// w[c][t][r][s][k / groups]).
//
// bias_act: y += bias[k] (k the channel of y's layout), then the activation, in place
// after the GEMMs, in float32; for 16-bit data the GEMM has already rounded y once, so
// a bias costs a second rounding (at most half an ulp more, as PyTorch eager's separate
// bias add).
//
// convjit prepends the prologue defining namespace `spec`.
// Namespace-scope constants are enumerators of unnamed enums with a fixed type, not constexpr
// variables: NVRTC emits each of those as a device global, and loading them is most of a
// module load (runtime/src/specialize/prologue.hpp).

#ifndef CONVJIT_SPECIALIZED
#define CONVJIT_KERNEL_NAME conv2d_im2col_example
namespace spec {
enum : int { kN = 2, kC = 6, kH = 11, kW = 9, kK = 4, kR = 3, kS = 3 };
enum : int { kStrideH = 1, kStrideW = 2, kPadH = 1, kPadW = 1, kDilationH = 1, kDilationW = 2 };
enum : int { kGroups = 2, kP = 11, kQ = 4 };
enum : bool { kHasBias = true, kRelu = true };
enum : int { kBlockThreads = 256 };
enum : int { kDType = 0 };   // f32 (0 f32, 1 f16, 2 bf16)
enum : int { kLayout = 0 };  // nchw (0 nchw, 1 nhwc)
enum : int { kD = 1, kT = 1, kStrideD = 1, kPadD = 0, kDilationD = 1, kZ = 1 };
enum : bool { kTransposed = false };
}  // namespace spec
#endif

// element::Traits: f16 / bf16 <-> float.
#include "convjit_device.cuh"

#define CONVJIT_CAT2(a, b) a##b
#define CONVJIT_CAT(a, b) CONVJIT_CAT2(a, b)

namespace im2col {
using namespace spec;
enum : int { kCPerGroup = kC / kGroups };
enum : int { kTaps = kT * kR * kS };
enum : long long { kGemmK = static_cast<long long>(kCPerGroup) * kTaps };
enum : long long { kPlane = static_cast<long long>(kD) * kH * kW };
enum : long long { kPixels = static_cast<long long>(kZ) * kP * kQ };
enum : int { kKPerGroup = kK / kGroups };
using Convert = element::Traits<kDType>;
using Element = Convert::Storage;
enum : bool { kNHWC = kLayout == 1 };
static_assert(kLayout == 0 || kLayout == 1, "kLayout: 0 nchw, 1 nhwc");

// Along one dimension, the input `in` that output `out` reads through tap `tap`, if any.
template <int kIn, int kStride, int kPad, int kDilation>
__device__ __forceinline__ bool source(int out, int tap, int& in) {
  if constexpr (!kTransposed) {
    in = out * kStride - kPad + tap * kDilation;
    return static_cast<unsigned>(in) < static_cast<unsigned>(kIn);
  } else {
    const int scaled = out + kPad - tap * kDilation;
    if (scaled < 0 || scaled % kStride != 0) return false;
    in = scaled / kStride;
    return in < kIn;
  }
}

// Output row `row` (of Z * P) and column q, tap (t, r, s): the input's (id, ih, iw).
__device__ __forceinline__ bool window(int row, int q, int t, int r, int s, int& id, int& ih, int& iw) {
  const int z = kZ == 1 ? 0 : row / kP;
  const int p = kZ == 1 ? row : row % kP;
  id = 0;
  if constexpr (kD > 1 || kT > 1 || kPadD > 0 || kTransposed) {
    if (!source<kD, kStrideD, kPadD, kDilationD>(z, t, id)) return false;
  }
  return source<kH, kStrideH, kPadH, kDilationH>(p, r, ih) && source<kW, kStrideW, kPadW, kDilationW>(q, s, iw);
}
}  // namespace im2col

namespace im2col {
// A pixel of one image's output as an int wherever the image has fewer than 2^31.
template <bool kFitsInt>
struct PixelIndexOf {
  using type = int;
};
template <>
struct PixelIndexOf<false> {
  using type = long long;
};
using PixelIndex = PixelIndexOf<(kPixels < (1LL << 31))>::type;

// One value of the column matrix: output pixel `pixel` (of the image's Z * P * Q) and
// column entry kk of the group's reduction, from image n's group channels at x_group.
// Every divisor is a compile-time constant, so the decode is multiplies and shifts.
template <typename Index>
__device__ __forceinline__ Element gather(const Element* __restrict__ x_image, Index pixel, int c, int tap) {
  const int row = static_cast<int>(pixel / kQ);
  const int q = static_cast<int>(pixel % kQ);
  int id, ih, iw;
  if (!window(row, q, tap / (kR * kS), tap / kS % kR, tap % kS, id, ih, iw)) return Element{};  // +0
  if constexpr (kNHWC) {
    return __ldg(x_image + (((static_cast<long long>(id) * kH + ih) * kW + iw) * kC + c));
  } else {
    return __ldg(x_image + (c * kPlane + (static_cast<long long>(id) * kH + ih) * kW + iw));
  }
}

// col is a matrix of row_count runs of `run` contiguous entries; threadIdx.x walks a
// run, threadIdx.y and the grid's y walk runs. What a run is (see the kernel) makes
// every per-entry index a quotient by a compile-time constant: the decode per entry
// used to be three 64-bit divisions by run-time extents, which bound im2col by integer
// throughput at 5-10x its bytes' time (docs/perf.md, issue 15).
template <typename Index>
__device__ __forceinline__ void fill(const Element* __restrict__ x, Element* __restrict__ col, int group, int n0,
                                     int p0, int row_count, Index run, bool merged) {
  const Index first = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x;
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (int row = blockIdx.y * blockDim.y + threadIdx.y; row < row_count; row += gridDim.y * blockDim.y) {
    Element* __restrict__ out = col + static_cast<long long>(row) * run;
    if constexpr (kNHWC) {
      // A run is one output pixel's kk = (tap, c) entries; rows run over the chunk's
      // pixels, whole images when there are several (then p0 = 0), so the global
      // pixel p0 * Q + row splits by constants.
      const long long global = static_cast<long long>(p0) * kQ + row;
      const int image = static_cast<int>(global / kPixels);
      const auto pixel = static_cast<PixelIndex>(global % kPixels);
      const Element* x_image = x + static_cast<long long>(n0 + image) * kPlane * kC + group * kCPerGroup;
      for (Index kk = first; kk < run; kk += step) {
        out[kk] = gather(x_image, pixel, static_cast<int>(kk % kCPerGroup), static_cast<int>(kk / kCPerGroup));
      }
    } else if (merged) {
      // col[kk][image][pixel]: a run is one kk over every image of the chunk, whole
      // images (p0 = 0, the chunk's rows all of them).
      const int c = row / kTaps;
      const int tap = row % kTaps;
      const Element* x_group = x + (static_cast<long long>(n0) * kC + group * kCPerGroup) * kPlane;
      for (Index j = first; j < run; j += step) {
        const Index image = j / static_cast<Index>(kPixels);
        out[j] = gather(x_group + static_cast<long long>(image) * kC * kPlane, j % static_cast<Index>(kPixels), c, tap);
      }
    } else {
      // col[image][kk][pixel]: a run is one (image, kk)'s pixels from output row p0.
      const int image = row / static_cast<int>(kGemmK);
      const int kk = row % static_cast<int>(kGemmK);
      const Element* x_image = x + (static_cast<long long>(n0 + image) * kC + group * kCPerGroup) * kPlane;
      const Index base = static_cast<Index>(p0) * kQ;
      for (Index j = first; j < run; j += step) out[j] = gather(x_image, base + j, kk / kTaps, kk % kTaps);
    }
  }
}
}  // namespace im2col

// The chunk's column matrix as row_count runs of `run` entries (the runner computes
// both from the layout: NCHW images * kk runs of rows * Q pixels, merged kk runs of
// images * pixels, NHWC images * rows * Q runs of kk). Indices are 32-bit when the
// largest one fits.
extern "C" __global__ void __launch_bounds__(spec::kBlockThreads)
    CONVJIT_CAT(CONVJIT_KERNEL_NAME, _im2col)(const im2col::Element* __restrict__ x, im2col::Element* __restrict__ col,
                                              int group, int n0, int p0, int rows, int images, int merged) {
  using namespace im2col;
  long long run;
  long long row_count;
  if constexpr (kNHWC) {
    run = kGemmK;
    row_count = static_cast<long long>(images) * rows * kQ;
  } else if (merged) {
    run = static_cast<long long>(images) * kPixels;
    row_count = kGemmK;
  } else {
    run = static_cast<long long>(rows) * kQ;
    row_count = static_cast<long long>(images) * kGemmK;
  }
  // The largest run index, or (unmerged NCHW) pixel index, the loops form.
  const long long largest = !kNHWC && !merged ? static_cast<long long>(p0) * kQ + run : run;
  if (largest < (1LL << 31)) {
    fill<int>(x, col, group, n0, p0, static_cast<int>(row_count), static_cast<int>(run), merged != 0);
  } else {
    fill<long long>(x, col, group, n0, p0, static_cast<int>(row_count), run, merged != 0);
  }
}

// One thread per element of the packed W, in its order [group][k][kk].
extern "C" __global__ void __launch_bounds__(spec::kBlockThreads)
    CONVJIT_CAT(CONVJIT_KERNEL_NAME, _pack_w)(const im2col::Element* __restrict__ w,
                                              im2col::Element* __restrict__ packed) {
  using namespace im2col;
  const long long group_elems = static_cast<long long>(kKPerGroup) * kGemmK;
  const long long total = group_elems * kGroups;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long group_base = i / group_elems * group_elems;
    const long long k = i % group_elems / kGemmK;
    const long long kk = i % kGemmK;
    long long from;
    if constexpr (kNHWC) {  // kk = (tap, c); w[c][tap][k]
      from = (kk % kCPerGroup * kTaps + kk / kCPerGroup) * kKPerGroup + k;
    } else {  // kk = (c, tap); w[c][k][tap]
      from = (kk / kTaps * kKPerGroup + k) * kTaps + kk % kTaps;
    }
    packed[i] = w[group_base + from];
  }
}

extern "C" __global__ void __launch_bounds__(spec::kBlockThreads)
    CONVJIT_CAT(CONVJIT_KERNEL_NAME, _bias_act)(const im2col::Element* __restrict__ bias,
                                                im2col::Element* __restrict__ y CONVJIT_BATCH_PARAM) {
  using namespace im2col;
  const long long total = static_cast<long long>(CONVJIT_BATCH(kN)) * kK * kPixels;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    float v = Convert::to_float(y[i]);
    if constexpr (kHasBias) v += Convert::to_float(__ldg(bias + (kNHWC ? i % kK : (i / kPixels) % kK)));
    if constexpr (kRelu) v = fmaxf(v, 0.0f);
    y[i] = Convert::from_float(v);
  }
}

extern "C" __global__ void __launch_bounds__(spec::kBlockThreads)
    CONVJIT_CAT(CONVJIT_KERNEL_NAME, _scatter)(const im2col::Element* __restrict__ scratch,
                                               const im2col::Element* __restrict__ bias,
                                               im2col::Element* __restrict__ y, int group, int n0, int images) {
  using namespace im2col;
  const long long total = static_cast<long long>(images) * kKPerGroup * kPixels;
  // i runs over y's order (image, k, pixel), so writes are whole rows of y; the reads of
  // scratch[k][image][pixel] are runs of the same rows.
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long pixel = i % kPixels;
    const int k = static_cast<int>((i / kPixels) % kKPerGroup);
    const int image = static_cast<int>(i / (kPixels * kKPerGroup));
    float v = Convert::to_float(scratch[(static_cast<long long>(k) * images + image) * kPixels + pixel]);
    const int channel = group * kKPerGroup + k;
    if constexpr (kHasBias) v += Convert::to_float(__ldg(bias + channel));
    if constexpr (kRelu) v = fmaxf(v, 0.0f);
    y[(static_cast<long long>(n0 + image) * kK + channel) * kPixels + pixel] = Convert::from_float(v);
  }
}
