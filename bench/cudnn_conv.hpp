#pragma once
// cuDNN, the baseline: RAII for the handle and descriptors, a check macro that keeps
// cuDNN's own words, and one convolution chosen by cudnnFind and run like PyTorch eager
// runs it (cross-correlation, bias as a separate add), in the problem's layout: NCHW, or
// NHWC as PyTorch's channels-last (CUDNN_TENSOR_NHWC for x, y and the filter). Every
// rank goes through the Nd descriptors (1-D as 2-D with height 1, as PyTorch does);
// a transposed convolution is cudnnConvolutionBackwardData of the forward convolution
// from y's shape to x's, whose filter is the transposed weight as it is (c, k/groups,
// ...), as PyTorch's conv_transpose runs it.
//
// Math modes (cuDNN 9 API reference, cudnnMathType_t:
// https://docs.nvidia.com/deeplearning/cudnn/latest/api/cudnn-graph-library.html#cudnnmathtype-t):
//   strict -> CUDNN_FMA_MATH: "restricted to only kernels that use FMA instructions";
//             on Ampere and later, CUDNN_DEFAULT_MATH permits TF32 tensor cores and
//             CUDNN_FMA_MATH does not. Results that report a tensor-op math type are refused.
//   tf32   -> CUDNN_DEFAULT_MATH, which lets cudnnFind try FMA and TF32 kernels alike
//             (unless NVIDIA_TF32_OVERRIDE=0 is set, which the program warns about); the
//             winner's reported math type is then set on the descriptor.
//   fp16, bf16 -> CUDNN_TENSOR_OP_MATH with fp32 accumulation (compute type float).
// These are the choices PyTorch makes for torch.backends.cudnn.allow_tf32 False / True
// and for half / bfloat16 tensors (aten/src/ATen/cudnn/Descriptors.h).

#include <cudnn.h>
#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

#include "convjit/conv2d_desc.hpp"
#include "convjit/device_buffer.hpp"

namespace convjit {
class Runtime;
}

namespace convjit::bench {

class CudnnError : public std::runtime_error {
 public:
  CudnnError(cudnnStatus_t status, const std::string& message) : std::runtime_error(message), status_(status) {}
  cudnnStatus_t status() const noexcept { return status_; }

 private:
  cudnnStatus_t status_;
};

// "context: call failed → CUDNN_STATUS_... (cuDNN's text); cuDNN says: <last error string>"
[[noreturn]] void cudnn_fail(cudnnStatus_t status, const char* call, const std::string& context);

#define CONVJIT_CUDNN_CHECK(call, ...)                                                      \
  do {                                                                                      \
    const cudnnStatus_t convjit_cudnn_status_ = (call);                                     \
    if (convjit_cudnn_status_ != CUDNN_STATUS_SUCCESS) {                                    \
      ::convjit::bench::cudnn_fail(convjit_cudnn_status_, #call, fmt::format(__VA_ARGS__)); \
    }                                                                                       \
  } while (0)

// Owns one cuDNN object and destroys it with its Destroy function.
template <typename Handle, cudnnStatus_t (*Destroy)(Handle)>
class CudnnObject {
 public:
  CudnnObject() = default;
  explicit CudnnObject(Handle handle) noexcept : handle_(handle) {}
  ~CudnnObject() {
    // NOTE: destructors never throw; the status of a destroy is ignored.
    if (handle_ != nullptr) Destroy(handle_);
  }
  CudnnObject(CudnnObject&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  CudnnObject& operator=(CudnnObject&& other) noexcept {
    if (this != &other) {
      if (handle_ != nullptr) Destroy(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  CudnnObject(const CudnnObject&) = delete;
  CudnnObject& operator=(const CudnnObject&) = delete;
  Handle get() const noexcept { return handle_; }

 private:
  Handle handle_ = nullptr;
};

using CudnnHandle = CudnnObject<cudnnHandle_t, cudnnDestroy>;
using TensorDesc = CudnnObject<cudnnTensorDescriptor_t, cudnnDestroyTensorDescriptor>;
using FilterDesc = CudnnObject<cudnnFilterDescriptor_t, cudnnDestroyFilterDescriptor>;
using ConvDesc = CudnnObject<cudnnConvolutionDescriptor_t, cudnnDestroyConvolutionDescriptor>;

// A handle on the current context (the Runtime's primary context) that enqueues on `stream`.
CudnnHandle make_cudnn_handle(cudaStream_t stream);

// "9.19.0 (runtime), built against 9.19.0"
std::string cudnn_version_text();

// The benchmark's math modes; strict and tf32 are float32 data.
enum class BenchMath { kStrict, kTF32, kFP16, kBF16 };
std::string_view to_string(BenchMath math) noexcept;
DType dtype_of(BenchMath math) noexcept;

struct CudnnChoice {
  cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  bool backward_data = false;  // transposed: bwd_algo runs, not algo
  cudnnConvolutionBwdDataAlgo_t bwd_algo = CUDNN_CONVOLUTION_BWD_DATA_ALGO_0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  std::size_t workspace = 0;
  float find_ms = 0;             // cudnnFind's own time for it
  std::string describe() const;  // "IMPLICIT_PRECOMP_GEMM math=tensor_op ws=12.0MiB"
};

// One convolution (y = conv(x, w) [+ bias], or its transposed form) through cuDNN's
// legacy API.
class CudnnConv {
 public:
  // Describes `desc` in `math`'s data type. Batches whose tensors pass 2^31 - 1 elements
  // are run as equal slices of the batch, one call each, like PyTorch does.
  CudnnConv(cudnnHandle_t handle, const Conv2dDesc& desc, BenchMath math);

  // cudnnFindConvolutionForwardAlgorithmEx (transposed: ...BackwardDataAlgorithmEx) on
  // these buffers (y is overwritten) with a
  // workspace of at most `max_workspace` bytes, keeping the fastest result the math
  // mode allows. Throws CudnnError when no algorithm qualifies.
  const CudnnChoice& find(Runtime& runtime, const void* x, const void* w, void* y, std::size_t max_workspace);

  // Enqueues the convolution, then the bias add (cudnnAddTensor) when desc.bias.
  void run(const void* x, const void* w, const void* bias, void* y) const;

  int batch_slices() const noexcept { return slices_; }

 private:
  const CudnnChoice& find_backward_data(Runtime& runtime, const void* x, const void* w, void* y,
                                        std::size_t max_workspace);
  cudnnHandle_t handle_;
  Conv2dDesc desc_;
  BenchMath math_;
  int slices_ = 1;
  TensorDesc x_desc_, y_desc_, bias_desc_;
  FilterDesc w_desc_;
  ConvDesc conv_desc_;
  CudnnChoice choice_;
  bool found_ = false;
  DeviceBuffer workspace_;
};

}  // namespace convjit::bench
