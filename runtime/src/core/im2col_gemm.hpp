#pragma once
// The im2col + cuBLAS algorithm: a bounded workspace, chunked over images and, when
// one image's column matrix is larger than the workspace, over output rows.

#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "convjit/runtime.hpp"
#include "driver/loaded_module.hpp"

namespace convjit {

class DeviceContext;
class CublasHandle;

// How one problem is cut to fit the workspace.
struct Im2colChunking {
  bool pointwise = false;         // 1x1 stride 1 no padding: GEMM on the input, no workspace
  int images_per_chunk = 0;
  int rows_per_chunk = 0;         // output rows per chunk (all P when whole images fit)
  std::uint64_t workspace_bytes = 0;
};

// Throws Error(kUnsupported) when not even one output row of one image fits `limit`.
Im2colChunking plan_im2col_chunks(const Conv2dDesc& desc, std::uint64_t limit_bytes);

class Im2colGemmRunner {
 public:
  Im2colGemmRunner(const Conv2dDesc& desc, Im2colChunking chunking, std::shared_ptr<DeviceContext> device,
                   std::shared_ptr<LoadedModule> module, const std::string& kernel_name);
  ~Im2colGemmRunner();

  void run(const void* x, const void* w, const void* bias, void* y, CUstream stream) const;
  const Im2colChunking& chunking() const noexcept { return chunking_; }

 private:
  // A cuBLAS handle and a workspace per stream: runs on different streams must not
  // share one column buffer, runs on one stream are ordered by the stream. The runner
  // belongs to one plan and so to one context, which makes these per context too
  // (a cuBLAS handle and its memory live in the context current at creation).
  struct StreamState;
  StreamState& state_for(CUstream stream) const;

  Conv2dDesc desc_;
  Im2colChunking chunking_;
  std::shared_ptr<DeviceContext> device_;
  std::shared_ptr<LoadedModule> module_;
  CUfunction im2col_ = nullptr;
  CUfunction bias_act_ = nullptr;
  mutable std::shared_mutex mutex_;  // shared for the lookup of a known stream
  mutable std::unordered_map<CUstream, std::unique_ptr<StreamState>> streams_;
};

}  // namespace convjit
