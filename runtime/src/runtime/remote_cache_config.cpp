#include "runtime/remote_cache_config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <charconv>
#include <cstdlib>

#include "base/fail.hpp"
#include "base/log.hpp"
#include "cache/cache_key.hpp"
#include "cache/file_system.hpp"
#include "cache/redis_store.hpp"
#include "cache/redis_url.hpp"

namespace convjit {

namespace {

std::optional<std::string_view> env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string_view(value);
}

bool flag_from_env(const char* name) {
  const auto value = env(name);
  if (!value) return false;
  std::string v(*value);
  for (char& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  log::warn("ignoring {}='{}': expected 1 or 0", name, *value);
  return false;
}

std::chrono::milliseconds millis_from_env(const char* name, std::chrono::milliseconds fallback) {
  const auto value = env(name);
  if (!value) return fallback;
  long long ms = 0;
  const auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), ms);
  if (ec == std::errc() && end == value->data() + value->size() && ms > 0) return std::chrono::milliseconds(ms);
  log::warn("ignoring {}='{}': expected milliseconds above 0; using {}", name, *value, fallback.count());
  return fallback;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

constexpr std::size_t kMinKeyBytes = 16;

}  // namespace

std::string parse_mac_key(std::string_view text, std::string_view source) {
  std::string key;
  if (text.starts_with("hex:")) {
    const std::string_view digits = text.substr(4);
    if (digits.size() % 2 != 0) fail(ErrorCode::kCache, "{}: an odd number of hex digits after 'hex:'", source);
    for (std::size_t i = 0; i < digits.size(); i += 2) {
      const int high = hex_digit(digits[i]);
      const int low = hex_digit(digits[i + 1]);
      if (high < 0 || low < 0) fail(ErrorCode::kCache, "{}: a character that is not a hex digit after 'hex:'", source);
      key += static_cast<char>(high * 16 + low);
    }
  } else {
    key = std::string(text);
  }
  if (key.size() < kMinKeyBytes) {
    fail(ErrorCode::kCache,
         "{}: the key has {} bytes, fewer than {}; make one with: openssl rand -hex 32 (and use it as 'hex:<digits>' "
         "or as it is)",
         source, key.size(), kMinKeyBytes);
  }
  return key;
}

std::string read_mac_key_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ELOOP) {
      fail(ErrorCode::kCache, "remote cache key file '{}' is a symbolic link; name the file itself", path.string());
    }
    fail(ErrorCode::kCache, "cannot open remote cache key file '{}': {}", path.string(), errno_text(err));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    fail(ErrorCode::kCache, "cannot read remote cache key file '{}': {}", path.string(), errno_text(errno));
  }
  if (!S_ISREG(st.st_mode)) fail(ErrorCode::kCache, "remote cache key file '{}' is not a regular file", path.string());
  if (st.st_uid != ::geteuid()) {
    fail(ErrorCode::kCache,
         "remote cache key file '{}' belongs to uid {}, not to this user (uid {}); refusing a secret another user "
         "controls: run chown {} '{}'",
         path.string(), st.st_uid, ::geteuid(), ::geteuid(), path.string());
  }
  if ((st.st_mode & 077) != 0) {
    fail(ErrorCode::kCache,
         "remote cache key file '{}' can be read or written by other users (mode {:04o}); run chmod 600 '{}'",
         path.string(), st.st_mode & 07777, path.string());
  }
  std::string text;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(ErrorCode::kCache, "cannot read remote cache key file '{}': {}", path.string(), errno_text(errno));
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
    if (text.size() > 65536)
      fail(ErrorCode::kCache, "remote cache key file '{}' is too large for a key", path.string());
  }
  if (text.ends_with('\n')) text.pop_back();
  if (text.ends_with('\r')) text.pop_back();
  return parse_mac_key(text, fmt::format("remote cache key file '{}'", path.string()));
}

std::optional<std::chrono::seconds> parse_duration(std::string_view text) {
  std::uint64_t number = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (ec != std::errc() || end == text.data() || number == 0) return std::nullopt;
  const std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
  std::uint64_t scale = 0;
  if (unit.empty() || unit == "s")
    scale = 1;
  else if (unit == "m")
    scale = 60;
  else if (unit == "h")
    scale = 3600;
  else if (unit == "d")
    scale = 86400;
  else
    return std::nullopt;
  if (number > (std::uint64_t{1} << 40) / scale) return std::nullopt;
  return std::chrono::seconds(static_cast<std::int64_t>(number * scale));
}

