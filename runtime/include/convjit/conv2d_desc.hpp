#pragma once
// A 2D convolution problem as a value: what to compute, never how.

#include <cstddef>
#include <cstdint>
#include <string>

namespace convjit {

// The type of x, w, bias and y alike. f16 and bf16 accumulate in fp32 and round once
// to the 16-bit type, like PyTorch's half and bfloat16 convolutions.
enum class DType { kFloat32, kFloat16, kBFloat16 };
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

// Output extents: y is n x k x p x q (NCHW).
struct Conv2dOutputShape {
  std::int64_t n = 0;
  std::int64_t k = 0;
  std::int64_t p = 0;  // output height
  std::int64_t q = 0;  // output width
  bool operator==(const Conv2dOutputShape&) const = default;
};

// Field names follow the GEMM-free convention of cuDNN/CUTLASS: input n x c x h x w,
// filter k x (c / groups) x r x s. Defaults match PyTorch's nn.Conv2d.
// Build with designated initializers: Conv2dDesc{.n = 8, .c = 64, .h = 512, ...}.
struct Conv2dDesc {
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

  bool operator==(const Conv2dDesc&) const = default;

  // Throws Error(kInvalidArgument) naming the first bad field and what was expected.
  void validate() const;
  // Output extents; call validate() first for a guaranteed positive shape.
  Conv2dOutputShape output_shape() const noexcept;

  std::int64_t x_elements() const noexcept;
  std::int64_t w_elements() const noexcept;
  std::int64_t y_elements() const noexcept;
  // Multiply-adds of the problem times two.
  double flops() const noexcept;

  // Readable one-line form, e.g. "n8c64h512w256k128r5s7 stride=1 pad=0 ... math=tf32"
  // (+ " batch=dynamic").
  std::string to_string() const;
};

struct Conv2dDescHash {
  std::size_t operator()(const Conv2dDesc& d) const noexcept;
};

}  // namespace convjit
