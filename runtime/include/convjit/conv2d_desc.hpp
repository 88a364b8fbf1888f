#pragma once
// A convolution problem as a value: what to compute, never how. One descriptor for 1, 2
// and 3 spatial dimensions, forward and transposed (ConvDesc); Conv2dDesc names the same
// type, whose defaults are the 2-D forward convolution it always was.

#include <cstddef>
#include <cstdint>
#include <string>

namespace convjit {

// The type of x, w, bias and y alike. f16 and bf16 accumulate in fp32 and round once
// to the 16-bit type, like PyTorch's half and bfloat16 convolutions.
enum class DType { kFloat32, kFloat16, kBFloat16 };
// Channels first or last, for every spatial rank: kNCHW is also NCW (1-D) and NCDHW (3-D),
// kNHWC also NWC and NDHWC.
enum class Layout { kNCHW, kNHWC };
// Applied in registers after the bias, before the store.
enum class Activation { kNone, kRelu };

// What the arithmetic guarantees for float32 data. For f16 and bf16 data the math mode
// changes nothing: tensor cores take 16-bit values as they are and every algorithm
// accumulates in fp32, so there is nothing to trade. Either mode is accepted and kept
// in the descriptor (and so in the cache key); both get the same kernel source.
enum class MathMode {
  kTF32,        // tensor cores on TF32-rounded inputs, fp32 accumulate; PyTorch's default for conv (error ~3e-4)
  kStrictFp32,  // fp32 accuracy (relative L2 error < 1e-5): FMA units, or 3xTF32 split on tensor cores
};

std::string_view to_string(DType dtype) noexcept;
std::string_view to_string(Layout layout) noexcept;
std::string_view to_string(MathMode math) noexcept;
std::string_view to_string(Activation activation) noexcept;
std::size_t size_of(DType dtype) noexcept;

// Output extents: y is n x k x [z x] p x q (NCHW / NCDHW).
struct Conv2dOutputShape {
  std::int64_t n = 0;
  std::int64_t k = 0;
  std::int64_t p = 0;  // output height
  std::int64_t q = 0;  // output width
  std::int64_t z = 1;  // output depth (1 unless 3-D)
  bool operator==(const Conv2dOutputShape&) const = default;
};
using ConvOutputShape = Conv2dOutputShape;

// Field names follow the GEMM-free convention of cuDNN/CUTLASS: input n x c x [d x] h x w,
// filter k x (c / groups) x [t x] r x s, output n x k x [z x] p x q. Defaults match
// PyTorch's nn.Conv2d. Build with designated initializers:
// Conv2dDesc{.n = 8, .c = 64, .h = 512, ...}.
//
// The fields after `math` (issue 15) extend it to every rank and to transposed
// convolutions; they are appended so that existing designated initializers still compile
// and mean what they did.
// - spatial_dims 1 (nn.Conv1d: x N,C,W; h, r and the _h fields stay 1 / 0), 2, or 3
//   (nn.Conv3d: x N,C,D,H,W with the depth fields d, t, stride_d, pad_d, dilation_d; with
//   fewer dimensions those stay 1 / 0). A lower-rank problem is the 2-D one whose other
//   extents are 1, and runs the 2-D kernels with those constants folded.
// - transposed: nn.ConvTranspose*d with in_channels c and out_channels k. x is the input
//   (N, c, spatial), w is (c, k / groups, t, r, s) as PyTorch stores it, y is
//   (N, k, out) with out = (in - 1) * stride - 2 * pad + dilation * (kernel - 1) +
//   output_padding + 1 per dimension. It is the data gradient of the forward convolution
//   from y's shape to x's, computed output-stationary (no zero insertion).
struct ConvDesc {
  int n = 1;  // batch
  int c = 1;  // input channels
  int h = 1;  // input height
  int w = 1;  // input width
  int k = 1;  // output channels (filters)
  int r = 1;  // filter height
  int s = 1;  // filter width
  int stride_h = 1;
  int stride_w = 1;
  int pad_h = 0;  // zero padding on each side
  int pad_w = 0;
  int dilation_h = 1;
  int dilation_w = 1;
  int groups = 1;     // c and k must both divide by it; groups == c is depthwise
  bool bias = false;  // y += bias[k]
  Activation activation = Activation::kNone;
  DType dtype = DType::kFloat32;
  Layout layout = Layout::kNCHW;
  MathMode math = MathMode::kTF32;  // matches PyTorch's default (torch.backends.cudnn.allow_tf32)
  // One kernel for every batch from 1 to n: the batch becomes a run argument
  // (Conv2dArgs::n) instead of a compile-time constant. n is then the largest batch a run
  // may have, and the batch the tiles, the algorithm choice and the workspace are sized
  // for (TensorRT's opt and max profile in one). Shape text and workload files:
  // batch=dynamic. docs/perf.md has its cost against the kernel specialized for one n.
  bool dynamic_batch = false;
  int spatial_dims = 2;  // 1, 2 or 3
  int d = 1;             // input depth (3-D)
  int t = 1;             // filter depth (3-D)
  int stride_d = 1;
  int pad_d = 0;
  int dilation_d = 1;
  bool transposed = false;
  // Transposed only: extra output extent on one side, below the stride or the dilation.
  int output_padding_d = 0;
  int output_padding_h = 0;
  int output_padding_w = 0;

  bool operator==(const ConvDesc&) const = default;

  // Throws Error(kInvalidArgument) naming the first bad field and what was expected.
  void validate() const;
  // Output extents; call validate() first for a guaranteed positive shape.
  Conv2dOutputShape output_shape() const noexcept;

  std::int64_t x_elements() const noexcept;
  std::int64_t w_elements() const noexcept;
  std::int64_t y_elements() const noexcept;
  // Multiply-adds of the problem times two (of the useful ones, for transposed).
  double flops() const noexcept;
  // Filter taps of one output channel: t * r * s.
  std::int64_t taps() const noexcept { return std::int64_t{t} * r * s; }
  bool is_3d() const noexcept { return spatial_dims == 3; }

  // Readable one-line form, e.g. "n8c64h512w256k128r5s7 stride=1 pad=0 ... math=tf32";
  // 1-D "n32c64w131072k128s3 ...", 3-D "n16c3d64h64w64k64t3r3s3 stride=1 ...",
  // transposed "... transposed=1 output_padding=1", dynamic batch "... batch=dynamic"
  // (docs/cli.md).
  std::string to_string() const;
};
using Conv2dDesc = ConvDesc;

struct Conv2dDescHash {
  std::size_t operator()(const ConvDesc& d) const noexcept;
};
using ConvDescHash = Conv2dDescHash;

}  // namespace convjit
