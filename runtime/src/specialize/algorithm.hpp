#pragma once
// Which algorithms can compute a problem, which one runs by default, and the
// kernel source each one needs.

#include <optional>
#include <string>

#include "convjit/algorithm.hpp"
#include "specialize/specialized_source.hpp"

namespace convjit {

// Empty when `algorithm` can compute `desc`; otherwise why not. `desc` is validated.
// `arch` empty: no GPU named (the portable kernels).
std::optional<std::string> unsupported_reason(const Conv2dDesc& desc, Algorithm algorithm,
                                              const std::string& arch = {});

// Multiprocessors the heuristic assumes for `arch` (it must choose without a GPU).
int nominal_multiprocessors(const std::string& arch) noexcept;

// The cost model behind the choice between the wgmma kernel and im2col + cuBLAS on
// Hopper (docs/perf.md): predicted milliseconds from FLOPs, the kernel's waves of blocks
// and the column matrix's bytes. Infinity when wgmma cannot run `desc`.
double predicted_wgmma_ms(const Conv2dDesc& desc, const std::string& arch);
// The tensor rate that model gives the wgmma kernel in `desc`'s element type (TF32 for
// f32, one product), in TFLOP/s for the whole machine: the datasheet's times the
// kernel's measured efficiency.
double wgmma_model_tflops(const Conv2dDesc& desc) noexcept;
double predicted_im2col_ms(const Conv2dDesc& desc, const std::string& arch);
// The problem whose predicted_wgmma_ms stands for the implicit GEMM that runs `desc` on
// `arch`: itself where the wgmma kernel runs it, else the same problem in NCHW.
Conv2dDesc implicit_gemm_model(const Conv2dDesc& desc, const std::string& arch);
// The direct kernel's time on a strided transposed problem (select_beyond_2d's other side);
// calibrated on those, not a model of the direct kernel elsewhere.
double predicted_direct_ms(const Conv2dDesc& desc, const std::string& arch);
// A transposed problem's taps per useful tap: the product of its strides (1 forward).
long long transposed_waste(const Conv2dDesc& desc) noexcept;

// NHWC on Hopper: whether the implicit GEMM runs on the wgmma kernel (true) or on
// mma.sync, where both can run `desc` with pointers aligned as `align` says (docs/perf.md,
// "NHWC wgmma against mma.sync" and "TMA im2col").
bool nhwc_prefers_wgmma(const Conv2dDesc& desc, const std::string& arch, const AlignmentNeeds& align = kFullAlignment);

// Whether the implicit GEMM runs `desc` on the wgmma kernel on `arch` for pointers with
// `align`: Hopper, a problem the kernel takes, and in NHWC one it is faster on.
bool runs_on_wgmma(const Conv2dDesc& desc, const std::string& arch, const AlignmentNeeds& align = kFullAlignment);

// Empty when the implicit GEMM runs NCHW `desc` on `arch` through the NHWC TMA wgmma
// kernel between two transposes (specialize_wgmma_via_nhwc); otherwise why not, and the
// problem keeps its NCHW kernels. On sm_90, for a static batch, where the NHWC kernel
// would run the same problem in NHWC through its map (x's copy in the workspace is fully
// aligned), unless CONVJIT_NCHW_VIA_NHWC=0.
std::optional<std::string> nchw_via_nhwc_unsupported_reason(const Conv2dDesc& desc, const std::string& arch);
// The route's predicted time: the NHWC kernel's model of the NHWC problem, plus x and y
// each read and written once by the transposes at their measured bandwidth, plus their
// two launches.
double predicted_nchw_via_nhwc_ms(const Conv2dDesc& desc, const std::string& arch);
// The NCHW wgmma kernel's predicted time with its stage copies priced (the bare tensor
// rate of predicted_wgmma_ms is far short of it on mid-size images).
double predicted_nchw_wgmma_copy_ms(const Conv2dDesc& desc, const std::string& arch);
// Whether the implicit GEMM runs NCHW `desc` on `arch` through the route: it applies, and
// CONVJIT_NCHW_VIA_NHWC=1 forces it or the route is predicted faster than the NCHW kernel.
bool nchw_takes_route(const Conv2dDesc& desc, const std::string& arch);

// Empty when the implicit GEMM can run NCHW `desc` on `arch` through the NHWC mma.sync
// kernel after x's transpose (specialize_implicit_gemm_via_nhwc); otherwise why not. For a
// static-batch 2-D forward problem on sm_80 or newer whose NHWC twin runs on mma.sync (the
// wgmma route takes the rest), unless CONVJIT_NCHW_MMA_VIA_NHWC=0.
std::optional<std::string> nchw_mma_via_nhwc_unsupported_reason(const Conv2dDesc& desc, const std::string& arch);
// Whether it does: the route applies, and CONVJIT_NCHW_MMA_VIA_NHWC=1 forces it or `desc`
// is a one-group filter wider than 1x1 over fewer than 16 input channels and at least 16
// output channels (the stems, on which the NHWC kernel's channel runs beat NCHW's
// per-element gather and the NCHW wgmma kernel's mostly-zero 16-channel stages) whose
// reduction is longer than 64 or whose outputs outnumber x's elements four times (the
// transpose's cost against what it saves).
bool nchw_mma_takes_route(const Conv2dDesc& desc, const std::string& arch);

// Whether kAuto runs pointwise `desc` on the streaming pointwise kernel (through
// kImplicitGemm) rather than cuBLAS.
bool pointwise_stream_preferred(const Conv2dDesc& desc, const std::string& arch);

// The heuristic choice for kAuto on `arch` (empty: no GPU named); never returns kAuto.
Algorithm select_algorithm(const Conv2dDesc& desc, const std::string& arch = {});

// select_algorithm's part for 3-D and transposed problems: the mma.sync implicit GEMM for
// NCHW 3-D forward and stride-1 transposed ones with channels enough, im2col + cuBLAS for the rest that
// are dense enough, else direct.
Algorithm select_beyond_2d(const Conv2dDesc& desc, const std::string& arch = {});

// Why the implicit-GEMM kernels cannot run a 3-D or transposed problem (nullopt: they can,
// or it is 2-D forward).
std::optional<std::string> implicit_gemm_beyond_2d_reason(const Conv2dDesc& desc);

// kAuto → the heuristic's choice; a forced algorithm that cannot run `desc` throws kUnsupported.
Algorithm resolve_algorithm(const Conv2dDesc& desc, Algorithm requested, const std::string& arch = {});

// The kernel for a resolved, kernel-based algorithm on `arch` ("sm_90"; empty: the
// portable kernel, as for a GPU not named), for pointers aligned as `align` says.
Specialization specialize(const Conv2dDesc& desc, Algorithm algorithm, const std::string& arch = {},
                          const AlignmentNeeds& align = kFullAlignment);

}  // namespace convjit
