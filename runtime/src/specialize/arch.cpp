#include "specialize/arch.hpp"

#include <string_view>

#include "base/fail.hpp"

namespace convjit {

int parse_arch(const std::string& arch) {
  // "sm_" then 2 or 3 digits, then an optional "a". By hand, not std::regex: every kernel
  // request parses its arch, and a regex's first construction in a process costs a
  // warm start more than the rest of its key.
  const std::string_view text(arch);
  std::string_view digits = text.starts_with("sm_") ? text.substr(3) : std::string_view();
  if (digits.ends_with('a')) digits.remove_suffix(1);
  int cc = 0;
  bool ok = digits.size() == 2 || digits.size() == 3;
  for (const char c : digits) {
    ok &= c >= '0' && c <= '9';
    cc = cc * 10 + (c - '0');
  }
  if (!ok) fail(ErrorCode::kInvalidArgument, "arch: expected the form sm_XY (e.g. sm_90), got '{}'", arch);
  if (cc < 75) fail(ErrorCode::kUnsupported, "arch: NVRTC 13 targets sm_75 and newer, got '{}'", arch);
  return cc;
}

}  // namespace convjit
