#pragma once
// GPU tests skip, with the reason, on machines without a usable driver or device.

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace convjit::testing {

// Empty when a GPU can be used; otherwise why not (the driver's own words).
std::optional<std::string> gpu_unavailable_reason();

}  // namespace convjit::testing

#define CONVJIT_REQUIRE_GPU()                                               \
  do {                                                                      \
    if (auto convjit_why_ = ::convjit::testing::gpu_unavailable_reason()) { \
      GTEST_SKIP() << "needs a CUDA GPU: " << *convjit_why_;                \
    }                                                                       \
  } while (0)
