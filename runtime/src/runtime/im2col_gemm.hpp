#pragma once
// The im2col + cuBLAS algorithm: a bounded workspace, chunked over images and, when
// one image's column matrix is larger than the workspace, over output rows. Either
// layout; a 1x1, stride-1, unpadded problem is a GEMM straight on x, with no columns.

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "convjit/runtime.hpp"
#include "driver/cublas.hpp"
#include "driver/loaded_module.hpp"

namespace convjit {

// How one problem is cut to fit the workspace. 3-D outputs are chunked over rows of
// (z, p) pairs: rows_per_chunk counts them, out of Z * P.
struct Im2colChunking {
  bool pointwise = false;  // 1x1 stride 1 no padding: GEMM on the input, no workspace
  // NCHW images too small for a GEMM each (fewer than kMergeBelowPixels output pixels):
  // the chunk's images are one GEMM, whose M spans them, into a scratch copy of y that
  // the epilogue kernel scatters into NCHW (with the bias and activation).
  bool merged_images = false;
  int images_per_chunk = 0;
  int rows_per_chunk = 0;          // output rows per chunk (all P when whole images fit)
  std::uint64_t column_bytes = 0;  // the column matrix; the scratch y follows at a 16-byte boundary
  // Transposed: W repacked as the GEMM reads it ([group][k][kk]), at this offset
  // (16-byte aligned, after the columns and scratch), each run.
  std::uint64_t packed_weight_offset = 0;
  std::uint64_t packed_weight_bytes = 0;
  std::uint64_t workspace_bytes = 0;
};

// Below this many output pixels an image's own GEMM is too short to tile the machine
// (a 7x7 to 28x28 layer is 49 to 784 rows of M): NCHW chunks merge their images.
inline constexpr long long kMergeBelowPixels = 1024;

// Throws Error(kUnsupported) when not even one output row of one image fits `limit`.
Im2colChunking plan_im2col_chunks(const Conv2dDesc& desc, std::uint64_t limit_bytes);

class Im2colGemmRunner {
 public:
  // `blas` is the context's shared handle, given `blas_workspace` bytes of each run's workspace.
  Im2colGemmRunner(const Conv2dDesc& desc, Im2colChunking chunking, std::shared_ptr<LoadedModule> module,
                   const std::string& kernel_name, std::shared_ptr<SharedCublas> blas, std::uint64_t blas_workspace);

  // Scratch one run needs: the column chunk, then cuBLAS's workspace at a 256-byte
  // boundary (with room to reach one from any 16-byte aligned start).
  std::uint64_t workspace_bytes() const noexcept;
  // What a plan's workspace holds besides the columns: plan_im2col_chunks gets the
  // workspace limit less this.
  static std::uint64_t overhead_bytes(std::uint64_t blas_workspace) noexcept;
  // Enqueues the run of `batch` images (the descriptor's n, or up to it for a dynamic
  // batch) on `stream` with `workspace` (workspace_bytes(), 16-byte aligned), which only
  // work on `stream` may use. Call with the module's context current.
  void run(const void* x, const void* w, const void* bias, void* y, CUdeviceptr workspace, CUstream stream,
           int batch) const;
  const Im2colChunking& chunking() const noexcept { return chunking_; }

 private:
  // What every GEMM of one run shares; col is the run's column workspace.
  struct GemmContext {
    cublasHandle_t handle;
    cudaDataType_t type;
    cublasComputeType_t compute;
    CUstream stream;
    char* col;
    void* blas_workspace;  // cuBLAS's part of the run's workspace, blas_workspace_ bytes
  };
  // One GEMM, column-major as cuBLAS sees it: C (m x n) = op(A) B, A not
  // transposed (m x k) or transposed (stored k x m), B (k x n), over `batch` matrices
  // stride_* elements apart (0: one B for every matrix).
  struct LtGemm {
    bool transpose_a;
    long long m, n, k;
    const void* a;
    long long lda, stride_a;
    const void* b;
    long long ldb, stride_b;
    void* c;
    long long ldc, stride_c;
    int batch;
  };
  // The GEMM through cuBLASLt: the heuristic's entry CONVJIT_CUBLASLT_ALGO where set, else
  // the fastest of its first kTimedLtAlgos entries, timed on the first run of each shape and
  // pointer alignment outside a graph capture (under blas_->mutex; docs/perf.md, "Session 16",
  // "Session 17").
  void lt_gemm(const GemmContext& ctx, const LtGemm& g) const;
  void run_lt(cublasLtHandle_t lt, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
              cublasLtMatrixLayout_t c, const LtGemm& g, const GemmContext& ctx, const cublasLtMatmulAlgo_t& algo,
              const std::string& what) const;
  cublasLtMatmulAlgo_t fastest_lt(cublasLtHandle_t lt, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
                                  cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, const LtGemm& g,
                                  const GemmContext& ctx, const cublasLtMatmulHeuristicResult_t* results,
                                  int candidates, const std::string& what) const;
  // Pointwise GEMMs go through cuBLASLt (lt_gemm) unless CONVJIT_CUBLASLT_TUNE=0 (then
  // cublasGemmEx, the heuristic's first choice, as before); the GEMMs on column matrices
  // too, unless CONVJIT_CUBLASLT_TUNE=pointwise.
  bool through_lt() const noexcept { return lt_algo_ >= 0 || lt_timed_; }
  bool columns_through_lt() const noexcept { return through_lt() && lt_columns_; }
  static constexpr int kTimedLtAlgos = 4;
  static constexpr int kLtTimedRuns = 3, kLtMaxRuns = 48;
  static constexpr float kLtTimedMs = 0.2f;
  void run_nchw(const char* x, const char* w, char* y, const GemmContext& ctx, int batch) const;
  // NCHW, merged_images: per group and chunk, im2col, one GEMM, then the scatter.
  void run_nchw_merged(const char* x, const char* w, const void* bias, char* y, const GemmContext& ctx,
                       int batch) const;
  // NHWC: one GEMM per group and chunk, straight on x for a pointwise problem.
  void run_nhwc(const char* x, const char* w, char* y, const GemmContext& ctx, int batch) const;

  Conv2dDesc desc_;
  Im2colChunking chunking_;
  std::shared_ptr<LoadedModule> module_;
  std::shared_ptr<SharedCublas> blas_;
  std::uint64_t blas_workspace_ = 0;
  // NOTE: a timing switch (CONVJIT_CUBLASLT_ALGO=i, 0-7): the GEMMs that go through cuBLASLt
  // run the i-th algorithm its heuristic lists for them instead of the timed choice; -1 unset.
  int lt_algo_ = -1;
  bool lt_timed_ = true;
  bool lt_columns_ = true;
  mutable std::map<std::array<long long, 13>, cublasLtMatmulAlgo_t> lt_algos_;
  CUfunction im2col_ = nullptr;
  CUfunction bias_act_ = nullptr;
  CUfunction scatter_ = nullptr;
  CUfunction pack_w_ = nullptr;
};

}  // namespace convjit
