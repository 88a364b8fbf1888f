#pragma once
// Environment switches that are on unless their variable says 0: the defaults a
// development or rollback switch turns off (CONVJIT_FIRST_TIER, CONVJIT_WGMMA_TMA, ...).

#include <cstdlib>
#include <string_view>

namespace convjit {

inline bool env_switch_on(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr || std::string_view(value) != "0";
}

}  // namespace convjit
