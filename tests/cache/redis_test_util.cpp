#include "tests/cache/redis_test_util.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <stdexcept>

#if CONVJIT_HAVE_HIREDIS
#include "cache/hiredis_library.hpp"
#endif

#include "cache/redis_url.hpp"

extern char** environ;

namespace convjit::testing {

namespace {

// A socket bound to 127.0.0.1 on a port the kernel picked.
int bound_socket(int& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t size = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &size) != 0) {
    ::close(fd);
    throw std::runtime_error("bind");
  }
  port = ntohs(addr.sin_port);
  return fd;
}

}  // namespace

std::optional<std::string> shared_redis_url() {
  const char* url = std::getenv("CONVJIT_TEST_REDIS_URL");
  if (url == nullptr || *url == '\0') return std::nullopt;
  return std::string(url);
}

std::string unique_prefix(std::string_view test) {
  std::mt19937_64 rng{std::random_device{}()};
  return "convjit-test:" + std::string(test) + ":" + std::to_string(::getpid()) + ":" +
         std::to_string(rng() % 1000000) + ":";
}

int closed_port() {
  int port = 0;
  ::close(bound_socket(port));
  return port;
}

// ---- RedisClient

#if CONVJIT_HAVE_HIREDIS
// The library's own dlopen'd hiredis, so that the test binaries link none either.
struct RedisClient::Impl {
  const Hiredis& hiredis = Hiredis::get();
  redisContext* context = nullptr;
  ~Impl() {
    if (context != nullptr) hiredis.redisFree(context);
  }
};

RedisClient::RedisClient(const std::string& url_text) : impl_(std::make_unique<Impl>()) {
  const RedisUrl url = parse_redis_url(url_text);
  impl_->context = impl_->hiredis.redisConnectWithTimeout(url.host.c_str(), url.port, timeval{5, 0});
  if (impl_->context == nullptr || impl_->context->err != 0) {
    throw std::runtime_error("cannot connect to " + url.redacted());
  }
  impl_->hiredis.redisSetTimeout(impl_->context, timeval{10, 0});
  if (!url.password.empty()) {
    url.user.empty() ? command({"AUTH", url.password}) : command({"AUTH", url.user, url.password});
  }
  if (url.db != 0) command({"SELECT", std::to_string(url.db)});
}

RedisClient::~RedisClient() = default;

namespace {
std::optional<std::string> text_of(const redisReply& reply) {
  switch (reply.type) {
    case REDIS_REPLY_NIL:
      return std::nullopt;
    case REDIS_REPLY_INTEGER:
      return std::to_string(reply.integer);
    case REDIS_REPLY_ERROR:
      throw std::runtime_error("redis error: " + std::string(reply.str, reply.len));
    case REDIS_REPLY_ARRAY: {
      std::string out;
      for (std::size_t i = 0; i < reply.elements; ++i) {
        if (i != 0) out += '\n';
        out += text_of(*reply.element[i]).value_or("");
      }
      return out;
    }
    default:
      return std::string(reply.str, reply.len);
  }
}
}  // namespace

std::optional<std::string> RedisClient::command(const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<std::size_t> sizes;
  for (const auto& a : argv) {
    args.push_back(a.data());
    sizes.push_back(a.size());
  }
  const Hiredis& hiredis = impl_->hiredis;
  auto* reply = static_cast<redisReply*>(
      hiredis.redisCommandArgv(impl_->context, static_cast<int>(args.size()), args.data(), sizes.data()));
  if (reply == nullptr) throw std::runtime_error("redis I/O error: " + std::string(impl_->context->errstr));
  struct Free {
    const Hiredis& hiredis;
    redisReply* r;
    ~Free() { hiredis.freeReplyObject(r); }
  } free_reply{hiredis, reply};
  return text_of(*reply);
}

