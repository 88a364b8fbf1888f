// Implicit-GEMM 2D convolution on Hopper tensor cores (wgmma), NCHW, sm_90a: float32 data
// in TF32 or 3xTF32, or float16 / bfloat16 data (kDType), always accumulated in fp32.
//
// GEMM view of one block:  Y[pixel][k] = sum over (c, r, s) of X[c][pixel + tap (r, s)] * W[k][c][r][s]
//   M  pixels of a kBP x kBQ output patch of one image  (kConsumers warpgroups x kMB x 64)
//   N  kBN output channels of one group
//   K  kChunkC input channels of one tap: one wgmma k step (k8 for TF32, k16 for 16-bit)
// The reduction runs in stages of (channel chunk, tap row r). A stage holds the input
// rows that tap row r reads for the patch (kBP rows x kHaloW columns x kChunkC channels,
// copied straight from NCHW, zero-filled where the taps fall in the padding) and the
// packed weights of that row's kS taps. Tap s reads the same rows at a column shift:
// wgmma takes A from registers, so each consumer thread loads its fragment from shared
// memory at that shift and one copy of the input serves all kS taps. Neither the
// input nor the output is ever transposed.
//
// B (weights) is packed once per call by <name>_pack into wgmma's K-major core-matrix
// layout, rounded to TF32, so a stage's weights are one bulk copy (the copy engine).
// kSplit == 1: TF32. A is rounded to TF32 (nearest) in registers; the tensor cores
//              would otherwise truncate, a bias that builds up over a reduction of
//              all-positive data.
// kSplit == 3: 3xTF32 for fp32 accuracy. Each operand v = big + small exactly, big its
//              top 19 bits; small*big + big*small + big*big recovers what TF32 drops.
//              The weights are packed as two planes (big, small) per stage. The tensor
//              cores' accumulation truncates, so the products go into a partial set that
//              is added to the running sums with real FADDs after each stage, or each pair
//              of stages (kPairedPartials: half the drains of the wgmma pipeline).
// 16-bit:      operands as they are; a fragment register packs two channels of one pixel.
//              cp.async moves 4 bytes at least, so rows are copied as even-aligned pixel
//              pairs (the problem's W is even) and the consumers read at a one-pixel shift
//              when the patch's first column is odd.
// Accumulation is fp32 in registers; 16-bit outputs are rounded once, at the store.
//
// Warpgroup 0 produces (cp.async for the input rows, one bulk copy for the weights,
// both completing on the stage's "full" mbarrier); warpgroups 1.. consume with wgmma
// and release a stage through its "empty" mbarrier once their wgmmas on it are done.
// kStoreWarps: the consumers leave a patch's outputs (bias, ReLU, rounding applied) in
// a shared-memory tile and go on to the next patch; two of the producer's warps write
// that tile out as whole rows while the wgmmas run (persistent launch). Without it the
// consumers store straight from registers.
// kATma (NHWC, opt-in: CONVJIT_WGMMA_TMA=1): the A stage arrives as one TMA im2col copy
// (cp.async.bulk.tensor ... .im2col) that one producer thread issues, so the copy engine
// does the gather that 128 threads of 16-byte cp.async did; the map (encoded by the host
// per run, a __grid_constant__ parameter) carries padding, stride and zero fill, the
// instruction the tile's first pixel and the tap's offset (see produce_nhwc_tma).
//
// kBMap (NHWC with kATma, TF32 or 16-bit): no pack. A stage's weights arrive as one TMA
// tiled copy straight from w (K,R,S,C/groups: kBN filters' runs of the tap's kStageC
// channels), swizzled like A, which is wgmma's K-major B with the same swizzle; TF32 is
// then rounded in shared memory by the producer's three idle warps before the consumers
// see the stage (see round_stage_weights).
//
// kASmem (with kATma; 16-bit, and TF32 on wide tiles): wgmma reads A straight from the stage through a
// shared-memory descriptor, as it reads B, instead of from registers the consumers load.
// The map's swizzled pixel rows are wgmma's K-major layout with the same swizzle, so a
// stage's wgmmas are issued back to back and committed as one group; nothing rounds A:
// in TF32 the tensor cores truncate its low bits (the host decides where that pays).
//
// kYMap (NHWC with the map, one group, whole boxes of channels): the consumers leave a
// tile's outputs (bias, ReLU, rounding applied) in shared memory as boxes of 128 bytes of
// channels x kBM pixels with the 128-byte swizzle, and one thread hands each box to TMA
// (cp.async.bulk.tensor, a parameter map of y as K x pixels), which writes whole lines and
// drops pixels past the run's last and channels past K. The consumers go on to the next
// tile while the boxes drain; that thread waits until TMA has read them before the next
// tile's outputs overwrite them. kYPasses > 1 (float32 tiles whose boxes would cost a
// stage): the boxes are staged a share at a time in a smaller buffer, each share handed to
// TMA before the next is written (kYBuffers 2: two buffers that alternate, each share written
// while TMA reads the one before); the last one drains while the next tile runs.
//
// kRowHalo (NHWC with the map, stride 1 along W): tiles of one output row; a filter row's
// taps share one im2col copy of the row's input pixels, each tap's A that copy shifted by
// whole pixel rows, so x crosses from L2 once a filter row instead of once a tap (see
// kHaloRows).
//
// convjit prepends the prologue defining namespace `spec`; the values below let the
// file compile standalone under NVRTC for the tests.
// Namespace-scope constants are enumerators of unnamed enums with a fixed type, not constexpr
// variables: NVRTC emits each of those as a device global, and loading them is most of a
// module load (runtime/src/specialize/prologue.hpp).

#ifndef CONVJIT_SPECIALIZED
#define CONVJIT_KERNEL_NAME conv2d_wgmma_example
namespace spec {
enum : int { kN = 2, kC = 12, kH = 13, kW = 21, kK = 80, kR = 3, kS = 3 };
enum : int { kStrideH = 1, kStrideW = 2, kPadH = 1, kPadW = 1, kDilationH = 1, kDilationW = 2 };
enum : int { kGroups = 1, kP = 13, kQ = 10 };
enum : bool { kHasBias = true, kRelu = false };
enum : int { kDType = 0 };   // f32 (0 f32, 1 f16, 2 bf16)
enum : int { kLayout = 0 };  // nchw (0 nchw, 1 nhwc)
enum : int { kD = 1, kT = 1, kStrideD = 1, kPadD = 0, kDilationD = 1, kZ = 1 };
enum : int { kBN = 64, kMB = 2, kBP = 16, kBQ = 16, kStages = 4, kSplit = 3 };
enum : bool { kStoreWarps = true };
enum : int { kXVecBytes = 4 };
enum : bool { kPairStores = false };
enum : bool { kQuadStores = false };
enum : int { kSplitK = 1 };
enum : bool { kStreamK = false };
enum : int { kStreamWorkers = 0 };
enum : bool { kATma = false };
enum : bool { kBMap = false };
enum : int { kARowBytes = 128 };  // NHWC stage pixel row (128, 64 or 32 bytes)
enum : int { kStageBytes = 30976, kSharedBytes = 190720 };
enum : long long { kPackedBytes = 147456 };
enum : bool { kWeightsKcrs = true };  // w as K, C/groups, R, S (false: K, R, S, C/groups)
enum : bool { kPairedPartials = false };
enum : int { kTapsPerStage = 1 };
enum : bool { kASmem = false };
enum : bool { kYMap = false };
enum : int { kYPasses = 1 };
enum : int { kYBuffers = 1 };
enum : bool { kRowHalo = false };
enum : int { kHaloRing = 2 };
}  // namespace spec
#endif

// device::smem_addr, device::cp_async4.
#include "convjit_device.cuh"

#define CONVJIT_CAT2(a, b) a##b
#define CONVJIT_CAT(a, b) CONVJIT_CAT2(a, b)

