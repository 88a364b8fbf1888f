#include "runtime/run_arguments.hpp"

#include "base/fail.hpp"
#include "driver/device_memory.hpp"

namespace convjit {

unsigned check_run_pointer(const DeviceContext& device, const std::string& where, const char* name, const void* pointer,
                           unsigned need, std::string_view what) {
  if (pointer == nullptr) return 16u;
  if (pointer_alignment(pointer) < need) {
    fail(ErrorCode::kInvalidArgument, "{}: {} = {} is not {}-byte aligned, which {} data needs; nothing was launched",
         where, name, pointer, need, what);
  }
  if (!device.pageable_memory_access() && !is_device_accessible(pointer)) {
    fail(ErrorCode::kInvalidArgument,
         "{}: {} = {} is not memory the GPU can read (plain host memory, or freed); nothing was launched", where, name,
         pointer);
  }
  return pointer_alignment(pointer);
}

RunArguments check_run_arguments(const Conv2dDesc& desc, const Conv2dArgs& a, const DeviceContext& device,
                                 const std::string& where) {
  if (a.x == nullptr) fail(ErrorCode::kInvalidArgument, "{}: x is null, expected a device pointer", where);
  if (a.y == nullptr) fail(ErrorCode::kInvalidArgument, "{}: y is null, expected a device pointer", where);
  if (a.w == nullptr && a.packed_w == nullptr) {
    fail(ErrorCode::kInvalidArgument, "{}: w is null, expected a device pointer (or packed weights)", where);
  }
  if (desc.bias && a.bias == nullptr) {
    fail(ErrorCode::kInvalidArgument, "{}: bias is null but the descriptor has bias=1", where);
  }
  if (!desc.bias && a.bias != nullptr) {
    fail(ErrorCode::kInvalidArgument, "{}: a bias pointer was given but the descriptor has bias=0", where);
  }
  // The run's batch: a dynamic-batch plan takes any from 1 to the descriptor's n, which
  // sized its workspace and bounds its kernels' index widths; any other plan only its n.
  if (a.n < 0 || a.n > desc.n || (!desc.dynamic_batch && a.n != 0 && a.n != desc.n)) {
    fail(ErrorCode::kInvalidArgument, "{}: Conv2dArgs.n: expected {}, got {}; nothing was launched", where,
         desc.dynamic_batch
             ? fmt::format("0 (the descriptor's n) or a batch from 1 to {}", desc.n)
             : fmt::format("0 or {} (the descriptor's n; batch=dynamic takes any batch up to it)", desc.n),
         a.n);
  }
  const unsigned element = static_cast<unsigned>(size_of(desc.dtype));
  const std::string_view dtype = to_string(desc.dtype);
  RunArguments out;
  out.present = AlignmentNeeds{check_run_pointer(device, where, "x", a.x, element, dtype),
                               check_run_pointer(device, where, "w", a.w, element, dtype),
                               check_run_pointer(device, where, "bias", a.bias, element, dtype),
                               check_run_pointer(device, where, "y", a.y, element, dtype)};
  out.batch = a.n == 0 ? desc.n : a.n;
  return out;
}

}  // namespace convjit
