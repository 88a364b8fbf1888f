#include "driver/tensor_map.hpp"

#include <fmt/format.h>

#include "driver/cuda_driver.hpp"

namespace convjit {

std::string describe(const Im2colMapArgs& a) {
  if (a.rank == 5) {
    return fmt::format(
        "data type {}, address {}, dims (C, W, H, D, N) {}x{}x{}x{}x{}, strides {}/{}/{}/{} bytes, pixel box corners "
        "W [{}, {}] H [{}, {}] D [{}, {}], {} channels a pixel, {} pixels a column, element strides {}/{}/{}/{}/{}, "
        "swizzle {}, L2 promotion {}",
        static_cast<int>(a.dtype), a.address, a.dims[0], a.dims[1], a.dims[2], a.dims[3], a.dims[4], a.strides[0],
        a.strides[1], a.strides[2], a.strides[3], a.lower[0], a.upper[0], a.lower[1], a.upper[1], a.lower[2],
        a.upper[2], a.channels_per_pixel, a.pixels_per_column, a.element_strides[0], a.element_strides[1],
        a.element_strides[2], a.element_strides[3], a.element_strides[4], static_cast<int>(a.swizzle),
        static_cast<int>(a.l2_promotion));
  }
  return fmt::format(
      "data type {}, address {}, dims (C, W, H, N) {}x{}x{}x{}, strides {}/{}/{} bytes, pixel box corners W [{}, {}] "
      "H [{}, {}], {} channels a pixel, {} pixels a column, element strides {}/{}/{}/{}, swizzle {}, L2 promotion {}",
      static_cast<int>(a.dtype), a.address, a.dims[0], a.dims[1], a.dims[2], a.dims[3], a.strides[0], a.strides[1],
      a.strides[2], a.lower[0], a.upper[0], a.lower[1], a.upper[1], a.channels_per_pixel, a.pixels_per_column,
      a.element_strides[0], a.element_strides[1], a.element_strides[2], a.element_strides[3],
      static_cast<int>(a.swizzle), static_cast<int>(a.l2_promotion));
}

std::string describe(const TiledMapArgs& a) {
  return fmt::format(
      "data type {}, address {}, dims {}x{}x{}, strides {}/{} bytes, box {}x{}x{}, element strides {}/{}/{}, swizzle "
      "{}, L2 promotion {}",
      static_cast<int>(a.dtype), a.address, a.dims[0], a.dims[1], a.dims[2], a.strides[0], a.strides[1], a.box[0],
      a.box[1], a.box[2], a.element_strides[0], a.element_strides[1], a.element_strides[2], static_cast<int>(a.swizzle),
      static_cast<int>(a.l2_promotion));
}

namespace {
// Runs `encode` (a cuTensorMapEncode* call) into an over-aligned slot of this frame and
// returns the map, or fails naming `kind`, `entry`, the arguments (described only then: a
// run encodes its maps every time) and the driver's text.
// NOTE: never straight into the caller's return slot: GCC built that slot 16-byte aligned
// here (the fake driver refused the map), and the driver requires 64. A member of an
// over-aligned local is not named-return elided.
template <typename Encode, typename Args>
CUtensorMap encode_map(Encode&& encode, std::string_view kind, std::string_view entry, const Args& args,
                       std::string_view what) {
  struct alignas(128) Slot {
    CUtensorMap map;
  } slot{};
  auto& drv = CudaDriver::get();
  const CUresult res = encode(drv, &slot.map);
  if (res != CUDA_SUCCESS) {
    fail(error_code_of(res), "{}: encoding the {} tensor map ({}): {} failed → {}", what, kind, describe(args), entry,
         drv.describe(res));
  }
  return slot.map;
}
}  // namespace

CUtensorMap encode_im2col_map(const Im2colMapArgs& a, std::string_view what) {
  return encode_map(
      [&](CudaDriver& drv, CUtensorMap* map) {
        // NOTE: the driver's signature takes a non-const address; it only records it.
        return drv.cuTensorMapEncodeIm2col(map, a.dtype, a.rank, const_cast<void*>(a.address), a.dims, a.strides,
                                           a.lower, a.upper, a.channels_per_pixel, a.pixels_per_column,
                                           a.element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, a.swizzle, a.l2_promotion,
                                           CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
      },
      "im2col", "cuTensorMapEncodeIm2col", a, what);
}

CUtensorMap encode_tiled_map(const TiledMapArgs& a, std::string_view what) {
  return encode_map(
      [&](CudaDriver& drv, CUtensorMap* map) {
        return drv.cuTensorMapEncodeTiled(map, a.dtype, 3, const_cast<void*>(a.address), a.dims, a.strides, a.box,
                                          a.element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, a.swizzle, a.l2_promotion,
                                          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
      },
      "tiled", "cuTensorMapEncodeTiled", a, what);
}

}  // namespace convjit