namespace wg {
using namespace spec;
using device::cp_async4;
using device::smem_addr;

template <bool Wide>
struct ElementOf {
  using type = float;
};
template <>
struct ElementOf<true> {
  using type = unsigned short;
};

enum : int { kConsumers = 2 };
enum : int { kThreads = 128 * (1 + kConsumers) };
enum : int { kBM = kConsumers * kMB * 64 };
enum : int { kCPerGroup = kC / kGroups };
enum : int { kKPerGroup = kK / kGroups };
enum : bool { k16Bit = kDType != 0 };
using Element = typename ElementOf<k16Bit>::type;  // storage type of x, w, bias, y
enum : int { kChunkC = k16Bit ? 16 : 8 };          // channels a wgmma k step reduces
enum : bool { kNhwc = kLayout == 1 };
// Channels of one tap a stage reduces: NCHW one k step; NHWC a pixel row of kARowBytes
// (128, or 64 or 32 where a group's channels fill no more) of each pixel's channel run,
// kSub k steps (32 bytes: one).
enum : int { kStageC = kNhwc ? kARowBytes / static_cast<int>(sizeof(Element)) : kChunkC };
enum : int { kARowChunks = kARowBytes / 16 };  // 16-byte chunks of a stage's pixel row
static_assert(kARowBytes == 128 || (kNhwc && (kARowBytes == 64 || kARowBytes == 32)),
              "a stage's pixel row is 128 or (NHWC) 64 or 32 bytes");
enum : int { kSub = kStageC / kChunkC };
enum : int { kChunks = (kCPerGroup + kStageC - 1) / kStageC };
enum : int { kKBlocks = (kKPerGroup + kBN - 1) / kBN };
// A 3-D problem (kDepth: a depth dimension, as the host's beyond_2d_forward_reason counts
// it) runs on the NHWC TMA kernel only: its output pixels are (image, z, row, column), its
// taps (t, r, s), and x arrives through a rank-5 im2col map. For 2-D problems kTaps and
// kOutPlane are kR x kS and kP x kQ, so their code is what it was.
enum : bool { kDepth = !(kD == 1 && kT == 1 && kPadD == 0) };
enum : int { kTaps = kT * kR * kS };
enum : int { kOutPlane = kZ * kP * kQ };  // output pixels an image
static_assert(!kDepth || (kNhwc && kATma), "3-D problems run on the NHWC TMA kernel");
enum : int { kTilesP = (kP + kBP - 1) / kBP };
enum : int { kTilesQ = (kQ + kBQ - 1) / kBQ };
// NHWC: a tile is kBM consecutive output pixels in (image, row, column) order; the host
// keeps kN * kOutPlane + kBM within int (NCHW problems may not fit: not evaluated for them).
// A run covers the first CONVJIT_BATCH(kN) images' pixels; split-K's partial-sum slices
// stay kPixels apart whatever the run's batch, so the plan's workspace holds every batch.
enum : int { kPixels = kNhwc ? kN * kOutPlane : 0 };
// kTapsPerStage (NHWC with the map): a stage holds that many consecutive taps of one
// channel chunk, each its own im2col box, so its fixed costs are paid once for them all.
static_assert(kTapsPerStage == 1 || (kNhwc && kATma && kTaps % kTapsPerStage == 0),
              "several taps a stage: NHWC stages through the map, whole groups of the filter's taps");
enum : int { kTapGroups = kTaps / kTapsPerStage };
enum : int { kStagesTotal = kNhwc ? kTapGroups * kChunks : kChunks * kR };  // per tile
// Split-K (NHWC): blockIdx.z = group x kSplitK + slice; slice i reduces the tile's stages
// [i * kSliceStages, min((i + 1) * kSliceStages, kStagesTotal)) (the host makes none
// empty) into fp32 partial sums, written through `y` (then the workspace's partials:
// [slice][pixel][kK]); <name>_reduce adds the slices and applies the epilogue.
enum : int { kSliceStages = (kStagesTotal + kSplitK - 1) / kSplitK };
// Stream-K (kStreamK, NHWC with kATma, static batch): the kStreamWorkers blocks first run
// whole waves of whole (tile, group, k block) items, one an item, as a plain grid would;
// the items left (fewer than the blocks, the wave that would leave SMs idle) they share
// stage by stage, block w the run [B + w S / W, B + (w + 1) S / W) of those S stages
// after the B before them, so every SM stays busy and only those items are split. (One
// whole wave fewer where the rest would have fewer stages than blocks: no run is empty.)
// An item split between blocks is finished by the last of them to arrive: each writes
// its raw sums to its slot of the workspace (a block's first segment to slot 0, its last
// to slot 1), counts itself in the item's counter (zeroed by the host before the
// launch), and the one that counts last adds the others' slots and stores y. Nothing
// waits on another block, so no schedule can deadlock.
enum : long long {
  kItems = kStreamK ? static_cast<long long>((kN * kOutPlane + kBM - 1) / kBM) * kKBlocks * kGroups : 0
};
enum : long long { kStreamStages = kItems * kStagesTotal };
enum : long long { kItemWaves = kStreamWorkers > 0 ? kItems / kStreamWorkers : 0 };
enum : long long {
  kWholeWaves = kItemWaves > 0 && (kItems - kItemWaves * kStreamWorkers) * kStagesTotal < kStreamWorkers
                    ? kItemWaves - 1
                    : kItemWaves
};
enum : long long { kWholeItems = kWholeWaves * kStreamWorkers };
enum : long long { kSharedBase = kWholeItems * kStagesTotal };  // the first shared stage
enum : long long { kSharedStages = kStreamStages - kSharedBase };
enum : int { kConsumerThreads = kConsumers * 128 };
enum : int { kPartialFloats = kConsumerThreads * kMB * (kBN / 2) };  // one slot: every consumer's accumulators
// Input columns a patch row reads; 16-bit rows get one more for the pair alignment.
enum : int { kHaloW = (kBQ - 1) * kStrideW + (kS - 1) * kDilationW + 1 + (k16Bit ? 1 : 0) };
enum : int { kHaloPairs = (kHaloW + 1) / 2 };
enum : int { kRowElems = k16Bit ? 2 * kHaloPairs : kHaloW };
enum : int { kPatch = kBP * kRowElems };
// Channel planes offset so the 4 k slots x 8 pixels of one fragment load hit distinct
// banks: f32 slots are a plane apart (8 banks); 16-bit slots are two planes of halves
// apart (again 8 banks), and two pixels of one word are one access.
enum : int { kChanStride = (kPatch + 31) / 32 * 32 + 8 };
// NHWC: [kTapsPerStage taps][kBM pixels][kStageC channels], kARowBytes a pixel (see
// load_fragment_nhwc).
enum : int { kATapElems = kBM * kStageC };
enum : int { kAStageElems = kNhwc ? (kRowHalo ? 0 : kTapsPerStage * kATapElems) : kChunkC * kChanStride };
enum : int { kBTapElems = kBN * kChunkC };     // 32 * kBN bytes for every type
enum : int { kPlanes = kSplit == 3 ? 2 : 1 };  // weight planes: TF32, or big and small
// A plane: the kS taps of a row (NCHW) or the kSub k steps of each of the stage's taps (NHWC).
enum : int { kBPlaneElems = (kNhwc ? kTapsPerStage * kSub : kS) * kBTapElems };
enum : int { kBStageElems = kPlanes * kBPlaneElems };
enum : int { kStageElems = kAStageElems + kBStageElems };
// (kRowHalo's deeper stage ring: twice the area.)
enum : int { kBarrierBytes = kRowHalo ? 512 : 256 };
// kBMap with TF32: the copies land on a stage's "landed" barrier, the rounding warps then
// arrive on its "full" one.
enum : bool { kBRound = kBMap && !k16Bit };
enum : int { kRoundThreads = 96 };  // the producer warpgroup's warps 1-3
// The barrier area: kStages "full", kStages "empty", the staged outputs' two, then (kBRound)
// kStages "landed" barriers.
__device__ __forceinline__ unsigned land_barriers(unsigned empty_bar) { return empty_bar + kStages * 8 + 16; }
// TMA's 128-byte swizzle XORs a row's 16-byte chunk index with address bits 7-9 (its
// 64-byte swizzle, bits 4-5 with bits 7-8), so it writes the layout load_fragment_nhwc
// reads (swizzled_byte) only when every A stage starts on a swizzle atom's boundary (1024
// bytes covers both): the stages start at the first such boundary past the barriers, and
// the host adds the bytes that rounding may skip.
enum : int { kSwizzleAtom = 1024 };
enum : int { kAlignSlack = kATma ? kSwizzleAtom : 0 };
// kRowHalo (NHWC with the map, 2-D, stride 1 along W): a tile is kBM output pixels of one
// output row (a row's last tile fewer), and a tile's stages run (filter row r, channel
// chunk, tap s) with s fastest, one tap a stage. The kS taps of one (r, chunk) read the
// same input row at shifts of kDilationW pixels, so one im2col copy of the row's kBM +
// (kS - 1) kDilationW pixels (kHaloRows, whole swizzle atoms), issued with the first tap's
// weights, serves them all: tap s's A starts s kDilationW pixel rows into it. One box a
// tap lands every input pixel kS times. The copies fill a ring of kHaloRing such rows
// beside the stages, which then hold weights alone; the producer rewrites a ring slot once
// the stage of its last tap is released, which the stage ring's depth leaves unreused
// until then (kStages >= (kHaloRing - 1) kS + 1: that stage is at most the one whose
// release the producer has just waited for). The host sizes the ring (kHaloRing slots).
enum : int { kAtomRows = kSwizzleAtom / kARowBytes };
enum : int { kHaloRows = kRowHalo ? (kBM + (kS - 1) * kDilationW + kAtomRows - 1) / kAtomRows * kAtomRows : 0 };
enum : int { kHaloElems = kHaloRows * kStageC };
enum : int { kHaloRingElems = kRowHalo ? kHaloRing * kHaloElems : 0 };
enum : int { kRowTilesQ = (kQ + kBM - 1) / kBM };  // kRowHalo: tiles an output row
static_assert(!kRowHalo || (kNhwc && kATma && !kDepth && kStrideW == 1 && kTapsPerStage == 1 && kSplitK == 1 &&
                            !kStreamK && kARowBytes == 128 && kHaloRing >= 2 && kStages >= (kHaloRing - 1) * kS + 1),
              "row-halo A: the NHWC TMA kernel, 2-D, stride 1 along W, one tap a stage of 128-byte rows, whole "
              "tiles a block, stages enough that a ring slot's last tap is released before the slot is refilled");
// The ring follows the kStages stages; stage `it` (counted over the block's tiles, whole
// runs of kS stages each) reads, and with its first tap fills, slot it / kS of it.
__device__ __forceinline__ const Element* halo_slot(const Element* stages, int it) {
  return stages + kStages * kStageElems + it / kS % kHaloRing * kHaloElems;
}
enum : int { kLoadWarps = kStoreWarps ? 2 : 4 };  // producer warps issuing copies
enum : int { kOutStride = kBM + 4 };              // staged outputs: [channel][pixel], 4 banks a row
enum : int { kOutElems = kStoreWarps ? kBN * kOutStride : 0 };
// kYMap: a box is 128 bytes of channels (kYBoxC) for each of the tile's kBM pixels.
enum : int { kYBoxC = 128 / static_cast<int>(sizeof(Element)) };
enum : int { kYBoxes = kBN / kYBoxC };
enum : int { kYStageElems = kYMap ? kYBuffers * (kBM * kBN / kYPasses) : 0 };
// The host sized the stages (how many fit) and the launch from its own copy of this
// layout, emitted in the prologue: a disagreement fails the compile.
static_assert(kStageBytes == kStageElems * static_cast<int>(sizeof(Element)),
              "spec::kStageBytes disagrees with the template's stage layout");
static_assert(kSharedBytes == kBarrierBytes + kAlignSlack + kStages * kStageBytes +
                                  (kHaloRingElems + kOutElems + kYStageElems) * static_cast<int>(sizeof(Element)),
              "spec::kSharedBytes disagrees with the template's shared memory");
// Stages and their A parts whole swizzle atoms: every stage's A starts on a boundary once
// the first does, and a kARowBytes-pixel-row A is what one im2col box of kBM pixels writes.
static_assert(!kATma || (kNhwc && kStageBytes % kSwizzleAtom == 0 &&
                         kAStageElems * static_cast<int>(sizeof(Element)) % kSwizzleAtom == 0 && kBM <= 1024 &&
                         kStageC * static_cast<int>(sizeof(Element)) == kARowBytes),
              "TMA im2col stages: NHWC, whole 1024-byte swizzle atoms, one kARowBytes channel box a pixel");
// Every stage's weights, as <name>_pack writes them and the host allocates them.
enum : long long {
  kPackedElems = static_cast<long long>(kGroups) * kKBlocks * kChunks * kTaps * kPlanes * kSub * kBTapElems
};
static_assert(kPackedBytes == kPackedElems * static_cast<long long>(sizeof(Element)),
              "spec::kPackedBytes disagrees with the template's weight packing");
enum : long long { kPlane = static_cast<long long>(kH) * kW };
enum : int { kAccum = kBN / 2 };  // accumulator registers per m64 block and thread

static_assert(kBP * kBQ == kBM, "the patch must hold exactly the block's pixels");
static_assert(kBQ % 8 == 0, "a fragment's 8 pixel rows must sit in one patch row");
static_assert(kBN == 64 || kBN == 128 || (kNhwc && (kBN == 16 || kBN == 32 || (kBN == 160 && kMB == 1))),
              "wgmma wrappers exist for n16, n32, n64, n128 and n160 (one m64 block a warpgroup); the NCHW "
              "kernel's stores take n64 and n128 only");
static_assert(kSplit == 1 || kSplit == 3, "TF32 or 3xTF32");
static_assert(!kPairedPartials || kSplit == 3, "paired partial sums are 3xTF32's");
static_assert(!k16Bit || (kSplit == 1 && (kNhwc || kW % 2 == 0)),
              "16-bit data: one product, even rows for pair copies");
static_assert(kLayout == 0 || kLayout == 1, "NCHW or NHWC");
// NHWC copies pieces of kXVecBytes out of a group's channel run: whole pieces only, so a
// piece is all channels or all tail.
static_assert(!kNhwc || ((kXVecBytes == 4 || kXVecBytes == 8 || kXVecBytes == 16) &&
                         kCPerGroup * static_cast<int>(sizeof(Element)) % kXVecBytes == 0),
              "spec::kXVecBytes must be 4, 8 or 16 and divide a group's channel run");
static_assert(!kNhwc || (kBP == 1 && !kStoreWarps), "NHWC tiles are a run of kBM pixels, stored from registers");
static_assert(!kPairStores || (kNhwc && kKPerGroup % 2 == 0), "pair stores need an even channel count per group");
// kQuadStores (16-bit NHWC): two lanes of a quad join their channel pairs (one shuffle), so
// that each stores four channels, 8 bytes, and a warp's store writes whole 32-byte sectors
// of 8 pixels (two adjacent k blocks of 8 channels each) instead of half sectors. (f32
// pairs already fill sectors; joined into 16-byte stores they measured no faster in TF32
// and slower in 3xTF32: docs/perf.md.)
static_assert(!kQuadStores || (kPairStores && k16Bit && kKPerGroup % 4 == 0),
              "quad stores: 16-bit pair stores over whole runs of four channels a group");
static_assert(kSplitK >= 1 && (kSplitK == 1 || kNhwc) && (kSplitK - 1) * kSliceStages < kStagesTotal,
              "split-K is NHWC's, and every slice has stages");
#ifdef CONVJIT_WGMMA_SPLIT_K
static_assert(kSplitK > 1, "the reduce pass is for split-K kernels only");
#else
static_assert(kSplitK == 1, "split-K kernels need their reduce pass (CONVJIT_WGMMA_SPLIT_K)");
#endif
static_assert(3 * kStages * 8 + 16 <= kBarrierBytes - 8, "barriers must fit their area, the last 8 bytes kept");
static_assert(!kStreamK || (kNhwc && kATma && kSplitK == 1 && kStreamWorkers > 0 && kSharedStages >= kStreamWorkers),
              "stream-K: the NHWC TMA kernel, no split-K, every worker with shared stages");
#ifdef CONVJIT_DYNAMIC_BATCH
static_assert(!kStreamK, "stream-K shares a static batch's stages");
#endif
static_assert(!kYMap || (kNhwc && kATma && kGroups == 1 && kSplitK == 1 && !kStreamK && kBN % kYBoxC == 0 &&
                         !kStoreWarps && kBM <= 256),
              "y through a map: the NHWC TMA kernel, one group, whole boxes, no split reduction, boxes of at most "
              "256 pixels");
static_assert(kYPasses >= 1 && kYBoxes % kYPasses == 0, "y's passes: whole boxes each");
static_assert(kYBuffers == 1 || (kYBuffers == 2 && kYPasses >= 2), "y's passes: one buffer, or two that alternate");
static_assert(!kASmem || (kNhwc && kATma && kSplit == 1),
              "A through a descriptor: the NHWC TMA kernel's swizzled stages, one product a k step");
static_assert(!kBMap || (kNhwc && kATma && kSplit == 1 && !kWeightsKcrs),
              "weights through a map: the NHWC TMA kernel in TF32 or 16-bit, w as K, R, S, C/groups");
// The route's stores (CONVJIT_WGMMA_Y_NCHW): the NHWC kernel stores its output pixels
// straight into the caller's NCHW y, a channel plane apart. A warp's store then covers 8
// consecutive pixels of 4 channels, whole 32-byte sectors for f32 (16-bit: the other 8
// pixels' store fills the sector in L2), where a transpose would read and write y once
// more. With split-K the reduce pass stores the caller's y instead.
#ifdef CONVJIT_WGMMA_Y_NCHW
enum : bool { kYNchw = true };
static_assert(kNhwc && kATma && kSplitK == 1 && !kPairStores,
              "NCHW stores: the route's NHWC TMA kernel without split-K, one channel a store");
#else
enum : bool { kYNchw = false };
#endif
// A strided transposed problem's receiving phase (CONVJIT_WGMMA_Y_PHASE, the route only):
// the prologue's problem is the phase's forward twin, its output pixel (p, q) the caller's
// (p kYStrideH + kYPhaseH, q kYStrideW + kYPhaseW) of a kYFullP x kYFullQ plane (3-D: z
// kYStrideD + kYPhaseD of kYFullZ such planes); <name>_fill
// has already written the bias alone everywhere.
#ifdef CONVJIT_WGMMA_Y_PHASE
enum : bool { kYPhase = true };
static_assert(kYNchw || kSplitK > 1, "a phase's outputs are stored by the route's NCHW stores or its reduce pass");
#else
enum : bool { kYPhase = false };
enum : int { kYPhaseH = 0, kYPhaseW = 0, kYStrideH = 1, kYStrideW = 1, kYFullP = kP, kYFullQ = kQ };
enum : int { kYPhaseD = 0, kYStrideD = 1, kYFullZ = kZ };
#endif
// A stride-1 transposed convolution runs as the forward one of its flipped, channel-swapped
// filter (the prologue's problem is that twin, its padding dilation x (kernel - 1) - pad):
// only the pack knows, reading the forward filter's (k, c, tap) from the caller's
// transposed w [group's c][k][R-1-r][S-1-s] (C, K/groups, R, S, as PyTorch stores it).
#ifdef CONVJIT_WGMMA_W_TRANSPOSED
enum : bool { kWeightsTransposed = true };
static_assert(kWeightsKcrs && !kBMap, "transposed weights: read by the pack, in the NCHW filter's C, K/g, R, S order");
#else
enum : bool { kWeightsTransposed = false };
#endif

// --- mbarrier ---
__device__ __forceinline__ void bar_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void bar_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void bar_arrive_expect_tx(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// A consumer thread hands a stage back once its reads of the stage's A rows
// (load_fragment) are done: its arrive releases them, and the producer's wait acquires
// every consumer thread's before it copies into the stage again. One arrive per warp
// after a __syncwarp orders the same, but compute-sanitizer's racecheck cannot see
// through it and reports every such read as a hazard; per-thread arrives cost nothing
// measurable (docs/perf.md, "Stage release").
__device__ __forceinline__ void release_stage(unsigned bar) { bar_arrive(bar); }
__device__ __forceinline__ void bar_wait(unsigned bar, unsigned parity) {
  unsigned done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// --- copies ---
// Arrives on `bar` once this thread's earlier cp.async copies have landed.
__device__ __forceinline__ void cp_async_arrive(unsigned bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void bulk_copy(unsigned dst, const void* src, unsigned bytes, unsigned bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}

// TMA im2col (kATma). A tensor map is 128 opaque bytes that PTX wants 64-byte aligned in
// the parameter space; no toolkit header is at hand under NVRTC, so the type is spelled here.
struct alignas(64) TensorMap {
  unsigned long long opaque[16];
};
// kBM pixel rows of kARowBytes channel bytes each, from the pixel that the map's traversal starts
// at (c, w, h, n: the tile's first output pixel in input coordinates, before the tap), each
// read at (w + off_w, h + off_h); outside x (padding, channels past C, images past the
// run's last) arrive as zeros. Completes on `bar` with the box's bytes, zeros included.
__device__ __forceinline__ void im2col_copy(unsigned dst, const TensorMap* map, int c, int w, int h, int n,
                                            unsigned short off_w, unsigned short off_h, unsigned bar) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, "
      "%5}], [%6], {%7, %8};\n" ::"r"(dst),
      "l"(map), "r"(c), "r"(w), "r"(h), "r"(n), "r"(bar), "h"(off_w), "h"(off_h)
      : "memory");
}

// The same through a rank-5 map (3-D, kDepth): x as C, W, H, D, N, the traversal's start
// (c, w, h, d, n) and the tap's offsets (off_w, off_h, off_d).
__device__ __forceinline__ void im2col_copy_3d(unsigned dst, const TensorMap* map, int c, int w, int h, int d, int n,
                                               unsigned short off_w, unsigned short off_h, unsigned short off_d,
                                               unsigned bar) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, "
      "%5, %6}], [%7], {%8, %9, %10};\n" ::"r"(dst),
      "l"(map), "r"(c), "r"(w), "r"(h), "r"(d), "r"(n), "r"(bar), "h"(off_w), "h"(off_h), "h"(off_d)
      : "memory");
}

