#include "cache/redis_store.hpp"

#include "base/fail.hpp"

#if CONVJIT_HAVE_HIREDIS
#include "cache/hiredis_library.hpp"
#if CONVJIT_HAVE_HIREDIS_SSL
#include <arpa/inet.h>
#endif
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <cerrno>
#include <initializer_list>
#include <mutex>
#include <vector>
#endif

namespace convjit {

bool redis_support_built() noexcept { return CONVJIT_HAVE_HIREDIS != 0; }
bool redis_tls_support_built() noexcept { return CONVJIT_HAVE_HIREDIS != 0 && CONVJIT_HAVE_HIREDIS_SSL != 0; }

std::string redis_unavailable_reason() {
#if CONVJIT_HAVE_HIREDIS
  try {
    Hiredis::get();
    return {};
  } catch (const Error& e) {
    return e.what();
  }
#else
  return "this convjit was built without hiredis";
#endif
}

#if CONVJIT_HAVE_HIREDIS

namespace {

using Status = RemoteStore::Status;
using Reply = RemoteStore::Reply;
using Clock = std::chrono::steady_clock;

struct ContextFree {
  const Hiredis* hiredis = nullptr;
  void operator()(redisContext* context) const noexcept { hiredis->redisFree(context); }
};
using Context = std::unique_ptr<redisContext, ContextFree>;
struct ReplyFree {
  const Hiredis* hiredis = nullptr;
  void operator()(redisReply* reply) const noexcept { hiredis->freeReplyObject(reply); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

#if CONVJIT_HAVE_HIREDIS_SSL
struct SslContextFree {
  const HiredisSsl* tls = nullptr;
  void operator()(SSL_CTX* context) const noexcept { tls->SSL_CTX_free(context); }
};
using SslContext = std::unique_ptr<SSL_CTX, SslContextFree>;

std::string openssl_error(const HiredisSsl& tls) {
  const unsigned long code = tls.ERR_get_error();
  tls.ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char text[256];
  tls.ERR_error_string_n(code, text, sizeof text);
  return text;
}

bool is_ip_literal(const std::string& host) {
  unsigned char address[16];
  return inet_pton(AF_INET, host.c_str(), address) == 1 || inet_pton(AF_INET6, host.c_str(), address) == 1;
}

// NOTE: hiredis_ssl's own context (redisCreateSSLContext) verifies the chain but not
// that the certificate names the host, so any certificate of a trusted CA would do.
// The context is made here, and each connection checks the name (or the IP address).
SslContext make_tls_context(const HiredisSsl& tls, const RedisStoreOptions& options, const std::string& where) {
  static std::once_flag init;
  std::call_once(init, [&tls] { tls.redisInitOpenSSL(); });
  SslContext context(tls.SSL_CTX_new(tls.TLS_client_method()), SslContextFree{&tls});
  if (!context) fail(ErrorCode::kCache, "remote cache {}: cannot set up TLS: {}", where, openssl_error(tls));
  // SSL_CTX_set_min_proto_version and SSL_set_tlsext_host_name are macros over the *_ctrl calls.
  tls.SSL_CTX_ctrl(context.get(), SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_2_VERSION, nullptr);
  tls.SSL_CTX_set_verify(context.get(), SSL_VERIFY_PEER, nullptr);
  const std::string& ca = options.tls_ca;
  const bool loaded = ca.empty()          ? tls.SSL_CTX_set_default_verify_paths(context.get()) == 1
                      : ca.ends_with('/') ? tls.SSL_CTX_load_verify_locations(context.get(), nullptr, ca.c_str()) == 1
                                          : tls.SSL_CTX_load_verify_locations(context.get(), ca.c_str(), nullptr) == 1;
  if (!loaded) {
    fail(ErrorCode::kCache, "remote cache {}: cannot load the CA certificates {}: {}", where,
         ca.empty() ? std::string("of the system") : "'" + ca + "'", openssl_error(tls));
  }
  if (!options.tls_cert.empty() &&
      (tls.SSL_CTX_use_certificate_chain_file(context.get(), options.tls_cert.c_str()) != 1 ||
       tls.SSL_CTX_use_PrivateKey_file(context.get(),
                                       options.tls_key.empty() ? options.tls_cert.c_str() : options.tls_key.c_str(),
                                       SSL_FILETYPE_PEM) != 1)) {
    fail(ErrorCode::kCache, "remote cache {}: cannot load the client certificate '{}': {}", where, options.tls_cert,
         openssl_error(tls));
  }
  return context;
}
#endif

timeval to_timeval(std::chrono::milliseconds ms) {
  return timeval{static_cast<time_t>(ms.count() / 1000), static_cast<suseconds_t>((ms.count() % 1000) * 1000)};
}

// NOTE: hiredis writes with write(2), and a write to a connection the server has
// dropped raises SIGPIPE, whose default action kills the process. A library must not
// change the process's handlers, so the signal is blocked in this thread around each
// exchange, and a SIGPIPE the exchange raised is taken off the thread before it is
// unblocked (the technique libcurl and OpenSSL users use).
class SigpipeGuard {
 public:
  SigpipeGuard() noexcept {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    blocked_ = pthread_sigmask(SIG_BLOCK, &pipe_, &old_) == 0;
  }
  ~SigpipeGuard() {
    if (!blocked_) return;
    if (!was_pending_) {
      sigset_t pending;
      sigemptyset(&pending);
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        const timespec zero{};
        while (sigtimedwait(&pipe_, nullptr, &zero) > 0) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t old_{};
  bool was_pending_ = false;
  bool blocked_ = false;
};

// What a failed connect or command was: a timeout (the bound ran out) or anything else.
Status failure_status(const redisContext& context, int saved_errno, Clock::time_point start,
                      std::chrono::milliseconds bound) {
#ifdef REDIS_ERR_TIMEOUT
  if (context.err == REDIS_ERR_TIMEOUT) return Status::kTimeout;
#endif
  if (context.err == REDIS_ERR_IO &&
      (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == ETIMEDOUT || saved_errno == EINPROGRESS)) {
    return Status::kTimeout;
  }
  // NOTE: hiredis 0.14 keeps only errstr; a failure that took the whole bound is a timeout.
  if (context.err == REDIS_ERR_IO && Clock::now() - start >= bound * 9 / 10) return Status::kTimeout;
  return Status::kError;
}

std::string context_error(const redisContext& context) {
  return context.errstr[0] != '\0' ? std::string(context.errstr) : std::string("connection error");
}

// Redis's SCAN MATCH is a glob: escape its special characters in a literal prefix.
std::string glob_escape(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

constexpr std::string_view kExpireIfEquals =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
constexpr std::string_view kRemoveIfEquals =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

class RedisStore final : public RemoteStore {
 public:
  RedisStore(RedisStoreOptions options, const Hiredis& hiredis) : options_(std::move(options)), hiredis_(hiredis) {
    description_ = options_.url.redacted();
#if CONVJIT_HAVE_HIREDIS_SSL
    if (options_.url.tls) {
      tls_ = &HiredisSsl::get();
      ssl_ = make_tls_context(*tls_, options_, description_);
    }
#endif
  }

  Reply get(std::string_view key) override {
    return command({"GET", key}, [](const redisReply& r, Reply& out) {
      if (r.type == REDIS_REPLY_NIL) return Status::kNo;
      if (r.type != REDIS_REPLY_STRING) return Status::kError;
      out.value.assign(r.str, r.len);
      return Status::kOk;
    });
  }
  Reply put(std::string_view key, std::string_view value, std::chrono::milliseconds ttl) override {
    const std::string ms = std::to_string(ttl.count());
    return command({"SET", key, value, "PX", ms}, expect_ok);
  }
  Reply put_if_absent(std::string_view key, std::string_view value, std::chrono::milliseconds ttl) override {
    const std::string ms = std::to_string(ttl.count());
    return command({"SET", key, value, "NX", "PX", ms}, [](const redisReply& r, Reply& out) {
      if (r.type == REDIS_REPLY_NIL) return Status::kNo;
      return expect_ok(r, out);
    });
  }
  Reply expire_if_equals(std::string_view key, std::string_view value, std::chrono::milliseconds ttl) override {
    const std::string ms = std::to_string(ttl.count());
    return command({"EVAL", kExpireIfEquals, "1", key, value, ms}, expect_one);
  }
  Reply remove_if_equals(std::string_view key, std::string_view value) override {
    return command({"EVAL", kRemoveIfEquals, "1", key, value}, expect_one);
  }
  Reply remove(std::string_view key) override { return command({"DEL", key}, expect_one); }
  Reply ping() override {
    return command({"PING"}, [](const redisReply& r, Reply&) {
      return r.type == REDIS_REPLY_STATUS ? Status::kOk : Status::kError;
    });
  }
  Reply info() override {
    return command({"INFO"}, [](const redisReply& r, Reply& out) {
      if (r.type != REDIS_REPLY_STRING) return Status::kError;
      out.value.assign(r.str, r.len);
      return Status::kOk;
    });
  }
  Reply keys(std::string_view prefix, std::vector<std::string>& out) override {
    const std::string pattern = glob_escape(prefix) + "*";
    std::string cursor = "0";
    do {
      std::string next;
      Reply reply = command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"}, [&](const redisReply& r, Reply&) {
        if (r.type != REDIS_REPLY_ARRAY || r.elements != 2 || r.element[0]->type != REDIS_REPLY_STRING ||
            r.element[1]->type != REDIS_REPLY_ARRAY) {
          return Status::kError;
        }
        next.assign(r.element[0]->str, r.element[0]->len);
        const redisReply& batch = *r.element[1];
        for (std::size_t i = 0; i < batch.elements; ++i) {
          if (batch.element[i]->type == REDIS_REPLY_STRING)
            out.emplace_back(batch.element[i]->str, batch.element[i]->len);
        }
        return Status::kOk;
      });
      if (reply.status != Status::kOk) return reply;
      cursor = next;
    } while (cursor != "0");
    return Reply{Status::kOk, {}, {}};
  }
  std::string describe() const override { return description_; }

 private:
  using Interpret = std::function<Status(const redisReply&, Reply&)>;

  static Status expect_ok(const redisReply& r, Reply&) {
    return r.type == REDIS_REPLY_STATUS ? Status::kOk : Status::kError;
  }
  static Status expect_one(const redisReply& r, Reply&) {
    if (r.type != REDIS_REPLY_INTEGER) return Status::kError;
    return r.integer >= 1 ? Status::kOk : Status::kNo;
  }

  // Sends one command on `context` and reads its reply. An error reply is kRefused
  // (the connection stays good); an I/O failure poisons the connection.
  Reply exchange(redisContext& context, std::initializer_list<std::string_view> argv, const Interpret& interpret,
                 bool& broken) {
    std::vector<const char*> args;
    std::vector<std::size_t> sizes;
    for (const auto& a : argv) {
      args.push_back(a.data());
      sizes.push_back(a.size());
    }
    const auto start = Clock::now();
    errno = 0;
    ReplyPtr reply(static_cast<redisReply*>(
                       hiredis_.redisCommandArgv(&context, static_cast<int>(args.size()), args.data(), sizes.data())),
                   ReplyFree{&hiredis_});
    const int saved_errno = errno;
    if (!reply) {
      broken = true;
      return Reply{failure_status(context, saved_errno, start, options_.command_timeout),
                   {},
                   fmt::format("{} after {} ms", context_error(context),
                               std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count())};
    }
    if (reply->type == REDIS_REPLY_ERROR) {
      return Reply{
          Status::kRefused, {}, fmt::format("{}: {}", *argv.begin(), std::string_view(reply->str, reply->len))};
    }
    Reply out{Status::kOk, {}, {}};
    out.status = interpret(*reply, out);
    if (out.status == Status::kError) {
      broken = true;  // an unexpected reply type: the stream may be out of step
      out.error = fmt::format("unexpected reply type {} to {}", reply->type, *argv.begin());
    }
    return out;
  }

  // A new connection, authenticated and on the right database, or the failure.
  Context connect(Reply& failure) {
    const auto start = Clock::now();
    errno = 0;
    Context context(hiredis_.redisConnectWithTimeout(options_.url.host.c_str(), options_.url.port,
                                                     to_timeval(options_.connect_timeout)),
                    ContextFree{&hiredis_});
    const int saved_errno = errno;
    if (!context) {
      failure = Reply{Status::kError, {}, "out of memory allocating a connection"};
      return nullptr;
    }
    if (context->err != 0) {
      failure = Reply{failure_status(*context, saved_errno, start, options_.connect_timeout),
                      {},
                      fmt::format("connect: {}", context_error(*context))};
      return nullptr;
    }
    if (hiredis_.redisSetTimeout(context.get(), to_timeval(options_.command_timeout)) != REDIS_OK) {
      failure = Reply{Status::kError, {}, fmt::format("setting the timeout: {}", context_error(*context))};
      return nullptr;
    }
#if CONVJIT_HAVE_HIREDIS_SSL
    if (ssl_) {
      const HiredisSsl& tls = *tls_;
      SSL* ssl = tls.SSL_new(ssl_.get());
      if (ssl == nullptr) {
        failure = Reply{Status::kError, {}, "TLS: " + openssl_error(tls)};
        return nullptr;
      }
      const std::string& host = options_.url.host;
      const bool named = is_ip_literal(host)
                             ? tls.X509_VERIFY_PARAM_set1_ip_asc(tls.SSL_get0_param(ssl), host.c_str()) == 1
                             : tls.SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                                            const_cast<char*>(host.c_str())) == 1 &&
                                   tls.SSL_set1_host(ssl, host.c_str()) == 1;
      // On success hiredis owns `ssl` (redisFree frees it); on failure it is ours.
      if (!named || tls.redisInitiateSSL(context.get(), ssl) != REDIS_OK) {
        const long verify = tls.SSL_get_verify_result(ssl);
        const std::string why = !named                ? "cannot set the host name to verify"
                                : verify != X509_V_OK ? tls.X509_verify_cert_error_string(verify)
                                                      : context_error(*context);
        tls.SSL_free(ssl);
        failure = Reply{failure_status(*context, errno, start, options_.command_timeout), {}, "TLS handshake: " + why};
        return nullptr;
      }
    }
#endif
    bool broken = false;
    const auto ok = [](const redisReply& r, Reply&) {
      return r.type == REDIS_REPLY_STATUS ? Status::kOk : Status::kError;
    };
    if (!options_.url.password.empty()) {
      Reply auth = options_.url.user.empty()
                       ? exchange(*context, {"AUTH", options_.url.password}, ok, broken)
                       : exchange(*context, {"AUTH", options_.url.user, options_.url.password}, ok, broken);
      if (auth.status != Status::kOk) {
        // A refusal here is the connection's failure, not one command's: it backs off.
        failure = Reply{auth.status == Status::kTimeout ? Status::kTimeout : Status::kError,
                        {},
                        // The server's words, never the password: "WRONGPASS invalid username-password pair".
                        "authentication failed: " + auth.error};
        return nullptr;
      }
    }
    if (options_.url.db != 0) {
      const std::string db = std::to_string(options_.url.db);
      Reply select = exchange(*context, {"SELECT", db}, ok, broken);
      if (select.status != Status::kOk) {
        failure = Reply{select.status == Status::kTimeout ? Status::kTimeout : Status::kError,
                        {},
                        fmt::format("selecting database {}: {}", options_.url.db, select.error)};
        return nullptr;
      }
    }
    return context;
  }

  Reply command(std::initializer_list<std::string_view> argv, const Interpret& interpret) {
    SigpipeGuard guard;
    Context context;
    {
      std::lock_guard lock(mutex_);
      if (!idle_.empty()) {
        context = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (!context) {
      Reply failure;
      context = connect(failure);
      if (!context) return failure;
    }
    bool broken = false;
    Reply reply = exchange(*context, argv, interpret, broken);
    // NOTE: a connection whose command failed or timed out may still deliver that
    // command's late reply; it is closed, never reused.
    if (!broken) {
      std::lock_guard lock(mutex_);
      if (idle_.size() < kMaxIdle) idle_.push_back(std::move(context));
    }
    return reply;
  }

  static constexpr std::size_t kMaxIdle = 16;
  RedisStoreOptions options_;
  const Hiredis& hiredis_;
  std::string description_;
#if CONVJIT_HAVE_HIREDIS_SSL
  const HiredisSsl* tls_ = nullptr;
  SslContext ssl_;
#endif
  std::mutex mutex_;
  std::vector<Context> idle_;
};

}  // namespace

std::unique_ptr<RemoteStore> make_redis_store(RedisStoreOptions options) {
#if !CONVJIT_HAVE_HIREDIS_SSL
  if (options.url.tls) {
    fail(ErrorCode::kUnsupported,
         "'{}' asks for TLS, but this convjit was built without hiredis_ssl (hiredis 1.0 or newer with SSL; Debian "
         "12's libhiredis-dev 0.14 has none); use redis:// on a trusted network or through a TLS tunnel",
         options.url.redacted());
  }
#endif
  // The library loads here, on the first remote cache a process configures; a missing
  // one throws, and the Runtime keeps the remote cache off with that reason.
  const Hiredis& hiredis = Hiredis::get();
  return std::make_unique<RedisStore>(std::move(options), hiredis);
}

#else  // !CONVJIT_HAVE_HIREDIS

std::unique_ptr<RemoteStore> make_redis_store(RedisStoreOptions options) {
  fail(ErrorCode::kUnsupported,
       "this convjit was built without hiredis, so it cannot use the remote cache '{}'; install libhiredis-dev and "
       "rebuild (CONVJIT_REMOTE_CACHE_REDIS=ON)",
       options.url.redacted());
}

#endif

}  // namespace convjit
