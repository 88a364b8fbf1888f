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

// cudnnFind's results come sorted fastest first (forward and backward-data alike): the
// first that ran, fits the workspace and, in strict math, used no tensor cores; null if none.
template <typename Perf>
const Perf* first_qualifying(const Perf* perf, int returned, std::size_t workspace, BenchMath math) noexcept {
  for (int i = 0; i < returned; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS || p.memory > workspace) continue;
    if (math == BenchMath::kStrict && uses_tensor_ops(p.mathType)) continue;
    return &p;
  }
  return nullptr;
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

// Extents are given as n, c, [d,] h, w whatever the format (depth only for 3-D
// problems); the format says how they are stored.
TensorDesc make_tensor(cudnnDataType_t type, Layout layout, bool three_d, std::int64_t n, std::int64_t c,
                       std::int64_t d, std::int64_t h, std::int64_t w) {
  cudnnTensorDescriptor_t raw = nullptr;
  CONVJIT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&raw), "creating a tensor descriptor");
  TensorDesc desc(raw);
  const int dims5[5] = {int(n), int(c), int(d), int(h), int(w)};
  const int dims4[4] = {int(n), int(c), int(h), int(w)};
  CONVJIT_CUDNN_CHECK(
      cudnnSetTensorNdDescriptorEx(raw, format_of(layout), type, three_d ? 5 : 4, three_d ? dims5 : dims4),
      "describing an {} tensor {}x{}x{}x{}x{}", convjit::to_string(layout), n, c, d, h, w);
  return desc;
}

std::string_view bwd_algo_name(cudnnConvolutionBwdDataAlgo_t algo) noexcept {
  switch (algo) {
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_0:
      return "BWD_DATA_0";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_1:
      return "BWD_DATA_1";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT:
      return "BWD_DATA_FFT";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING:
      return "BWD_DATA_FFT_TILING";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD:
      return "BWD_DATA_WINOGRAD";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED:
      return "BWD_DATA_WINOGRAD_NONFUSED";
    default:
      return "?";
  }
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
  return fmt::format("{} math={} ws={:.1f}MiB", backward_data ? bwd_algo_name(bwd_algo) : algo_name(algo),
                     math_name(math), double(workspace) / (1 << 20));
}