// kBMap: one tap's kStageC channels (c) of kBN filters from filter k on, from the w map
// (C/groups, R x S, K); past C/groups or K the box is zeros.
__device__ __forceinline__ void weight_copy(unsigned dst, const TensorMap* map, int c, int tap, int k, unsigned bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
      "[%5];\n" ::"r"(dst),
      "l"(map), "r"(c), "r"(tap), "r"(k), "r"(bar)
      : "memory");
}

// kYMap: one box of y from shared memory (kYBoxC channels from channel c, kBM pixels from
// pixel `pixel`), in this thread's bulk group; TMA drops what falls outside y.
// (kRowHalo: y as K, Q, N x P, the box at column q0 of output row `row`, which TMA
// clips at the row's end; otherwise y as K, pixels, 1 and row 0.)
__device__ __forceinline__ void y_box_store(const TensorMap* map, unsigned src, int c, int pixel, int row) {
  asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%1, %2, %3}], [%4];\n" ::"l"(map), "r"(c),
               "r"(pixel), "r"(row), "r"(src)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// This thread's bulk groups have read their shared memory (which may then be rewritten).
template <int Pending = 0>
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(Pending) : "memory");
}
// This thread's bulk groups are done, their writes performed.
__device__ __forceinline__ void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }
// Generic-proxy writes to shared memory, made visible to the async proxy (TMA, wgmma).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// --- wgmma ---
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// K-major, no swizzle: core matrices of 8 rows x 16 bytes stored as 128 contiguous
// bytes; the two core matrices of a k8 step 128 bytes apart (leading byte offset),
// consecutive groups of 8 rows 256 bytes apart (stride byte offset).
__device__ __forceinline__ unsigned long long b_descriptor(unsigned smem_byte_address) {
  return static_cast<unsigned long long>((smem_byte_address & 0x3FFFF) >> 4) |
         static_cast<unsigned long long>(128 >> 4) << 16 | static_cast<unsigned long long>(256 >> 4) << 32;
}

// kBMap's B and kASmem's A: K-major with the map's swizzle (128, 64 or 32 bytes, the
// stage's row): 8-row groups kARowBytes x 8 apart (stride byte offset), the leading offset
// unused within a swizzled row; a k step starts its row's 32-byte piece, which the hardware
// swizzles as TMA did. The swizzle follows the address's own bits, as TMA's does: an
// operand that starts pixel rows into an atom (kRowHalo's taps past the first) takes its
// start address alone, the base offset field left zero (setting it to address bits 7-9
// gave wrong products on the H200: docs/perf.md, "Session 22").
__device__ __forceinline__ unsigned long long swizzled_descriptor(unsigned smem_byte_address) {
  constexpr unsigned long long kLayout = kARowBytes == 128 ? 1 : kARowBytes == 64 ? 2 : 3;  // 128-, 64-, 32-byte
  return static_cast<unsigned long long>((smem_byte_address & 0x3FFFF) >> 4) | 1ull << 16 |
         static_cast<unsigned long long>(8 * kARowBytes >> 4) << 32 | kLayout << 62;
}

__device__ __forceinline__ unsigned to_tf32(float v) {
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return r;
}

// wgmma with A from registers: d = a * b (+ d when `accumulate`). The operand lists are
// spelled once per accumulator count N (8, 16, 32, 64 or 80 registers: n16, n32, n64,
// n128 or n160);
// `instr` names the shape and types, `tail` the immediates after the B scale (16-bit:
// transpose-B = 0).
#define CONVJIT_ACC8(d) "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
#define CONVJIT_ACC16(d)                                                                                      \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
      "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
#define CONVJIT_ACC32(d)                                                                                      \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
      "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),  \
      "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), \
      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define CONVJIT_ACC64(d)                                                                                      \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
      "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),  \
      "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), \
      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), \
      "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), \
      "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), \
      "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), \
      "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#define CONVJIT_ACC80(d)                                                                                       \
  CONVJIT_ACC64(d), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), \
      "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]),  \
      "+f"(d[79])
#define CONVJIT_REGS8 "%0,%1,%2,%3,%4,%5,%6,%7"
#define CONVJIT_REGS16 "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15"
#define CONVJIT_REGS32                                     \
  "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
  "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"
#define CONVJIT_REGS64                                               \
  "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"           \
  "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31," \
  "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47," \
  "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"
#define CONVJIT_REGS80 CONVJIT_REGS64 ",%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79"
#define CONVJIT_A8 "%8,%9,%10,%11"
#define CONVJIT_A16 "%16,%17,%18,%19"
#define CONVJIT_A32 "%32,%33,%34,%35"
#define CONVJIT_A64 "%64,%65,%66,%67"
#define CONVJIT_A80 "%80,%81,%82,%83"
#define CONVJIT_DESC8 "%12"
#define CONVJIT_DESC16 "%20"
#define CONVJIT_DESC32 "%36"
#define CONVJIT_DESC64 "%68"
#define CONVJIT_DESC80 "%84"
#define CONVJIT_PRED8 "%13"
#define CONVJIT_PRED16 "%21"
#define CONVJIT_PRED32 "%37"
#define CONVJIT_PRED64 "%69"
#define CONVJIT_PRED80 "%85"
#define CONVJIT_WGMMA_RS(N, instr, tail)                                                                 \
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, " CONVJIT_PRED##N ", 0;\n" instr " {" CONVJIT_REGS##N \
               "}, {" CONVJIT_A##N "}, " CONVJIT_DESC##N ", p, 1, 1" tail ";\n}\n"                       \
               : CONVJIT_ACC##N(d)                                                                       \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(accumulate))

