// why_unsupported is the public question "can this version run it?": it must agree with
// what a plan would do (resolve_algorithm), for every algorithm, layout and arch.
#include <gtest/gtest.h>

#include <vector>

#include "convjit/algorithm.hpp"
#include "convjit/error.hpp"
#include "specialize/algorithm.hpp"

namespace convjit {
namespace {

std::vector<Conv2dDesc> problems() {
  std::vector<Conv2dDesc> out;
  for (const Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      out.push_back({.n = 2,
                     .c = 64,
                     .h = 14,
                     .w = 14,
                     .k = 128,
                     .r = 3,
                     .s = 3,
                     .pad_h = 1,
                     .pad_w = 1,
                     .dtype = dtype,
                     .layout = layout});
      out.push_back({.n = 1, .c = 256, .h = 7, .w = 7, .k = 512, .dtype = dtype, .layout = layout});  // 1x1
      out.push_back({.n = 2,
                     .c = 32,
                     .h = 9,
                     .w = 11,
                     .k = 32,
                     .r = 3,
                     .s = 3,
                     .groups = 32,
                     .dtype = dtype,
                     .layout = layout});  // depthwise
      out.push_back({.n = 1,
                     .c = 3,
                     .h = 17,
                     .w = 13,
                     .k = 5,
                     .r = 5,
                     .s = 3,
                     .stride_h = 2,
                     .dtype = dtype,
                     .layout = layout,
                     .math = MathMode::kStrictFp32});
    }
  }
  return out;
}

TEST(WhyUnsupported, AgreesWithTheAlgorithmAPlanWouldResolve) {
  for (const char* arch : {"", "sm_75", "sm_80", "sm_90"}) {
    for (const Conv2dDesc& d : problems()) {
      SCOPED_TRACE(d.to_string() + " arch=" + arch);
      for (const Algorithm a : {Algorithm::kDirect, Algorithm::kImplicitGemm, Algorithm::kIm2colGemm}) {
        const auto why = why_unsupported(d, a, arch);
        if (why) {
          EXPECT_FALSE(why->empty());
          EXPECT_THROW(resolve_algorithm(d, a, arch), Error);
        } else {
          EXPECT_EQ(resolve_algorithm(d, a, arch), a);
        }
      }
      if (const auto why = why_unsupported(d, Algorithm::kAuto, arch)) {
        EXPECT_THROW(resolve_algorithm(d, Algorithm::kAuto, arch), Error) << *why;
      } else {
        const Algorithm chosen = resolve_algorithm(d, Algorithm::kAuto, arch);
        EXPECT_FALSE(why_unsupported(d, chosen, arch)) << to_string(chosen);
      }
    }
  }
}

TEST(WhyUnsupported, NamesTheArchTheTensorCoreKernelsNeed) {
  const Conv2dDesc d{.n = 2, .c = 64, .h = 14, .w = 14, .k = 128, .r = 3, .s = 3};
  EXPECT_FALSE(why_unsupported(d));
  EXPECT_FALSE(why_unsupported(d, Algorithm::kImplicitGemm, "sm_90"));
  const auto why = why_unsupported(d, Algorithm::kImplicitGemm, "sm_75");
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("sm_80"), std::string::npos) << *why;
}

TEST(WhyUnsupported, AnInvalidDescriptorIsAnErrorNotAReason) {
  const Conv2dDesc d{.c = 6, .k = 4, .groups = 4};
  try {
    (void)why_unsupported(d);
    ADD_FAILURE() << "accepted " << d.to_string();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
  }
}

}  // namespace
}  // namespace convjit
