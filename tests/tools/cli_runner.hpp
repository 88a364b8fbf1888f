#pragma once
// Runs the built convjit executable (CONVJIT_CLI_PATH) as a child process and
// captures its exit status, stdout and stderr.

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "support/temp_dir.hpp"

namespace convjit::testing {

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// `env` entries "NAME=value" are added or replace; a bare "NAME" removes it.
CliResult run_cli(const std::vector<std::string>& args, const std::vector<std::string>& env = {});

// A test with its own cache directory (CONVJIT_CACHE_DIR) and scratch files.
class CliTest : public ::testing::Test {
 protected:
  std::filesystem::path cache_dir() const { return dir_.path() / "cache"; }
  std::filesystem::path write_file(const std::string& name, const std::string& text) const;
  // run_cli with CONVJIT_CACHE_DIR set to cache_dir() and CONVJIT_PROGRESS unset.
  CliResult cli(const std::vector<std::string>& args, std::vector<std::string> env = {}) const;

  TempDir dir_;
};

// nvdisasm where the tool looks for it (PATH, CUDA_HOME, CUDA_PATH, /usr/local/cuda/bin).
bool disassembler_available();

// The headline problem (KernelBench level-1 #56) and small problems that compile fast.
inline constexpr const char* kHeadline = "n8c64h512w256k128r5s7";
inline constexpr const char* kSmallA = "n1c4h12w10k8r3s3";
inline constexpr const char* kSmallB = "n2c8h9k8r3 pad=1 groups=8 bias=1";

}  // namespace convjit::testing
