#include "runtime/im2col_gemm.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "base/env_switch.hpp"
#include "base/log.hpp"
#include "driver/cublas.hpp"
#include "driver/stream_context.hpp"
#include "runtime/timing_event.hpp"
#include "specialize/specialized_source.hpp"

namespace convjit {

namespace {
constexpr unsigned kThreads = 256;
// cuBLAS takes each extent as an int; an NHWC GEMM's pixel dimension spans images, so it
// runs in slices of at most this many pixels.
constexpr std::int64_t kMaxGemmPixels = std::int64_t{1} << 30;

constexpr std::uint64_t kMaxBlocks = 132 * 16;
constexpr int kLtAlgos = 8;  // the heuristic's list CONVJIT_CUBLASLT_ALGO picks from

unsigned blocks_for(std::uint64_t elements) {
  // Grid-stride loops: enough blocks to fill the chip, never more than needed.
  return static_cast<unsigned>(std::clamp<std::uint64_t>((elements + kThreads - 1) / kThreads, 1, kMaxBlocks));
}

// The im2col kernel walks its chunk as row_count runs of `run` contiguous column entries
// (x along a run, y across runs). Blocks as wide as a run (32 to kThreads), so short
// runs (an NHWC pixel's few channels, a small image's pixels) still fill every lane.
struct Im2colLaunch {
  unsigned grid_x, grid_y, block_x, block_y;
};
Im2colLaunch im2col_launch(std::uint64_t row_count, std::uint64_t run) {
  unsigned block_x = 32;
  while (block_x < kThreads && block_x < run) block_x *= 2;
  const unsigned block_y = kThreads / block_x;
  const std::uint64_t grid_x = std::clamp<std::uint64_t>((run + block_x - 1) / block_x, 1, kMaxBlocks);
  const std::uint64_t grid_y = std::clamp<std::uint64_t>((row_count + block_y - 1) / block_y, 1,
                                                         std::min<std::uint64_t>(65535, 4 * kMaxBlocks / grid_x));
  return {static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y), block_x, block_y};
}

void launch_im2col(CUfunction im2col, std::uint64_t row_count, std::uint64_t run, void** args, CUstream stream,
                   const Conv2dDesc& d) {
  const Im2colLaunch l = im2col_launch(row_count, run);
  CONVJIT_CU_CHECK(cuLaunchKernel(im2col, l.grid_x, l.grid_y, 1, l.block_x, l.block_y, 1, 0, stream, args, nullptr),
                   "launching im2col of {}", d.to_string());
}
}  // namespace

namespace {
std::uint64_t round_up(std::uint64_t v, std::uint64_t to) { return (v + to - 1) / to * to; }

// Output rows of every depth: the (z, p) pairs the chunks cut.
long long output_rows(const Conv2dDesc& d) {
  const auto o = d.output_shape();
  return static_cast<long long>(o.z) * o.p;
}

Im2colChunking plan_columns(const Conv2dDesc& d, std::uint64_t limit);
}  // namespace

Im2colChunking plan_im2col_chunks(const Conv2dDesc& d, std::uint64_t limit) {
  // Transposed weights are repacked each run into the workspace, after the columns.
  const std::uint64_t packed = d.transposed ? round_up(d.w_elements() * size_of(d.dtype), 16) : 0;
  if (packed > limit) {
    fail(ErrorCode::kUnsupported,
         "{}: im2col needs {} bytes for the repacked transposed weights, over the {} bytes the workspace limit "
         "leaves (RuntimeOptions.workspace_limit_bytes / CONVJIT_WORKSPACE_LIMIT)",
         d.to_string(), packed, limit);
  }
  Im2colChunking out = plan_columns(d, limit - packed);
  if (packed > 0) {
    out.packed_weight_offset = round_up(out.workspace_bytes, 16);
    out.packed_weight_bytes = d.w_elements() * size_of(d.dtype);
    out.workspace_bytes = out.packed_weight_offset + out.packed_weight_bytes;
  }
  return out;
}