// One m64 x kBN x k step, d = a * b (+ d when `accumulate`): the overload by the
// accumulator count (kBN / 2) picks the width, kDType the types (16-bit: k16, TF32: k8).
#define CONVJIT_WGMMA_STEP(N, WIDTH)                                                            \
  if constexpr (kDType == 1) {                                                                  \
    CONVJIT_WGMMA_RS(N, "wgmma.mma_async.sync.aligned.m64n" #WIDTH "k16.f32.f16.f16", ", 0");   \
  } else if constexpr (kDType == 2) {                                                           \
    CONVJIT_WGMMA_RS(N, "wgmma.mma_async.sync.aligned.m64n" #WIDTH "k16.f32.bf16.bf16", ", 0"); \
  } else {                                                                                      \
    CONVJIT_WGMMA_RS(N, "wgmma.mma_async.sync.aligned.m64n" #WIDTH "k8.f32.tf32.tf32", "");     \
  }
__device__ __forceinline__ void wgmma(float (&d)[8], const unsigned (&a)[4], unsigned long long b_desc,
                                      int accumulate = 1){CONVJIT_WGMMA_STEP(8, 16)} __device__ __forceinline__
    void wgmma(float (&d)[16], const unsigned (&a)[4], unsigned long long b_desc,
               int accumulate = 1){CONVJIT_WGMMA_STEP(16, 32)} __device__ __forceinline__
    void wgmma(float (&d)[32], const unsigned (&a)[4], unsigned long long b_desc,
               int accumulate = 1){CONVJIT_WGMMA_STEP(32, 64)} __device__ __forceinline__
    void wgmma(float (&d)[64], const unsigned (&a)[4], unsigned long long b_desc,
               int accumulate = 1){CONVJIT_WGMMA_STEP(64, 128)} __device__ __forceinline__
    void wgmma(float (&d)[80], const unsigned (&a)[4], unsigned long long b_desc,
               int accumulate = 1){CONVJIT_WGMMA_STEP(80, 160)}
// wgmma with A from shared memory (kASmem): d = a * b (+ d when `accumulate`), both operands
// through descriptors (16-bit: transpose-A and -B = 0).
// Operand numbers after N accumulators: A's descriptor, B's, the predicate.
#define CONVJIT_SSA8 "%8"
#define CONVJIT_SSA16 "%16"
#define CONVJIT_SSA32 "%32"
#define CONVJIT_SSA64 "%64"
#define CONVJIT_SSA80 "%80"
#define CONVJIT_SSB8 "%9"
#define CONVJIT_SSB16 "%17"
#define CONVJIT_SSB32 "%33"
#define CONVJIT_SSB64 "%65"
#define CONVJIT_SSB80 "%81"
#define CONVJIT_SSP8 "%10"
#define CONVJIT_SSP16 "%18"
#define CONVJIT_SSP32 "%34"
#define CONVJIT_SSP64 "%66"
#define CONVJIT_SSP80 "%82"
#define CONVJIT_WGMMA_SS(N, instr, tail)                                                                \
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, " CONVJIT_SSP##N ", 0;\n" instr " {" CONVJIT_REGS##N \
               "}, " CONVJIT_SSA##N ", " CONVJIT_SSB##N ", p, 1, 1" tail ";\n}\n"                       \
               : CONVJIT_ACC##N(d)                                                                      \
               : "l"(a_desc), "l"(b_desc), "r"(accumulate))
#define CONVJIT_WGMMA_SS_STEP(N, WIDTH)                                                            \
  if constexpr (kDType == 1) {                                                                     \
    CONVJIT_WGMMA_SS(N, "wgmma.mma_async.sync.aligned.m64n" #WIDTH "k16.f32.f16.f16", ", 0, 0");   \
  } else if constexpr (kDType == 2) {                                                              \
    CONVJIT_WGMMA_SS(N, "wgmma.mma_async.sync.aligned.m64n" #WIDTH "k16.f32.bf16.bf16", ", 0, 0"); \
  } else {                                                                                         \
    CONVJIT_WGMMA_SS(N, "wgmma.mma_async.sync.aligned.m64n" #WIDTH "k8.f32.tf32.tf32", "");        \
  }
__device__ __forceinline__ void wgmma_ss(float (&d)[8], unsigned long long a_desc, unsigned long long b_desc,
                                         int accumulate){CONVJIT_WGMMA_SS_STEP(8, 16)} __device__ __forceinline__
    void wgmma_ss(float (&d)[16], unsigned long long a_desc, unsigned long long b_desc,
                  int accumulate){CONVJIT_WGMMA_SS_STEP(16, 32)} __device__ __forceinline__
    void wgmma_ss(float (&d)[32], unsigned long long a_desc, unsigned long long b_desc,
                  int accumulate){CONVJIT_WGMMA_SS_STEP(32, 64)} __device__ __forceinline__
    void wgmma_ss(float (&d)[64], unsigned long long a_desc, unsigned long long b_desc,
                  int accumulate){CONVJIT_WGMMA_SS_STEP(64, 128)} __device__ __forceinline__
    void wgmma_ss(float (&d)[80], unsigned long long a_desc, unsigned long long b_desc,
                  int accumulate){CONVJIT_WGMMA_SS_STEP(80, 160)}

// 16-bit <-> fp32, one cvt each (no toolkit headers under NVRTC).
__device__ __forceinline__ float to_float(float v) {
  return v;
}
__device__ __forceinline__ float to_float(unsigned short bits) {
  if constexpr (kDType == 1) {
    float v;
    asm("cvt.f32.f16 %0, %1;\n" : "=f"(v) : "h"(bits));
    return v;
  } else {
    return __uint_as_float(static_cast<unsigned>(bits) << 16);
  }
}
__device__ __forceinline__ Element from_float(float v) {
  if constexpr (kDType == 1) {
    unsigned short bits;
    asm("cvt.rn.f16.f32 %0, %1;\n" : "=h"(bits) : "f"(v));
    return bits;
  } else if constexpr (kDType == 2) {
    unsigned short bits;
    asm("cvt.rn.bf16.f32 %0, %1;\n" : "=h"(bits) : "f"(v));
    return bits;
  } else {
    return v;
  }
}

struct Patch {
  int img, p0, q0;
};
// Patches in image-row order, so neighbours in time share input rows in L2.
__device__ __forceinline__ Patch patch_of(int tile) {
  return {tile / (kTilesQ * kTilesP), (tile / kTilesQ) % kTilesP * kBP, tile % kTilesQ * kBQ};
}

// Offset of weight (n, k) inside one tap's packed kBN x 8 block (see b_descriptor).
__host__ __device__ constexpr int packed_offset(int n, int k) {
  return (n >> 3) * 64 + (k >> 2) * 32 + (n & 7) * 4 + (k & 3);
}

// This thread's A fragment for one m64 block at tap offset `a` (16-bit: elements; f32:
// floats): rows g and g + 8 at offset[0] and offset[1], k slots t and t + 4 (f32), or
// channel pairs 2t, 2t + 1 and 2t + 8, 2t + 9 (16-bit, smaller channel in the low half).
__device__ __forceinline__ void load_fragment(const Element* a, const int (&offset)[2], unsigned (&big)[4],
                                              unsigned (&small)[4]) {
  if constexpr (k16Bit) {
    const auto pair = [&](int o, int c) {
      return static_cast<unsigned>(a[o + c * kChanStride]) | static_cast<unsigned>(a[o + (c + 1) * kChanStride]) << 16;
    };
    big[0] = pair(offset[0], 0);
    big[1] = pair(offset[1], 0);
    big[2] = pair(offset[0], 8);
    big[3] = pair(offset[1], 8);
  } else {
    const float v[4] = {a[offset[0]], a[offset[1]], a[offset[0] + 4 * kChanStride], a[offset[1] + 4 * kChanStride]};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (kSplit == 1) {
        big[i] = to_tf32(v[i]);
      } else {
        big[i] = __float_as_uint(v[i]) & 0xffffe000u;
        small[i] = to_tf32(v[i] - __uint_as_float(big[i]));
      }
    }
  }
}

// The consumer's work on one stage, into `acc`. `Parity` picks which of the two A
// register sets tap 0 uses, so that set alternation continues across stages when kS
// is odd. `Fresh`: the stage's first wgmma overwrites acc instead of adding to it.
template <int Parity, bool Fresh>
__device__ __forceinline__ void consume_stage(float (&acc)[kMB][kAccum], unsigned (&frag)[2][kPlanes][kMB][4],
                                              const Element* a_stage, unsigned b_stage_addr,
                                              const int (&a_offset)[kMB][2]) {
#pragma unroll
  for (int s = 0; s < kS; ++s) {
    constexpr int kFirstSet = Parity * kS;
    const int set = (s + kFirstSet) & 1;
    const Element* a = a_stage + s * kDilationW;
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb) load_fragment(a, a_offset[mb], frag[set][0][mb], frag[set][kPlanes - 1][mb]);
    wgmma_fence();
    const unsigned tap = b_stage_addr + s * kBTapElems * sizeof(Element);
    if constexpr (kSplit == 1) {
      const unsigned long long desc = b_descriptor(tap);
#pragma unroll
      for (int mb = 0; mb < kMB; ++mb) wgmma(acc[mb], frag[set][0][mb], desc, !(Fresh && s == 0));
    } else {
      const unsigned long long big = b_descriptor(tap);
      const unsigned long long small = b_descriptor(tap + kBPlaneElems * sizeof(Element));
#pragma unroll
      for (int mb = 0; mb < kMB; ++mb) {
        wgmma(acc[mb], frag[set][1][mb], big, !(Fresh && s == 0));
        wgmma(acc[mb], frag[set][0][mb], small);
        wgmma(acc[mb], frag[set][0][mb], big);
      }
    }
    wgmma_commit();
    // The set written next was read by the group before this one: let it finish.
    wgmma_wait<1>();
  }
}

// --- NHWC ---
// A stage's pixel row m is kARowBytes. 128 bytes: eight 16-byte chunks, chunk j stored at
// j ^ (m % 8); a fragment load reads 8 pixel rows g (m % 8 == g) x 4 words t of one
// chunk, and the chunks land on 8 distinct 16-byte bank groups. 64 bytes: four chunks,
// chunk j at j ^ (m / 2 % 4); two rows share a 128-byte line, so the 8 rows' chunks again
// land on 8 distinct bank groups. 32 bytes: two chunks, chunk j at j ^ (m / 4 % 2); four
// rows share a line, the next four swap their halves. Every way the 32 lanes hit 32 banks,
// and a 16-byte copy stays one chunk. The key is the row's address bits 7 and up, as
// TMA's swizzle takes.
__device__ __forceinline__ unsigned swizzled_byte(int m, int byte) {
  const int key = m * kARowBytes >> 7;
  return static_cast<unsigned>(m * kARowBytes + ((((byte >> 4) ^ key) & (kARowChunks - 1)) << 4) + (byte & 15));
}

// One kXVecBytes piece global -> shared; valid == false writes zeros.
__device__ __forceinline__ void copy_piece(unsigned dst, const void* src, bool valid) {
  if constexpr (kXVecBytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(src),
                 "n"(static_cast<int>(kXVecBytes)), "r"(valid ? kXVecBytes : 0));
  }
}

// This thread's A fragment for k step `sub` of one m64 block: rows g and g + 8 at words
// row[0] and row[1] (m * kARowBytes / 4 + t), k words t (chunk 2 sub) and t + 4 (chunk
// 2 sub + 1); the swizzle key is the row's address bits 7 and up (swizzled_byte).
// A word is one float, or two 16-bit channels with the smaller one in the low half.
__device__ __forceinline__ void load_fragment_nhwc(const unsigned* a, int sub, const int (&row)[2], unsigned (&big)[4],
                                                   unsigned (&small)[4]) {
  const int g = (row[0] >> 5) & (kARowChunks - 1);
  const int lo = ((2 * sub) ^ g) << 2;
  const int hi = ((2 * sub + 1) ^ g) << 2;
  const unsigned v[4] = {a[row[0] + lo], a[row[1] + lo], a[row[0] + hi], a[row[1] + hi]};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (k16Bit) {
      big[i] = v[i];
    } else if constexpr (kSplit == 1) {
      big[i] = to_tf32(__uint_as_float(v[i]));
    } else {
      big[i] = v[i] & 0xffffe000u;
      small[i] = to_tf32(__uint_as_float(v[i]) - __uint_as_float(big[i]));
    }
  }
}

// consume_stage for NHWC: the kSub k steps of each of the stage's taps, A sets
// alternating over the segment's k steps: a stage of an odd number of them (32-byte rows)
// starts on the set its `Parity` gives, as consume_stage's taps do.
// kASmem: every k step of the stage through descriptors, one commit group a stage; `rows`
// then holds each m64 block's byte offset in a tap's A (rows[mb][0]).
// kRowHalo: `a_shift` pixel rows into the stage's A (the tap's column shift); 0 otherwise.
template <int Parity, bool Fresh>
__device__ __forceinline__ void consume_stage_nhwc(float (&acc)[kMB][kAccum], unsigned (&frag)[2][kPlanes][kMB][4],
                                                   const Element* a_stage, unsigned b_stage_addr,
                                                   const int (&rows)[kMB][2], int a_shift) {
  if constexpr (kASmem) {
    const unsigned a_addr = smem_addr(a_stage) + a_shift * kARowBytes;
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < kTapsPerStage; ++j) {
#pragma unroll
      for (int sub = 0; sub < kSub; ++sub) {
        const bool first = Fresh && j == 0 && sub == 0;
        const unsigned step =
            b_stage_addr + (kBMap ? j * kBN * kARowBytes + sub * 32 : (j * kSub + sub) * kBTapElems * sizeof(Element));
        const unsigned long long b_desc = kBMap ? swizzled_descriptor(step) : b_descriptor(step);
        const unsigned a_tap = a_addr + j * kATapElems * static_cast<unsigned>(sizeof(Element)) + sub * 32;
#pragma unroll
        for (int mb = 0; mb < kMB; ++mb) wgmma_ss(acc[mb], swizzled_descriptor(a_tap + rows[mb][0]), b_desc, !first);
      }
    }
    wgmma_commit();
    wgmma_wait<1>();
    return;
  }
#pragma unroll
  for (int j = 0; j < kTapsPerStage; ++j) {
    const unsigned* a = reinterpret_cast<const unsigned*>(a_stage + j * kATapElems);
#pragma unroll
    for (int sub = 0; sub < kSub; ++sub) {
      constexpr int kFirstSet = Parity * kTapsPerStage * kSub;
      const int set = (kFirstSet + j * kSub + sub) & 1;
      const bool first = Fresh && j == 0 && sub == 0;
#pragma unroll
      for (int mb = 0; mb < kMB; ++mb) {
        const int shifted[2] = {rows[mb][0] + a_shift * (kARowBytes / 4), rows[mb][1] + a_shift * (kARowBytes / 4)};
        load_fragment_nhwc(a, sub, shifted, frag[set][0][mb], frag[set][kPlanes - 1][mb]);
      }
      wgmma_fence();
      // A k step's weights: the next 32 bytes of each swizzled row of the tap's kBN (kBMap),
      // or the next packed kBN x kChunkC block.
      const unsigned step =
          b_stage_addr + (kBMap ? j * kBN * kARowBytes + sub * 32 : (j * kSub + sub) * kBTapElems * sizeof(Element));
      if constexpr (kSplit == 1) {
        const unsigned long long desc = kBMap ? swizzled_descriptor(step) : b_descriptor(step);
#pragma unroll
        for (int mb = 0; mb < kMB; ++mb) wgmma(acc[mb], frag[set][0][mb], desc, !first);
      } else {
        const unsigned long long big = b_descriptor(step);
        const unsigned long long small = b_descriptor(step + kBPlaneElems * sizeof(Element));
#pragma unroll
        for (int mb = 0; mb < kMB; ++mb) {
          wgmma(acc[mb], frag[set][1][mb], big, !first);
          wgmma(acc[mb], frag[set][0][mb], small);
          wgmma(acc[mb], frag[set][0][mb], big);
        }
      }
      wgmma_commit();
      wgmma_wait<1>();
    }
  }
}

// The stage's wgmmas in the layout's order (consume_stage or consume_stage_nhwc).
template <int Parity, bool Fresh>
__device__ __forceinline__ void consume_stage_of_layout(float (&acc)[kMB][kAccum], unsigned (&frag)[2][kPlanes][kMB][4],
                                                        const Element* a_stage, unsigned b_stage_addr,
                                                        const int (&a_offset)[kMB][2], int a_shift) {
  if constexpr (kNhwc) {
    consume_stage_nhwc<Parity, Fresh>(acc, frag, a_stage, b_stage_addr, a_offset, a_shift);
  } else {
    consume_stage<Parity, Fresh>(acc, frag, a_stage, b_stage_addr, a_offset);
  }
}

// 3xTF32: once the stage's wgmmas are done, hands it back and adds the partial set.
template <int Sets>
__device__ __forceinline__ void drain_partials(float (&acc)[kMB][kAccum], const float (&part)[Sets][kAccum],
                                               unsigned empty) {
  wgmma_wait<0>();
  release_stage(empty);
#pragma unroll
  for (int mb = 0; mb < Sets; ++mb)
#pragma unroll
    for (int i = 0; i < kAccum; ++i) acc[mb][i] += part[mb][i];
}

// Waits for stage `it`, consumes it and hands it (or, for TF32, the one before it, whose
// wgmmas are the ones known to be done, unless this is a patch's first stage) back to
// the producer. The callers take stages in pairs, Parity 0 then 1; with kPairedPartials a
// pair shares one partial set, drained after its second stage (or after the first where
// `pair_follows` says there is no second).
template <int Parity>
__device__ __forceinline__ void run_stage(int it, bool release_previous, bool pair_follows, float (&acc)[kMB][kAccum],
                                          float (&part)[kSplit == 3 ? kMB : 1][kAccum],
                                          unsigned (&frag)[2][kPlanes][kMB][4], const Element* stages,
                                          unsigned full_bar, unsigned empty_bar, const int (&a_offset)[kMB][2]) {
  const int st = it % kStages;
  // The rounding warps' arrive says the weights are rounded; the copies' own completion
  // is what makes A visible here.
  if constexpr (kBRound) bar_wait(land_barriers(empty_bar) + st * 8, (it / kStages) & 1);
  bar_wait(full_bar + st * 8, (it / kStages) & 1);
  // kRowHalo: A is the ring slot of the stage's (r, chunk), tap s (it % kS: tiles are
  // whole runs of kS stages) s kDilationW rows in.
  const Element* a_stage = kRowHalo ? halo_slot(stages, it) : stages + st * kStageElems;
  const int a_shift = kRowHalo ? it % kS * kDilationW : 0;
  const unsigned b_stage = smem_addr(stages + st * kStageElems + kAStageElems);
  if constexpr (kSplit == 1) {
    consume_stage_of_layout<Parity, false>(acc, frag, a_stage, b_stage, a_offset, a_shift);
    // Every group but this stage's last is done: the previous stage is free.
    if (release_previous) release_stage(empty_bar + ((it - 1) % kStages) * 8);
  } else if (!kPairedPartials || Parity == 0) {
    consume_stage_of_layout<Parity, true>(part, frag, a_stage, b_stage, a_offset, a_shift);
    if (!kPairedPartials || !pair_follows) drain_partials(acc, part, empty_bar + st * 8);
  } else {
    consume_stage_of_layout<Parity, false>(part, frag, a_stage, b_stage, a_offset, a_shift);
    // The first k step's wait<1> saw the pair's first stage finish.
    release_stage(empty_bar + ((it - 1) % kStages) * 8);
    drain_partials(acc, part, empty_bar + st * 8);
  }
}

// A weight as the tensor cores read it: TF32-rounded (one plane), the exact big/small
// split (plane 0 big, plane 1 small) or 16-bit as it is.
__device__ __forceinline__ Element packed_value(Element v, int plane) {
  if constexpr (!k16Bit) {
    if constexpr (kSplit == 1) {
      v = __uint_as_float(to_tf32(v));
    } else {
      const float big = __uint_as_float(__float_as_uint(v) & 0xffffe000u);
      v = plane == 0 ? big : __uint_as_float(to_tf32(v - big));
    }
  }
  return v;
}

// The packing writes 16-byte rows of a core matrix: kPackRow consecutive k (channels) of
// one n (output channel), so one thread does a row's index arithmetic once and, in NHWC,
// reads the row from one contiguous run of w.
enum : int { kPackRow = 16 / static_cast<int>(sizeof(Element)) };
enum : int { kBTapRows = kBTapElems / kPackRow };
static_assert(kBTapElems % kPackRow == 0, "a core matrix is whole 16-byte rows");
enum : long long { kPackedRows = kPackedElems / kPackRow };
using PackIndex = typename device::IndexType<(kPackedRows > 2147483647ll)>::type;

