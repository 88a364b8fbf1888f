#include "support/gpu.hpp"

#include "convjit/error.hpp"
#include "driver/device_context.hpp"

namespace convjit::testing {

std::optional<std::string> gpu_unavailable_reason() {
  static const std::optional<std::string> reason = []() -> std::optional<std::string> {
    try {
      DeviceContext probe(0);
      return std::nullopt;
    } catch (const Error& e) {
      return std::string(e.what());
    }
  }();
  return reason;
}

}  // namespace convjit::testing