namespace {
Im2colChunking plan_columns(const Conv2dDesc& d, std::uint64_t limit) {
  Im2colChunking out;
  const auto o = d.output_shape();
  const long long rows_total = output_rows(d);
  if (is_pointwise_gemm(d)) {
    out.pointwise = true;
    out.images_per_chunk = d.n;
    out.rows_per_chunk = static_cast<int>(rows_total);
    return out;
  }
  const std::uint64_t gemm_k = static_cast<std::uint64_t>(d.c / d.groups) * d.t * d.r * d.s;
  const std::uint64_t row_bytes = gemm_k * static_cast<std::uint64_t>(o.q) * size_of(d.dtype);
  const std::uint64_t column_image_bytes = row_bytes * static_cast<std::uint64_t>(rows_total);
  const std::uint64_t pixels = static_cast<std::uint64_t>(rows_total) * o.q;
  const std::uint64_t scratch_image_bytes = static_cast<std::uint64_t>(d.k / d.groups) * pixels * size_of(d.dtype);
  // A merged chunk holds its images' columns and their scratch y (plus 16 bytes of
  // alignment between the two, charged to every image to stay under the limit).
  const bool merge = d.layout == Layout::kNCHW && d.n > 1 && static_cast<long long>(pixels) < kMergeBelowPixels;
  const std::uint64_t merged_image_bytes = column_image_bytes + scratch_image_bytes + 16;
  if (merge && 2 * merged_image_bytes <= limit) {
    out.merged_images = true;
    // cuBLAS takes M as an int.
    out.images_per_chunk = static_cast<int>(std::min<std::uint64_t>(
        {static_cast<std::uint64_t>(d.n), limit / merged_image_bytes, kMaxGemmPixels / pixels}));
    out.rows_per_chunk = static_cast<int>(rows_total);
    out.column_bytes = out.images_per_chunk * column_image_bytes;
    out.workspace_bytes = (out.column_bytes + 15) / 16 * 16 + out.images_per_chunk * scratch_image_bytes;
    return out;
  }
  const std::uint64_t image_bytes = column_image_bytes;
  if (row_bytes > limit) {
    fail(ErrorCode::kUnsupported,
         "{}: im2col needs {} bytes for one output row, over the {} bytes the workspace limit leaves for "
         "columns (RuntimeOptions.workspace_limit_bytes / CONVJIT_WORKSPACE_LIMIT)",
         d.to_string(), row_bytes, limit);
  }
  if (image_bytes <= limit) {
    std::uint64_t images = std::min<std::uint64_t>(d.n, limit / image_bytes);
    // NHWC: one GEMM covers the chunk's pixels across its images (NCHW batches images).
    if (d.layout == Layout::kNHWC) {
      images = std::max<std::uint64_t>(1, std::min<std::uint64_t>(images, kMaxGemmPixels / (rows_total * o.q)));
    }
    out.images_per_chunk = static_cast<int>(images);
    out.rows_per_chunk = static_cast<int>(rows_total);
  } else {
    out.images_per_chunk = 1;
    out.rows_per_chunk = static_cast<int>(std::min<std::uint64_t>(rows_total, limit / row_bytes));
  }
  out.column_bytes = static_cast<std::uint64_t>(out.images_per_chunk) * out.rows_per_chunk * row_bytes;
  out.workspace_bytes = out.column_bytes;
  return out;
}
}  // namespace

Im2colGemmRunner::Im2colGemmRunner(const Conv2dDesc& desc, Im2colChunking chunking,
                                   std::shared_ptr<LoadedModule> module, const std::string& kernel_name,
                                   std::shared_ptr<SharedCublas> blas, std::uint64_t blas_workspace)
    : desc_(desc),
      chunking_(chunking),
      module_(std::move(module)),
      blas_(std::move(blas)),
      blas_workspace_(blas_workspace) {
  im2col_ = module_->lookup(kernel_name + "_im2col");
  bias_act_ = module_->lookup(kernel_name + "_bias_act");
  scatter_ = module_->lookup(kernel_name + "_scatter");
  if (desc_.transposed) pack_w_ = module_->lookup(kernel_name + "_pack_w");
  if (const char* env = std::getenv("CONVJIT_CUBLASLT_ALGO"); env != nullptr && *env != '\0') {
    int i = -1;
    if (std::sscanf(env, "%d", &i) != 1 || i < 0 || i >= kLtAlgos) {
      fail(ErrorCode::kInvalidArgument, "CONVJIT_CUBLASLT_ALGO: expected 0-{}, got '{}'", kLtAlgos - 1, env);
    }
    lt_algo_ = i;
  }
  const char* tune = std::getenv("CONVJIT_CUBLASLT_TUNE");
  const std::string_view scope = tune == nullptr ? std::string_view() : std::string_view(tune);
  if (scope == "pointwise") {
    lt_columns_ = false;
  } else {
    lt_timed_ = env_switch_on("CONVJIT_CUBLASLT_TUNE");
  }
}

