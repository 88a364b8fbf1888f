#include "specialize/arch.hpp"

#include <regex>

#include "base/fail.hpp"

namespace convjit {

int parse_arch(const std::string& arch) {
  static const std::regex kPattern("sm_([0-9]{2,3})a?");
  std::smatch match;
  if (!std::regex_match(arch, match, kPattern)) {
    fail(ErrorCode::kInvalidArgument, "arch: expected the form sm_XY (e.g. sm_90), got '{}'", arch);
  }
  const int cc = std::stoi(match[1].str());
  if (cc < 75) fail(ErrorCode::kUnsupported, "arch: NVRTC 13 targets sm_75 and newer, got '{}'", arch);
  return cc;
}

}  // namespace convjit
