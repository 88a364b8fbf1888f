#include "cache/entry_file.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>

#include "base/sha256.hpp"
#include "cache/file_system.hpp"

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

struct SectionHeader {
  std::size_t size = 0;
  std::string_view digest;  // 64 hex digits
};

// Reads the header line of section `name` at `pos`: "<name> <size> sha256:<hex>\n".
std::optional<SectionHeader> read_section_header(std::string_view bytes, std::size_t& pos, std::string_view name,
                                                 std::string& why) {
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
  return SectionHeader{size, rest.substr(8)};
}

// Reads section `name` at `pos`: its header, then "<body>\n", the body's checksum
// verified when `verify` says so.
std::optional<std::string_view> read_section(std::string_view bytes, std::size_t& pos, std::string_view name,
                                             std::string& why, bool verify = true) {
  const auto header = read_section_header(bytes, pos, name, why);
  if (!header) return std::nullopt;
  const std::size_t size = header->size;
  if (size > bytes.size() - pos || bytes.size() - pos - size < 1 || bytes[pos + size] != '\n') {
    why = fmt::format("section '{}' is truncated", name);
    return std::nullopt;
  }
  const std::string_view body = bytes.substr(pos, size);
  if (verify && sha256_hex(body) != header->digest) {
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

namespace {
// The first read of a load: the header, the key, the kernel name and the source's header
// line in one read, for keys of the usual length (a longer one costs more reads).
constexpr std::size_t kFirstRead = std::size_t{4} << 10;
// Longer than any valid section header line: a name, a size, " sha256:" and 64 digits.
constexpr std::size_t kMaxHeaderLine = 128;

// The part of an entry's file a load holds: bytes [base, base + bytes.size()).
class EntryWindow {
 public:
  EntryWindow(std::uint64_t file_size, const EntryReadAt& read_at) : size_(file_size), read_at_(read_at) {}

  // Makes the window hold [offset, offset + len) (less at the file's end), reading
  // [offset, offset + max(len, ahead)) when it does not. False after a read error.
  bool cover(std::uint64_t offset, std::uint64_t len, std::uint64_t ahead, std::string& why) {
    offset = std::min(offset, size_);
    len = std::min(len, size_ - offset);
    if (offset >= base_ && offset + len <= base_ + bytes_.size()) return true;
    const std::uint64_t want = std::min(std::max(len, ahead), size_ - offset);
    if (const int err = read_at_(offset, static_cast<std::size_t>(want), bytes_); err != 0) {
      why = fmt::format("read error: {}", errno_text(err));
      return false;
    }
    base_ = offset;
    read_ += bytes_.size();
    return true;
  }
  // The window from file offset `offset` on (base <= offset after a cover of it).
  std::string_view from(std::uint64_t offset) const {
    const std::string_view all(bytes_);
    return offset - base_ >= all.size() ? std::string_view() : all.substr(offset - base_);
  }
  std::uint64_t size() const noexcept { return size_; }
  std::uint64_t bytes_read() const noexcept { return read_; }

 private:
  std::uint64_t size_;
  const EntryReadAt& read_at_;
  std::string bytes_;
  std::uint64_t base_ = 0;
  std::uint64_t read_ = 0;
};

// What a load skips: the source and the PTX.
bool load_reads(std::string_view section) { return section != "source" && section != "ptx"; }
}  // namespace

std::optional<CacheEntry> read_entry_for_load(std::uint64_t file_size, const EntryReadAt& read_at, std::string& why,
                                              std::uint64_t& bytes_read) {
  EntryWindow window(file_size, read_at);
  const auto result = [&](std::optional<CacheEntry> entry) {
    bytes_read = window.bytes_read();
    return entry;
  };
  if (file_size == 0) {
    why = "empty file";
    return result(std::nullopt);
  }
  if (!window.cover(0, kMagic.size(), kFirstRead, why)) return result(std::nullopt);
  if (!window.from(0).starts_with(kMagic)) {
    why = "not a convjit cache entry of this format (bad header)";
    return result(std::nullopt);
  }
  // Every section in file order, meta last; nullptr: meta.
  std::array<std::pair<std::string_view, std::string CacheEntry::*>, kSections.size() + 1> order{};
  for (std::size_t i = 0; i < kSections.size(); ++i) order[i] = {kSections[i].name, kSections[i].field};
  order.back() = {kMetaName, nullptr};

  CacheEntry entry;
  std::uint64_t pos = kMagic.size();
  bool after_skipped = false;  // the '\n' closing a skipped body is checked with the next header
  for (std::size_t i = 0; i < order.size(); ++i) {
    const auto [name, field] = order[i];
    bool rest_read = true;  // this section and every one after it are read: read to the end at once
    for (std::size_t j = i; j < order.size(); ++j) rest_read &= load_reads(order[j].first);
    const std::uint64_t start = after_skipped ? pos - 1 : pos;
    if (!window.cover(start, kMaxHeaderLine + 1, rest_read ? file_size - start : kMaxHeaderLine + 1, why)) {
      return result(std::nullopt);
    }
    if (after_skipped && !window.from(start).starts_with('\n')) {
      why = fmt::format("section '{}' is truncated", order[i - 1].first);
      return result(std::nullopt);
    }
    std::string_view view = window.from(pos);
    std::size_t at = 0;
    const auto header = read_section_header(view, at, name, why);
    if (!header) return result(std::nullopt);
    const std::uint64_t body = pos + at;
    if (header->size > file_size - body || file_size - body - header->size < 1) {
      why = fmt::format("section '{}' is truncated", name);
      return result(std::nullopt);
    }
    pos = body + header->size + 1;
    after_skipped = !load_reads(name);
    if (after_skipped) continue;
    const std::string digest(header->digest);  // the window's bytes may move below
    if (!window.cover(body, header->size + 1, rest_read ? file_size - body : header->size + 1, why)) {
      return result(std::nullopt);
    }
    view = window.from(body);
    if (view.size() < header->size + 1 || view[header->size] != '\n') {
      why = fmt::format("section '{}' is truncated", name);
      return result(std::nullopt);
    }
    const std::string_view text = view.substr(0, header->size);
    if (sha256_hex(text) != digest) {
      why = fmt::format("checksum mismatch in section '{}'", name);
      return result(std::nullopt);
    }
    if (field != nullptr) {
      entry.*field = std::string(text);
    } else if (!parse_meta(text, entry)) {
      why = "malformed section 'meta'";
      return result(std::nullopt);
    }
  }
  // The trailer's form and place: a file cut short anywhere, the skipped bodies included,
  // has none where the sections end.
  std::string_view trailer;
  std::size_t at = 0;
  if (!window.cover(pos, file_size - pos, file_size - pos, why)) return result(std::nullopt);
  const std::string_view tail = window.from(pos);
  if (!next_line(tail, at, trailer) || !trailer.starts_with(kTrailer) || trailer.size() != kTrailer.size() + 64 ||
      at != tail.size() || pos + at != file_size) {
    why = "missing or malformed trailer";
    return result(std::nullopt);
  }
  return result(std::move(entry));
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
