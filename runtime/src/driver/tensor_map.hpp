#pragma once
// TMA tensor maps, encoded on the host through the dlopen'd driver (no device work: the
// map is a 128-byte value a kernel takes as a parameter).

#include <cuda.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace convjit {

// cuTensorMapEncodeIm2col's arguments for a rank-4 tensor (dimensions innermost first:
// C, W, H, N) or a rank-5 one (C, W, H, D, N); each field means what the driver's
// documentation says of it, read to the rank's length.
struct Im2colMapArgs {
  CUtensorMapDataType dtype = CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
  const void* address = nullptr;
  unsigned rank = 4;
  std::uint64_t dims[5] = {};
  std::uint64_t strides[4] = {};  // bytes, of dimensions 1 to rank - 1
  int lower[3] = {};              // pixel box lower corner, W, H [, D]
  int upper[3] = {};              // pixel box upper corner, W, H [, D]
  unsigned channels_per_pixel = 0;
  unsigned pixels_per_column = 0;
  unsigned element_strides[5] = {};
  CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_128B;
  // A pixel's channel box is one 128-byte line; wider promotion would fetch neighbours'
  // channels that another stage reads anyway, so no more than the line is asked for.
  CUtensorMapL2promotion l2_promotion = CU_TENSOR_MAP_L2_PROMOTION_L2_128B;
};

// cuTensorMapEncodeTiled's arguments for a rank-3 tensor (dimensions innermost first).
struct TiledMapArgs {
  CUtensorMapDataType dtype = CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
  const void* address = nullptr;
  std::uint64_t dims[3] = {};
  std::uint64_t strides[2] = {};  // bytes, of dimensions 1 and 2
  std::uint32_t box[3] = {};
  std::uint32_t element_strides[3] = {1, 1, 1};
  CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_128B;
  CUtensorMapL2promotion l2_promotion = CU_TENSOR_MAP_L2_PROMOTION_L2_128B;
};

// Every argument, readable: what an encode failure reports.
std::string describe(const Im2colMapArgs& args);
std::string describe(const TiledMapArgs& args);

// The map for `args`. Zero fill out of bounds (never the NaN fill: padding must add
// nothing), no interleave. Throws Error (kDriver, or kContextLost for a sticky error)
// naming `what`, every argument and the driver's text when the driver refuses.
CUtensorMap encode_im2col_map(const Im2colMapArgs& args, std::string_view what);
// The same for a tiled map (zero fill out of bounds, no interleave).
CUtensorMap encode_tiled_map(const TiledMapArgs& args, std::string_view what);

}  // namespace convjit
