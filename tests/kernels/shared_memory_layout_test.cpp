// The implicit-GEMM kernels' shared memory is laid out twice: by the host, which sizes the
// launch (and for wgmma, the stage count) from it, and by the template, which indexes
// into it. The host emits its layout in the prologue (kAStride ... kSharedBytes for
// mma.sync, kStageBytes and kSharedBytes for wgmma) and each template static_asserts its
// own derivation against those values. These tests prove both halves: many random
// problems compile (the asserts hold), and a wrong constant does not (they are checked).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nvrtc.h>

#include <algorithm>
#include <array>
#include <random>
#include <string>
#include <vector>

#include "compile/nvrtc.hpp"
#include "convjit/error.hpp"
#include "specialize/algorithm.hpp"
#include "specialize/specialized_source.hpp"
#include "specialize/templates.hpp"
#include "support/prologue_constant.hpp"
#include "support/scoped_env.hpp"

namespace convjit {
namespace {

constexpr const char* kMma = "conv2d_implicit_gemm_mma.cu";
constexpr const char* kWgmma = "conv2d_implicit_gemm_wgmma.cu";

int constant(const Specialization& src, const std::string& name) {
  const std::string value = testing::prologue_constant(src, "int", name);
  if (value == "<absent>") ADD_FAILURE() << name << " is not in the prologue of " << src.source.kernel_name;
  return value == "<absent>" ? -1 : std::stoi(value);
}

// NVRTC's front end alone: it evaluates every static_assert at a small fraction of a
// full compile's time, so many problems can be checked. Empty when the source is valid,
// else the log.
std::string front_end_errors(const std::string& source, const std::string& arch) {
  std::vector<std::string> texts;
  std::vector<std::string> names;
  for (const auto& header : embedded_headers()) {
    texts.emplace_back(header.text);
    names.emplace_back(header.name);
  }
  std::vector<const char*> text_ptrs;
  std::vector<const char*> name_ptrs;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    text_ptrs.push_back(texts[i].c_str());
    name_ptrs.push_back(names[i].c_str());
  }
  nvrtcProgram program = nullptr;
  if (nvrtcCreateProgram(&program, source.c_str(), "layout_check.cu", static_cast<int>(texts.size()), text_ptrs.data(),
                         name_ptrs.data()) != NVRTC_SUCCESS) {
    return "nvrtcCreateProgram failed";
  }
  const std::string arch_option = "--gpu-architecture=" + arch;
  const char* options[] = {arch_option.c_str(), "--std=c++17", "--fdevice-syntax-only"};
  const nvrtcResult result = nvrtcCompileProgram(program, 3, options);
  std::string log;
  std::size_t size = 0;
  if (nvrtcGetProgramLogSize(program, &size) == NVRTC_SUCCESS && size > 1) {
    log.resize(size);
    nvrtcGetProgramLog(program, log.data());
  }
  nvrtcDestroyProgram(&program);
  if (result == NVRTC_SUCCESS) return {};
  return log.empty() ? std::string("compile failed without a log") : log;
}

// A valid problem of random shape, element type, math mode and (for the mma.sync kernel)
// pointer alignment; sizes small enough for int indexing but with reductions on both
// sides of the gather table's limit.
struct RandomProblem {
  Conv2dDesc desc;
  AlignmentNeeds align;
};

RandomProblem random_problem(std::mt19937& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (;;) {
    Conv2dDesc d;
    d.groups = pick(0, 3) == 0 ? pick(1, 4) : 1;
    d.c = d.groups * (pick(0, 4) == 0 ? pick(1, 1024) : pick(1, 96));
    d.k = d.groups * pick(1, 160);
    d.n = pick(1, 3);
    d.r = pick(1, 7);
    d.s = pick(1, 7);
    d.stride_h = pick(1, 3);
    d.stride_w = pick(1, 3);
    d.dilation_h = pick(1, 2);
    d.dilation_w = pick(1, 3);
    d.pad_h = pick(0, d.r / 2 + 1);
    d.pad_w = pick(0, d.s / 2 + 1);
    d.h = pick(1, 40);
    d.w = pick(1, 40);
    d.bias = pick(0, 1) == 1;
    d.activation = pick(0, 1) == 1 ? Activation::kRelu : Activation::kNone;
    d.dtype = std::array{DType::kFloat32, DType::kFloat16, DType::kBFloat16}[pick(0, 2)];
    d.math = pick(0, 1) == 1 ? MathMode::kStrictFp32 : MathMode::kTF32;
    try {
      d.validate();
    } catch (const Error&) {
      continue;
    }
    const auto e = static_cast<unsigned>(size_of(d.dtype));
    auto alignment = [&] { return std::max(e, 1u << pick(1, 4)); };
    return {d, AlignmentNeeds{alignment(), alignment(), alignment(), alignment()}};
  }
}

TEST(SharedMemoryLayout, HostAndMmaTemplateAgreeForRandomProblems) {
  std::mt19937 rng(20240613);
  for (int i = 0; i < 160; ++i) {
    const RandomProblem p = random_problem(rng);
    const Specialization src = specialize(p.desc, Algorithm::kImplicitGemm, "sm_80", p.align);
    SCOPED_TRACE(src.source.kernel_name);
    ASSERT_EQ(src.source.template_name, kMma);
    // The launch reserves exactly what the template was told it has.
    EXPECT_EQ(static_cast<int>(src.launch.geometry.shared_bytes), constant(src, "kSharedBytes"));
    EXPECT_EQ(front_end_errors(src.source.text, "sm_80"), "") << src.launch.tile;
  }
}

// Channels-last problems stage X as [pixel][reduction] and copy both operands in runs
// whose width the host picks from the pointers' alignment: the layout agrees, and the
// kernel asks no more of the pointers than it was compiled for (Hopper runs mma.sync on
// what the wgmma kernel refuses, the wgmma kernel the rest).
TEST(SharedMemoryLayout, HostAndTemplatesAgreeForRandomNhwcProblems) {
  std::mt19937 rng(20261214);
  int wgmma_checked = 0;
  for (int i = 0; i < 120; ++i) {
    RandomProblem p = random_problem(rng);
    p.desc.layout = Layout::kNHWC;
    const std::string arch = i % 2 == 0 ? "sm_80" : "sm_90";
    const Specialization src = specialize(p.desc, Algorithm::kImplicitGemm, arch, p.align);
    SCOPED_TRACE(src.source.kernel_name);
    const bool wgmma = arch == "sm_90" && runs_on_wgmma(p.desc, arch, p.align);
    ASSERT_EQ(src.source.template_name, wgmma ? kWgmma : kMma);
    EXPECT_EQ(static_cast<int>(src.launch.geometry.shared_bytes), constant(src, "kSharedBytes"));
    EXPECT_TRUE(satisfies(p.align, src.launch.needs));
    EXPECT_EQ(front_end_errors(src.source.text, wgmma ? src.source.compile_arch : "sm_80"), "") << src.launch.tile;
    wgmma_checked += wgmma ? 1 : 0;
  }
  EXPECT_GT(wgmma_checked, 5);
}

TEST(SharedMemoryLayout, HostAndWgmmaTemplateAgreeForRandomProblems) {
  std::mt19937 rng(20240614);
  int checked = 0;
  for (int tries = 0; checked < 80 && tries < 4000; ++tries) {
    RandomProblem p = random_problem(rng);
    if (tries % 2 == 1) p.desc.layout = Layout::kNHWC;
    if (wgmma_unsupported_reason(p.desc, "sm_90")) continue;
    const Specialization src = specialize_wgmma(p.desc);
    SCOPED_TRACE(src.source.kernel_name);
    ASSERT_EQ(src.source.template_name, kWgmma);
    EXPECT_EQ(static_cast<int>(src.launch.geometry.shared_bytes), constant(src, "kSharedBytes"));
    EXPECT_LE(src.launch.geometry.shared_bytes, 227u * 1024);
    EXPECT_EQ(front_end_errors(src.source.text, src.source.compile_arch), "") << src.launch.tile;
    ++checked;
  }
  EXPECT_EQ(checked, 80);
}

// The same with the row halo wherever the NHWC TMA kernel can take it: the ring beside the
// weight stages, the wider barrier area and the stage count the ring's wait needs agree with
// the template's own derivation.
TEST(SharedMemoryLayout, HostAndWgmmaTemplateAgreeForRandomRowHaloProblems) {
  testing::ScopedEnv on("CONVJIT_WGMMA_ROW_HALO", "1");
  std::mt19937 rng(20261202);
  int checked = 0;
  for (int tries = 0; checked < 40 && tries < 8000; ++tries) {
    RandomProblem p = random_problem(rng);
    p.desc.layout = Layout::kNHWC;
    p.desc.stride_w = 1;
    p.desc.groups = 1;
    p.desc.c = std::max(p.desc.c, 64);
    try {
      p.desc.validate();
    } catch (const Error&) {
      continue;
    }
    if (wgmma_unsupported_reason(p.desc, "sm_90")) continue;
    const Specialization src = specialize_wgmma(p.desc);
    if (src.launch.tile.find("row tiles") == std::string::npos) continue;
    SCOPED_TRACE(src.source.kernel_name);
    EXPECT_EQ(static_cast<int>(src.launch.geometry.shared_bytes), constant(src, "kSharedBytes"));
    EXPECT_LE(src.launch.geometry.shared_bytes, 227u * 1024);
    EXPECT_EQ(front_end_errors(src.source.text, src.source.compile_arch), "") << src.launch.tile;
    ++checked;
  }
  EXPECT_EQ(checked, 40);
}

// The front end is what holds the asserts, but the runtime compiles in full: a few
// problems of each kernel and element type go all the way to a CUBIN.
TEST(SharedMemoryLayout, AFewProblemsCompileInFullForSm80AndSm90) {
  const Conv2dDesc base{.n = 2, .c = 40, .h = 15, .w = 18, .k = 96, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (const char* arch : {"sm_80", "sm_90"}) {
      Conv2dDesc d = base;
      d.dtype = dtype;
      const Specialization src = specialize(d, Algorithm::kImplicitGemm, arch);
      SCOPED_TRACE(src.source.kernel_name);
      EXPECT_EQ(src.source.template_name, std::string(arch) == "sm_90" ? kWgmma : kMma);
      const auto out =
          Nvrtc::compile(src.source.text, src.source.template_name,
                         Nvrtc::options_for(src.source.compile_arch.empty() ? arch : src.source.compile_arch));
      EXPECT_FALSE(out.cubin.empty());
    }
  }
}

// A prologue whose layout constant disagrees with the template's must not compile, and
// the error must say which constant: proof that the asserts exist and are evaluated.
void expect_rejected(const Specialization& src, const std::string& name, const std::string& arch) {
  const std::string line = fmt::format("enum : int {{ {} = {} }};", name, constant(src, name));
  const auto at = src.source.text.find(line);
  ASSERT_NE(at, std::string::npos) << line;
  std::string wrong = src.source.text;
  wrong.replace(at, line.size(), fmt::format("enum : int {{ {} = {} }};", name, constant(src, name) + 16));
  try {
    Nvrtc::compile(wrong, src.source.template_name, Nvrtc::options_for(arch));
    ADD_FAILURE() << src.source.kernel_name << " compiled with a wrong " << name;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCompile);
    const std::string what = e.what();
    EXPECT_NE(what.find("static assertion failed"), std::string::npos) << what;
    EXPECT_NE(what.find("spec::" + name + " disagrees"), std::string::npos) << what;
  }
}

