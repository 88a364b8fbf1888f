#include "compile/nvrtc.hpp"

#include <gtest/gtest.h>

#include "convjit/error.hpp"
#include "specialize/arch.hpp"
#include "specialize/specialized_source.hpp"

namespace convjit {
namespace {

TEST(Nvrtc, CompilesSpecializedSourceToPtxAndCubinWithoutGpu) {
  const Conv2dDesc d{.n = 1, .c = 3, .h = 9, .w = 9, .k = 17, .r = 3, .s = 3, .bias = true};
  const auto spec = specialize_direct(d);
  const auto out = Nvrtc::compile(spec.source.text, spec.source.kernel_name + ".cu", Nvrtc::options_for("sm_90"));
  EXPECT_NE(out.ptx.find(".entry " + spec.source.kernel_name), std::string::npos);
  EXPECT_NE(out.ptx.find(".target sm_90"), std::string::npos);
  ASSERT_GT(out.cubin.size(), 4u);
  EXPECT_EQ(out.cubin.substr(0, 4), std::string("\x7f"
                                                "ELF"));
  EXPECT_GT(out.compile_ms, 0.0);
}

TEST(Nvrtc, CompileErrorCarriesLogAndOptions) {
  try {
    Nvrtc::compile("extern \"C\" __global__ void broken() { undeclared_thing = 1; }", "broken.cu",
                   Nvrtc::options_for("sm_90"));
    FAIL() << "compiled broken source";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCompile);
    const std::string what = e.what();
    EXPECT_NE(what.find("compiling broken.cu failed"), std::string::npos) << what;
    EXPECT_NE(what.find("undeclared_thing"), std::string::npos) << what;          // the log
    EXPECT_NE(what.find("--gpu-architecture=sm_90"), std::string::npos) << what;  // the options
  }
}

TEST(Nvrtc, ArchMustBeSmDigits) {
  EXPECT_EQ(parse_arch("sm_90"), 90);
  EXPECT_EQ(parse_arch("sm_90a"), 90);
  EXPECT_EQ(parse_arch("sm_120"), 120);
  for (const char* bad : {"", "90", "sm90", "compute_90", "sm_9", "sm_90;rm -rf"}) {
    try {
      parse_arch(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("expected the form sm_XY"), std::string::npos);
    }
  }
  EXPECT_THROW(parse_arch("sm_52"), Error);
}

TEST(Nvrtc, VersionIsMajorDotMinor) {
  const std::string v = Nvrtc::version();
  EXPECT_NE(v.find('.'), std::string::npos);
  EXPECT_GE(std::stoi(v), 12);
}

}  // namespace
}  // namespace convjit