CudnnConv::CudnnConv(cudnnHandle_t handle, const Conv2dDesc& desc, BenchMath math)
    : handle_(handle), desc_(desc), math_(math) {
  const auto o = desc.output_shape();
  const std::int64_t x_per_image = std::int64_t{desc.c} * desc.d * desc.h * desc.w;
  const std::int64_t y_per_image = o.k * o.z * o.p * o.q;
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

  const bool three_d = desc.spatial_dims == 3;
  const cudnnDataType_t type = data_type(math);
  x_desc_ = make_tensor(type, desc.layout, three_d, per_slice, desc.c, desc.d, desc.h, desc.w);
  y_desc_ = make_tensor(type, desc.layout, three_d, per_slice, o.k, o.z, o.p, o.q);
  if (desc.bias) bias_desc_ = make_tensor(type, desc.layout, three_d, 1, desc.k, 1, 1, 1);

  // Forward: k x c/groups x taps. Transposed: the forward convolution's filter from y
  // (k channels) to x (c channels), c x k/groups x taps: PyTorch's transposed weight.
  cudnnFilterDescriptor_t filter = nullptr;
  CONVJIT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&filter), "creating a filter descriptor");
  w_desc_ = FilterDesc(filter);
  const int filter_out = desc.transposed ? desc.c : desc.k;
  const int filter_in = desc.transposed ? desc.k / desc.groups : desc.c / desc.groups;
  const int filter5[5] = {filter_out, filter_in, desc.t, desc.r, desc.s};
  const int filter4[4] = {filter_out, filter_in, desc.r, desc.s};
  CONVJIT_CUDNN_CHECK(
      cudnnSetFilterNdDescriptor(filter, type, format_of(desc.layout), three_d ? 5 : 4, three_d ? filter5 : filter4),
      "describing the filter of {}", desc.to_string());

  cudnnConvolutionDescriptor_t conv = nullptr;
  CONVJIT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv), "creating a convolution descriptor");
  conv_desc_ = ConvDesc(conv);
  // Accumulate in float for every data type (PyTorch's choice for half and bfloat16 too).
  const int pads[3] = {desc.pad_d, desc.pad_h, desc.pad_w};
  const int strides[3] = {desc.stride_d, desc.stride_h, desc.stride_w};
  const int dilations[3] = {desc.dilation_d, desc.dilation_h, desc.dilation_w};
  const int first = three_d ? 0 : 1;
  CONVJIT_CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(conv, three_d ? 3 : 2, pads + first, strides + first,
                                                      dilations + first, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                      "describing the convolution {}", desc.to_string());
  CONVJIT_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv, desc.groups), "setting {} groups", desc.groups);
  CONVJIT_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, math_policy(math)), "setting math type {}",
                      math_name(math_policy(math)));

  // The forward convolution's output must be y (transposed: x, from y's shape).
  int dims[5] = {};
  const cudnnTensorDescriptor_t from = desc.transposed ? y_desc_.get() : x_desc_.get();
  CONVJIT_CUDNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(conv, from, w_desc_.get(), three_d ? 5 : 4, dims),
                      "computing the output shape of {}", desc.to_string());
  const std::int64_t want_c = desc.transposed ? desc.c : o.k;
  const std::int64_t want[5] = {per_slice, want_c, desc.transposed ? desc.d : o.z, desc.transposed ? desc.h : o.p,
                                desc.transposed ? desc.w : o.q};
  const std::int64_t want4[4] = {want[0], want[1], want[3], want[4]};
  for (int i = 0; i < (three_d ? 5 : 4); ++i) {
    if (dims[i] != (three_d ? want[i] : want4[i])) {
      throw CudnnError(CUDNN_STATUS_BAD_PARAM, fmt::format("{}: cuDNN's forward output extent {} is {}, expected {}",
                                                           desc.to_string(), i, dims[i], three_d ? want[i] : want4[i]));
    }
  }
}

namespace {
// Allocates up to `want` bytes, halving on out-of-memory: cudnnFind skips the algorithms
// that need more.
DeviceBuffer workspace_within(Runtime& runtime, std::size_t want) {
  while (true) {
    try {
      return DeviceBuffer(runtime, want);
    } catch (const Error&) {
      if (want == 0) throw;
      want /= 2;
    }
  }
}
}  // namespace

const CudnnChoice& CudnnConv::find(Runtime& runtime, const void* x, const void* w, void* y, std::size_t max_workspace) {
  if (desc_.transposed) return find_backward_data(runtime, x, w, y, max_workspace);
  // The largest workspace any algorithm asks for, within the cap: cudnnFind then tries them all.
  std::size_t want = 0;
  for (int a = 0; a < CUDNN_CONVOLUTION_FWD_ALGO_COUNT; ++a) {
    std::size_t bytes = 0;
    const cudnnStatus_t s =
        cudnnGetConvolutionForwardWorkspaceSize(handle_, x_desc_.get(), w_desc_.get(), conv_desc_.get(), y_desc_.get(),
                                                static_cast<cudnnConvolutionFwdAlgo_t>(a), &bytes);
    if (s == CUDNN_STATUS_SUCCESS && bytes <= max_workspace) want = std::max(want, bytes);
  }
  workspace_ = workspace_within(runtime, want);

  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT] = {};
  int returned = 0;
  CONVJIT_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
                          handle_, x_desc_.get(), x, w_desc_.get(), w, conv_desc_.get(), y_desc_.get(), y,
                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf, workspace_.data(), workspace_.size()),
                      "cudnnFind for {} ({})", desc_.to_string(), to_string(math_));
  const auto* best = first_qualifying(perf, returned, workspace_.size(), math_);
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