TEST(SharedMemoryLayout, AWrongEmittedConstantFailsTheCompileAtItsStaticAssert) {
  const Conv2dDesc d{.n = 2, .c = 40, .h = 15, .w = 18, .k = 96, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1};
  for (const DType dtype : {DType::kFloat32, DType::kFloat16}) {
    Conv2dDesc typed = d;
    typed.dtype = dtype;
    const Specialization mma = specialize(typed, Algorithm::kImplicitGemm, "sm_80");
    ASSERT_EQ(mma.source.template_name, kMma);
    for (const char* name : {"kAStride", "kBStride", "kAStageElems", "kBStageElems", "kSharedBytes"}) {
      SCOPED_TRACE(fmt::format("{} {}", to_string(dtype), name));
      expect_rejected(mma, name, "sm_80");
    }
    typed.layout = Layout::kNHWC;
    const Specialization nhwc = specialize(typed, Algorithm::kImplicitGemm, "sm_80");
    for (const char* name : {"kBStride", "kBStageElems", "kSharedBytes"}) {
      SCOPED_TRACE(fmt::format("nhwc {} {}", to_string(dtype), name));
      expect_rejected(nhwc, name, "sm_80");
    }
    const Specialization wgmma_nhwc = specialize_wgmma(typed);
    ASSERT_EQ(wgmma_nhwc.source.template_name, kWgmma);
    for (const char* name : {"kStageBytes", "kSharedBytes"}) {
      SCOPED_TRACE(fmt::format("wgmma nhwc {} {}", to_string(dtype), name));
      expect_rejected(wgmma_nhwc, name, wgmma_nhwc.source.compile_arch);
    }
    typed.layout = Layout::kNCHW;
    const Specialization wgmma = specialize(typed, Algorithm::kImplicitGemm, "sm_90");
    ASSERT_EQ(wgmma.source.template_name, kWgmma);
    for (const char* name : {"kStageBytes", "kSharedBytes"}) {
      SCOPED_TRACE(fmt::format("{} {}", to_string(dtype), name));
      expect_rejected(wgmma, name, wgmma.source.compile_arch);
    }
  }
}

}  // namespace
}  // namespace convjit
