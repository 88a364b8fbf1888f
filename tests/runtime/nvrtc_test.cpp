#include "compile/nvrtc.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <string>
#include <vector>

#include "convjit/error.hpp"
#include "specialize/arch.hpp"
#include "specialize/specialized_source.hpp"
#include "support/elf_sections.hpp"

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

// The CUBIN carries the code a -lineinfo build makes (NVVM's code depends on the line
// info) without the line table, which only a debugger or a profiler's source view reads:
// a third of the bytes for a warm start to read, check and load. Compared section by
// section against the same compile with the table kept, for a wgmma, an mma.sync and a
// depthwise kernel.
TEST(Nvrtc, CubinsKeepTheLineinfoBuildsCodeWithoutItsLineTable) {
  Conv2dDesc wgmma{.n = 2, .c = 64, .h = 20, .w = 24, .k = 128, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  wgmma.layout = Layout::kNHWC;
  wgmma.dtype = DType::kFloat16;
  const Conv2dDesc mma{.n = 1, .c = 24, .h = 13, .w = 17, .k = 40, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  const Conv2dDesc depthwise{
      .n = 2, .c = 32, .h = 12, .w = 12, .k = 32, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 32};
  const Specialization sources[] = {specialize_wgmma(wgmma), specialize_implicit_gemm(mma),
                                    specialize_depthwise(depthwise)};
  for (const Specialization& spec : sources) {
    SCOPED_TRACE(spec.source.kernel_name);
    const std::string arch = spec.source.compile_arch.empty() ? "sm_90" : spec.source.compile_arch;
    const auto options = Nvrtc::options_for(arch);
    ASSERT_NE(std::find(options.begin(), options.end(), "-lineinfo"), options.end());
    std::vector<std::string> with_table;
    for (const auto& o : options) {
      if (o != "--ptxas-options=--suppress-debug-info") with_table.push_back(o);
    }
    ASSERT_EQ(with_table.size() + 1, options.size());
    // NVRTC 13.0's output for some kernels (the depthwise ones) varies from one compile of
    // the same source to the next: register numbers, `used_bytes_mask` pragmas, now and
    // then a load split differently. ptxas's output can only be compared for the same
    // PTX, so each pair is compiled until NVVM gave both the same (the option is ptxas's
    // alone), a few tries at most.
    const std::regex pragma("\\s*\\.pragma \"used_bytes_mask [0-9]+\";");
    const std::regex number("%([a-z]+)[0-9]+");
    const auto plain = [&](const std::string& ptx) {
      return std::regex_replace(std::regex_replace(ptx, pragma, ""), number, "%$1N");
    };
    const auto same_ptx = [&](const CompiledKernel& x, const CompiledKernel& y) {
      return plain(x.ptx) == plain(y.ptx);
    };
    CompiledKernel shipped;
    CompiledKernel full;
    bool paired = false;
    for (int attempt = 0; attempt < 6 && !paired; ++attempt) {
      shipped = Nvrtc::compile(spec.source.text, spec.source.kernel_name + ".cu", options);
      full = Nvrtc::compile(spec.source.text, spec.source.kernel_name + ".cu", with_table);
      paired = same_ptx(shipped, full);
    }
    ASSERT_TRUE(paired) << "NVVM never gave the two compiles the same PTX";
    const auto a = testing::elf_sections(shipped.cubin);
    const auto b = testing::elf_sections(full.cubin);
    ASSERT_FALSE(a.empty());
    int code = 0;
    for (const auto& [name, bytes] : b) {
      if (name.starts_with(".text.")) {
        ++code;
        ASSERT_TRUE(a.contains(name)) << name;
        EXPECT_TRUE(a.at(name) == bytes) << name << " differs";
      }
    }
    EXPECT_GE(code, 1);
    EXPECT_TRUE(b.contains(".nv_debug_line_sass") || b.contains(".debug_line")) << "the full build has a line table";
    EXPECT_FALSE(a.contains(".debug_line") || a.contains(".nv_debug_line_sass"));
    EXPECT_LT(shipped.cubin.size() * 2, full.cubin.size());
  }
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
  for (const char* bad : {"", "90", "sm90", "compute_90", "sm_9", "sm_90;rm -rf", "sm_1234", "sm_90aa", "sm_a", "sm_9a",
                          "SM_90", "sm_+90", " sm_90"}) {
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
