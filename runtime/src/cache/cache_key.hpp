#pragma once
// What the caches store an entry under. They never look inside: the key text is compared
// byte for byte on every load (so a hash collision cannot serve another entry), and the
// hash names the entry. The runtime builds both from its kernel key.

#include <string>

namespace convjit {

// Bump when the entry file layout changes, so that old entries are never read: the disk
// cache keeps each version's entries in its own directory (v<N>), the remote cache under
// its own key prefix, and both carry it inside every entry.
// 2: entries gained a "meta" section (cache/entry_file.cpp).
inline constexpr int kCacheFormatVersion = 2;

struct CacheKey {
  std::string text;  // everything that changes the binary, one "field value" per line
  std::string hash;  // sha256 of text, hex: the entry's name
  bool operator==(const CacheKey&) const = default;
};

}  // namespace convjit
