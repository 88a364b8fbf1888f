#pragma once
// Helpers for the cache tests: real keys (sha256 names), entries of a chosen size,
// and capturing the warnings the cache prints.

#include <gtest/gtest.h>

#include <string>

#include "base/log.hpp"
#include "base/sha256.hpp"
#include "cache/cache_key.hpp"
#include "cache/entry_file.hpp"

namespace convjit::testing {

inline CacheKey test_key(const std::string& text) { return CacheKey{text, sha256_hex(text)}; }

inline CacheEntry test_entry(const CacheKey& key, std::size_t cubin_bytes = 5) {
  CacheEntry entry{key.text, "kernel", "source", "ptx", std::string(cubin_bytes, 'c'), "opts", "log"};
  entry.compile_ms = 12.5;
  return entry;
}

// Everything written to stderr (where convjit logs) while this object lives.
class CapturedWarnings {
 public:
  CapturedWarnings() : saved_(log::level()) {
    log::set_level(LogLevel::kWarn);
    ::testing::internal::CaptureStderr();
  }
  ~CapturedWarnings() {
    if (!done_) ::testing::internal::GetCapturedStderr();
    log::set_level(saved_);
  }
  CapturedWarnings(const CapturedWarnings&) = delete;
  CapturedWarnings& operator=(const CapturedWarnings&) = delete;

  // Stops capturing; returns the text.
  std::string text() {
    if (!done_) {
      text_ = ::testing::internal::GetCapturedStderr();
      done_ = true;
    }
    return text_;
  }

 private:
  LogLevel saved_;
  bool done_ = false;
  std::string text_;
};

inline std::size_t count_of(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (auto pos = text.find(part); pos != std::string::npos; pos = text.find(part, pos + 1)) ++n;
  return n;
}

}  // namespace convjit::testing
