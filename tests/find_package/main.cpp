// A program outside the project, built against the installed package: proves that
// find_package(convjit) and convjit::convjit are all a user needs.
#include <convjit/convjit.hpp>
#include <cstdio>

int main() {
  convjit::Runtime rt;
  const convjit::Conv2dDesc d{.n = 1, .c = 8, .h = 16, .w = 16, .k = 16, .r = 3, .s = 3};
  const std::string ptx = rt.ptx(d, "sm_90");
  std::printf("installed convjit compiled %zu bytes of PTX\n", ptx.size());
  return ptx.find(".target sm_90") == std::string::npos ? 1 : 0;
}
