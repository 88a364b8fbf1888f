#pragma once
// A kernel template with one problem's values fixed, and how to launch it.

#include <cstdint>
#include <optional>
#include <string>

#include "convjit/algorithm.hpp"
#include "convjit/conv2d_desc.hpp"

namespace convjit {

struct LaunchGeometry {
  std::uint64_t grid_x = 1;
  unsigned grid_y = 1;
  unsigned grid_z = 1;
  unsigned block_x = 1;
  unsigned shared_bytes = 0;  // dynamic
  // A persistent kernel walks grid_x work items with however many blocks it gets: the
  // plan launches one block an SM (divided among grid_y x grid_z), never more than grid_x.
  bool persistent = false;
  // grid_x for a run of any batch b: ceil(b x grid_x_per_image / grid_x_divisor) work
  // items (grid_x itself is the descriptor's n's). A dynamic-batch plan sizes every
  // launch this way from the run's batch; 0 per image means grid_x for every batch.
  std::uint64_t grid_x_per_image = 0;
  std::uint64_t grid_x_divisor = 1;
  std::uint64_t grid_x_for(int batch) const noexcept {
    if (grid_x_per_image == 0) return grid_x;
    return (static_cast<std::uint64_t>(batch) * grid_x_per_image + grid_x_divisor - 1) / grid_x_divisor;
  }
};

// A kernel that rearranges the weights into a workspace before every run (the wgmma
// kernel reads them in its tensor-core layout); the main kernel then gets the
// workspace in place of the weights.
struct WeightPack {
  std::string kernel_name;
  std::uint64_t packed_bytes = 0;
  unsigned block_x = 256;
  unsigned grid_x = 1;
};

// Split-K: the main kernel writes the fp32 partial sums of `slices` slices of the
// reduction into the run's workspace (partial_bytes, after the packed weights) in place of
// y, and the kernel <kernel_name> (a second pass, one launch on the same stream) adds them
// into y with the epilogue.
// Stream-K (the NHWC wgmma kernel's kStreamK): its workspace, after the maps in its
// parameters: two slots of raw sums a worker block, then one counter an item, which every
// run zeroes before the launch.
struct StreamKWorkspace {
  std::uint64_t slot_bytes = 0;
  std::uint64_t counters = 0;  // items, one 4-byte counter each
  std::uint64_t bytes() const noexcept { return slot_bytes + (counters * 4 + 15) / 16 * 16; }
};

struct SplitReduce {
  std::string kernel_name;
  int slices = 1;
  std::uint64_t partial_bytes = 0;
  unsigned block_x = 256;
  unsigned grid_x = 1;
};

// NCHW through the NHWC kernel (CONVJIT_NCHW_VIA_NHWC=1): the transpose before the main
// kernel, <kernel_name> one launch on the run's stream. x_to_nhwc copies the caller's x
// into its region of the workspace as N,H,W,C, which the main kernel reads (the main
// kernel or split-K's reduce pass stores the caller's NCHW y itself). The region follows
// the packed weights, and split-K's partial sums follow it, so that a run with packed
// weights needs the region and the partials only.
struct LayoutTranspose {
  std::string kernel_name;
  std::uint64_t region_bytes = 0;  // the tensor's bytes, rounded up to kRegionAlign
  unsigned block_x = 256;
  unsigned grid_x = 1;
};
// A strided transposed problem's phase through the route (ForwardTwin::phased()): y
// filled with the bias alone (and its activation) before the main kernel stores the
// phase's outputs over it; <kernel_name>_fill(bias, y), one launch on the run's stream.
struct OutputFill {
  std::string kernel_name;
  unsigned block_x = 256;
  unsigned grid_x = 1;
};

// Every workspace region starts this far from the workspace's start (bulk and TMA copies
// need 16 bytes; 256 keeps the regions on whole memory transactions).
inline constexpr std::uint64_t kRegionAlign = 256;

// The alignment, in bytes, that every pointer of a launch is known to have, per operand
// (at most 16). A plan's first kernel is compiled assuming 16 for each; a launch whose
// pointers have less runs a kernel compiled for the alignment actually present (the
// templates widen their copies only as far as the constants allow).
inline constexpr AlignmentNeeds kFullAlignment{16, 16, 16, 16};

// Each operand's alignment, the smaller of `a` and `b`.
AlignmentNeeds min_alignment(const AlignmentNeeds& a, const AlignmentNeeds& b) noexcept;
// Whether `have` meets `need` for every operand.
bool satisfies(const AlignmentNeeds& have, const AlignmentNeeds& need) noexcept;
// Every operand needs only its element size (kernels with no wide accesses).
AlignmentNeeds element_alignment(const Conv2dDesc& desc) noexcept;

// The specialize stage's two values. The source is all that the compile stage and the
// cache key see; how to launch the kernel stays apart from it, with the runtime.
struct SpecializedSource {
  std::string template_name;  // e.g. "conv2d_direct.cu"
  std::string kernel_name;    // readable and unique per problem; the main entry point
  std::string text;           // prologue + template, exactly what NVRTC compiles
  std::string compile_arch;   // when not the device's own arch, e.g. "sm_90a" for wgmma
};

// The TMA im2col map through which a kernel reads NHWC x (the wgmma kernel's kATma
// variant): x as a rank-4 tensor C, W, H, N (innermost first), or for a 3-D problem a
// rank-5 one C, W, H, D, N, in the terms of cuTensorMapEncodeIm2col. Plain values, no
// driver types: the runtime encodes the map for each run, with the run's x and batch, and
// passes it after y (see the template).
struct Im2colTensorMap {
  DType dtype = DType::kFloat32;
  int rank = 4;
  // C, W, H, [D,] N; N (the last) is the descriptor's, a run's map has its batch.
  std::uint64_t dims[5] = {};
  std::uint64_t strides[4] = {};  // bytes from one W, H, [D,] N index to the next
  // The bounding box the traversal walks, W, H [, D]: the lower corner from the tensor's
  // first element (-padding), the upper one from its last (padding - dilation x (filter - 1)),
  // so that it visits exactly the output pixels' tap-(0, 0) positions in y's order.
  int lower[3] = {};
  int upper[3] = {};
  unsigned channels_per_pixel = 0;   // one stage's channel chunk: swizzle_bytes of them
  unsigned swizzle_bytes = 128;      // the map's swizzle span: a stage's pixel row, 128, 64 or 32 bytes
  unsigned pixels_per_column = 0;    // a tile's pixels
  unsigned element_strides[5] = {};  // 1, stride_w, stride_h, [stride_d,] 1
};

// A TMA tiled map of the NHWC wgmma kernel, encoded per run with the run's pointer. Its
// weights (kBMap, passed after the x map): w as a rank-3 tensor C/groups, R x S, K
// (innermost first) of the caller's K,R,S,C/groups layout, a box one tap's stage of
// channels (a stage's pixel row) for kBN filters. Its outputs (kYMap, after the w map): y
// as K, pixels, 1, a box 128 bytes of channels for a tile's pixels.
struct TiledTensorMap {
  DType dtype = DType::kFloat32;
  std::uint64_t dims[3] = {};     // w: C/groups, R x S, K; y: K, pixels, 1
  std::uint64_t strides[2] = {};  // w: bytes from one tap, and one filter, to the next; y: from one pixel
  unsigned box[3] = {};           // w: channels of a stage, 1 tap, kBN filters; y: 128 bytes, kBM pixels, 1
  unsigned swizzle_bytes = 128;   // the box's row: 128, 64 or 32 bytes
  // y's map (kYMap) spans the run's images: dims[1] is one image's pixels, times the batch.
  bool dim1_per_image = false;
};

struct LaunchSpec {
  std::string algorithm;  // e.g. "direct"
  std::string tile;       // the work split, readable
  LaunchGeometry geometry;
  std::optional<WeightPack> weight_pack;     // its entry point is <kernel_name>_pack
  std::optional<SplitReduce> split_reduce;   // its entry point is <kernel_name>_reduce
  std::optional<Im2colTensorMap> a_map;      // the kernel's x map, encoded per run (a parameter after y)
  std::optional<TiledTensorMap> b_map;       // the kernel's w map, encoded per run (a parameter after x's map)
  std::optional<TiledTensorMap> y_map;       // the kernel's y map, encoded per run (a parameter after w's map)
  std::optional<StreamKWorkspace> stream_k;  // a parameter after the maps
  std::optional<LayoutTranspose> x_to_nhwc;  // its entry point is <kernel_name>_x_to_nhwc
  std::optional<OutputFill> y_fill;          // its entry point is <kernel_name>_fill
  AlignmentNeeds needs;                      // what the kernel needs of each pointer, given its alignment constants
};

struct Specialization {
  SpecializedSource source;
  LaunchSpec launch;
};

// The widest copy (16, 8 or 4 bytes, else one element) of runs of `run` elements that a
// pointer aligned to `align` bytes allows: copies of that width never straddle a run's end
// nor read an unaligned address.
unsigned copy_width(std::int64_t run, unsigned align, unsigned element);

// The direct-convolution kernel for `desc` (validated by the caller): the depthwise
// kernel where it applies (depthwise_unsupported_reason is empty), else conv2d_direct.cu.
Specialization specialize_direct(const Conv2dDesc& desc);
// The depthwise / narrow-group kernel (at most 4 input and 8 output channels a group,
// groups > 1): a shared-memory input tile per (image, group), streamed at bandwidth.
Specialization specialize_depthwise(const Conv2dDesc& desc);
// Empty when the depthwise kernel takes `desc`; otherwise why not.
std::optional<std::string> depthwise_unsupported_reason(const Conv2dDesc& desc);
// The mma.sync implicit-GEMM kernel (TF32, or 3xTF32 for strict math; m16n8k16 for f16
// and bf16 data; fp32 accumulation), for pointers aligned as `align` says.
Specialization specialize_implicit_gemm(const Conv2dDesc& desc, const AlignmentNeeds& align = kFullAlignment);
// The Hopper implicit-GEMM kernel (wgmma: TF32 or 3xTF32, f16 or bf16), compiled for sm_90a,
// for pointers aligned as `align` says (NHWC copies x as widely as it allows).
Specialization specialize_wgmma(const Conv2dDesc& desc, const AlignmentNeeds& align = kFullAlignment);
// Empty when the wgmma kernel can compute `desc` for `arch` with pointers aligned as
// `align` says; otherwise why not.
std::optional<std::string> wgmma_unsupported_reason(const Conv2dDesc& desc, const std::string& arch,
                                                    const AlignmentNeeds& align = kFullAlignment);
// Empty when the wgmma kernel's TMA variant (NHWC only) can read x for
// `desc` through a TMA im2col map, with x aligned as `align` says; otherwise why not (the
// problem then keeps the cp.async copies). Says nothing of whether wgmma takes `desc`.
std::optional<std::string> wgmma_tma_unsupported_reason(const Conv2dDesc& desc,
                                                        const AlignmentNeeds& align = kFullAlignment);
// Whether NHWC wgmma kernels use that variant where it can read x: yes, unless
// CONVJIT_WGMMA_TMA=0.
bool wgmma_tma_enabled();
// False under CONVJIT_WGMMA_B_MAP=0: the NHWC TMA kernel then reads packed weights even
// where it could read w through its tiled map.
bool wgmma_b_map_enabled();
// Whether NCHW problems run through the NHWC TMA kernel between two transposes
// (specialize_wgmma_via_nhwc): kByModel (CONVJIT_NCHW_VIA_NHWC unset) where the cost model
// predicts the route faster than the NCHW kernel, kOff (=0) never, kForced (=1) wherever
// it applies.
enum class NchwRoute { kByModel, kOff, kForced };
NchwRoute nchw_via_nhwc_switch();
// Either route's switch: `variable` unset is kByModel, 0 kOff, 1 kForced; anything else is
// refused (kInvalidArgument), the variable named.
NchwRoute nchw_route_switch(const char* variable);
// The NHWC TMA wgmma kernel for NCHW `desc` (validated; nchw_via_nhwc_unsupported_reason
// empty): x transposed into the workspace, the weights packed from their K,C/g,R,S order,
// y stored NCHW by the kernel or by split-K's reduce pass. Reads and writes every caller pointer one element
// at a time, so it needs only element alignment.
Specialization specialize_wgmma_via_nhwc(const Conv2dDesc& desc);
// The same route on the mma.sync kernel, for NCHW problems of few channels a group whose
// NHWC twin runs there (nchw_mma_via_nhwc_unsupported_reason empty): x transposed into the
// workspace, the NHWC stages reading the caller's K,C/g,R,S weights an element at a time,
// and the kernel storing NCHW y itself. Element alignment only, as the wgmma route.
Specialization specialize_implicit_gemm_via_nhwc(const Conv2dDesc& desc);
// Whether narrow NCHW problems take that route: kByModel (CONVJIT_NCHW_MMA_VIA_NHWC
// unset) where the heuristic says, kOff (=0) never, kForced (=1) wherever it applies.
NchwRoute nchw_mma_via_nhwc_switch();
// The routes' x (and y) transposes: `images` matrices of `rows` x `cols` elements of
// `element` bytes, by the template's device::transpose_images entry `name`; the region
// its output fills in the workspace.
LayoutTranspose layout_transpose(std::string name, std::int64_t images, std::int64_t rows, std::int64_t cols,
                                 std::uint64_t element);
// The wgmma kernel's work split for `desc`, for the algorithm choice's cost model; empty
// when the kernel cannot run it.
struct WgmmaWork {
  std::int64_t blocks = 0;            // pixel patches x channel blocks x groups
  std::int64_t block_pixels = 0;      // kBP x kBQ, computed whether or not inside the image
  int block_channels = 0;             // kBN, priced as 64 at least
  std::int64_t block_reduction = 0;   // channel chunks x chunk x r x s, as computed (split-K: a slice's)
  int slices = 1;                     // split-K slices (blocks counts every slice's)
  std::uint64_t partial_bytes = 0;    // split-K's fp32 partial sums, written and read once
  std::int64_t stages = 0;            // stages a block (a slice) runs
  std::int64_t stage_rows = 0;        // NCHW: input row segments a stage copies (kBP, at most P, x chunk channels)
  std::int64_t stage_copy_bytes = 0;  // NCHW: bytes those segments hold (x kHaloW, at most W)
};
std::optional<WgmmaWork> wgmma_work(const Conv2dDesc& desc);
// Channels of one tap a wgmma stage reduces: one k step in NCHW; in NHWC a pixel row of
// 128 bytes, or 64 where a group's channels fill no more (unless CONVJIT_WGMMA_ROW64=0).
int wgmma_stage_channels(const Conv2dDesc& desc);
// The streaming pointwise kernel (conv2d_pointwise.cu): 1x1, stride-1, unpadded, one-group
// forward problems in TF32 or 16-bit with few enough input channels that a warp's weights
// stay in registers, both layouts; persistent blocks stream pixel tiles through a deep
// cp.async pipeline. kByModel (CONVJIT_POINTWISE_STREAM unset): the implicit GEMM runs
// such problems on it, and the algorithm choice weighs it against cuBLAS by its model;
// kOff (=0) never; kForced (=1) kAuto takes it wherever it applies.
enum class PointwiseSwitch { kByModel, kOff, kForced };
PointwiseSwitch pointwise_stream_switch();
// Empty when the streaming kernel takes `desc` (validated) on `arch` (empty: any); otherwise why not.
std::optional<std::string> pointwise_unsupported_reason(const Conv2dDesc& desc, const std::string& arch = {});
// That kernel for `desc`, for pointers aligned as `align` says.
Specialization specialize_pointwise(const Conv2dDesc& desc, const AlignmentNeeds& align = kFullAlignment);
// The im2col and bias/activation kernels around cuBLAS (functions <kernel_name>_im2col
// and <kernel_name>_bias_act).
Specialization specialize_im2col(const Conv2dDesc& desc);
// A 1x1, stride-1, unpadded convolution is a GEMM on the input as it is.
bool is_pointwise_gemm(const Conv2dDesc& desc);
// Empty when `desc` is a 2-D forward convolution (a 1-D one is, with h = r = 1; so is a
// 3-D one of depth 1, filter depth 1 and no depth padding), which the 2-D kernel
// families read; otherwise what they lack (a depth dimension, a transposed map), for the
// algorithms that run on conv2d_direct.cu only.
std::optional<std::string> beyond_2d_forward_reason(const Conv2dDesc& desc);
// A stride-1 transposed convolution is the forward one of its flipped, channel-swapped
// filter (w'[k][c][r][s] = w[c][k][R-1-r][S-1-s] a group) with padding dilation x
// (kernel - 1) - pad on each side: that forward problem, which the 2-D forward kernels
// read, where `desc` is a 1-D or 2-D transposed NCHW problem with stride 1, no
// output_padding (which would pad one side only) and padding within the filter's reach;
// otherwise why not. The wgmma kernels run the twin with their weight pack reading w
// flipped (CONVJIT_WGMMA_W_TRANSPOSED).
// A strided one whose dilation is a multiple of its stride in each dimension (KernelBench
// 77, 79) has one receiving phase: output o takes x[i] w[j] when i s - pad + j d = o, and
// with d = m s only o = ph (mod s), ph = -pad mod s, receives a tap. Its twin computes that
// phase: stride 1, dilation m, padding (kernel - 1) m - (ph + pad) / s, its output grid the
// phase's (o = ph + s o'); every other output is the bias alone (phased()).
struct ForwardTwin {
  std::optional<Conv2dDesc> twin;
  std::string why_not;
  int phase_h = 0, phase_w = 0;            // the receiving phase's first output row, column
  int out_stride_h = 1, out_stride_w = 1;  // the transposed problem's stride: the twin's outputs that far apart
  int phase_d = 0, out_stride_d = 1;       // the same in depth (3-D)
  bool phased() const noexcept { return twin && (out_stride_h > 1 || out_stride_w > 1 || out_stride_d > 1); }
};
ForwardTwin forward_twin(const Conv2dDesc& desc);

// "conv2d_direct_f32_nchw_n8c64h512w256_k128r5s7_u1x1_p0x0_d1x1_g1_nobias"
std::string direct_kernel_name(const Conv2dDesc& desc);
// "conv2d_depthwise_f32_nchw_n16c64h512w512_k64r3s3_u1x1_p0x0_d1x1_g64_nobias"
std::string depthwise_kernel_name(const Conv2dDesc& desc);

}  // namespace convjit