namespace {
constexpr std::uint64_t kBlasAlign = 256;  // cublasSetWorkspace's alignment

// The largest power of two up to 256 that divides a pointer: the alignment cuBLASLt may
// assume of it.
std::uint32_t alignment_of(const void* p) {
  const auto v = reinterpret_cast<std::uintptr_t>(p);
  std::uint32_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

// RAII for cuBLASLt's descriptors.
template <typename T, cublasStatus_t (*Destroy)(T)>
struct LtObject {
  T h = nullptr;
  LtObject() = default;
  LtObject(const LtObject&) = delete;
  LtObject& operator=(const LtObject&) = delete;
  ~LtObject() {
    if (h != nullptr) Destroy(h);
  }
};
using LtMatmulDesc = LtObject<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using LtLayout = LtObject<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using LtPreference = LtObject<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;
}  // namespace

std::uint64_t Im2colGemmRunner::workspace_bytes() const noexcept {
  return round_up(chunking_.workspace_bytes, 16) + kBlasAlign + blas_workspace_;
}

std::uint64_t Im2colGemmRunner::overhead_bytes(std::uint64_t blas_workspace) noexcept {
  return 15 + kBlasAlign + blas_workspace;  // the columns rounded up to 16, the alignment gap, cuBLAS's part
}

void Im2colGemmRunner::run(const void* x, const void* w, const void* bias, void* y, CUdeviceptr workspace,
                           CUstream stream, int batch) const {
  // Offsets count elements; the pointers step in bytes, esz per element.
  const auto* xf = static_cast<const char*>(x);
  const auto* wf = static_cast<const char*>(w);
  auto* yf = static_cast<char*>(y);
  if (pack_w_ != nullptr) {
    // Transposed: every GEMM below reads W from its packed copy.
    auto* packed = reinterpret_cast<char*>(workspace + chunking_.packed_weight_offset);
    const void* w_in = w;
    void* args[] = {&w_in, &packed};
    const std::uint64_t elements = chunking_.packed_weight_bytes / size_of(desc_.dtype);
    CONVJIT_CU_CHECK(cuLaunchKernel(pack_w_, blocks_for(elements), 1, 1, kThreads, 1, 1, 0, stream, args, nullptr),
                     "launching the weight pack of {}", desc_.to_string());
    wf = packed;
  }
  const CUdeviceptr blas_ws = round_up(workspace + round_up(chunking_.workspace_bytes, 16), kBlasAlign);
  // NOTE: the handle is the context's; it stays locked until this run's last GEMM is
  // enqueued, so no other run rebinds its stream or workspace in between.
  std::lock_guard blas_lock(blas_->mutex);
  const cublasHandle_t handle = blas_->handle.get();
  CONVJIT_CUBLAS_CHECK(cublasSetStream(handle, reinterpret_cast<cudaStream_t>(stream)), "binding cuBLAS to a stream");
  CONVJIT_CUBLAS_CHECK(cublasSetWorkspace(handle, reinterpret_cast<void*>(blas_ws), blas_workspace_),
                       "giving cuBLAS its workspace");
  // 16-bit data: inputs and output in that type, fp32 accumulation, whatever the math mode.
  const GemmContext ctx{
      .handle = handle,
      .type = desc_.dtype == DType::kFloat16    ? CUDA_R_16F
              : desc_.dtype == DType::kBFloat16 ? CUDA_R_16BF
                                                : CUDA_R_32F,
      .compute = desc_.dtype == DType::kFloat32 && desc_.math == MathMode::kTF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                                 : CUBLAS_COMPUTE_32F,
      .stream = stream,
      .col = reinterpret_cast<char*>(workspace),
      .blas_workspace = reinterpret_cast<void*>(blas_ws),
  };
  if (chunking_.merged_images) {
    run_nchw_merged(xf, wf, bias, yf, ctx, batch);
  } else if (desc_.layout == Layout::kNHWC) {
    run_nhwc(xf, wf, yf, ctx, batch);
  } else {
    run_nchw(xf, wf, yf, ctx, batch);
  }
  // A merged run's scatter applied them already.
  if (!chunking_.merged_images && (desc_.bias || desc_.activation != Activation::kNone)) {
    // A dynamic-batch epilogue takes the batch as its last parameter (convjit_device.cuh).
    void* args[] = {&bias, &yf, &batch};
    const auto o = desc_.output_shape();
    const std::uint64_t elements = static_cast<std::uint64_t>(batch) * desc_.k * output_rows(desc_) * o.q;
    CONVJIT_CU_CHECK(cuLaunchKernel(bias_act_, blocks_for(elements), 1, 1, kThreads, 1, 1, 0, stream, args, nullptr),
                     "launching the bias/activation epilogue of {}", desc_.to_string());
  }
}

void Im2colGemmRunner::run_nchw(const char* xf, const char* wf, char* yf, const GemmContext& ctx, int batch) const {
  const auto o = desc_.output_shape();
  const int groups = desc_.groups;
  const long long c_per_group = desc_.c / groups;
  const long long k_per_group = desc_.k / groups;
  const long long gemm_k = c_per_group * desc_.t * desc_.r * desc_.s;
  const long long rows_total = output_rows(desc_);
  const long long pixels = rows_total * o.q;
  const long long plane = static_cast<long long>(desc_.d) * desc_.h * desc_.w;
  const long long esz = static_cast<long long>(size_of(desc_.dtype));
  const float one = 1.0f;  // float scalars: the compute type is 32F for every data type
  const float zero = 0.0f;
  const cublasHandle_t handle = ctx.handle;
  const cudaDataType_t type = ctx.type;
  const cublasComputeType_t compute = ctx.compute;
  char* col = ctx.col;
  // Column-major view: Y^T (pixels x k) = col^T (pixels x kk) * W^T (kk x k).
  for (int g = 0; g < groups; ++g) {
    const char* w_group = wf + g * k_per_group * gemm_k * esz;
    char* y_group = yf + g * k_per_group * pixels * esz;
    if (chunking_.pointwise && through_lt()) {
      lt_gemm(ctx, LtGemm{.transpose_a = false,
                          .m = pixels,
                          .n = k_per_group,
                          .k = c_per_group,
                          .a = xf + g * c_per_group * plane * esz,
                          .lda = pixels,
                          .stride_a = static_cast<long long>(desc_.c) * plane,
                          .b = w_group,
                          .ldb = c_per_group,
                          .stride_b = 0,
                          .c = y_group,
                          .ldc = pixels,
                          .stride_c = static_cast<long long>(desc_.k) * pixels,
                          .batch = batch});
      continue;
    }
    if (chunking_.pointwise) {
      CONVJIT_CUBLAS_CHECK(
          cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(pixels),
                                     static_cast<int>(k_per_group), static_cast<int>(c_per_group), &one,
                                     xf + g * c_per_group * plane * esz, type, static_cast<int>(pixels),
                                     static_cast<long long>(desc_.c) * plane, w_group, type,
                                     static_cast<int>(c_per_group), 0, &zero, y_group, type, static_cast<int>(pixels),
                                     static_cast<long long>(desc_.k) * pixels, batch, compute, CUBLAS_GEMM_DEFAULT),
          "pointwise GEMM of {}", desc_.to_string());
      continue;
    }
    for (int n0 = 0; n0 < batch; n0 += chunking_.images_per_chunk) {
      const int images = std::min(chunking_.images_per_chunk, batch - n0);
      for (int p0 = 0; p0 < rows_total; p0 += chunking_.rows_per_chunk) {
        const int rows = static_cast<int>(std::min<long long>(chunking_.rows_per_chunk, rows_total - p0));
        const long long chunk_pixels = static_cast<long long>(rows) * o.q;
        int group = g;
        int merged = 0;
        void* args[] = {&xf, &col, &group, &n0, &p0, const_cast<int*>(&rows), const_cast<int*>(&images), &merged};
        launch_im2col(im2col_, images * gemm_k, chunk_pixels, args, ctx.stream, desc_);
        char* y_chunk = y_group + (static_cast<long long>(n0) * desc_.k * pixels + p0 * o.q) * esz;
        if (columns_through_lt()) {
          lt_gemm(ctx, LtGemm{.transpose_a = false,
                              .m = chunk_pixels,
                              .n = k_per_group,
                              .k = gemm_k,
                              .a = col,
                              .lda = chunk_pixels,
                              .stride_a = gemm_k * chunk_pixels,
                              .b = w_group,
                              .ldb = gemm_k,
                              .stride_b = 0,
                              .c = y_chunk,
                              .ldc = pixels,
                              .stride_c = static_cast<long long>(desc_.k) * pixels,
                              .batch = images});
          continue;
        }
        CONVJIT_CUBLAS_CHECK(
            cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(chunk_pixels),
                                       static_cast<int>(k_per_group), static_cast<int>(gemm_k), &one, col, type,
                                       static_cast<int>(chunk_pixels), gemm_k * chunk_pixels, w_group, type,
                                       static_cast<int>(gemm_k), 0, &zero, y_chunk, type, static_cast<int>(pixels),
                                       static_cast<long long>(desc_.k) * pixels, images, compute, CUBLAS_GEMM_DEFAULT),
            "GEMM of {} (images {}+{}, rows {}+{})", desc_.to_string(), n0, images, p0, rows);
      }
    }
  }
}

