#pragma once
// Where the remote cache lives: redis://[[user][:password]@]host[:port][/db], or
// rediss:// for TLS (the usual Redis URI scheme, as redis-cli -u and redis-py read it).

#include <string>
#include <string_view>

namespace convjit {

struct RedisUrl {
  bool tls = false;      // rediss://
  std::string user;      // an ACL user (Redis 6+); empty: the default user
  std::string password;  // empty: no AUTH
  std::string host;      // a name, an IPv4 address, or an IPv6 address without its brackets
  int port = 6379;
  int db = 0;

  // The URL to show in logs and `convjit cache stats`: the password replaced by "***".
  std::string redacted() const;
  bool operator==(const RedisUrl&) const = default;
};

// Percent-escapes are decoded in the user and the password, so any password can be
// written. Throws Error(kInvalidArgument) saying what is wrong; the message never
// repeats the password.
RedisUrl parse_redis_url(std::string_view text);

}  // namespace convjit
