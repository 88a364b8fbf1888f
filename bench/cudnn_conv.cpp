#include "cudnn_conv.hpp"

#include <algorithm>
#include <climits>

#include "convjit/error.hpp"

namespace convjit::bench {

namespace {

std::string version_text(std::size_t v) { return fmt::format("{}.{}.{}", v / 10000, v % 10000 / 100, v % 100); }

cudnnDataType_t data_type(BenchMath math) noexcept {
  switch (math) {
    case BenchMath::kFP16:
      return CUDNN_DATA_HALF;
    case BenchMath::kBF16:
      return CUDNN_DATA_BFLOAT16;
    default:
      return CUDNN_DATA_FLOAT;
  }
}

cudnnMathType_t math_policy(BenchMath math) noexcept {
  switch (math) {
    case BenchMath::kStrict:
      return CUDNN_FMA_MATH;
    case BenchMath::kTF32:
      return CUDNN_DEFAULT_MATH;
    default:
      return CUDNN_TENSOR_OP_MATH;
  }
}

bool uses_tensor_ops(cudnnMathType_t m) noexcept {
  return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

std::string_view algo_name(cudnnConvolutionFwdAlgo_t algo) noexcept {
  switch (algo) {
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM:
      return "IMPLICIT_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM:
      return "IMPLICIT_PRECOMP_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_GEMM:
      return "GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_DIRECT:
      return "DIRECT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT:
      return "FFT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING:
      return "FFT_TILING";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD:
      return "WINOGRAD";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED:
      return "WINOGRAD_NONFUSED";
    default:
      return "?";
  }
}

std::string_view math_name(cudnnMathType_t m) noexcept {
  switch (m) {
    case CUDNN_DEFAULT_MATH:
      return "default";
    case CUDNN_TENSOR_OP_MATH:
      return "tensor_op";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION:
      return "tensor_op_conv";
    case CUDNN_FMA_MATH:
      return "fma";
    default:
      return "?";
  }
}

// cuDNN's name for convjit's layout: the same memory order for x and y, and for the
// filter (NHWC: K,R,S,C/groups, PyTorch's channels-last weight).
cudnnTensorFormat_t format_of(Layout layout) noexcept {
  return layout == Layout::kNHWC ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
}

// Extents are given as n, c, h, w whatever the format; the format says how they are stored.
TensorDesc make_tensor(cudnnDataType_t type, Layout layout, std::int64_t n, std::int64_t c, std::int64_t h,
                       std::int64_t w) {
  cudnnTensorDescriptor_t raw = nullptr;
  CONVJIT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&raw), "creating a tensor descriptor");
  TensorDesc desc(raw);
  CONVJIT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(raw, format_of(layout), type, int(n), int(c), int(h), int(w)),
                      "describing an {} tensor {}x{}x{}x{}", convjit::to_string(layout), n, c, h, w);
  return desc;
}

}  // namespace

void cudnn_fail(cudnnStatus_t status, const char* call, const std::string& context) {
  char detail[1024] = {};
  cudnnGetLastErrorString(detail, sizeof detail);
  std::string message =
      fmt::format("{}: {} failed → {} ({})", context, call, cudnnGetErrorString(status), static_cast<int>(status));
  if (detail[0] != '\0') message += fmt::format("; cuDNN says: {}", detail);
  throw CudnnError(status, message);
}

CudnnHandle make_cudnn_handle(cudaStream_t stream) {
  cudnnHandle_t raw = nullptr;
  CONVJIT_CUDNN_CHECK(cudnnCreate(&raw), "creating a cuDNN handle on the current context");
  CudnnHandle handle(raw);
  CONVJIT_CUDNN_CHECK(cudnnSetStream(raw, stream), "binding the cuDNN handle to the bench stream");
  return handle;
}

std::string cudnn_version_text() {
  return fmt::format("{} (runtime), built against {}", version_text(cudnnGetVersion()), version_text(CUDNN_VERSION));
}

std::string_view to_string(BenchMath math) noexcept {
  switch (math) {
    case BenchMath::kStrict:
      return "strict";
    case BenchMath::kTF32:
      return "tf32";
    case BenchMath::kFP16:
      return "fp16";
    case BenchMath::kBF16:
      return "bf16";
  }
  return "?";
}

