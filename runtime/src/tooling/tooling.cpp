#include "tooling/tooling.hpp"

#include "runtime/runtime_impl.hpp"

namespace convjit::tooling {

RuntimeDevice runtime_device(Runtime& runtime) {
  const auto device = Runtime::Impl::of(runtime).device();
  return RuntimeDevice{.context = device->context(),
                       .ordinal = device->ordinal(),
                       .name = device->name(),
                       .arch = device->arch(),
                       .multiprocessors = device->multiprocessors()};
}

}  // namespace convjit::tooling