// Where row `row` of the packing reads w: its first element's index in w (its k elements
// follow 1 apart in K,R,S,C order, kR x kS apart in K,C,R,S order: kWeightsKcrs), its
// plane, and its first channel and output channel (the caller zero-fills past the
// group's). The packing's order, outermost first, follows the stage layout:
// NHWC: [group][k block][tap group][chunk of kStageC channels]
//   [plane][tap of the group][k step][kBN x kChunkC core-matrix layout], so that stage
//   tap group * kChunks + chunk is one contiguous run, in the order the producer walks;
// NCHW: [group][k block][chunk][r][plane][s][core-matrix layout].
// The weights' order is each layout's own (NHWC w [K][R][S][C/groups], NCHW w
// [K][C/groups][R][S]), except NCHW run through the NHWC kernel
// (CONVJIT_WGMMA_VIA_NHWC), whose NHWC stages read the caller's NCHW weights as they are.
struct PackRow {
  long long w_index;
  int plane, c, k_out;
};
__device__ __forceinline__ PackRow pack_row(PackIndex row) {
  const int in_tap = static_cast<int>(row % kBTapRows);
  PackIndex rest = row / kBTapRows;
  // Invert the core-matrix layout: 16-byte rows of 8 (n) x 16 bytes of k, two k halves.
  const int n = in_tap / 16 * 8 + in_tap % 8;
  const int k = in_tap / 8 % 2 * kPackRow;
  int plane, c, tap;
  if constexpr (kNhwc) {
    const int sub = static_cast<int>(rest % kSub);
    rest /= kSub;
    const int in_group = static_cast<int>(rest % kTapsPerStage);
    rest /= kTapsPerStage;
    plane = static_cast<int>(rest % kPlanes);
    rest /= kPlanes;
    int chunk;
    if constexpr (kRowHalo) {
      // Stages (filter row, chunk, tap s), s fastest.
      const int s = static_cast<int>(rest % kS);
      rest /= kS;
      chunk = static_cast<int>(rest % kChunks);
      rest /= kChunks;
      tap = static_cast<int>(rest % kR) * kS + s;
      rest /= kR;
    } else {
      chunk = static_cast<int>(rest % kChunks);
      rest /= kChunks;
      tap = static_cast<int>(rest % kTapGroups) * kTapsPerStage + in_group;
      rest /= kTapGroups;
    }
    c = chunk * kStageC + sub * kChunkC + k;
  } else {
    const int s = static_cast<int>(rest % kS);
    rest /= kS;
    plane = static_cast<int>(rest % kPlanes);
    rest /= kPlanes;
    const int r = static_cast<int>(rest % kR);
    rest /= kR;
    const int chunk = static_cast<int>(rest % kChunks);
    rest /= kChunks;
    tap = r * kS + s;
    c = chunk * kChunkC + k;
  }
  const int kb = static_cast<int>(rest % kKBlocks);
  const int group = static_cast<int>(rest / kKBlocks);
  const int k_out = kb * kBN + n;
  const long long filter = static_cast<long long>(group) * kKPerGroup + k_out;
  long long w_index;
  if constexpr (kWeightsTransposed) {
    w_index = ((static_cast<long long>(group) * kCPerGroup + c) * kKPerGroup + k_out) * kTaps + (kTaps - 1 - tap);
  } else {
    w_index = kWeightsKcrs ? (filter * kCPerGroup + c) * kTaps + tap : (filter * kTaps + tap) * kCPerGroup + c;
  }
  return {w_index, plane, c, k_out};
}

// Where w holds a filter's taps together (K,C/groups,R,S, or a transposed problem's
// C,K/groups,R,S), a row's kPackRow channels lie kTaps (or more) apart, and a row a thread
// would read one element a sector. The packing then goes by columns: pack_row's index
// without its tap and plane, one thread a column, which packs every tap and plane of it,
// so that a thread reads each of its channels' kTaps weights together (a filter's
// channels follow one another: a warp's reads are whole sectors) and each weight once
// for both planes. K,R,S,C/groups weights keep a row a thread: a row is one 16-byte run.
enum : bool { kPackByColumns = kWeightsKcrs || kWeightsTransposed };
enum : long long { kPackedColumns = kPackedRows / (static_cast<long long>(kTaps) * kPlanes) };
static_assert(kPackedColumns * kTaps * kPlanes == kPackedRows, "every column has every tap and plane");

// The row of the packing at column `col`, tap `tap` and plane `plane`: pack_row's order.
__device__ __forceinline__ PackIndex pack_row_of(PackIndex col, int tap, int plane) {
  const PackIndex in_tap = col % kBTapRows;
  PackIndex rest = col / kBTapRows;
  PackIndex sub = 0;
  if constexpr (kNhwc) {
    sub = rest % kSub;
    rest /= kSub;
  }
  const PackIndex chunk = rest % kChunks;
  const PackIndex block = rest / kChunks;  // group * kKBlocks + kb
  if constexpr (!kNhwc) {
    return (((block * kChunks + chunk) * kR + tap / kS) * kPlanes + plane) * kS * kBTapRows +
           static_cast<PackIndex>(tap % kS) * kBTapRows + in_tap;
  } else {
    PackIndex outer;
    if constexpr (kRowHalo) {
      outer = (((block * kR + tap / kS) * kChunks + chunk) * kS + tap % kS) * kPlanes + plane;
    } else {
      outer = (((block * kTapGroups + tap / kTapsPerStage) * kChunks + chunk) * kPlanes + plane) * kTapsPerStage +
              tap % kTapsPerStage;
    }
    return (outer * kSub + sub) * kBTapRows + in_tap;
  }
}

// NHWC producer (warpgroup 0, every warp copies): per stage, the tap's kStageC channels
// of each of the tile's kBM pixels in kXVecBytes pieces, the im2col gather done in the
// address (zeros for padding, pixels past the last and channels past the group's), and
// the stage's packed weights in one bulk copy.
__device__ __forceinline__ void produce_nhwc(const Element* __restrict__ x, const Element* __restrict__ packed,
                                             const Element* stages, unsigned full_bar, unsigned empty_bar, int ptid,
                                             int group, int slice, int kb, int pixels) {
  constexpr int kPieces = kARowBytes / kXVecBytes;  // pieces of a pixel's row in a stage
  constexpr int kPieceElems = kXVecBytes / static_cast<int>(sizeof(Element));
  constexpr int kCopyThreads = kLoadWarps * 32;
  static_assert(kBM * kPieces % kCopyThreads == 0, "every copy thread takes the same number of pieces");
  // A thread's piece (its channels) is the same for every pixel it copies.
  const int piece = ptid % kPieces;
  const int m_first = ptid / kPieces;
  const Element* b_src = packed + static_cast<long long>(group * kKBlocks + kb) * kStagesTotal * kBStageElems;
  const Element* x_group = x + group * kCPerGroup + piece * kPieceElems;
  const int first = slice * kSliceStages;
  const int last = min(first + kSliceStages, kStagesTotal);
  const int tiles = (pixels + kBM - 1) / kBM;
  int it = 0;  // stages produced so far, over all tiles
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    for (int k_stage = first; k_stage < last; ++k_stage, ++it) {
      const int st = it % kStages;
      bar_wait(empty_bar + st * 8, ((it / kStages) & 1) ^ 1);
      const int tap = k_stage / kChunks;
      const int c = (k_stage % kChunks) * kStageC;  // the chunk's first channel
      const int dh = tap / kS * kDilationH - kPadH;
      const int dw = tap % kS * kDilationW - kPadW;
      const bool chunk_ok = c + piece * kPieceElems < kCPerGroup;
      const unsigned a_dst = smem_addr(stages + st * kStageElems);
#pragma unroll 1
      for (int m = m_first; m < kBM; m += kCopyThreads / kPieces) {
        const int pixel = tile * kBM + m;
        const int img = pixel / (kP * kQ);
        const int pq = pixel - img * (kP * kQ);
        const int p = pq / kQ;
        const int ih = p * kStrideH + dh;
        const int iw = (pq - p * kQ) * kStrideW + dw;
        const bool ok = chunk_ok && pixel < pixels && static_cast<unsigned>(ih) < static_cast<unsigned>(kH) &&
                        static_cast<unsigned>(iw) < static_cast<unsigned>(kW);
        const Element* src = x_group + ((static_cast<long long>(img) * kH + ih) * kW + iw) * kC + c;
        copy_piece(a_dst + swizzled_byte(m, piece * kXVecBytes), ok ? src : x, ok);
      }
      cp_async_arrive(full_bar + st * 8);
      if (ptid == 0) {
        bar_arrive_expect_tx(full_bar + st * 8, kBStageElems * sizeof(Element));
        bulk_copy(a_dst + kAStageElems * sizeof(Element), b_src + static_cast<long long>(k_stage) * kBStageElems,
                  kBStageElems * sizeof(Element), full_bar + st * 8);
      }
    }
  }
}

// NHWC tiles: kBM consecutive output pixels each in (image, row, column) order, or
// (kRowHalo) kBM of one output row, kRowTilesQ a row. `pixels`: the run's output pixels.
__device__ __forceinline__ int tile_count(int pixels) {
  return kRowHalo ? pixels / kQ * kRowTilesQ : (pixels + kBM - 1) / kBM;
}
// A tile's first output pixel and how many of its kBM rows are output pixels.
struct TileSpan {
  int first, count;
};
__device__ __forceinline__ TileSpan tile_span(int tile, int pixels) {
  if constexpr (kRowHalo) {
    const int row = tile / kRowTilesQ;
    const int q0 = (tile - row * kRowTilesQ) * kBM;
    return {row * kQ + q0, min(static_cast<int>(kBM), kQ - q0)};
  }
  return {tile * kBM, min(static_cast<int>(kBM), pixels - tile * kBM)};
}

// A block's share of the work, one segment at a time: `tile`'s stages [k0, k1) for one
// group and k block. Without stream-K: the block's tiles blockIdx.x, + gridDim.x, ... of
// its split-K slice. With it: the block's run of the items' stages (see kStreamK); `slot`
// is where a split item's raw sums go (-1: the item is the segment's alone).
struct Segment {
  int tile, group, kb, k0, k1, slot;
  long long item;
};
// (Divisors of 1 where there is no stream-K, so that the arithmetic stays well-defined.)
enum : long long { kWorkersDiv = kStreamWorkers > 0 ? kStreamWorkers : 1 };
enum : long long { kSharedStagesDiv = kSharedStages > 0 ? kSharedStages : 1 };
__device__ __forceinline__ long long stream_begin(long long worker) {
  return kSharedBase + worker * kSharedStages / kWorkersDiv;
}
// The block whose run holds shared stage `pos`.
__device__ __forceinline__ int stream_worker_of(long long pos) {
  long long w = (pos - kSharedBase) * kStreamWorkers / kSharedStagesDiv;
  while (w + 1 < kStreamWorkers && stream_begin(w + 1) <= pos) ++w;
  while (w > 0 && stream_begin(w) > pos) --w;
  return static_cast<int>(w);
}
template <typename Body>
__device__ __forceinline__ void for_each_segment(int group, int slice, int kb, int pixels, Body&& body) {
  if constexpr (kStreamK) {
    // Items run k blocks fastest, then groups: neighbouring blocks share x's tile.
    const auto segment = [](long long item, int k0, int k1, int slot) {
      const int rest = static_cast<int>(item % (kKBlocks * kGroups));
      return Segment{
          static_cast<int>(item / (kKBlocks * kGroups)), rest / kKBlocks, rest % kKBlocks, k0, k1, slot, item};
    };
    for (long long item = blockIdx.x; item < kWholeItems; item += kStreamWorkers) {
      body(segment(item, 0, kStagesTotal, -1));
    }
    const long long begin = stream_begin(blockIdx.x);
    const long long end = stream_begin(blockIdx.x + 1);
    for (long long pos = begin; pos < end;) {
      const long long item = pos / kStagesTotal;
      const int k0 = static_cast<int>(pos - item * kStagesTotal);
      const int k1 = static_cast<int>(min(static_cast<long long>(kStagesTotal), k0 + (end - pos)));
      const bool whole = k0 == 0 && k1 == kStagesTotal;
      body(segment(item, k0, k1, whole ? -1 : (pos == begin ? 0 : 1)));
      pos += k1 - k0;
    }
  } else {
    const int tiles = tile_count(pixels);
    const int first = slice * kSliceStages;
    const int last = min(first + kSliceStages, kStagesTotal);
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) body(Segment{tile, group, kb, first, last, -1, 0});
  }
}

