#include "compile/kernel_key.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <set>

#include "base/sha256.hpp"
#include "compile/nvrtc.hpp"
#include "specialize/templates.hpp"

namespace convjit {
namespace {

Conv2dDesc base() {
  return Conv2dDesc{.n = 2,
                    .c = 8,
                    .h = 16,
                    .w = 12,
                    .k = 8,
                    .r = 3,
                    .s = 3,
                    .stride_h = 1,
                    .stride_w = 1,
                    .pad_h = 1,
                    .pad_w = 1,
                    .dilation_h = 1,
                    .dilation_w = 1,
                    .groups = 2,
                    .bias = false};
}

KernelKey key_of(const Conv2dDesc& d, const std::string& arch = "sm_90") {
  return make_kernel_key(d, specialize_direct(d).source, arch, Nvrtc::options_for(arch), "13.0");
}

TEST(KernelKey, ChangesWhenAnySpecializationValueChanges) {
  const std::vector<std::pair<const char*, std::function<void(Conv2dDesc&)>>> mutations = {
      {"n", [](Conv2dDesc& d) { d.n = 3; }},
      {"c", [](Conv2dDesc& d) { d.c = 16; }},
      {"h", [](Conv2dDesc& d) { d.h = 17; }},
      {"w", [](Conv2dDesc& d) { d.w = 13; }},
      {"k", [](Conv2dDesc& d) { d.k = 10; }},
      {"r", [](Conv2dDesc& d) { d.r = 5; }},
      {"s", [](Conv2dDesc& d) { d.s = 1; }},
      {"stride_h", [](Conv2dDesc& d) { d.stride_h = 2; }},
      {"stride_w", [](Conv2dDesc& d) { d.stride_w = 2; }},
      {"pad_h", [](Conv2dDesc& d) { d.pad_h = 0; }},
      {"pad_w", [](Conv2dDesc& d) { d.pad_w = 2; }},
      {"dilation_h", [](Conv2dDesc& d) { d.dilation_h = 2; }},
      {"dilation_w", [](Conv2dDesc& d) { d.dilation_w = 3; }},
      {"groups", [](Conv2dDesc& d) { d.groups = 4; }},
      {"bias", [](Conv2dDesc& d) { d.bias = true; }},
      {"math", [](Conv2dDesc& d) { d.math = MathMode::kStrictFp32; }},
      {"dtype f16", [](Conv2dDesc& d) { d.dtype = DType::kFloat16; }},
      {"dtype bf16", [](Conv2dDesc& d) { d.dtype = DType::kBFloat16; }},
      {"dynamic_batch", [](Conv2dDesc& d) { d.dynamic_batch = true; }},
  };
  std::set<std::string> hashes = {key_of(base()).hash};
  for (const auto& [field, mutate] : mutations) {
    Conv2dDesc d = base();
    mutate(d);
    ASSERT_NO_THROW(d.validate()) << field;
    const KernelKey key = key_of(d);
    EXPECT_TRUE(hashes.insert(key.hash).second) << "key did not change with " << field;
    EXPECT_NE(key.text, key_of(base()).text) << field;
  }
}

TEST(KernelKey, ChangesWithArchOptionsAndCompilerVersion) {
  const Conv2dDesc d = base();
  const auto spec = specialize_direct(d).source;
  const KernelKey ref = make_kernel_key(d, spec, "sm_90", Nvrtc::options_for("sm_90"), "13.0");
  EXPECT_NE(ref.hash, make_kernel_key(d, spec, "sm_80", Nvrtc::options_for("sm_90"), "13.0").hash);
  EXPECT_NE(ref.hash, make_kernel_key(d, spec, "sm_90", Nvrtc::options_for("sm_80"), "13.0").hash);
  EXPECT_NE(ref.hash, make_kernel_key(d, spec, "sm_90", Nvrtc::options_for("sm_90"), "13.1").hash);
  auto edited = spec;
  edited.text += "\n// any change of the specialized source\n";
  EXPECT_NE(ref.hash, make_kernel_key(d, edited, "sm_90", Nvrtc::options_for("sm_90"), "13.0").hash);
}

// The specialized source only #includes the shared header, so the key must hash the
// header's text itself: a header change has to miss every cached kernel.
TEST(KernelKey, ChangesWhenAnEmbeddedHeaderChanges) {
  const Conv2dDesc d = base();
  const auto spec = specialize_direct(d).source;
  const auto options = Nvrtc::options_for("sm_90");
  ASSERT_FALSE(embedded_headers().empty());
  const KernelKey ref = make_kernel_key(d, spec, "sm_90", options, "13.0");
  // The default is every embedded header.
  EXPECT_EQ(ref, make_kernel_key(d, spec, "sm_90", options, "13.0", embedded_headers()));
  for (const auto& header : embedded_headers()) {
    EXPECT_NE(ref.text.find("header " + std::string(header.name) + " sha256:" + sha256_hex(header.text) + "\n"),
              std::string::npos)
        << ref.text;
  }
  // One byte more in the first header, every other input the same.
  std::vector<TemplateFile> edited(embedded_headers().begin(), embedded_headers().end());
  const std::string changed = std::string(edited[0].text) + " ";
  edited[0].text = changed;
  const KernelKey after = make_kernel_key(d, spec, "sm_90", options, "13.0", edited);
  EXPECT_NE(ref.hash, after.hash);
  EXPECT_NE(ref.text, after.text);
  // A header added or dropped changes it too.
  EXPECT_NE(ref.hash, make_kernel_key(d, spec, "sm_90", options, "13.0", {}).hash);
}

TEST(KernelKey, IsDeterministicAndHoldsNoPaths) {
  const KernelKey a = key_of(base());
  const KernelKey b = key_of(base());
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.hash.size(), 64u);
  // peers.md: absolute include paths in DeepGEMM's key made warm caches miss after a reinstall.
  EXPECT_EQ(a.text.find('/'), std::string::npos) << a.text;
  EXPECT_NE(a.text.find("arch sm_90"), std::string::npos);
  EXPECT_NE(a.text.find("nvrtc 13.0"), std::string::npos);
  // base() has 4 channels a group: the direct algorithm runs it with the depthwise template.
  EXPECT_NE(a.text.find("template " + specialize_direct(base()).source.template_name + " sha256:"), std::string::npos);
  EXPECT_NE(a.text.find("template conv2d_depthwise.cu sha256:"), std::string::npos);
}

TEST(KernelKey, TheBuildTimeDigestOfEveryEmbeddedFileIsTheSha256OfItsText) {
  ASSERT_FALSE(embedded_templates().empty());
  for (const auto& file : embedded_templates()) {
    EXPECT_EQ(file.sha256, sha256_hex(file.text)) << file.name;
  }
  // And the key names those digests.
  const Conv2dDesc d = base();
  const auto spec = specialize_direct(d).source;
  const KernelKey key = make_kernel_key(d, spec, "sm_90", Nvrtc::options_for("sm_90"), "13.0");
  EXPECT_NE(
      key.text.find("template " + spec.template_name + " sha256:" + sha256_hex(template_text(spec.template_name))),
      std::string::npos)
      << key.text;
}

TEST(KernelKey, PinsTheSourceByItsPrologueWhenItEndsWithItsTemplateElseByItsWholeText) {
  const Conv2dDesc d = base();
  const auto spec = specialize_direct(d).source;
  const std::string_view tmpl = template_text(spec.template_name);
  ASSERT_TRUE(std::string_view(spec.text).ends_with(tmpl)) << "a specialized source is its prologue, then its template";
  const auto options = Nvrtc::options_for("sm_90");
  const KernelKey ref = make_kernel_key(d, spec, "sm_90", options, "13.0");
  const std::string prologue = spec.text.substr(0, spec.text.size() - tmpl.size());
  EXPECT_NE(ref.text.find("prologue sha256:" + sha256_hex(prologue) + "\n"), std::string::npos) << ref.text;
  // One byte changed in the prologue, in the template part, or added at the end: each
  // another key; the last two no longer end with the template and are hashed whole.
  std::set<std::string> hashes = {ref.hash};
  for (const std::size_t at : {prologue.size() / 2, prologue.size() + tmpl.size() / 2, spec.text.size()}) {
    auto edited = spec;
    if (at == spec.text.size()) {
      edited.text += " ";
    } else {
      edited.text[at] = static_cast<char>(edited.text[at] ^ 0x01);
    }
    const KernelKey key = make_kernel_key(d, edited, "sm_90", options, "13.0");
    EXPECT_TRUE(hashes.insert(key.hash).second) << "an edit at byte " << at << " kept the key";
    if (at >= prologue.size()) {
      EXPECT_NE(key.text.find("source sha256:" + sha256_hex(edited.text) + "\n"), std::string::npos) << key.text;
    }
  }
}

}  // namespace
}  // namespace convjit
