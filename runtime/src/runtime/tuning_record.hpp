#pragma once
// The autotuner's choice for one (problem, device), kept in the cache directory as one
// small file: written atomically, verified (full key + checksum) before use.

#include <filesystem>
#include <optional>
#include <string>

#include "convjit/runtime.hpp"

namespace convjit {

class TuningRecords {
 public:
  explicit TuningRecords(std::filesystem::path cache_dir);

  // The stored choice for `key`; nullopt when absent, damaged or for another key.
  std::optional<Algorithm> load(const std::string& key) const;
  // Best effort: a failure to write is logged, never thrown (tuning still applies in memory).
  void store(const std::string& key, Algorithm choice, const std::string& timings) const;

  std::filesystem::path path_for(const std::string& key) const;

 private:
  std::filesystem::path dir_;
};

}  // namespace convjit
