#include "tooling/tooling.hpp"

#include <cmath>
#include <limits>

#include "runtime/runtime_impl.hpp"
#include "specialize/algorithm.hpp"

namespace convjit::tooling {

RuntimeDevice runtime_device(Runtime& runtime) {
  const auto device = Runtime::Impl::of(runtime).device();
  return RuntimeDevice{.context = device->context(),
                       .ordinal = device->ordinal(),
                       .name = device->name(),
                       .arch = device->arch(),
                       .multiprocessors = device->multiprocessors()};
}

double predicted_ms(const Conv2dDesc& desc, Algorithm algorithm, const std::string& arch) {
  constexpr double kNone = std::numeric_limits<double>::quiet_NaN();
  switch (algorithm) {
    case Algorithm::kImplicitGemm: {
      const double ms = predicted_wgmma_ms(implicit_gemm_model(desc, arch), arch);
      return std::isfinite(ms) ? ms : kNone;
    }
    case Algorithm::kIm2colGemm:
      return predicted_im2col_ms(desc, arch);
    default:
      return kNone;
  }
}

Algorithm auto_algorithm(const Conv2dDesc& desc, const std::string& arch) {
  return resolve_algorithm(desc, Algorithm::kAuto, arch);
}

std::string kernel_template(const Conv2dDesc& desc, Algorithm algorithm, const std::string& arch) {
  const auto src = specialize(desc, resolve_algorithm(desc, algorithm, arch), arch);
  std::string name = src.source.template_name;
  if (name.starts_with("conv2d_")) name.erase(0, 7);
  if (name.ends_with(".cu")) name.erase(name.size() - 3);
  if (src.launch.x_to_nhwc) name += " via nhwc";
  return name;
}

}  // namespace convjit::tooling