DType dtype_of(BenchMath math) noexcept {
  switch (math) {
    case BenchMath::kFP16:
      return DType::kFloat16;
    case BenchMath::kBF16:
      return DType::kBFloat16;
    default:
      return DType::kFloat32;
  }
}

std::string CudnnChoice::describe() const {
  return fmt::format("{} math={} ws={:.1f}MiB", algo_name(algo), math_name(math), double(workspace) / (1 << 20));
}

CudnnConv::CudnnConv(cudnnHandle_t handle, const Conv2dDesc& desc, BenchMath math)
    : handle_(handle), desc_(desc), math_(math) {
  const auto o = desc.output_shape();
  const std::int64_t x_per_image = std::int64_t{desc.c} * desc.h * desc.w;
  const std::int64_t y_per_image = o.k * o.p * o.q;
  // cuDNN's legacy descriptors take int sizes: slice the batch into equal parts that fit.
  int per_slice = desc.n;
  while (per_slice > 0 && (desc.n % per_slice != 0 || per_slice * std::max(x_per_image, y_per_image) > INT_MAX)) {
    --per_slice;
  }
  if (per_slice == 0) {
    throw CudnnError(CUDNN_STATUS_NOT_SUPPORTED,
                     fmt::format("{}: one image has more than 2^31 - 1 elements", desc.to_string()));
  }
  slices_ = desc.n / per_slice;

  const cudnnDataType_t type = data_type(math);
  x_desc_ = make_tensor(type, desc.layout, per_slice, desc.c, desc.h, desc.w);
  y_desc_ = make_tensor(type, desc.layout, per_slice, o.k, o.p, o.q);
  if (desc.bias) bias_desc_ = make_tensor(type, desc.layout, 1, desc.k, 1, 1);

  cudnnFilterDescriptor_t filter = nullptr;
  CONVJIT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&filter), "creating a filter descriptor");
  w_desc_ = FilterDesc(filter);
  CONVJIT_CUDNN_CHECK(
      cudnnSetFilter4dDescriptor(filter, type, format_of(desc.layout), desc.k, desc.c / desc.groups, desc.r, desc.s),
      "describing the filter of {}", desc.to_string());

  cudnnConvolutionDescriptor_t conv = nullptr;
  CONVJIT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv), "creating a convolution descriptor");
  conv_desc_ = ConvDesc(conv);
  // Accumulate in float for every data type (PyTorch's choice for half and bfloat16 too).
  CONVJIT_CUDNN_CHECK(
      cudnnSetConvolution2dDescriptor(conv, desc.pad_h, desc.pad_w, desc.stride_h, desc.stride_w, desc.dilation_h,
                                      desc.dilation_w, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
      "describing the convolution {}", desc.to_string());
  CONVJIT_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv, desc.groups), "setting {} groups", desc.groups);
  CONVJIT_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, math_policy(math)), "setting math type {}",
                      math_name(math_policy(math)));

  int dims[4] = {};
  CONVJIT_CUDNN_CHECK(
      cudnnGetConvolution2dForwardOutputDim(conv, x_desc_.get(), w_desc_.get(), &dims[0], &dims[1], &dims[2], &dims[3]),
      "computing the output shape of {}", desc.to_string());
  if (dims[0] != per_slice || dims[1] != o.k || dims[2] != o.p || dims[3] != o.q) {
    throw CudnnError(CUDNN_STATUS_BAD_PARAM,
                     fmt::format("{}: cuDNN's output {}x{}x{}x{} differs from convjit's {}x{}x{}x{}", desc.to_string(),
                                 dims[0], dims[1], dims[2], dims[3], per_slice, o.k, o.p, o.q));
  }
}

