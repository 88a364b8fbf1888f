#pragma once
// jit_overhead's three measurements, each returning what it measured as JSON and
// printing its own table. Shared by jit_overhead.cpp (options, output) and one file per part.

#include <filesystem>
#include <string>
#include <vector>

#include "convjit/conv2d_desc.hpp"

namespace convjit::bench {

// (a) Time to first result in new processes: for each shape, a child with an empty
// cache (cold) and a child with the cache the first one filled (warm disk); each also
// times its second call (hot). Children are this program re-executed with --child.
struct ColdOptions {
  std::vector<std::string> shapes;  // one-line or comma form
  std::filesystem::path work_dir;   // cache directories are made (and removed) under it
  bool keep = false;
  // Leave CUDA_CACHE_PATH alone (NVRTC's compute cache below it: a kernel compiled
  // before on this machine compiles faster) instead of an empty one per child.
  bool machine_compute_cache = false;
  // Each child spins this long after its device set-up, before the first call's clock.
  int hold_us = 0;
  // Also a third child per shape, cold again but with RuntimeOptions::first_tier: its
  // first result comes from the generic kernel while the specialized one compiles.
  bool first_tier = false;
};
struct ColdResult {
  std::string json;
  bool ok = true;  // every child ran and reported
};
ColdResult measure_cold_warm_hot(const ColdOptions& options);

// The child side: one problem, two calls, one JSON line on stdout prefixed "CHILD ".
int child_main(const std::string& mode, const std::string& shape, long long spawn_ns, int hold_us);

// (b) Host time of one call: rt.conv2d (hot), plan.run and a bare cuLaunchKernel of the
// same CUfunction, on a tiny direct-kernel problem, `calls` each, synchronizing every
// `sync_every` calls outside the timed region.
struct HostCostOptions {
  std::string shape;
  int calls = 10000;
  int sync_every = 1000;
  std::filesystem::path work_dir;
};
std::string measure_host_cost(const HostCostOptions& options);

// (c) Runtime::prewarm throughput: kernels compiled per second with N threads sharing
// one Runtime, an empty cache for each N, no GPU needed (explicit arch). Each N compiles
// kernels of its own (another batch size), so that no cache below NVRTC serves one N
// what an earlier N compiled.
struct PrewarmOptions {
  int count = 64;
  std::vector<int> jobs = {1, 2, 4, 8, 16};
  std::string arch = "sm_90";
  std::filesystem::path work_dir;
  bool keep = false;
};
std::string measure_prewarm(const PrewarmOptions& options);
// The descriptors prewarm compiles: `count` of 64 distinct realistic problems, both math
// modes, at batch size 8 + `round` (each round's kernels differ from every other's).
std::vector<Conv2dDesc> prewarm_descs(int count, int round = 0);

long long steady_now_ns();

}  // namespace convjit::bench