// NHWC producer with kATma: one thread. Per stage one im2col copy of the tap's kStageC
// channels for the tile's kBM pixels and the bulk copy of its weights, both completing on
// the full barrier, which expects their bytes from this one arrive. The consumers read the
// stage exactly as the cp.async path leaves it (the swizzle lands chunks where
// swizzled_byte puts them), so nothing downstream changes.
__device__ __forceinline__ void produce_nhwc_tma(const TensorMap* a_map, const TensorMap* b_map,
                                                 const Element* __restrict__ packed, const Element* stages,
                                                 unsigned full_bar, unsigned empty_bar, int group, int slice, int kb,
                                                 int pixels) {
  constexpr unsigned kABytes = kAStageElems * sizeof(Element);
  constexpr unsigned kBBytes = kBStageElems * sizeof(Element);
  // The first fetch of the map otherwise waits on the first copy.
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(a_map) : "memory");
  if constexpr (kBMap) asm volatile("prefetch.tensormap [%0];\n" ::"l"(b_map) : "memory");
  // TF32 weights land on the stage's "landed" barrier, for the rounding warps.
  const unsigned land_bar = kBRound ? land_barriers(empty_bar) : full_bar;
  int it = 0;  // stages produced so far, over all segments
  for_each_segment(group, slice, kb, pixels, [&](const Segment& sg) {
    const Element* b_src = packed + static_cast<long long>(sg.group * kKBlocks + sg.kb) * kStagesTotal * kBStageElems;
    // Where the map's traversal starts: the tile's first output pixel at tap (0, 0). The
    // host's bounding box makes the traversal step through output pixels in y's order.
    const int pixel = tile_span(sg.tile, pixels).first;
    const int img = pixel / kOutPlane;
    const int zpq = pixel - img * kOutPlane;
    const int z = kDepth ? zpq / (kP * kQ) : 0;
    const int pq = zpq - z * (kP * kQ);
    const int p = pq / kQ;
    const int w0 = (pq - p * kQ) * kStrideW - kPadW;
    const int h0 = p * kStrideH - kPadH;
    const int d0 = z * kStrideD - kPadD;
    for (int k_stage = sg.k0; k_stage < sg.k1; ++k_stage, ++it) {
      const int st = it % kStages;
      bar_wait(empty_bar + st * 8, ((it / kStages) & 1) ^ 1);
      const unsigned a_dst = smem_addr(stages + st * kStageElems);
      const unsigned full = land_bar + st * 8;
      if constexpr (kRowHalo) {
        // Stage (r, chunk, s): the weights of tap (r, s); with s == 0 also the input row's
        // pixels for the kS taps, into the ring slot once its last reader, the last tap of
        // the (r, chunk) kHaloRing back, has been released.
        const int s = k_stage % kS;
        const int c_in_group = k_stage / kS % kChunks * kStageC;
        const int r = k_stage / (kS * kChunks);
        if (s == 0) {
          const int last_reader = it - (kHaloRing - 1) * kS - 1;
          if (last_reader >= 0) bar_wait(empty_bar + (last_reader % kStages) * 8, (last_reader / kStages) & 1);
        }
        bar_arrive_expect_tx(full, (s == 0 ? kHaloElems * sizeof(Element) : 0) + kBBytes);
        if (s == 0) {
          im2col_copy(smem_addr(halo_slot(stages, it)), a_map, sg.group * kCPerGroup + c_in_group, w0, h0, img, 0,
                      static_cast<unsigned short>(r * kDilationH), full);
        }
        if constexpr (kBMap) {
          weight_copy(a_dst, b_map, c_in_group, r * kS + s, sg.group * kKPerGroup + sg.kb * kBN, full);
        } else {
          bulk_copy(a_dst, b_src + static_cast<long long>(k_stage) * kBStageElems, kBBytes, full);
        }
        continue;
      }
      const int first_tap = k_stage / kChunks * kTapsPerStage;
      const int c_in_group = (k_stage % kChunks) * kStageC;
      bar_arrive_expect_tx(full, kABytes + kBBytes);
#pragma unroll
      for (int j = 0; j < kTapsPerStage; ++j) {
        const int tap = first_tap + j;
        const unsigned a_tap = a_dst + j * kATapElems * sizeof(Element);
        if constexpr (kDepth) {
          const int rs = tap % (kR * kS);
          im2col_copy_3d(a_tap, a_map, sg.group * kCPerGroup + c_in_group, w0, h0, d0, img,
                         static_cast<unsigned short>(rs % kS * kDilationW),
                         static_cast<unsigned short>(rs / kS * kDilationH),
                         static_cast<unsigned short>(tap / (kR * kS) * kDilationD), full);
        } else {
          im2col_copy(a_tap, a_map, sg.group * kCPerGroup + c_in_group, w0, h0, img,
                      static_cast<unsigned short>(tap % kS * kDilationW),
                      static_cast<unsigned short>(tap / kS * kDilationH), full);
        }
        // The map's weights: each tap's kBN rows, one after the other (the swizzle's atoms).
        if constexpr (kBMap) {
          weight_copy(a_dst + kABytes + j * kBN * kARowBytes, b_map, c_in_group, tap,
                      sg.group * kKPerGroup + sg.kb * kBN, full);
        }
      }
      if constexpr (!kBMap) {
        bulk_copy(a_dst + kABytes, b_src + static_cast<long long>(k_stage) * kBStageElems, kBBytes, full);
      }
    }
  });
}

// kBRound: warps 1-3 of the producer warpgroup round each stage's weights to TF32 in
// place once its copies land (what the pack did once per call), then hand the stage to
// the consumers; the generic-proxy writes are fenced for wgmma's async-proxy reads.
__device__ __forceinline__ void round_stage_weights(const Element* stages, unsigned full_bar, unsigned land_bar,
                                                    int rtid, int group, int slice, int kb, int pixels) {
  constexpr int kVectors = kBPlaneElems * static_cast<int>(sizeof(Element)) / 16;
  int it = 0;
  for_each_segment(group, slice, kb, pixels, [&](const Segment& sg) {
    for (int k_stage = sg.k0; k_stage < sg.k1; ++k_stage, ++it) {
      const int st = it % kStages;
      bar_wait(land_bar + st * 8, (it / kStages) & 1);
      float4* b = reinterpret_cast<float4*>(const_cast<Element*>(stages + st * kStageElems + kAStageElems));
      for (int i = rtid; i < kVectors; i += kRoundThreads) {
        float4 v = b[i];
        v.x = __uint_as_float(to_tf32(v.x));
        v.y = __uint_as_float(to_tf32(v.y));
        v.z = __uint_as_float(to_tf32(v.z));
        v.w = __uint_as_float(to_tf32(v.w));
        b[i] = v;
      }
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      bar_arrive(full_bar + st * 8);
    }
  });
}

// kYPhase: where the twin's output pixel zpq (of an image's kZ x kP x kQ) lies in the
// caller's kYFullZ x kYFullP x kYFullQ plane.
__device__ __forceinline__ long long phase_output(int zpq) {
  const int z = zpq / (kP * kQ);
  const int pq = zpq - z * (kP * kQ);
  const int p = pq / kQ;
  return (static_cast<long long>(z * kYStrideD + kYPhaseD) * kYFullP + p * kYStrideH + kYPhaseH) * kYFullQ +
         (pq - p * kQ) * kYStrideW + kYPhaseW;
}

// Stores output pixel `pixel`'s value pair (channels k_out, k_out + 1 of the group) at
// y_pixel + k_out: one store when pairs are aligned (kPairStores), else one a channel;
// kYNchw: y_pixel + k_out planes of kP x kQ.
__device__ __forceinline__ void store_pair(Element* y_pixel, int k_out, float v0, float v1) {
  if constexpr (kYNchw) {
    constexpr long long kPlaneOut = kYPhase ? static_cast<long long>(kYFullZ) * kYFullP * kYFullQ : kOutPlane;
    if (k_out < kKPerGroup) y_pixel[k_out * kPlaneOut] = from_float(v0);
    if (k_out + 1 < kKPerGroup) y_pixel[(k_out + 1) * kPlaneOut] = from_float(v1);
  } else if constexpr (kPairStores) {
    if (k_out >= kKPerGroup) return;
    if constexpr (k16Bit) {
      const unsigned bits = static_cast<unsigned>(from_float(v0)) | static_cast<unsigned>(from_float(v1)) << 16;
      asm volatile("st.global.b32 [%0], %1;\n" ::"l"(y_pixel + k_out), "r"(bits) : "memory");
    } else {
      asm volatile("st.global.v2.f32 [%0], {%1, %2};\n" ::"l"(y_pixel + k_out), "f"(v0), "f"(v1) : "memory");
    }
  } else {
    if (k_out < kKPerGroup) y_pixel[k_out] = from_float(v0);
    if (k_out + 1 < kKPerGroup) y_pixel[k_out + 1] = from_float(v1);
  }
}

// Channels j * 8 + 2t and j * 8 + 2t + 1 of k block kb in this thread's row h of an m64
// block's accumulators, with bias and ReLU applied; `bias` is the group's.
__device__ __forceinline__ void output_pair(const float (&acc)[kAccum], int j, int h, int t, int kb,
                                            const Element* __restrict__ bias, float (&v)[2]) {
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int k_out = kb * kBN + j * 8 + 2 * t + e;
    v[e] = acc[j * 4 + h * 2 + e];
    if constexpr (kHasBias) v[e] += k_out < kKPerGroup ? to_float(bias[k_out]) : 0.0f;
    if constexpr (kRelu) v[e] = fmaxf(v[e], 0.0f);
  }
}

// kQuadStores: this thread's row (h) of an m64 block's accumulators, bias and ReLU applied,
// rounded, into y at `y_block` (the pixel's first channel of the k block). Over each pair
// of k blocks j, j + 1, even lanes keep block j and take their odd neighbour's pair of it;
// odd lanes keep block j + 1 and take their even neighbour's: four channels a lane, one
// 8-byte store.
__device__ __forceinline__ void store_quads(Element* y_block, const Element* __restrict__ bias,
                                            const float (&acc)[kAccum], int h, int group, int kb, int t, bool store) {
  const bool odd = (t & 1) != 0;
#pragma unroll
  for (int j = 0; j < kBN / 8; j += 2) {
    unsigned bits[2];
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      float v[2];
      output_pair(acc, j + b, h, t, kb, bias + group * kKPerGroup, v);
      bits[b] = static_cast<unsigned>(from_float(v[0])) | static_cast<unsigned>(from_float(v[1])) << 16;
    }
    const unsigned got = __shfl_xor_sync(0xffffffffu, odd ? bits[0] : bits[1], 1);
    const unsigned lo = odd ? got : bits[0];
    const unsigned hi = odd ? bits[1] : got;
    const int k_first = odd ? (j + 1) * 8 + 2 * (t - 1) : j * 8 + 2 * t;  // within the k block
    if (store && kb * kBN + k_first < kKPerGroup) {
      asm volatile("st.global.v2.b32 [%0], {%1, %2};\n" ::"l"(y_block + k_first), "r"(lo), "r"(hi) : "memory");
    }
  }
}

// Split-K: one slice's fp32 sums of output pixel `pixel`, channels k_out and k_out + 1 of
// the group, into the partials ([slice][pixel][kK], 16-byte aligned): one 8-byte store
// where the group's channel count is even.
__device__ __forceinline__ void store_partial_pair(float* partial, int slice, int pixel, int group, int k_out, float v0,
                                                   float v1) {
  float* p = partial + (static_cast<long long>(slice) * kPixels + pixel) * kK + group * kKPerGroup + k_out;
  if constexpr (kKPerGroup % 2 == 0) {
    if (k_out < kKPerGroup) asm volatile("st.global.v2.f32 [%0], {%1, %2};\n" ::"l"(p), "f"(v0), "f"(v1) : "memory");
  } else {
    if (k_out < kKPerGroup) p[0] = v0;
    if (k_out + 1 < kKPerGroup) p[1] = v1;
  }
}

// Stream-K and kYMap: the consumer warpgroups' own barrier (id 1; 0 is __syncthreads's).
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(static_cast<int>(kConsumerThreads)) : "memory");
}

// Stream-K, a split item's segment: this block's raw sums to its slot ([register][thread],
// so that every thread's stores and loads are coalesced), counted in the item's counter;
// the block that counts last adds the other blocks' slots into `acc` and returns true (it
// stores y); the others return false. `flag` is a shared word for the count.
__device__ __forceinline__ bool fix_up_stream_item(float (&acc)[kMB][kAccum], const Segment& sg, float* slots,
                                                   int* counters, int ctid, volatile int* flag) {
  float* mine = slots + (static_cast<long long>(blockIdx.x) * 2 + sg.slot) * kPartialFloats;
#pragma unroll
  for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
    for (int i = 0; i < kAccum; ++i) __stcg(mine + (mb * kAccum + i) * kConsumerThreads + ctid, acc[mb][i]);
  __threadfence();
  consumers_sync();
  const long long first = sg.item * kStagesTotal;
  const int w_first = stream_worker_of(first);
  const int w_last = stream_worker_of(first + kStagesTotal - 1);
  if (ctid == 0) *flag = atomicAdd(counters + sg.item, 1);
  consumers_sync();
  const bool last = *flag == w_last - w_first;
  consumers_sync();  // every thread has read the flag before the next item's count
  if (!last) return false;
  __threadfence();
  for (int w = w_first; w <= w_last; ++w) {
    if (w == static_cast<int>(blockIdx.x)) continue;
    // A block whose run starts inside the item holds it as its first segment (slot 0);
    // one whose run starts before it, as its last (slot 1).
    const float* other = slots + (static_cast<long long>(w) * 2 + (stream_begin(w) >= first ? 0 : 1)) * kPartialFloats;
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
      for (int i = 0; i < kAccum; ++i) acc[mb][i] += __ldcg(other + (mb * kAccum + i) * kConsumerThreads + ctid);
  }
  return true;
}

// kYMap: output pixel row m's channels c, c + 1 of the tile (c even) into the staged boxes at
// shared address `y_stage`: box c / kYBoxC, row m, its 16-byte chunks swizzled as TMA's
// 128-byte swizzle reads them (chunk ^ m % 8), so that the 8 rows of a warp's store hit
// 8 distinct chunks.
__device__ __forceinline__ void stage_y_pair(unsigned y_stage, int m, int c, float v0, float v1) {
  const int byte = c * static_cast<int>(sizeof(Element));
  const int in_box = byte & 127;
  const unsigned at = y_stage + (byte >> 7) * (kBM * 128) + m * 128 + ((((in_box >> 4) ^ m) & 7) << 4) + (in_box & 15);
  if constexpr (k16Bit) {
    const unsigned bits = static_cast<unsigned>(from_float(v0)) | static_cast<unsigned>(from_float(v1)) << 16;
    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(at), "r"(bits) : "memory");
  } else {
    asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(at), "f"(v0), "f"(v1) : "memory");
  }
}

