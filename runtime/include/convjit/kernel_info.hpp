#pragma once
// What the runtime generated for a problem, for inspection (Runtime::inspect).

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "convjit/algorithm.hpp"

namespace convjit {

// What ptxas reported for a kernel (from NVRTC's log; no GPU needed).
struct ResourceUsage {
  int registers = 0;  // per thread
  int static_shared_bytes = 0;
  int stack_bytes = 0;  // local-memory stack frame
  int spill_store_bytes = 0;
  int spill_load_bytes = 0;
};

// What the runtime generated for one problem, for inspection.
struct KernelInfo {
  std::string algorithm;  // e.g. "direct"
  std::string tile;       // the work split, e.g. "256 pixels x 8 channels per block"
  std::uint64_t grid_blocks = 0;
  unsigned block_threads = 0;
  unsigned dynamic_shared_bytes = 0;
  ResourceUsage resources;
  std::string kernel_name;
  std::string arch;      // e.g. "sm_90"
  std::string key_hash;  // sha256 of the full cache key
  std::string source;    // specialized source, as compiled
  std::string ptx;
  std::size_t cubin_bytes = 0;
  std::string cubin;                 // the CUBIN itself, for disassembly (convjit inspect --sass)
  AlignmentNeeds alignment;          // what the kernel needs of each pointer (less gets a variant)
  std::string options;               // NVRTC options, space separated
  std::string log;                   // NVRTC log (warnings), may be empty
  std::filesystem::path cache_path;  // empty when the disk cache is off
};

}  // namespace convjit