void Im2colGemmRunner::run_nchw_merged(const char* xf, const char* wf, const void* bias, char* yf,
                                       const GemmContext& ctx, int batch) const {
  const auto o = desc_.output_shape();
  const long long k_per_group = desc_.k / desc_.groups;
  const long long gemm_k = static_cast<long long>(desc_.c / desc_.groups) * desc_.t * desc_.r * desc_.s;
  const long long rows_total = output_rows(desc_);
  const long long pixels = rows_total * o.q;
  const long long esz = static_cast<long long>(size_of(desc_.dtype));
  const float one = 1.0f;
  const float zero = 0.0f;
  char* col = ctx.col;
  char* scratch = col + round_up(chunking_.column_bytes, 16);
  for (int g = 0; g < desc_.groups; ++g) {
    const char* w_group = wf + g * k_per_group * gemm_k * esz;
    for (int n0 = 0; n0 < batch; n0 += chunking_.images_per_chunk) {
      int images = std::min(chunking_.images_per_chunk, batch - n0);
      int group = g;
      int p0 = 0;
      int rows = static_cast<int>(rows_total);
      int merged = 1;
      void* im2col_args[] = {&xf, &col, &group, &n0, &p0, &rows, &images, &merged};
      launch_im2col(im2col_, gemm_k, images * pixels, im2col_args, ctx.stream, desc_);
      // Column-major: scratch (m x k/g, ld m) = col (m x kk, ld m) * W_g^T (kk x k/g),
      // m = the chunk's images x pixels, so scratch is [k][image][pixel].
      const long long m = images * pixels;
      if (columns_through_lt()) {
        lt_gemm(ctx, LtGemm{.transpose_a = false,
                            .m = m,
                            .n = k_per_group,
                            .k = gemm_k,
                            .a = col,
                            .lda = m,
                            .stride_a = 0,
                            .b = w_group,
                            .ldb = gemm_k,
                            .stride_b = 0,
                            .c = scratch,
                            .ldc = m,
                            .stride_c = 0,
                            .batch = 1});
      } else {
        CONVJIT_CUBLAS_CHECK(cublasGemmEx(ctx.handle, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(m),
                                          static_cast<int>(k_per_group), static_cast<int>(gemm_k), &one, col, ctx.type,
                                          static_cast<int>(m), w_group, ctx.type, static_cast<int>(gemm_k), &zero,
                                          scratch, ctx.type, static_cast<int>(m), ctx.compute, CUBLAS_GEMM_DEFAULT),
                             "merged GEMM of {} (images {}+{})", desc_.to_string(), n0, images);
      }
      const char* scratch_in = scratch;
      const void* bias_in = bias;
      void* scatter_args[] = {&scratch_in, &bias_in, &yf, &group, &n0, &images};
      CONVJIT_CU_CHECK(cuLaunchKernel(scatter_, blocks_for(images * k_per_group * pixels), 1, 1, kThreads, 1, 1, 0,
                                      ctx.stream, scatter_args, nullptr),
                       "launching the scatter epilogue of {}", desc_.to_string());
    }
  }
}

