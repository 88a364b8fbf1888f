#include "cache/redis_url.hpp"

#include <charconv>

#include "base/fail.hpp"

namespace convjit {

namespace {
constexpr std::string_view kUsage = "expected redis://[[user][:password]@]host[:port][/db] or rediss://...";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// `what` names the part for the error; the value itself may be secret and is not shown.
std::string percent_decode(std::string_view text, std::string_view what, std::string_view redacted) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    const int high = i + 2 < text.size() ? hex_value(text[i + 1]) : -1;
    const int low = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
    if (high < 0 || low < 0) {
      fail(ErrorCode::kInvalidArgument, "remote cache URL '{}': bad percent-escape in the {}", redacted, what);
    }
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

int parse_int(std::string_view text, int low, int high, std::string_view what, std::string_view redacted) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < low || value > high) {
    fail(ErrorCode::kInvalidArgument, "remote cache URL '{}': the {} '{}' is not a number from {} to {}", redacted,
         what, text, low, high);
  }
  return value;
}
}  // namespace

std::string RedisUrl::redacted() const {
  std::string out = tls ? "rediss://" : "redis://";
  if (!user.empty() || !password.empty()) {
    out += user;
    if (!password.empty()) out += ":***";
    out += '@';
  }
  out += host.find(':') != std::string::npos ? "[" + host + "]" : host;
  out += ':' + std::to_string(port) + '/' + std::to_string(db);
  return out;
}

RedisUrl parse_redis_url(std::string_view text) {
  RedisUrl url;
  std::string_view rest = text;
  if (rest.starts_with("rediss://")) {
    url.tls = true;
    rest.remove_prefix(9);
  } else if (rest.starts_with("redis://")) {
    rest.remove_prefix(8);
  } else {
    fail(ErrorCode::kInvalidArgument, "remote cache URL '{}': unknown scheme; {}", text.substr(0, text.find("://")),
         kUsage);
  }
  // Until the password is known to be absent, messages show the part after any '@' only.
  const std::size_t at = rest.rfind('@');
  const std::string shown =
      std::string(url.tls ? "rediss://" : "redis://") +
      (at == std::string_view::npos ? std::string(rest) : "***@" + std::string(rest.substr(at + 1)));
  if (at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    const std::size_t colon = userinfo.find(':');
    url.user = percent_decode(userinfo.substr(0, colon), "user", shown);
    if (colon != std::string_view::npos) url.password = percent_decode(userinfo.substr(colon + 1), "password", shown);
    rest.remove_prefix(at + 1);
  }
  if (const std::size_t q = rest.find_first_of("?#"); q != std::string_view::npos) {
    fail(ErrorCode::kInvalidArgument, "remote cache URL '{}': options after '{}' are not supported; {}", shown, rest[q],
         kUsage);
  }
  const std::size_t slash = rest.find('/');
  std::string_view hostport = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    const std::string_view db = rest.substr(slash + 1);
    if (!db.empty()) url.db = parse_int(db, 0, 1 << 20, "database number", shown);
  }
  std::string_view port;
  bool has_port = false;
  if (hostport.starts_with('[')) {
    const std::size_t close = hostport.find(']');
    if (close == std::string_view::npos) {
      fail(ErrorCode::kInvalidArgument, "remote cache URL '{}': unclosed '[' in the host", shown);
    }
    url.host = std::string(hostport.substr(1, close - 1));
    const std::string_view after = hostport.substr(close + 1);
    if (!after.empty() && !after.starts_with(':')) {
      fail(ErrorCode::kInvalidArgument, "remote cache URL '{}': unexpected '{}' after the host", shown, after);
    }
    has_port = !after.empty();
    if (has_port) port = after.substr(1);
  } else {
    const std::size_t colon = hostport.find(':');
    url.host = std::string(hostport.substr(0, colon));
    has_port = colon != std::string_view::npos;
    if (has_port) port = hostport.substr(colon + 1);
  }
  if (url.host.empty()) fail(ErrorCode::kInvalidArgument, "remote cache URL '{}': no host; {}", shown, kUsage);
  if (has_port) url.port = parse_int(port, 1, 65535, "port", shown);
  return url;
}

}  // namespace convjit