const CudnnChoice& CudnnConv::find_backward_data(Runtime& runtime, const void* x, const void* w, void* y,
                                                 std::size_t max_workspace) {
  // Backward data of the forward convolution y-shape -> x-shape: its dy is our x, its dx our y.
  std::size_t want = 0;
  for (int a = 0; a < CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT; ++a) {
    std::size_t bytes = 0;
    const cudnnStatus_t s = cudnnGetConvolutionBackwardDataWorkspaceSize(
        handle_, w_desc_.get(), x_desc_.get(), conv_desc_.get(), y_desc_.get(),
        static_cast<cudnnConvolutionBwdDataAlgo_t>(a), &bytes);
    if (s == CUDNN_STATUS_SUCCESS && bytes <= max_workspace) want = std::max(want, bytes);
  }
  workspace_ = workspace_within(runtime, want);
  cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT] = {};
  int returned = 0;
  CONVJIT_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
                          handle_, w_desc_.get(), w, x_desc_.get(), x, conv_desc_.get(), y_desc_.get(), y,
                          CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, perf, workspace_.data(), workspace_.size()),
                      "cudnnFind (backward data) for {} ({})", desc_.to_string(), to_string(math_));
  const auto* best = first_qualifying(perf, returned, workspace_.size(), math_);
  if (best == nullptr) {
    throw CudnnError(CUDNN_STATUS_NOT_SUPPORTED,
                     fmt::format("cudnnFind (backward data) for {} ({}): none of {} results qualifies",
                                 desc_.to_string(), to_string(math_), returned));
  }
  if (math_ != BenchMath::kStrict) {
    CONVJIT_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_desc_.get(), best->mathType), "setting math type {}",
                        math_name(best->mathType));
  }
  choice_ = CudnnChoice{.backward_data = true,
                        .bwd_algo = best->algo,
                        .math = best->mathType,
                        .workspace = best->memory,
                        .find_ms = best->time};
  std::size_t needed = 0;
  CONVJIT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
                          handle_, w_desc_.get(), x_desc_.get(), conv_desc_.get(), y_desc_.get(), best->algo, &needed),
                      "workspace of {}", bwd_algo_name(best->algo));
  if (needed > workspace_.size()) {
    throw CudnnError(CUDNN_STATUS_ALLOC_FAILED, fmt::format("{} needs {} bytes of workspace, {} allocated",
                                                            bwd_algo_name(best->algo), needed, workspace_.size()));
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
  const std::size_t x_step = std::size_t(per_slice) * desc_.c * desc_.d * desc_.h * desc_.w * esz;
  const std::size_t y_step = std::size_t(per_slice) * o.k * o.z * o.p * o.q * esz;
  for (int i = 0; i < slices_; ++i) {
    const auto* xi = static_cast<const unsigned char*>(x) + i * x_step;
    auto* yi = static_cast<unsigned char*>(y) + i * y_step;
    if (choice_.backward_data) {
      CONVJIT_CUDNN_CHECK(cudnnConvolutionBackwardData(handle_, &one, w_desc_.get(), w, x_desc_.get(), xi,
                                                       conv_desc_.get(), choice_.bwd_algo, workspace_.data(),
                                                       workspace_.size(), &zero, y_desc_.get(), yi),
                          "cudnnConvolutionBackwardData {} ({})", desc_.to_string(), to_string(math_));
    } else {
      CONVJIT_CUDNN_CHECK(
          cudnnConvolutionForward(handle_, &one, x_desc_.get(), xi, w_desc_.get(), w, conv_desc_.get(), choice_.algo,
                                  workspace_.data(), workspace_.size(), &zero, y_desc_.get(), yi),
          "cudnnConvolutionForward {} ({})", desc_.to_string(), to_string(math_));
    }
    if (desc_.bias) {
      CONVJIT_CUDNN_CHECK(cudnnAddTensor(handle_, &one, bias_desc_.get(), bias, &one, y_desc_.get(), yi),
                          "adding the bias of {}", desc_.to_string());
    }
  }
}

}  // namespace convjit::bench