const CudnnChoice& CudnnConv::find(Runtime& runtime, const void* x, const void* w, void* y, std::size_t max_workspace) {
  // The largest workspace any algorithm asks for, within the cap: cudnnFind then tries them all.
  std::size_t want = 0;
  for (int a = 0; a < CUDNN_CONVOLUTION_FWD_ALGO_COUNT; ++a) {
    std::size_t bytes = 0;
    const cudnnStatus_t s =
        cudnnGetConvolutionForwardWorkspaceSize(handle_, x_desc_.get(), w_desc_.get(), conv_desc_.get(), y_desc_.get(),
                                                static_cast<cudnnConvolutionFwdAlgo_t>(a), &bytes);
    if (s == CUDNN_STATUS_SUCCESS && bytes <= max_workspace) want = std::max(want, bytes);
  }
  while (true) {
    try {
      workspace_ = DeviceBuffer(runtime, want);
      break;
    } catch (const Error&) {
      if (want == 0) throw;
      want /= 2;  // out of memory: cudnnFind skips the algorithms that need more
    }
  }

  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT] = {};
  int returned = 0;
  CONVJIT_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
                          handle_, x_desc_.get(), x, w_desc_.get(), w, conv_desc_.get(), y_desc_.get(), y,
                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf, workspace_.data(), workspace_.size()),
                      "cudnnFind for {} ({})", desc_.to_string(), to_string(math_));
  // Sorted fastest first; the first that ran and that the math mode allows wins.
  const cudnnConvolutionFwdAlgoPerf_t* best = nullptr;
  for (int i = 0; i < returned && best == nullptr; ++i) {
    const auto& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS || p.memory > workspace_.size()) continue;
    if (math_ == BenchMath::kStrict && uses_tensor_ops(p.mathType)) continue;
    best = &p;
  }
  if (best == nullptr) {
    throw CudnnError(CUDNN_STATUS_NOT_SUPPORTED, fmt::format("cudnnFind for {} ({}): none of {} results qualifies",
                                                             desc_.to_string(), to_string(math_), returned));
  }
  // Strict keeps CUDNN_FMA_MATH on the descriptor whatever the result reports, so that
  // running can never pick up TF32; the others run with the math type that was timed.
  if (math_ != BenchMath::kStrict) {
    CONVJIT_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_desc_.get(), best->mathType), "setting math type {}",
                        math_name(best->mathType));
  }
  choice_ = CudnnChoice{.algo = best->algo, .math = best->mathType, .workspace = best->memory, .find_ms = best->time};
  std::size_t needed = 0;
  CONVJIT_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(handle_, x_desc_.get(), w_desc_.get(), conv_desc_.get(),
                                                              y_desc_.get(), best->algo, &needed),
                      "workspace of {}", algo_name(best->algo));
  if (needed > workspace_.size()) {
    throw CudnnError(CUDNN_STATUS_ALLOC_FAILED, fmt::format("{} needs {} bytes of workspace, {} allocated",
                                                            algo_name(best->algo), needed, workspace_.size()));
  }
  found_ = true;
  return choice_;
}

void CudnnConv::run(const void* x, const void* w, const void* bias, void* y) const {
  if (!found_) throw CudnnError(CUDNN_STATUS_NOT_INITIALIZED, "CudnnConv::run before find");
  const float one = 1.0f, zero = 0.0f;  // scaling factors are float for float, half and bfloat16 data
  const auto o = desc_.output_shape();
  const std::size_t esz = size_of(dtype_of(math_));
  const int per_slice = desc_.n / slices_;
  const std::size_t x_step = std::size_t(per_slice) * desc_.c * desc_.h * desc_.w * esz;
  const std::size_t y_step = std::size_t(per_slice) * o.k * o.p * o.q * esz;
  for (int i = 0; i < slices_; ++i) {
    const auto* xi = static_cast<const unsigned char*>(x) + i * x_step;
    auto* yi = static_cast<unsigned char*>(y) + i * y_step;
    CONVJIT_CUDNN_CHECK(
        cudnnConvolutionForward(handle_, &one, x_desc_.get(), xi, w_desc_.get(), w, conv_desc_.get(), choice_.algo,
                                workspace_.data(), workspace_.size(), &zero, y_desc_.get(), yi),
        "cudnnConvolutionForward {} ({})", desc_.to_string(), to_string(math_));
    if (desc_.bias) {
      CONVJIT_CUDNN_CHECK(cudnnAddTensor(handle_, &one, bias_desc_.get(), bias, &one, y_desc_.get(), yi),
                          "adding the bias of {}", desc_.to_string());
    }
  }
}

}  // namespace convjit::bench
