#pragma once
// The one internal interface of convjit's own tools (the convjit command, the benchmarks,
// the tests and the Python extension): what they need beyond the public API, from the
// layers below (docs/architecture.md). Applications use the public headers alone; this
// interface may change with any release.
//
//   errors and host conversions    base/fail.hpp, base/float16.hpp, base/log.hpp
//   problems as text               workload/shape_text.hpp, workload/workload_file.hpp, workload/json.hpp
//   cache administration           cache/disk_cache.hpp, cache/ownership.hpp, runtime/cache_config.hpp,
//                                  runtime/remote_cache_config.hpp
//   GPU targets, NVRTC             specialize/arch.hpp (parse_arch), compile/nvrtc.hpp
//   the driver (benchmarks)        driver/cuda_driver.hpp, and runtime_device() below
//   the algorithm choice's model   predicted_ms() below

#include <cuda.h>

#include <string>

#include "base/fail.hpp"
#include "base/float16.hpp"
#include "base/log.hpp"
#include "cache/disk_cache.hpp"
#include "cache/ownership.hpp"
#include "compile/nvrtc.hpp"
#include "convjit/convjit.hpp"
#include "driver/cuda_driver.hpp"
#include "runtime/cache_config.hpp"
#include "runtime/remote_cache_config.hpp"
#include "specialize/arch.hpp"
#include "workload/json.hpp"
#include "workload/shape_text.hpp"
#include "workload/workload_file.hpp"

namespace convjit::tooling {

// The device a Runtime launches on when a call names no context (RuntimeOptions::device),
// with its primary context, retained by the Runtime for its lifetime.
struct RuntimeDevice {
  CUcontext context = nullptr;
  int ordinal = 0;
  std::string name;  // "NVIDIA H200"
  std::string arch;  // "sm_90"
  int multiprocessors = 0;
};
// Throws kNoDriver / kNoDevice without a GPU.
RuntimeDevice runtime_device(Runtime& runtime);

// The time kAuto's cost model predicts for `algorithm` on `arch`, in milliseconds; NaN
// where the model has no estimate (the direct kernel; implicit GEMM off Hopper). What the
// benchmarks print beside the measured time: the model kAuto compared, so an NHWC problem
// on the mma.sync kernel shows the NCHW stand-in's time.
double predicted_ms(const Conv2dDesc& desc, Algorithm algorithm, const std::string& arch);

// What kAuto runs `desc` with on `arch` (no GPU needed; without autotuning).
Algorithm auto_algorithm(const Conv2dDesc& desc, const std::string& arch);

// The kernel template `algorithm` compiles `desc` from on `arch`, without "conv2d_" and
// ".cu": "implicit_gemm_wgmma", "implicit_gemm_mma", "direct", "depthwise", "im2col"; an
// NCHW problem that runs through the NHWC kernel between two transposes adds " via nhwc".
// No GPU needed: what `conv_bench --list` shows, since the implicit GEMM has two families.
std::string kernel_template(const Conv2dDesc& desc, Algorithm algorithm, const std::string& arch);

}  // namespace convjit::tooling