void Im2colGemmRunner::run_nhwc(const char* xf, const char* wf, char* yf, const GemmContext& ctx, int batch) const {
  const auto o = desc_.output_shape();
  const long long rows_total = output_rows(desc_);
  const int groups = desc_.groups;
  const long long c_per_group = desc_.c / groups;
  const long long k_per_group = desc_.k / groups;
  const long long gemm_k = c_per_group * desc_.t * desc_.r * desc_.s;
  const long long esz = static_cast<long long>(size_of(desc_.dtype));
  const float one = 1.0f;
  const float zero = 0.0f;
  const cublasHandle_t handle = ctx.handle;
  const cudaDataType_t type = ctx.type;
  const cublasComputeType_t compute = ctx.compute;
  char* col = ctx.col;
  // Row-major y (pixels x k) is column-major Y^T (k x pixels, ld k), so per group
  //   Y_g^T (k/g x pixels) = W_g (k/g x kk) * col_g^T (kk x pixels),
  // with W_g row-major (k/g x kk) read transposed (lda kk) and col_g row-major
  // (pixels x kk) read as it is (ldb: its row pitch). Group g's outputs are the k/g
  // columns of y from g * k/g, at pitch k.
  auto gemm = [&](long long pixels, const char* cols, long long ld_cols, const char* w_group, char* y_group) {
    if (columns_through_lt()) {
      lt_gemm(ctx, LtGemm{.transpose_a = true,
                          .m = k_per_group,
                          .n = pixels,
                          .k = gemm_k,
                          .a = w_group,
                          .lda = gemm_k,
                          .stride_a = 0,
                          .b = cols,
                          .ldb = ld_cols,
                          .stride_b = 0,
                          .c = y_group,
                          .ldc = desc_.k,
                          .stride_c = 0,
                          .batch = 1});
      return;
    }
    CONVJIT_CUBLAS_CHECK(
        cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(k_per_group), static_cast<int>(pixels),
                     static_cast<int>(gemm_k), &one, w_group, type, static_cast<int>(gemm_k), cols, type,
                     static_cast<int>(ld_cols), &zero, y_group, type, desc_.k, compute, CUBLAS_GEMM_DEFAULT),
        "NHWC GEMM of {} ({} pixels)", desc_.to_string(), pixels);
  };
  if (chunking_.pointwise) {
    // x is already the column matrix: N*H*W rows of c channels, group g's from g * c/g.
    const long long total = static_cast<long long>(batch) * output_rows(desc_) * o.q;
    for (long long m0 = 0; m0 < total; m0 += kMaxGemmPixels) {
      const long long pixels = std::min<long long>(kMaxGemmPixels, total - m0);
      for (int g = 0; g < groups; ++g) {
        const char* x_group = xf + (m0 * desc_.c + g * c_per_group) * esz;
        const char* w_group = wf + g * k_per_group * gemm_k * esz;
        char* y_group = yf + (m0 * desc_.k + g * k_per_group) * esz;
        if (through_lt()) {
          lt_gemm(ctx, LtGemm{.transpose_a = true,
                              .m = k_per_group,
                              .n = pixels,
                              .k = gemm_k,
                              .a = w_group,
                              .lda = gemm_k,
                              .stride_a = 0,
                              .b = x_group,
                              .ldb = desc_.c,
                              .stride_b = 0,
                              .c = y_group,
                              .ldc = desc_.k,
                              .stride_c = 0,
                              .batch = 1});
        } else {
          gemm(pixels, x_group, desc_.c, w_group, y_group);
        }
      }
    }
    return;
  }
  for (int n0 = 0; n0 < batch; n0 += chunking_.images_per_chunk) {
    const int images = std::min(chunking_.images_per_chunk, batch - n0);
    for (int p0 = 0; p0 < rows_total; p0 += chunking_.rows_per_chunk) {
      const int rows = static_cast<int>(std::min<long long>(chunking_.rows_per_chunk, rows_total - p0));
      // The chunk's output pixels are consecutive rows of y: images whole, or rows of one image.
      const long long chunk_pixels = static_cast<long long>(images) * rows * o.q;
      const long long first_pixel = (static_cast<long long>(n0) * rows_total + p0) * o.q;
      for (int g = 0; g < groups; ++g) {
        int group = g;
        int merged = 0;
        void* args[] = {&xf, &col, &group, &n0, &p0, const_cast<int*>(&rows), const_cast<int*>(&images), &merged};
        launch_im2col(im2col_, chunk_pixels, gemm_k, args, ctx.stream, desc_);
        gemm(chunk_pixels, col, gemm_k, wf + g * k_per_group * gemm_k * esz,
             yf + (first_pixel * desc_.k + g * k_per_group) * esz);
      }
    }
  }
}

