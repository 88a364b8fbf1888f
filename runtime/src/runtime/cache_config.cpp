#include "runtime/cache_config.hpp"

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <string>

#include "base/log.hpp"

namespace convjit {

namespace {
std::optional<std::string_view> env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string_view(value);
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool readonly_from_env() {
  const auto value = env("CONVJIT_CACHE_READONLY");
  if (!value) return false;
  const std::string v = lower(*value);
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  log::warn("ignoring CONVJIT_CACHE_READONLY='{}': expected 1 or 0", *value);
  return false;
}

std::uint64_t max_bytes_from_env() {
  const auto value = env("CONVJIT_CACHE_MAX_SIZE");
  if (!value) return kDefaultCacheMaxBytes;
  if (const auto bytes = parse_byte_size(*value)) return *bytes;
  log::warn(
      "ignoring CONVJIT_CACHE_MAX_SIZE='{}': expected bytes or a number with K, M, G or T (0: no limit); "
      "using {} GiB",
      *value, kDefaultCacheMaxBytes >> 30);
  return kDefaultCacheMaxBytes;
}
}  // namespace

std::optional<std::uint64_t> parse_byte_size(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  std::uint64_t number = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (ec != std::errc() || end == text.data()) return std::nullopt;
  const std::string suffix = lower(std::string_view(end, static_cast<std::size_t>(text.data() + text.size() - end)));
  unsigned shift = 0;
  if (suffix.empty() || suffix == "b") {
    shift = 0;
  } else {
    const std::string_view unit = std::string_view(suffix).substr(0, 1);
    const std::string_view tail = std::string_view(suffix).substr(1);
    if (!(tail.empty() || tail == "b" || tail == "ib")) return std::nullopt;
    if (unit == "k")
      shift = 10;
    else if (unit == "m")
      shift = 20;
    else if (unit == "g")
      shift = 30;
    else if (unit == "t")
      shift = 40;
    else
      return std::nullopt;
  }
  if (shift != 0 && number > (~std::uint64_t{0} >> shift)) return std::nullopt;
  return number << shift;
}

DiskCacheOptions disk_cache_options(const RuntimeOptions& options) {
  DiskCacheOptions out;
  out.readonly = options.cache_readonly ? *options.cache_readonly : readonly_from_env();
  out.max_bytes = options.cache_max_bytes ? *options.cache_max_bytes : max_bytes_from_env();
  return out;
}

}  // namespace convjit