RemoteCacheSetup open_remote_cache(const RuntimeOptions& options) {
  RemoteCacheSetup setup;
  std::string url_text;
  if (options.remote_cache) {
    url_text = *options.remote_cache;
  } else if (const auto value = env("CONVJIT_REMOTE_CACHE")) {
    url_text = std::string(*value);
  }
  if (url_text.empty() || url_text == "off") return setup;
  setup.configured = true;

  // Each reason to stay off is one warning, here, and the note `stats()` shows.
  // NOTE: it only records; callers `return setup` themselves (returning a move of the
  // named return value from a lambda would construct it from itself).
  const auto off = [&](std::string why) {
    log::warn("remote cache disabled: {}; kernels are compiled locally", why);
    setup.note = std::move(why);
  };
  try {
    RedisStoreOptions store_options;
    store_options.url = parse_redis_url(url_text);
    if (const auto password = env("CONVJIT_REMOTE_CACHE_PASSWORD")) store_options.url.password = *password;
    setup.where = store_options.url.redacted();
    if (!store_options.url.user.empty() && store_options.url.password.empty()) {
      off(
          fmt::format("'{}' names the user '{}' but no password; give redis://{}:PASSWORD@... or set "
                      "CONVJIT_REMOTE_CACHE_PASSWORD",
                      setup.where, store_options.url.user, store_options.url.user));
      return setup;
    }
    store_options.connect_timeout =
        options.remote_cache_connect_timeout
            ? *options.remote_cache_connect_timeout
            : millis_from_env("CONVJIT_REMOTE_CACHE_CONNECT_TIMEOUT_MS", std::chrono::milliseconds(200));
    store_options.command_timeout = options.remote_cache_timeout ? *options.remote_cache_timeout
                                                                 : millis_from_env("CONVJIT_REMOTE_CACHE_TIMEOUT_MS",
                                                                                   std::chrono::milliseconds(1000));
    if (const auto ca = env("CONVJIT_REMOTE_CACHE_TLS_CA")) store_options.tls_ca = *ca;
    if (const auto cert = env("CONVJIT_REMOTE_CACHE_TLS_CERT")) store_options.tls_cert = *cert;
    if (const auto key = env("CONVJIT_REMOTE_CACHE_TLS_KEY")) store_options.tls_key = *key;

    RemoteCacheOptions cache_options;
    if (options.remote_cache_key) {
      setup.key_source = "RuntimeOptions::remote_cache_key";
      cache_options.mac_key = parse_mac_key(*options.remote_cache_key, setup.key_source);
    } else if (const auto key = env("CONVJIT_REMOTE_CACHE_KEY")) {
      setup.key_source = "CONVJIT_REMOTE_CACHE_KEY";
      cache_options.mac_key = parse_mac_key(*key, setup.key_source);
    } else if (const auto file = env("CONVJIT_REMOTE_CACHE_KEY_FILE")) {
      setup.key_source = fmt::format("the file '{}'", *file);
      cache_options.mac_key = read_mac_key_file(std::filesystem::path(*file));
    } else {
      off(
          fmt::format("'{}' is configured but no key to authenticate its entries is (set "
                      "CONVJIT_REMOTE_CACHE_KEY or CONVJIT_REMOTE_CACHE_KEY_FILE, the same on every node); "
                      "unauthenticated code is never loaded",
                      setup.where));
      return setup;
    }
    cache_options.format_version = kCacheFormatVersion;
    if (const auto prefix = env("CONVJIT_REMOTE_CACHE_PREFIX")) cache_options.prefix = *prefix;
    cache_options.readonly =
        options.remote_cache_readonly ? *options.remote_cache_readonly : flag_from_env("CONVJIT_REMOTE_CACHE_READONLY");
    if (const auto ttl = env("CONVJIT_REMOTE_CACHE_TTL")) {
      if (const auto parsed = parse_duration(*ttl)) {
        cache_options.ttl = *parsed;
      } else {
        log::warn("ignoring CONVJIT_REMOTE_CACHE_TTL='{}': expected seconds, or a number with s, m, h or d; using 30d",
                  *ttl);
      }
    }
    setup.cache = std::make_unique<RemoteCache>(make_redis_store(std::move(store_options)), std::move(cache_options));
    setup.mode = setup.cache->options().readonly ? RemoteCacheMode::kReadOnly : RemoteCacheMode::kReadWrite;
    return setup;
  } catch (const Error& e) {
    off(e.what());
    return setup;
  }
}

}  // namespace convjit