// NHWC consumers: the stages of each segment through wgmma, then bias, ReLU and one
// rounding in registers and the outputs straight to y[pixel][k] (a thread holds channel
// pairs); with split-K, the slice's raw sums to the partials instead; with stream-K, a
// split item through fix_up_stream_item first. `ctid` counts the consumer threads.
__device__ __forceinline__ void consume_nhwc(const Element* stages, const Element* __restrict__ bias,
                                             Element* __restrict__ y, unsigned full_bar, unsigned empty_bar, int ctid,
                                             int cw, int group, int slice, int kb, int pixels, float* slots,
                                             int* counters, volatile int* flag, const TensorMap* y_map,
                                             unsigned y_stage) {
  const int lane = ctid & 31;
  const int cwarp = ctid >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  // This thread's fragment rows (words): pixels (m64 block, warp rows g and g + 8), word t;
  // kASmem: the m64 blocks' byte offsets (consume_stage_nhwc).
  int rows[kMB][2];
#pragma unroll
  for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      rows[mb][h] = kASmem ? (cw * kMB + mb) * 64 * kARowBytes
                           : ((cw * kMB + mb) * 64 + cwarp * 16 + g + h * 8) * (kARowBytes / 4) + t;
    }
  float acc[kMB][kAccum];
  unsigned frag[2][kPlanes][kMB][4];
  float part[kSplit == 3 ? kMB : 1][kAccum];

  int it = 0;  // stages consumed so far, over all segments
  for_each_segment(group, slice, kb, pixels, [&](const Segment& sg) {
    const int count = sg.k1 - sg.k0;
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
      for (int i = 0; i < kAccum; ++i) acc[mb][i] = 0.0f;
    for (int k_stage = 0; k_stage < count; k_stage += 2) {
      run_stage<0>(it + k_stage, k_stage > 0, k_stage + 1 < count, acc, part, frag, stages, full_bar, empty_bar, rows);
      if (k_stage + 1 < count) {
        run_stage<1>(it + k_stage + 1, true, true, acc, part, frag, stages, full_bar, empty_bar, rows);
      }
    }
    it += count;
    wgmma_wait<0>();
    if (kSplit == 1) release_stage(empty_bar + ((it - 1) % kStages) * 8);
    if constexpr (kStreamK) {
      if (sg.slot >= 0 && !fix_up_stream_item(acc, sg, slots, counters, cw * 128 + ctid, flag)) return;
    }
    const TileSpan span = tile_span(sg.tile, pixels);
    if constexpr (kYMap) {
      // A pass's boxes: TMA has read what was last staged in its buffer (this tile's or the
      // last tile's pass) before they are rewritten (the storing thread waits).
      constexpr int kPassBoxes = kYBoxes / kYPasses;
      const bool storer = cw == 0 && ctid == 0;
#pragma unroll
      for (int pass = 0; pass < kYPasses; ++pass) {
        const unsigned buffer = y_stage + pass % kYBuffers * (kPassBoxes * kBM * 128);
        if (storer) bulk_wait_read<kYBuffers - 1>();
        consumers_sync();
#pragma unroll
        for (int mb = 0; mb < kMB; ++mb) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int m = (cw * kMB + mb) * 64 + cwarp * 16 + g + h * 8;
#pragma unroll
            for (int j = 0; j < kBN / 8; ++j) {
              if (j * 8 / kYBoxC / kPassBoxes != pass) continue;
              float v[2];
              output_pair(acc[mb], j, h, t, sg.kb, bias, v);  // one group
              stage_y_pair(buffer, m, j * 8 - pass * kPassBoxes * kYBoxC + 2 * t, v[0], v[1]);
            }
          }
        }
        fence_proxy_async();
        consumers_sync();
        if (storer) {
#pragma unroll
          for (int b = 0; b < kPassBoxes; ++b) {
            const int c = sg.kb * kBN + (pass * kPassBoxes + b) * kYBoxC;
            if (c < kK) {
              y_box_store(y_map, buffer + b * (kBM * 128), c, kRowHalo ? span.first % kQ : span.first,
                          kRowHalo ? span.first / kQ : 0);
            }
          }
          bulk_commit();
        }
      }
      return;
    }

#pragma unroll
    for (int mb = 0; mb < kMB; ++mb) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int m = (cw * kMB + mb) * 64 + cwarp * 16 + g + h * 8;
        const int pixel = span.first + m;
        if constexpr (kQuadStores && kSplitK == 1) {
          // Every lane shuffles, whatever its pixel: the stores alone are predicated.
          store_quads(y + static_cast<long long>(pixel) * kK + sg.group * kKPerGroup + sg.kb * kBN, bias, acc[mb], h,
                      sg.group, sg.kb, t, kRowHalo ? m < span.count : pixel < pixels);
          continue;
        }
        if (kRowHalo ? m >= span.count : pixel >= pixels) continue;
        if constexpr (kSplitK > 1) {
#pragma unroll
          for (int j = 0; j < kBN / 8; ++j) {
            store_partial_pair(reinterpret_cast<float*>(y), slice, pixel, sg.group, sg.kb * kBN + j * 8 + 2 * t,
                               acc[mb][j * 4 + h * 2], acc[mb][j * 4 + h * 2 + 1]);
          }
          continue;
        }
        Element* y_pixel;
        if constexpr (kYNchw) {
          const int img = pixel / kOutPlane;
          const int zpq = pixel - img * kOutPlane;
          long long at = zpq;
          if constexpr (kYPhase) at = phase_output(zpq);
          constexpr long long kPlaneY = kYPhase ? static_cast<long long>(kYFullZ) * kYFullP * kYFullQ : kOutPlane;
          y_pixel = y + (static_cast<long long>(img) * kK + sg.group * kKPerGroup) * kPlaneY + at;
        } else {
          y_pixel = y + static_cast<long long>(pixel) * kK + sg.group * kKPerGroup;
        }
#pragma unroll
        for (int j = 0; j < kBN / 8; ++j) {
          // The bias read here rather than held across the tile: 2 x kBN / 8 registers the
          // accumulators need more.
          float v[2];
          output_pair(acc[mb], j, h, t, sg.kb, bias + sg.group * kKPerGroup, v);
          store_pair(y_pixel, sg.kb * kBN + j * 8 + 2 * t, v[0], v[1]);
        }
      }
    }
  });
  // The last boxes' writes are done before the block's shared memory goes.
  if constexpr (kYMap) {
    if (cw == 0 && ctid == 0) bulk_wait_all();
  }
}

}  // namespace wg

// Weights -> the packing pack_row describes: TF32-rounded (one plane), the exact
// big/small split (two planes) or 16-bit as they are; zero where the block or the chunk
// runs past the group's channels. One 16-byte row a thread, one 16-byte store.
extern "C" __global__ void __launch_bounds__(256)
    CONVJIT_CAT(CONVJIT_KERNEL_NAME, _pack)(const wg::Element* __restrict__ w, wg::Element* __restrict__ packed) {
  using namespace wg;
  // Between consecutive channels in w.
  constexpr long long kStep = kWeightsTransposed ? static_cast<long long>(kKPerGroup) * kTaps
                              : kWeightsKcrs     ? kTaps
                                                 : 1;
  if constexpr (kPackByColumns) {
    for (PackIndex col = blockIdx.x * 256 + threadIdx.x; col < kPackedColumns; col += 256 * gridDim.x) {
#pragma unroll(kTaps <= 9 ? kTaps : 1)
      for (int tap = 0; tap < kTaps; ++tap) {
        const PackRow at = pack_row(pack_row_of(col, tap, 0));
        Element raw[kPackRow];
#pragma unroll
        for (int j = 0; j < kPackRow; ++j) {
          raw[j] = at.k_out < kKPerGroup && at.c + j < kCPerGroup ? w[at.w_index + j * kStep] : Element{};
        }
#pragma unroll
        for (int plane = 0; plane < kPlanes; ++plane) {
          alignas(16) Element v[kPackRow];
#pragma unroll
          for (int j = 0; j < kPackRow; ++j) v[j] = packed_value(raw[j], plane);
          *reinterpret_cast<uint4*>(packed + static_cast<long long>(pack_row_of(col, tap, plane)) * kPackRow) =
              *reinterpret_cast<const uint4*>(v);
        }
      }
    }
  } else {
    for (PackIndex row = blockIdx.x * 256 + threadIdx.x; row < kPackedRows; row += 256 * gridDim.x) {
      const PackRow at = pack_row(row);
      alignas(16) Element v[kPackRow];
#pragma unroll
      for (int j = 0; j < kPackRow; ++j) {
        v[j] = at.k_out < kKPerGroup && at.c + j < kCPerGroup ? packed_value(w[at.w_index + j * kStep], at.plane)
                                                              : Element{};
      }
      *reinterpret_cast<uint4*>(packed + static_cast<long long>(row) * kPackRow) = *reinterpret_cast<const uint4*>(v);
    }
  }
}

// kATma kernels take the im2col tensor map after y (before a dynamic batch's parameter).
#ifdef CONVJIT_WGMMA_TMA
#define CONVJIT_A_MAP_PARAM , const __grid_constant__ wg::TensorMap a_map
#define CONVJIT_A_MAP (&a_map)
#else
#define CONVJIT_A_MAP_PARAM
#define CONVJIT_A_MAP nullptr
#endif
// kBMap kernels take the weights' tiled map after the x map.
#ifdef CONVJIT_WGMMA_B_MAP
#define CONVJIT_B_MAP_PARAM , const __grid_constant__ wg::TensorMap b_map
#define CONVJIT_B_MAP (&b_map)
static_assert(wg::kBMap, "CONVJIT_WGMMA_B_MAP declares the w map parameter of kBMap kernels only");
#else
#define CONVJIT_B_MAP_PARAM
#define CONVJIT_B_MAP nullptr
static_assert(!wg::kBMap, "kBMap kernels need their w map parameter (CONVJIT_WGMMA_B_MAP)");
#endif
// kYMap kernels take y's tiled map after the w map.
#ifdef CONVJIT_WGMMA_Y_MAP
#define CONVJIT_Y_MAP_PARAM , const __grid_constant__ wg::TensorMap y_map
#define CONVJIT_Y_MAP (&y_map)
static_assert(wg::kYMap && !wg::kYNchw, "CONVJIT_WGMMA_Y_MAP declares the y map parameter of kYMap kernels only");
#else
#define CONVJIT_Y_MAP_PARAM
#define CONVJIT_Y_MAP nullptr
static_assert(!wg::kYMap, "kYMap kernels need their y map parameter (CONVJIT_WGMMA_Y_MAP)");
#endif
// Stream-K kernels take their workspace after the maps: kStreamWorkers x 2 slots of raw
// sums, then one counter an item.
#ifdef CONVJIT_WGMMA_STREAM_K
#define CONVJIT_STREAM_PARAM , float* __restrict__ stream_workspace
#define CONVJIT_STREAM_WORKSPACE stream_workspace
static_assert(wg::kStreamK, "CONVJIT_WGMMA_STREAM_K declares the workspace parameter of stream-K kernels only");
#else
#define CONVJIT_STREAM_PARAM
#define CONVJIT_STREAM_WORKSPACE nullptr
static_assert(!wg::kStreamK, "stream-K kernels need their workspace parameter (CONVJIT_WGMMA_STREAM_K)");
#endif
#ifdef CONVJIT_WGMMA_TMA
static_assert(wg::kATma, "CONVJIT_WGMMA_TMA declares the map parameter of kATma kernels only");
#else
static_assert(!wg::kATma, "kATma kernels need their map parameter (CONVJIT_WGMMA_TMA)");
#endif

