#include "cache/entry_file.hpp"

#include <fmt/format.h>

#include <array>
#include <charconv>

#include "hash/sha256.hpp"

namespace convjit {

namespace {
// Bump with kCacheFormatVersion when sections are added, removed or reordered.
constexpr std::string_view kMagic = "convjit-cache-entry 1\n";
constexpr std::string_view kTrailer = "end sha256:";

struct Section {
  std::string_view name;
  std::string CacheEntry::*field;
};
constexpr std::array<Section, 7> kSections = {{
    {"key", &CacheEntry::key_text},
    {"kernel", &CacheEntry::kernel_name},
    {"source", &CacheEntry::source},
    {"ptx", &CacheEntry::ptx},
    {"cubin", &CacheEntry::cubin},
    {"options", &CacheEntry::options},
    {"log", &CacheEntry::log},
}};

// Reads up to the next '\n' from `bytes` at `pos`; false when there is none.
bool next_line(std::string_view bytes, std::size_t& pos, std::string_view& line) {
  const std::size_t end = bytes.find('\n', pos);
  if (end == std::string_view::npos) return false;
  line = bytes.substr(pos, end - pos);
  pos = end + 1;
  return true;
}
}  // namespace

std::string serialize_entry(const CacheEntry& entry) {
  std::string out(kMagic);
  for (const auto& section : kSections) {
    const std::string& body = entry.*section.field;
    fmt::format_to(std::back_inserter(out), "{} {} sha256:{}\n", section.name, body.size(), sha256_hex(body));
    out += body;
    out += '\n';
  }
  const std::string digest = sha256_hex(out);
  out += kTrailer;
  out += digest;
  out += '\n';
  return out;
}

std::optional<CacheEntry> parse_entry(std::string_view bytes, std::string& why) {
  if (bytes.empty()) {
    why = "empty file";
    return std::nullopt;
  }
  if (!bytes.starts_with(kMagic)) {
    why = "not a convjit cache entry of this format (bad header)";
    return std::nullopt;
  }
  CacheEntry entry;
  std::size_t pos = kMagic.size();
  for (const auto& section : kSections) {
    std::string_view header;
    if (!next_line(bytes, pos, header)) {
      why = fmt::format("truncated before section '{}'", section.name);
      return std::nullopt;
    }
    // "<name> <size> sha256:<hex>"
    const std::string prefix = fmt::format("{} ", section.name);
    if (!header.starts_with(prefix)) {
      why = fmt::format("expected section '{}'", section.name);
      return std::nullopt;
    }
    header.remove_prefix(prefix.size());
    std::size_t size = 0;
    const auto [end, ec] = std::from_chars(header.data(), header.data() + header.size(), size);
    const std::string_view rest(end, header.data() + header.size() - end);
    if (ec != std::errc() || !rest.starts_with(" sha256:") || rest.size() != 8 + 64) {
      why = fmt::format("malformed header of section '{}'", section.name);
      return std::nullopt;
    }
    if (size > bytes.size() - pos || bytes.size() - pos - size < 1 || bytes[pos + size] != '\n') {
      why = fmt::format("section '{}' is truncated", section.name);
      return std::nullopt;
    }
    const std::string_view body = bytes.substr(pos, size);
    if (sha256_hex(body) != rest.substr(8)) {
      why = fmt::format("checksum mismatch in section '{}'", section.name);
      return std::nullopt;
    }
    entry.*section.field = std::string(body);
    pos += size + 1;
  }
  const std::string_view covered = bytes.substr(0, pos);
  std::string_view trailer;
  if (!next_line(bytes, pos, trailer) || !trailer.starts_with(kTrailer) || pos != bytes.size()) {
    why = "missing or malformed trailer";
    return std::nullopt;
  }
  if (trailer.substr(kTrailer.size()) != sha256_hex(covered)) {
    why = "checksum mismatch over the whole entry";
    return std::nullopt;
  }
  return entry;
}

}  // namespace convjit
