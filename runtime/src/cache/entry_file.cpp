#include "cache/entry_file.hpp"

#include <fmt/format.h>

#include <array>
#include <charconv>
#include <cmath>

#include "base/sha256.hpp"

namespace convjit {

namespace {
// Bump with kCacheFormatVersion when sections are added, removed or reordered.
// 2: added the "meta" section (compile time, for the time-saved statistic).
constexpr std::string_view kMagic = "convjit-cache-entry 2\n";
constexpr std::string_view kTrailer = "end sha256:";
constexpr std::string_view kMetaName = "meta";
// The header's words without the version: shared by every format convjit has written.
constexpr std::string_view kMagicWords = "convjit-cache-entry ";
static_assert(kMagic.starts_with(kMagicWords));

struct Section {
  std::string_view name;
  std::string CacheEntry::*field;
};
// NOTE: "key" must stay first: peek_entry_key reads only the start of a file.
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

void write_section(std::string& out, std::string_view name, std::string_view body) {
  fmt::format_to(std::back_inserter(out), "{} {} sha256:{}\n", name, body.size(), sha256_hex(body));
  out += body;
  out += '\n';
}

// Reads section `name` at `pos`: "<name> <size> sha256:<hex>\n<body>\n", its checksum
// verified when `verify` says so.
std::optional<std::string_view> read_section(std::string_view bytes, std::size_t& pos, std::string_view name,
                                             std::string& why, bool verify = true) {
  std::string_view header;
  if (!next_line(bytes, pos, header)) {
    why = fmt::format("truncated before section '{}'", name);
    return std::nullopt;
  }
  if (!header.starts_with(name) || header.size() == name.size() || header[name.size()] != ' ') {
    why = fmt::format("expected section '{}'", name);
    return std::nullopt;
  }
  header.remove_prefix(name.size() + 1);
  std::size_t size = 0;
  const auto [end, ec] = std::from_chars(header.data(), header.data() + header.size(), size);
  const std::string_view rest(end, static_cast<std::size_t>(header.data() + header.size() - end));
  if (ec != std::errc() || end == header.data() || !rest.starts_with(" sha256:") || rest.size() != 8 + 64) {
    why = fmt::format("malformed header of section '{}'", name);
    return std::nullopt;
  }
  if (size > bytes.size() - pos || bytes.size() - pos - size < 1 || bytes[pos + size] != '\n') {
    why = fmt::format("section '{}' is truncated", name);
    return std::nullopt;
  }
  const std::string_view body = bytes.substr(pos, size);
  if (verify && sha256_hex(body) != rest.substr(8)) {
    why = fmt::format("checksum mismatch in section '{}'", name);
    return std::nullopt;
  }
  pos += size + 1;
  return body;
}

std::string meta_text(const CacheEntry& entry) { return fmt::format("compile_ms {}\n", entry.compile_ms); }

bool parse_meta(std::string_view body, CacheEntry& entry) {
  constexpr std::string_view kField = "compile_ms ";
  if (!body.starts_with(kField) || !body.ends_with('\n')) return false;
  const std::string_view number = body.substr(kField.size(), body.size() - kField.size() - 1);
  double ms = 0;
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), ms);
  if (ec != std::errc() || end != number.data() + number.size() || !std::isfinite(ms) || ms < 0) return false;
  entry.compile_ms = ms;
  return true;
}
}  // namespace

std::string serialize_entry(const CacheEntry& entry) {
  std::string out(kMagic);
  for (const auto& section : kSections) write_section(out, section.name, entry.*section.field);
  write_section(out, kMetaName, meta_text(entry));
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
  // The trailer's digest covers every byte before it, the sections' own digests
  // included, so when it matches, every section does too: each byte is hashed once
  // (a warm start reads a few hundred KB). Only a mismatch hashes the sections, to say
  // which one is damaged.
  const auto read_sections = [&](bool verify, CacheEntry* entry) -> std::optional<std::size_t> {
    std::size_t pos = kMagic.size();
    for (const auto& section : kSections) {
      const auto body = read_section(bytes, pos, section.name, why, verify);
      if (!body) return std::nullopt;
      if (entry != nullptr) entry->*section.field = std::string(*body);
    }
    const auto meta = read_section(bytes, pos, kMetaName, why, verify);
    if (!meta) return std::nullopt;
    if (entry != nullptr && !parse_meta(*meta, *entry)) {
      why = "malformed section 'meta'";
      return std::nullopt;
    }
    return pos;
  };
  CacheEntry entry;
  const auto end = read_sections(/*verify=*/false, &entry);
  if (!end) return std::nullopt;
  std::size_t pos = *end;
  const std::string_view covered = bytes.substr(0, pos);
  std::string_view trailer;
  if (!next_line(bytes, pos, trailer) || !trailer.starts_with(kTrailer) || pos != bytes.size()) {
    why = "missing or malformed trailer";
    return std::nullopt;
  }
  if (trailer.substr(kTrailer.size()) != sha256_hex(covered)) {
    if (read_sections(/*verify=*/true, nullptr)) why = "checksum mismatch over the whole entry";
    return std::nullopt;
  }
  return entry;
}

std::optional<std::string> peek_entry_key(std::string_view prefix, std::string& why) {
  if (prefix.empty()) {
    why = "empty file";
    return std::nullopt;
  }
  if (!prefix.starts_with(kMagic)) {
    why = "not a convjit cache entry of this format (bad header)";
    return std::nullopt;
  }
  std::size_t pos = kMagic.size();
  const auto body = read_section(prefix, pos, kSections[0].name, why);
  if (!body) return std::nullopt;
  return std::string(*body);
}

bool starts_like_an_entry(std::string_view prefix) {
  if (!prefix.starts_with(kMagicWords)) return false;
  prefix.remove_prefix(kMagicWords.size());
  const std::size_t digits = prefix.find_first_not_of("0123456789");
  return digits != 0 && digits != std::string_view::npos && prefix[digits] == '\n';
}

bool could_start_an_entry(std::string_view prefix) {
  if (prefix.size() <= kMagicWords.size()) return kMagicWords.starts_with(prefix);
  prefix.remove_prefix(kMagicWords.size());
  const std::size_t digits = prefix.find_first_not_of("0123456789");
  return digits == std::string_view::npos || (digits != 0 && prefix[digits] == '\n');
}

}  // namespace convjit
