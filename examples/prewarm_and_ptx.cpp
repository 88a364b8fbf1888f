// Prewarms the cache for a list of shapes and prints the PTX of one. With --arch
// (or no GPU present, in which case sm_90 is assumed) it needs no GPU at all.
//   prewarm_and_ptx [--arch sm_90] [--full]
#include <fmt/format.h>

#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "convjit/convjit.hpp"

int main(int argc, char** argv) try {
  std::optional<std::string> arch;
  bool full = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--arch") == 0 && i + 1 < argc) {
      arch = argv[++i];
    } else if (std::strcmp(argv[i], "--full") == 0) {
      full = true;
    } else {
      fmt::print(stderr, "usage: {} [--arch sm_XY] [--full]\n", argv[0]);
      return 2;
    }
  }
  convjit::Runtime rt;
  if (!arch) {
    try {
      arch = rt.device_arch();
    } catch (const convjit::Error& e) {
      arch = "sm_90";
      fmt::print("no GPU here ({}); compiling for {}\n",
                 e.code() == convjit::ErrorCode::kNoDriver ? "no driver" : "no device", *arch);
    }
  }
  // The KernelBench level-1 2D forward convolutions (86 as its depthwise and pointwise halves).
  using D = convjit::Conv2dDesc;
  const std::vector<D> shapes = {
      D{.n = 256,
        .c = 3,
        .h = 224,
        .w = 224,
        .k = 96,
        .r = 11,
        .s = 11,
        .stride_h = 4,
        .stride_w = 4,
        .pad_h = 2,
        .pad_w = 2,
        .bias = true},
      D{.n = 8, .c = 64, .h = 512, .w = 1024, .k = 128, .r = 3, .s = 3},
      D{.n = 8, .c = 64, .h = 512, .w = 256, .k = 128, .r = 5, .s = 7},
      D{.n = 8, .c = 32, .h = 512, .w = 512, .k = 64, .r = 5, .s = 9},
      D{.n = 16, .c = 16, .h = 1024, .w = 1024, .k = 128, .r = 3, .s = 3},
      D{.n = 8,
        .c = 32,
        .h = 512,
        .w = 512,
        .k = 64,
        .r = 5,
        .s = 9,
        .pad_h = 2,
        .pad_w = 4,
        .dilation_h = 2,
        .dilation_w = 3},
      D{.n = 16, .c = 64, .h = 512, .w = 512, .k = 64, .r = 3, .s = 3, .groups = 64},
      D{.n = 64, .c = 8, .h = 512, .w = 512, .k = 8, .r = 3, .s = 1, .groups = 8},
      D{.n = 64, .c = 128, .h = 256, .w = 512, .k = 128, .r = 3, .s = 3, .groups = 128},
      D{.n = 32, .c = 128, .h = 128, .w = 256, .k = 128, .r = 3, .s = 7, .groups = 128},
      D{.n = 16, .c = 64, .h = 512, .w = 512, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 64},
      D{.n = 16, .c = 64, .h = 512, .w = 512, .k = 128, .r = 1, .s = 1},
      D{.n = 16, .c = 64, .h = 1024, .w = 1024, .k = 128, .r = 1, .s = 1},
  };
  const auto result = rt.prewarm(shapes, *arch);
  const auto stats = rt.stats();
  fmt::print("prewarm   {} shapes for {} into {}\n", shapes.size(), *arch, rt.cache_dir().string());
  fmt::print("          compiled {}, already cached {}, failed {}, compile time {:.0f} ms\n", result.compiled,
             result.already_cached, result.failed, stats.compile_ms);
  for (const auto& error : result.errors) fmt::print("  failed: {}\n", error);

  const auto info = rt.inspect(shapes[2], *arch);
  fmt::print("\nPTX of {} ({} bytes; CUBIN {} bytes; entry {})\n", info.kernel_name, info.ptx.size(), info.cubin_bytes,
             info.cache_path.string());
  std::istringstream lines(info.ptx);
  std::string line;
  int shown = 0;
  while (std::getline(lines, line) && (full || shown < 60)) {
    fmt::print("{}\n", line);
    ++shown;
  }
  if (!full) fmt::print("... (--full prints all of it)\n");
  return result.failed == 0 ? 0 : 1;
} catch (const convjit::Error& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 2;
}
