// Plan binding arguments that are wrong whatever the machine: rejected before the
// driver is touched, so the message is the same with or without a GPU.
#include <gtest/gtest.h>

#include <string>

#include "convjit/convjit.hpp"
#include "support/temp_dir.hpp"

namespace convjit {
namespace {

TEST(PlanBinding, NegativeDeviceOrdinalIsRejectedBeforeAnyDriverCallOrCompile) {
  testing::TempDir dir;
  Runtime rt(RuntimeOptions{.cache_dir = dir.path()});
  const Conv2dDesc desc{.n = 1, .c = 3, .h = 8, .w = 8, .k = 4, .r = 3, .s = 3};
  try {
    rt.plan(desc, PlanOptions{.device = -1});
    ADD_FAILURE() << "a plan was made for device -1";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find("PlanOptions.device"), std::string::npos) << e.what();
  }
  EXPECT_EQ(rt.stats().compiles, 0u);
  EXPECT_EQ(rt.stats().module_loads, 0u);
}

}  // namespace
}  // namespace convjit