void Im2colGemmRunner::lt_gemm(const GemmContext& ctx, const LtGemm& g) const {
  if (!blas_->lt) blas_->lt = std::make_unique<CublasLtHandle>();
  const cublasLtHandle_t lt = blas_->lt->get();
  const std::string what =
      fmt::format("cuBLASLt GEMM of {} ({} x {} x {}, batch {})", desc_.to_string(), g.m, g.n, g.k, g.batch);
  LtMatmulDesc op;
  CONVJIT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op.h, ctx.compute, CUDA_R_32F), "{}", what);
  const cublasOperation_t transa = g.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t transb = CUBLAS_OP_N;
  CONVJIT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.h, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)), "{}",
                       what);
  CONVJIT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.h, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)), "{}",
                       what);
  auto layout = [&](LtLayout& l, long long rows, long long cols, long long ld, long long stride) {
    CONVJIT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l.h, ctx.type, static_cast<std::uint64_t>(rows),
                                                    static_cast<std::uint64_t>(cols), ld),
                         "{}", what);
    if (g.batch > 1) {
      const std::int32_t count = g.batch;
      const std::int64_t offset = stride;
      CONVJIT_CUBLAS_CHECK(
          cublasLtMatrixLayoutSetAttribute(l.h, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)), "{}", what);
      CONVJIT_CUBLAS_CHECK(
          cublasLtMatrixLayoutSetAttribute(l.h, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &offset, sizeof(offset)),
          "{}", what);
    }
  };
  LtLayout a, b, c;
  layout(a, g.transpose_a ? g.k : g.m, g.transpose_a ? g.m : g.k, g.lda, g.stride_a);
  layout(b, g.k, g.n, g.ldb, g.stride_b);
  layout(c, g.m, g.n, g.ldc, g.stride_c);
  const std::uint32_t align_a = alignment_of(g.a), align_b = alignment_of(g.b), align_c = alignment_of(g.c);
  const std::array<long long, 13> key{g.transpose_a, g.m,        g.n,     g.k,     g.lda,   g.ldb,  g.ldc,
                                      g.stride_a,    g.stride_b, g.batch, align_a, align_b, align_c};
  auto found = lt_algos_.find(key);
  if (found == lt_algos_.end()) {
    LtPreference pref;
    CONVJIT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.h), "{}", what);
    const std::uint64_t workspace = blas_workspace_;
    CONVJIT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                              &workspace, sizeof(workspace)),
                         "{}", what);
    const std::pair<cublasLtMatmulPreferenceAttributes_t, std::uint32_t> alignments[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_c},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_c}};
    for (const auto& [attribute, bytes] : alignments) {
      CONVJIT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, attribute, &bytes, sizeof(bytes)), "{}", what);
    }
    cublasLtMatmulHeuristicResult_t results[kLtAlgos] = {};
    int returned = 0;
    CONVJIT_CUBLAS_CHECK(
        cublasLtMatmulAlgoGetHeuristic(lt, op.h, a.h, b.h, c.h, c.h, pref.h, kLtAlgos, results, &returned), "{}", what);
    if (returned == 0) fail(ErrorCode::kCublas, "{}: cuBLASLt's heuristic lists no algorithm", what);
    if (lt_algo_ >= 0) {
      const int pick = std::min(lt_algo_, returned - 1);
      log::info("{}: algorithm {} of the {} cuBLASLt lists (CONVJIT_CUBLASLT_ALGO={})", what, pick, returned, lt_algo_);
      found = lt_algos_.emplace(key, results[pick].algo).first;
    } else {
      const int candidates = std::min(returned, kTimedLtAlgos);
      // Timing waits for the stream, which a graph capture forbids: a captured run takes the
      // heuristic's first entry and leaves the choice to the first run outside a capture.
      if (is_capturing(ctx.stream)) {
        run_lt(lt, op.h, a.h, b.h, c.h, g, ctx, results[0].algo, what);
        return;
      }
      const cublasLtMatmulAlgo_t chosen =
          candidates == 1 ? results[0].algo : fastest_lt(lt, op.h, a.h, b.h, c.h, g, ctx, results, candidates, what);
      found = lt_algos_.emplace(key, chosen).first;
    }
  }
  run_lt(lt, op.h, a.h, b.h, c.h, g, ctx, found->second, what);
}

