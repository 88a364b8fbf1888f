#pragma once
// The checks every run's arguments pass before anything is enqueued, whichever kernel
// then runs them: a plan's (plan.cpp) or the first tier's (first_tier.cpp).

#include <string>

#include "convjit/runtime.hpp"
#include "driver/device_context.hpp"

namespace convjit {

struct RunArguments {
  AlignmentNeeds present;  // the alignment each of x, w, bias and y has (16 for absent ones)
  int batch = 0;           // the run's batch: Conv2dArgs::n, or the descriptor's n for 0
};

// Throws kInvalidArgument, naming `where`, for a missing x, y or w (w may be absent when
// `packed_w` is given), a bias that does not match the descriptor, a batch the descriptor
// does not allow, or a pointer misaligned for its dtype or not readable by `device`.
RunArguments check_run_arguments(const Conv2dDesc& desc, const Conv2dArgs& args, const DeviceContext& device,
                                 const std::string& where);

// The alignment of `pointer` (16 when null), after checking that it has at least `need`
// bytes and that `device` can read it; `what` names the data in the error.
unsigned check_run_pointer(const DeviceContext& device, const std::string& where, const char* name, const void* pointer,
                           unsigned need, std::string_view what);

}  // namespace convjit