extern "C" __global__ void __launch_bounds__(wg::kThreads, 1)
    CONVJIT_KERNEL_NAME(const wg::Element* __restrict__ x, const wg::Element* __restrict__ packed,
                        const wg::Element* __restrict__ bias,
                        wg::Element* __restrict__ y CONVJIT_A_MAP_PARAM CONVJIT_B_MAP_PARAM CONVJIT_Y_MAP_PARAM
                            CONVJIT_STREAM_PARAM CONVJIT_BATCH_PARAM) {
  using namespace wg;
  const int tiles = CONVJIT_BATCH(kN) * kTilesP * kTilesQ;  // NCHW patches of the run
  extern __shared__ __align__(128) unsigned char smem[];
  const unsigned full_bar = smem_addr(smem);              // kStages x 8 bytes
  const unsigned empty_bar = full_bar + kStages * 8;      // kStages x 8 bytes
  const unsigned out_full_bar = empty_bar + kStages * 8;  // staged outputs ready
  const unsigned out_empty_bar = out_full_bar + 8;        // staged outputs written out
  const unsigned land_bar = land_barriers(empty_bar);     // kBRound: kStages x 8 bytes
  // kATma: the first swizzle-atom boundary past the barriers (kAlignSlack pays for it).
  const unsigned slack = kATma ? (kSwizzleAtom - (smem_addr(smem) + kBarrierBytes) % kSwizzleAtom) % kSwizzleAtom : 0u;
  Element* stages = reinterpret_cast<Element*>(smem + kBarrierBytes + slack);
  Element* out_tile = stages + kStages * kStageElems + kHaloRingElems;
  // kYMap's boxes: after the stages, on a swizzle atom as they are.
  const unsigned y_stage = smem_addr(out_tile + kOutElems);

  const int tid = threadIdx.x;
  const int warpgroup = tid / 128;
  const int group = blockIdx.z;
  const int kb = blockIdx.y;

  if (tid == 0) {
#pragma unroll
    for (int st = 0; st < kStages; ++st) {
      // cp.async arrivals + the bulk copy's; with kATma the one arrive that expects both copies.
      bar_init(full_bar + st * 8, kBRound ? kRoundThreads : kATma ? 1 : kLoadWarps * 32 + 1);
      if constexpr (kBRound) bar_init(land_bar + st * 8, 1);
      bar_init(empty_bar + st * 8, kConsumers * 128);  // every consumer thread arrives
    }
    if constexpr (kStoreWarps) {
      bar_init(out_full_bar, kConsumers * 128);
      bar_init(out_empty_bar, (4 - kLoadWarps) * 32);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  // A block walks patches blockIdx.x, + gridDim.x, ... (one patch when the grid has one
  // block per patch). The stage ring runs on across patches, so the producer fills the
  // next patch's stages while the consumers are still storing this one's outputs.
  if (warpgroup == 0) {
    // ---------------- producer ----------------
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if constexpr (kNhwc && kATma) {
      if (tid == 0) {
        produce_nhwc_tma(CONVJIT_A_MAP, CONVJIT_B_MAP, packed, stages, full_bar, empty_bar, group / kSplitK,
                         group % kSplitK, kb, CONVJIT_BATCH(kN) * kOutPlane);
      } else if (kBRound && tid >= 32) {
        round_stage_weights(stages, full_bar, land_bar, tid - 32, group / kSplitK, group % kSplitK, kb,
                            CONVJIT_BATCH(kN) * kOutPlane);
      }
      return;
    } else if constexpr (kNhwc) {
      produce_nhwc(x, packed, stages, full_bar, empty_bar, tid, group / kSplitK, group % kSplitK, kb,
                   CONVJIT_BATCH(kN) * kOutPlane);
      return;
    }
    const int ptid = tid;
    const int lane = ptid & 31;
    const int pwarp = ptid >> 5;
    if constexpr (kStoreWarps) {
      if (pwarp >= kLoadWarps) {
        // ---- store warps: staged output rows of each patch to NCHW ----
        const int swarp = pwarp - kLoadWarps;
        int local = 0;  // patches of this block so far
        for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ++local) {
          const Patch patch = patch_of(tile);
          bar_wait(out_full_bar, local & 1);
          for (int row = swarp; row < kBN * kBP; row += 4 - kLoadWarps) {
            const int n = row / kBP;
            const int pi = row % kBP;
            const int k_out = kb * kBN + n;
            const int p = patch.p0 + pi;
            if (k_out >= kKPerGroup || p >= kP) continue;
            Element* y_row =
                y + ((static_cast<long long>(patch.img) * kK + group * kKPerGroup + k_out) * kP + p) * kQ + patch.q0;
            const Element* src = out_tile + n * kOutStride + pi * kBQ;
            // Every load of the row issued before its stores: one shared-memory latency a
            // row, not one a store (kBQ / 32 of them), which bound the short patches.
            constexpr int kPerLane = (kBQ + 31) / 32;
            Element v[kPerLane];
#pragma unroll
            for (int i = 0; i < kPerLane; ++i) {
              if (kBQ % 32 == 0 || lane + 32 * i < kBQ) v[i] = src[lane + 32 * i];
            }
#pragma unroll
            for (int i = 0; i < kPerLane; ++i) {
              const int q = lane + 32 * i;
              if ((kBQ % 32 == 0 || q < kBQ) && patch.q0 + q < kQ) y_row[q] = v[i];
            }
          }
          bar_arrive(out_empty_bar);
        }
        return;
      }
    }
    const Element* b_src = packed + static_cast<long long>(group * kKBlocks + kb) * kChunks * kR * kBStageElems;
    int it = 0;  // stages produced so far, over all patches
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      const Patch patch = patch_of(tile);
      const Element* x_img = x + (static_cast<long long>(patch.img) * kC + group * kCPerGroup) * kPlane;
      const int iw_first = patch.q0 * kStrideW - kPadW;
      // 16-bit rows start at the even column at or before the first one (pair copies).
      const int iw_base = k16Bit ? iw_first - (iw_first & 1) : iw_first;
      for (int k_stage = 0; k_stage < kStagesTotal; ++k_stage, ++it) {
        const int st = it % kStages;
        const unsigned phase = (it / kStages) & 1;
        bar_wait(empty_bar + st * 8, phase ^ 1);
        const int chunk = k_stage / kR;
        const int r = k_stage % kR;
        const unsigned a_dst = smem_addr(stages + st * kStageElems);
        // One warp per (channel, patch row); lanes walk the row's columns (16-bit: pairs).
        for (int cr = pwarp; cr < kChunkC * kBP; cr += kLoadWarps) {
          const int c = cr / kBP;
          const int pi = cr % kBP;
          const int ih = (patch.p0 + pi) * kStrideH - kPadH + r * kDilationH;
          const bool row_ok = chunk * kChunkC + c < kCPerGroup && static_cast<unsigned>(ih) < static_cast<unsigned>(kH);
          const Element* src_row = x_img + (chunk * kChunkC + c) * kPlane + static_cast<long long>(ih) * kW + iw_base;
          const unsigned dst_row = a_dst + (c * kChanStride + pi * kRowElems) * sizeof(Element);
          constexpr int kCopies = k16Bit ? kHaloPairs : kHaloW;
          constexpr int kStep = k16Bit ? 2 : 1;
#pragma unroll 2
          for (int j = lane; j < kCopies; j += 32) {
            const bool ok = row_ok && static_cast<unsigned>(iw_base + j * kStep) < static_cast<unsigned>(kW);
            cp_async4(dst_row + j * 4, ok ? src_row + j * kStep : x, ok);
          }
        }
        cp_async_arrive(full_bar + st * 8);
        if (ptid == 0) {
          bar_arrive_expect_tx(full_bar + st * 8, kBStageElems * sizeof(Element));
          bulk_copy(a_dst + kAStageElems * sizeof(Element), b_src + static_cast<long long>(k_stage) * kBStageElems,
                    kBStageElems * sizeof(Element), full_bar + st * 8);
        }
      }
    }
  } else {
    // ---------------- consumers ----------------
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    if constexpr (kNhwc) {
      float* slots = CONVJIT_STREAM_WORKSPACE;
      int* counters = reinterpret_cast<int*>(slots + 2ll * kStreamWorkers * kPartialFloats);
      // The stream-K count's shared word: the barrier area's last 8 bytes.
      volatile int* flag = reinterpret_cast<volatile int*>(smem + kBarrierBytes - 8);
      consume_nhwc(stages, bias, y, full_bar, empty_bar, tid - 128 * warpgroup, warpgroup - 1, group / kSplitK,
                   group % kSplitK, kb, CONVJIT_BATCH(kN) * kOutPlane, slots, counters, flag, CONVJIT_Y_MAP, y_stage);
      return;
    }
    const int ctid = tid - 128 * warpgroup;  // thread in its warpgroup
    const int cw = warpgroup - 1;
    const int lane = ctid & 31;
    const int cwarp = ctid >> 5;
    const int g = lane >> 2;
    const int t = lane & 3;
    // This thread's fragment rows: pixels (m64 block, warp rows g and g + 8), k slot t.
    int row_offset[kMB][2];
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int m = (cw * kMB + mb) * 64 + cwarp * 16 + g + h * 8;
        row_offset[mb][h] = (k16Bit ? 2 * t : t) * kChanStride + (m / kBQ) * kRowElems + (m % kBQ) * kStrideW;
      }
    float acc[kMB][kAccum];
    unsigned frag[2][kPlanes][kMB][4];
    // 3xTF32: each stage sums into a fresh partial that is then added with fp32 FADDs, so
    // the tensor cores' truncating accumulation never runs over the whole reduction.
    float part[kSplit == 3 ? kMB : 1][kAccum];

    int it = 0;     // stages consumed so far, over all patches
    int local = 0;  // patches of this block so far
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ++local) {
      const Patch patch = patch_of(tile);
      // 16-bit rows were copied from an even column: an odd first column sits one further.
      const int shift = k16Bit ? (patch.q0 * kStrideW - kPadW) & 1 : 0;
      int a_offset[kMB][2];
#pragma unroll
      for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
        for (int h = 0; h < 2; ++h) a_offset[mb][h] = row_offset[mb][h] + shift;
#pragma unroll
      for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
        for (int i = 0; i < kAccum; ++i) acc[mb][i] = 0.0f;
      for (int k_stage = 0; k_stage < kStagesTotal; k_stage += 2) {
        run_stage<0>(it + k_stage, k_stage > 0, k_stage + 1 < kStagesTotal, acc, part, frag, stages, full_bar,
                     empty_bar, a_offset);
        if (k_stage + 1 < kStagesTotal) {
          run_stage<1>(it + k_stage + 1, true, true, acc, part, frag, stages, full_bar, empty_bar, a_offset);
        }
      }
      it += kStagesTotal;
      wgmma_wait<0>();
      // TF32 hands a stage back one stage late; the patch's last one goes now.
      if (kSplit == 1) release_stage(empty_bar + ((it - 1) % kStages) * 8);

      // Epilogue in registers: bias, optional ReLU, one rounding; then to NCHW, directly
      // or through the staged tile and the store warps.
      if constexpr (kStoreWarps) bar_wait(out_empty_bar, (local & 1) ^ 1);
#pragma unroll
      for (int mb = 0; mb < kMB; ++mb) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int m = (cw * kMB + mb) * 64 + cwarp * 16 + g + h * 8;
          const int p = patch.p0 + m / kBQ;
          const int q = patch.q0 + m % kBQ;
          if (!kStoreWarps && (p >= kP || q >= kQ)) continue;
          Element* y_pixel = y + (static_cast<long long>(patch.img) * kK + group * kKPerGroup) * kP * kQ +
                             static_cast<long long>(p) * kQ + q;
#pragma unroll
          for (int j = 0; j < kBN / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int n = j * 8 + 2 * t + e;
              const int k_out = kb * kBN + n;
              float v = acc[mb][j * 4 + h * 2 + e];
              if constexpr (kHasBias) v += k_out < kKPerGroup ? to_float(bias[group * kKPerGroup + k_out]) : 0.0f;
              if constexpr (kRelu) v = fmaxf(v, 0.0f);
              if constexpr (kStoreWarps) {
                out_tile[n * kOutStride + m] = from_float(v);
              } else if (k_out < kKPerGroup) {
                y_pixel[static_cast<long long>(k_out) * kP * kQ] = from_float(v);
              }
            }
          }
        }
      }
      if constexpr (kStoreWarps) bar_arrive(out_full_bar);
    }
  }
}

#ifdef CONVJIT_WGMMA_SPLIT_K
namespace wg {
// Output i of the partial sums' order ([pixel][kK]) summed over the slices, with the bias
// and the activation. Slices lie kPixels x kK apart (the full batch's); a run's outputs
// are a prefix.
__device__ __forceinline__ float reduced(const float* __restrict__ partial, const Element* __restrict__ bias,
                                         long long i) {
  constexpr long long kSliceStride = static_cast<long long>(kPixels) * kK;
  float v = 0.0f;
#pragma unroll
  for (int slice = 0; slice < kSplitK; ++slice) v += partial[slice * kSliceStride + i];
  if constexpr (kHasBias) v += to_float(bias[i % kK]);
  if constexpr (kRelu) v = fmaxf(v, 0.0f);
  return v;
}
}  // namespace wg

// Split-K's second pass: y = epilogue(sum of the kSplitK slices' partials + bias), over the
// run's batch. Defined (CONVJIT_WGMMA_SPLIT_K, from the prologue) only where kSplitK > 1:
// other kernels keep their entry points. NHWC y is the partials' order: one output a
// thread and step. The route's y is the caller's NCHW (kYPhase: a phase of it), a channel
// plane apart where the partials are a channel apart: 32 x 32 tiles of (pixel, channel)
// through shared memory, so that a warp reads 32 channels of a pixel and writes 32 pixels
// of a channel (one run of a plane, or two where the tile crosses an image).
extern "C" __global__ void __launch_bounds__(256)
    CONVJIT_CAT(CONVJIT_KERNEL_NAME, _reduce)(const float* __restrict__ partial, const wg::Element* __restrict__ bias,
                                              wg::Element* __restrict__ y CONVJIT_BATCH_PARAM) {
  using namespace wg;
  const long long pixels = static_cast<long long>(CONVJIT_BATCH(kN)) * kOutPlane;
#ifndef CONVJIT_WGMMA_VIA_NHWC
  static_assert(!kYPhase, "a phase's outputs are the route's");
  for (long long i = blockIdx.x * 256ll + threadIdx.x; i < pixels * kK; i += 256ll * gridDim.x) {
    y[i] = from_float(reduced(partial, bias, i));
  }
#else
  constexpr int kKTiles = (kK + 31) / 32;
  constexpr long long kPlaneY = kYPhase ? static_cast<long long>(kYFullZ) * kYFullP * kYFullQ : kOutPlane;
  __shared__ float tile[32][33];
  const int lane = threadIdx.x % 32;
  const long long tiles = (pixels + 31) / 32 * kKTiles;
  for (long long t = blockIdx.x; t < tiles; t += gridDim.x) {
    const long long p0 = t / kKTiles * 32;
    const int k0 = static_cast<int>(t % kKTiles) * 32;
    for (int r = threadIdx.x / 32; r < 32; r += 8) {
      if (p0 + r < pixels && k0 + lane < kK) tile[r][lane] = reduced(partial, bias, (p0 + r) * kK + k0 + lane);
    }
    __syncthreads();
    const long long pixel = p0 + lane;
    const long long img = pixel / kOutPlane;
    const int zpq = static_cast<int>(pixel - img * kOutPlane);
    long long at = zpq;
    if constexpr (kYPhase) at = phase_output(zpq);
    for (int r = threadIdx.x / 32; r < 32; r += 8) {
      if (pixel < pixels && k0 + r < kK) y[(img * kK + k0 + r) * kPlaneY + at] = from_float(tile[lane][r]);
    }
    // The next tile's writes wait for this one's reads.
    __syncthreads();
  }
#endif
}
#endif  // CONVJIT_WGMMA_SPLIT_K

#ifdef CONVJIT_WGMMA_VIA_NHWC
// NCHW through the NHWC kernel: the caller's x is copied into the workspace as NHWC before
// the convolution (device::transpose_images, one matrix an image); the main kernel
// (kYNchw) or split-K's reduce pass stores the caller's NCHW y.
static_assert(wg::kNhwc && wg::kWeightsKcrs && wg::kATma,
              "the route's NHWC TMA kernel reads NCHW weights (spec::kWeightsKcrs)");
#ifdef CONVJIT_DYNAMIC_BATCH
static_assert(false, "the route is for static batches: its regions and map are sized once");
#endif

extern "C" __global__ void __launch_bounds__(256)
    CONVJIT_CAT(CONVJIT_KERNEL_NAME, _x_to_nhwc)(const wg::Element* __restrict__ x, wg::Element* __restrict__ x_nhwc) {
  device::transpose_images<wg::Element, wg::kN, wg::kC, static_cast<long long>(wg::kD) * wg::kH * wg::kW>(x, x_nhwc);
}

#ifdef CONVJIT_WGMMA_Y_PHASE
// Every output the bias alone (and its activation): what a transposed problem's outputs
// outside its receiving phase hold; the main kernel stores the phase's over them.
extern "C" __global__ void __launch_bounds__(256)
    CONVJIT_CAT(CONVJIT_KERNEL_NAME, _fill)(const wg::Element* __restrict__ bias, wg::Element* __restrict__ y) {
  using namespace wg;
  constexpr long long kPlaneFull = static_cast<long long>(kYFullZ) * kYFullP * kYFullQ;
  constexpr long long kAll = static_cast<long long>(kN) * kK * kPlaneFull;
  for (long long i = blockIdx.x * 256ll + threadIdx.x; i < kAll; i += 256ll * gridDim.x) {
    float v = 0.0f;
    if constexpr (kHasBias) v = to_float(bias[(i / kPlaneFull) % kK]);
    if constexpr (kRelu) v = fmaxf(v, 0.0f);
    y[i] = from_float(v);
  }
}
#endif
#endif  // CONVJIT_WGMMA_VIA_NHWC
