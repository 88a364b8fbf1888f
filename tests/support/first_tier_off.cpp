// Linked into the test programs that run conv2d: they test the problems' own kernels, which
// the first tier (on by default for Runtime::conv2d) would replace on every first call with
// the generic one. Tests of the tier ask for it (RuntimeOptions::first_tier = true); a
// CONVJIT_FIRST_TIER set outside the program is left as it is.
#include <cstdlib>

namespace {
[[maybe_unused]] const bool kFirstTierOff = [] { return ::setenv("CONVJIT_FIRST_TIER", "0", /*overwrite=*/0) == 0; }();
}  // namespace