std::vector<std::string> RedisClient::keys(const std::string& prefix) {
  std::vector<std::string> out;
  std::string cursor = "0";
  do {
    const char* args[] = {"SCAN", cursor.c_str(), "MATCH", nullptr, "COUNT", "1000"};
    const std::string pattern = prefix + "*";  // test prefixes hold no glob characters
    args[3] = pattern.c_str();
    const Hiredis& hiredis = impl_->hiredis;
    auto* reply = static_cast<redisReply*>(hiredis.redisCommandArgv(impl_->context, 6, args, nullptr));
    if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
      if (reply != nullptr) hiredis.freeReplyObject(reply);
      throw std::runtime_error("SCAN failed");
    }
    cursor.assign(reply->element[0]->str, reply->element[0]->len);
    for (std::size_t i = 0; i < reply->element[1]->elements; ++i) {
      out.emplace_back(reply->element[1]->element[i]->str, reply->element[1]->element[i]->len);
    }
    hiredis.freeReplyObject(reply);
  } while (cursor != "0");
  return out;
}
#else
struct RedisClient::Impl {};
RedisClient::RedisClient(const std::string&) { throw std::runtime_error("built without hiredis"); }
RedisClient::~RedisClient() = default;
std::optional<std::string> RedisClient::command(const std::vector<std::string>&) { return std::nullopt; }
std::vector<std::string> RedisClient::keys(const std::string&) { return {}; }
#endif

std::map<std::string, std::string> RedisClient::snapshot(const std::string& prefix) {
  std::map<std::string, std::string> out;
  for (const auto& key : keys(prefix)) {
    if (auto value = command({"GET", key})) out[key] = *value;
  }
  return out;
}

void RedisClient::remove_all(const std::string& prefix) {
  for (const auto& key : keys(prefix)) command({"DEL", key});
}

// ---- RedisServer

std::optional<std::string> RedisServer::program() {
  if (const char* set = std::getenv("CONVJIT_TEST_REDIS_SERVER"); set != nullptr && *set != '\0') return set;
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/bin:/bin";
  while (!dirs.empty()) {
    const std::size_t colon = dirs.find(':');
    const std::filesystem::path candidate = std::filesystem::path(dirs.substr(0, colon)) / "redis-server";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    dirs = colon == std::string_view::npos ? std::string_view{} : dirs.substr(colon + 1);
  }
  return std::nullopt;
}

RedisServer::RedisServer() {
  const auto binary = program();
  if (!binary) throw std::runtime_error("no redis-server program");
  // NOTE: the port is free when picked and could be taken before redis-server binds it;
  // then the server exits before it is ready, and another port is tried.
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = closed_port();
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    std::vector<std::string> argv_text = {*binary,  "--port", std::to_string(port_), "--bind",    "127.0.0.1",
                                          "--save", "",       "--appendonly",        "no",        "--daemonize",
                                          "no",     "--dir",  dir_.path().string(),  "--logfile", ""};
    std::vector<char*> argv;
    for (auto& a : argv_text) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    if (rc != 0) {
      ::close(pipe_fds[0]);
      throw std::runtime_error("cannot start " + *binary);
    }
    // Its log says when it is ready; EOF first means it exited (the port was taken).
    std::string log;
    bool ready = false;
    char buffer[4096];
    while (!ready) {
      const ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);
      if (n <= 0) break;
      log.append(buffer, static_cast<std::size_t>(n));
      ready = log.find("Ready to accept connections") != std::string::npos;
    }
    if (ready) {
      out_fd_ = pipe_fds[0];
      // Keep reading its log, or a full pipe would stall the server.
      drain_ = std::thread([fd = out_fd_] {
        char sink[4096];
        while (::read(fd, sink, sizeof sink) > 0) {
        }
      });
      return;
    }
    ::close(pipe_fds[0]);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  throw std::runtime_error("redis-server did not start on a free port in 5 attempts");
}

RedisServer::~RedisServer() {
  kill_now();
  if (drain_.joinable()) drain_.join();
  if (out_fd_ >= 0) ::close(out_fd_);
}

std::string RedisServer::url() const { return "redis://127.0.0.1:" + std::to_string(port_) + "/0"; }

void RedisServer::kill_now() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

// ---- SilentServer

SilentServer::SilentServer() {
  fd_ = bound_socket(port_);
  if (::listen(fd_, 128) != 0) throw std::runtime_error("listen");
}

SilentServer::~SilentServer() { ::close(fd_); }

std::string SilentServer::url() const { return "redis://127.0.0.1:" + std::to_string(port_) + "/0"; }

}  // namespace convjit::testing