void Im2colGemmRunner::run_lt(cublasLtHandle_t lt, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, const LtGemm& g,
                              const GemmContext& ctx, const cublasLtMatmulAlgo_t& algo, const std::string& what) const {
  const float one = 1.0f;
  const float zero = 0.0f;
  CONVJIT_CUBLAS_CHECK(cublasLtMatmul(lt, op, &one, g.a, a, g.b, b, &zero, g.c, c, g.c, c, &algo, ctx.blas_workspace,
                                      blas_workspace_, reinterpret_cast<cudaStream_t>(ctx.stream)),
                       "{}", what);
}

cublasLtMatmulAlgo_t Im2colGemmRunner::fastest_lt(cublasLtHandle_t lt, cublasLtMatmulDesc_t op,
                                                  cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                                  cublasLtMatrixLayout_t c, const LtGemm& g, const GemmContext& ctx,
                                                  const cublasLtMatmulHeuristicResult_t* results, int candidates,
                                                  const std::string& what) const {
  // Each candidate once to warm up, then runs between two events, on the run's own buffers: every run writes the same
  // product into y, and the chosen algorithm's run after this writes it once more.
  TimingEvent start;
  TimingEvent stop;
  int best = 0;
  float best_ms = 0;
  std::string timings;
  const float one = 1.0f;
  const float zero = 0.0f;
  for (int i = 0; i < candidates; ++i) {
    const auto matmul = [&] {
      return cublasLtMatmul(lt, op, &one, g.a, a, g.b, b, &zero, g.c, c, g.c, c, &results[i].algo, ctx.blas_workspace,
                            blas_workspace_, reinterpret_cast<cudaStream_t>(ctx.stream));
    };
    // An entry the library lists but cannot run here is passed over; the first must run.
    if (const cublasStatus_t status = matmul(); status != CUBLAS_STATUS_SUCCESS) {
      if (i == 0) CONVJIT_CUBLAS_CHECK(status, "{}", what);
      continue;
    }
    // Runs in rounds until a round lasts kLtTimedMs (small GEMMs of a few microseconds are
    // otherwise decided by launch noise), at most kLtMaxRuns.
    int runs = kLtTimedRuns;
    float ms = 0;
    while (true) {
      start.record(ctx.stream);
      for (int rep = 0; rep < runs; ++rep) CONVJIT_CUBLAS_CHECK(matmul(), "{}", what);
      stop.record(ctx.stream);
      const float total = stop.since(start);
      ms = total / static_cast<float>(runs);
      if (total >= kLtTimedMs || runs >= kLtMaxRuns) break;
      runs = std::min(kLtMaxRuns, runs * 4);
    }
    fmt::format_to(std::back_inserter(timings), "{}{}={:.4f}ms", timings.empty() ? "" : " ", i, ms);
    if (i == 0 || ms < best_ms) {
      best = i;
      best_ms = ms;
    }
  }
  log::info("{}: cuBLASLt entry {} of {} timed ({})", what, best, candidates, timings);
  return results[best].algo;
}

}  // namespace convjit
