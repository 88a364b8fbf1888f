#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/sha256.hpp"
#include "compile/nvrtc.hpp"
#include "convjit/error.hpp"
#include "specialize/specialized_source.hpp"
#include "specialize/templates.hpp"

namespace convjit {
namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every template compiles on its own under NVRTC (with its built-in example values and
// the embedded headers); the wgmma template needs Hopper's architecture-specific target.
// Headers are compiled through the templates that include them.
TEST(KernelTemplates, EveryEmbeddedTemplateCompilesStandaloneUnderNvrtc) {
  ASSERT_FALSE(embedded_templates().empty());
  for (const auto& file : embedded_templates()) {
    if (file.name.ends_with(".cuh")) continue;
    SCOPED_TRACE(std::string(file.name));
    const bool hopper_only = file.name.find("wgmma") != std::string_view::npos;
    const auto out = Nvrtc::compile(std::string(file.text), std::string(file.name),
                                    Nvrtc::options_for(hopper_only ? "sm_90a" : "sm_90"));
    EXPECT_FALSE(out.cubin.empty());
  }
}

// Every header is embedded, and every one is used: an unused header would only
// invalidate cache keys when it changes.
TEST(KernelTemplates, EveryEmbeddedHeaderIsIncludedByATemplate) {
  ASSERT_FALSE(embedded_headers().empty());
  for (const auto& header : embedded_headers()) {
    const std::string include = "#include \"" + std::string(header.name) + "\"";
    bool included = false;
    for (const auto& file : embedded_templates()) {
      included = included || file.text.find(include) != std::string_view::npos;
    }
    EXPECT_TRUE(included) << header.name;
    EXPECT_EQ(template_text(header.name), header.text);
  }
}

// Without the embedded headers a template does not compile: proof they are what NVRTC
// resolves the include to (there is no include path to fall back on).
TEST(KernelTemplates, TemplatesNeedTheEmbeddedHeaders) {
  EXPECT_THROW(Nvrtc::compile(std::string(template_text("conv2d_direct.cu")), "conv2d_direct.cu",
                              Nvrtc::options_for("sm_90"), {}),
               Error);
}

TEST(KernelTemplates, EmbeddedTextMatchesTheFileInTheSourceTree) {
  for (const auto& file : embedded_templates()) {
    // Compared by size and hash: a failure should not print two whole kernels.
    const std::string on_disk = read_file(std::filesystem::path(CONVJIT_KERNEL_SOURCE_DIR) / file.name);
    EXPECT_EQ(file.text.size(), on_disk.size()) << file.name << " is stale: rebuild";
    EXPECT_EQ(sha256_hex(file.text), sha256_hex(on_disk)) << file.name << " is stale: rebuild";
  }
}

TEST(KernelTemplates, SpecializationPrependsItsPrologueOfEnumeratorsAndKeepsBodyVerbatim) {
  const Conv2dDesc d{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7};
  const auto spec = specialize_direct(d);
  EXPECT_EQ(spec.source.kernel_name, "conv2d_direct_f32_nchw_n8c64h512w256_k128r5s7_u1x1_p0x0_d1x1_g1_nobias");
  EXPECT_NE(spec.source.text.find("#define CONVJIT_KERNEL_NAME " + spec.source.kernel_name), std::string::npos);
  for (const char* line :
       {"enum : int { kN = 8 };", "enum : int { kC = 64 };", "enum : int { kH = 512 };", "enum : int { kW = 256 };",
        "enum : int { kK = 128 };", "enum : int { kR = 5 };", "enum : int { kS = 7 };", "enum : int { kP = 508 };",
        "enum : int { kQ = 250 };", "enum : bool { kHasBias = false };", "enum : bool { kWideIndex = false };"}) {
    EXPECT_NE(spec.source.text.find(line), std::string::npos) << line;
  }
  // The template body follows unchanged.
  const std::string_view body = template_text("conv2d_direct.cu");
  EXPECT_TRUE(std::string_view(spec.source.text).ends_with(body));
}

// No module carries a device global: NVRTC emits every namespace-scope variable (a
// constexpr one too, used or not) as one, and the driver's module load paid 0.5 ms for the
// wgmma kernel's 119 (docs/perf.md, "Module load: the globals"). So the templates and the
// prologue declare their constants as enumerators; a constexpr variable added at namespace
// scope, in a template or a header, fails here. (A __constant__ table is .const, not .global.)
bool has_device_global(const std::string& ptx) {
  std::istringstream lines(ptx);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with(".global") || line.starts_with(".visible .global")) return true;
  }
  return false;
}

TEST(KernelTemplates, NoTemplateOrPrologueLeavesADeviceGlobalInItsModule) {
  for (const auto& file : embedded_templates()) {
    if (file.name.ends_with(".cuh")) continue;
    SCOPED_TRACE(std::string(file.name));
    const bool hopper_only = file.name.find("wgmma") != std::string_view::npos;
    const auto out = Nvrtc::compile(std::string(file.text), std::string(file.name),
                                    Nvrtc::options_for(hopper_only ? "sm_90a" : "sm_90"));
    EXPECT_FALSE(has_device_global(out.ptx));
  }
  // Through a prologue: the headline's direct kernel.
  const auto spec = specialize_direct({.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7});
  const auto out = Nvrtc::compile(spec.source.text, spec.source.kernel_name + ".cu", Nvrtc::options_for("sm_90"));
  EXPECT_FALSE(has_device_global(out.ptx));
  // The check sees one where there is one.
  const auto with_global = Nvrtc::compile(
      "namespace k { constexpr int kN = 8; }\n"
      "extern \"C\" __global__ void probe(int* p) { *p = k::kN; }\n",
      "probe.cu", Nvrtc::options_for("sm_90"));
  EXPECT_TRUE(has_device_global(with_global.ptx));
}

TEST(KernelTemplates, HugeTensorsSelectWideIndexing) {
  // 2 x 64 x 8192 x 4096 = 2^32 input elements: over int32.
  const Conv2dDesc d{.n = 2, .c = 64, .h = 8192, .w = 4096, .k = 1, .r = 1, .s = 1};
  EXPECT_NE(specialize_direct(d).source.text.find("enum : bool { kWideIndex = true };"), std::string::npos);
}

TEST(KernelTemplates, KernelNamesAreUniquePerProblem) {
  Conv2dDesc a{.n = 1, .c = 4, .h = 8, .w = 8, .k = 4, .r = 3, .s = 3};
  Conv2dDesc b = a;
  b.pad_w = 1;
  EXPECT_NE(direct_kernel_name(a), direct_kernel_name(b));
  b = a;
  b.bias = true;
  EXPECT_NE(direct_kernel_name(a), direct_kernel_name(b));
  b = a;
  b.activation = Activation::kRelu;
  EXPECT_NE(direct_kernel_name(a), direct_kernel_name(b));
}

}  // namespace
}  // namespace convjit
