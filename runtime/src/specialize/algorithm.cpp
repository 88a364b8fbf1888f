#include "specialize/algorithm.hpp"

#include <algorithm>

#include "core/fail.hpp"

namespace convjit {

std::string_view to_string(Algorithm algorithm) noexcept {
  switch (algorithm) {
    case Algorithm::kAuto: return "auto";
    case Algorithm::kDirect: return "direct";
    case Algorithm::kImplicitGemm: return "implicit_gemm";
    case Algorithm::kIm2colGemm: return "im2col_gemm";
  }
  return "?";
}

std::optional<std::string> unsupported_reason([[maybe_unused]] const Conv2dDesc& d, Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::kAuto:
    case Algorithm::kDirect:
      return std::nullopt;
    case Algorithm::kImplicitGemm:
    case Algorithm::kIm2colGemm:
      return std::nullopt;
  }
  return "unknown algorithm";
}

Algorithm select_algorithm(const Conv2dDesc& d, const std::string& arch) {
  const int c_per_group = d.c / d.groups;
  const int k_per_group = d.k / d.groups;
  const long long reduction = static_cast<long long>(c_per_group) * d.r * d.s;
  // Tensor cores pay once a GEMM tile has real rows and a real reduction to chew on;
  // depthwise and tiny-channel problems are memory-bound and stay on the direct kernel.
  // A pointwise convolution is a GEMM that reads each input once: cuBLAS at bandwidth,
  // except in strict math on Hopper, where 3xTF32 wgmma beats cuBLAS's fp32 GEMM
  // (H100, KernelBench 87: 6.84 vs 7.92 ms; 86's pointwise half: 1.68 vs 2.00 ms).
  if (d.groups == 1 && is_pointwise_gemm(d) && k_per_group >= 16 && c_per_group >= 16) {
    const bool wgmma_strict = d.math == MathMode::kStrictFp32 && !arch.empty() && !wgmma_unsupported_reason(d, arch);
    return wgmma_strict ? Algorithm::kImplicitGemm : Algorithm::kIm2colGemm;
  }
  if (!unsupported_reason(d, Algorithm::kImplicitGemm) && k_per_group >= 16 && reduction >= 32) {
    return Algorithm::kImplicitGemm;
  }
  return Algorithm::kDirect;
}

Algorithm resolve_algorithm(const Conv2dDesc& d, Algorithm requested, const std::string& arch) {
  if (requested == Algorithm::kAuto) return select_algorithm(d, arch);
  if (auto why = unsupported_reason(d, requested)) {
    fail(ErrorCode::kUnsupported, "{}: algorithm {} cannot run it: {}", d.to_string(), to_string(requested), *why);
  }
  return requested;
}

AlignmentNeeds min_alignment(const AlignmentNeeds& a, const AlignmentNeeds& b) noexcept {
  return {std::min(a.x, b.x), std::min(a.w, b.w), std::min(a.bias, b.bias), std::min(a.y, b.y)};
}

bool satisfies(const AlignmentNeeds& have, const AlignmentNeeds& need) noexcept {
  return have.x >= need.x && have.w >= need.w && have.bias >= need.bias && have.y >= need.y;
}

AlignmentNeeds element_alignment(const Conv2dDesc& d) noexcept {
  const auto e = static_cast<unsigned>(size_of(d.dtype));
  return {e, e, e, e};
}

SpecializedSource specialize(const Conv2dDesc& d, Algorithm algorithm, const std::string& arch,
                             const AlignmentNeeds& align) {
  SpecializedSource src;
  switch (algorithm) {
    case Algorithm::kDirect:
      // Scalar accesses, or vector ones behind a run-time test of the pointer (depthwise).
      src = specialize_direct(d);
      src.needs = element_alignment(d);
      return src;
    case Algorithm::kImplicitGemm:
      // Hopper gets the wgmma kernel wherever it applies; mma.sync serves the rest, and
      // the pointers the wgmma kernel cannot copy from.
      if (!arch.empty() && !wgmma_unsupported_reason(d, arch, align)) return specialize_wgmma(d);
      return specialize_implicit_gemm(d, align);
    case Algorithm::kIm2colGemm:
      // The im2col kernels are scalar; cuBLAS checks the pointers it is given itself.
      src = specialize_im2col(d);
      src.needs = element_alignment(d);
      return src;
    default:
      fail(ErrorCode::kInternal, "specialize: algorithm {} has no kernel template", to_string(algorithm));
  }
}

}  // namespace convjit
