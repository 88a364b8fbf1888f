#include "cache/remote_entry.hpp"

#include <fmt/format.h>

#include <charconv>

#include "base/hmac_sha256.hpp"

namespace convjit {

namespace {
// Bump when the envelope changes (not the entry inside: that has its own magic).
constexpr std::string_view kMagic = "convjit-remote-entry 1\n";
constexpr std::string_view kMacField = "hmac-sha256 ";
constexpr std::size_t kMacLineBytes = kMacField.size() + 64 + 1;

// Reads "<name> <number>\n" at `pos`.
bool read_number_line(std::string_view bytes, std::size_t& pos, std::string_view name, std::size_t& number) {
  const std::size_t end = bytes.find('\n', pos);
  if (end == std::string_view::npos) return false;
  std::string_view line = bytes.substr(pos, end - pos);
  if (!line.starts_with(name) || line.size() <= name.size() || line[name.size()] != ' ') return false;
  line.remove_prefix(name.size() + 1);
  const auto [stop, ec] = std::from_chars(line.data(), line.data() + line.size(), number);
  if (ec != std::errc() || stop != line.data() + line.size()) return false;
  pos = end + 1;
  return true;
}

// Reads "<name> <size>\n<body>\n" at `pos`.
std::optional<std::string_view> read_block(std::string_view bytes, std::size_t& pos, std::string_view name) {
  std::size_t size = 0;
  if (!read_number_line(bytes, pos, name, size)) return std::nullopt;
  if (size > bytes.size() - pos || bytes.size() - pos - size < 1 || bytes[pos + size] != '\n') return std::nullopt;
  const std::string_view body = bytes.substr(pos, size);
  pos += size + 1;
  return body;
}
}  // namespace

std::string seal_remote_entry(std::string_view mac_key, int format_version, const CacheEntry& entry) {
  const std::string bytes = serialize_entry(entry);
  std::string out(kMagic);
  fmt::format_to(std::back_inserter(out), "format {}\nkey {}\n", format_version, entry.key_text.size());
  out += entry.key_text;
  fmt::format_to(std::back_inserter(out), "\nentry {}\n", bytes.size());
  out += bytes;
  out += '\n';
  const std::string mac = hmac_sha256_hex(mac_key, out);
  out += kMacField;
  out += mac;
  out += '\n';
  return out;
}

std::optional<CacheEntry> open_remote_entry(std::string_view mac_key, int format_version, std::string_view key_text,
                                            std::string_view value, std::string& why) {
  // The MAC line has a fixed size at the end, so the MAC is checked before any
  // other byte of the value is interpreted.
  if (value.size() < kMagic.size() + kMacLineBytes) {
    why = value.empty() ? "empty value" : "too short to be a convjit remote entry";
    return std::nullopt;
  }
  const std::string_view signed_part = value.substr(0, value.size() - kMacLineBytes);
  const std::string_view mac_line = value.substr(signed_part.size());
  if (!mac_line.starts_with(kMacField) || !mac_line.ends_with('\n')) {
    why = "no MAC line at the end";
    return std::nullopt;
  }
  const std::string_view mac = mac_line.substr(kMacField.size(), 64);
  if (!constant_time_equal(mac, hmac_sha256_hex(mac_key, signed_part))) {
    why = "its MAC does not verify (tampered, or written with another key)";
    return std::nullopt;
  }

  // Authentic from here on: what follows guards against our own mistakes and against
  // an authentic entry replayed under another key's name.
  std::size_t pos = 0;
  std::size_t format = 0;
  if (!signed_part.starts_with(kMagic)) {
    why = "not a convjit remote entry of this envelope version";
    return std::nullopt;
  }
  pos = kMagic.size();
  if (!read_number_line(signed_part, pos, "format", format)) {
    why = "malformed format line";
    return std::nullopt;
  }
  if (format != static_cast<std::size_t>(format_version)) {
    why = fmt::format("written for cache format {}, this is {}", format, format_version);
    return std::nullopt;
  }
  const auto key = read_block(signed_part, pos, "key");
  const auto bytes = key ? read_block(signed_part, pos, "entry") : std::nullopt;
  if (!key || !bytes || pos != signed_part.size()) {
    why = "malformed envelope";
    return std::nullopt;
  }
  if (*key != key_text) {
    why = "it holds the entry of another key (an authentic entry stored under the wrong name)";
    return std::nullopt;
  }
  std::string entry_why;
  auto entry = parse_entry(*bytes, entry_why);
  if (!entry) {
    why = "the entry inside is corrupt: " + entry_why;
    return std::nullopt;
  }
  if (entry->key_text != key_text) {
    why = "the entry inside is for another key";
    return std::nullopt;
  }
  return entry;
}

}  // namespace convjit
