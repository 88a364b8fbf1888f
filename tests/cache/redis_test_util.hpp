#pragma once
// Redis for the remote cache tests:
//  - the server the tests share, named by CONVJIT_TEST_REDIS_URL (scripts/with_redis.sh,
//    which .ci/run and scripts/test.sh use, starts a throwaway one); tests skip, saying
//    so, without it;
//  - a private redis-server a test may kill (needs the redis-server program);
//  - a listening socket that never answers;
//  - a plain client to look inside the store and tamper with it.
// Tests on the shared server keep to a key prefix of their own, so they may run in
// parallel.

#include <gtest/gtest.h>
#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/temp_dir.hpp"

namespace convjit::testing {

// CONVJIT_TEST_REDIS_URL, or nullopt.
std::optional<std::string> shared_redis_url();

// Skips the test, with the reason, when the tests have no Redis to share.
#define CONVJIT_SHARED_REDIS_OR_SKIP(url_variable)                                                                   \
  const auto url_variable##_optional = ::convjit::testing::shared_redis_url();                                       \
  if (!url_variable##_optional) {                                                                                    \
    GTEST_SKIP() << "no Redis server for the remote cache tests: set CONVJIT_TEST_REDIS_URL=redis://127.0.0.1:PORT " \
                    "or run ./scripts/test.sh with redis-server installed (it starts one)";                          \
  }                                                                                                                  \
  const std::string url_variable = *url_variable##_optional

// A key prefix no other test (or run) uses: "convjit-test:<test>:<pid>:<random>:".
std::string unique_prefix(std::string_view test);

// A long enough MAC key for tests.
inline constexpr const char* kTestMacKey = "test-fleet-key-0123456789abcdef";

// A blocking hiredis client for the test itself (never the code under test).
class RedisClient {
 public:
  explicit RedisClient(const std::string& url);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // The reply as text: strings and statuses as they are, integers in decimal, nil as
  // nullopt, arrays joined by '\n'. Throws std::runtime_error on an error reply or I/O.
  std::optional<std::string> command(const std::vector<std::string>& argv);
  // Every key starting with `prefix` (SCAN).
  std::vector<std::string> keys(const std::string& prefix);
  // Every key starting with `prefix` and its value.
  std::map<std::string, std::string> snapshot(const std::string& prefix);
  // Deletes every key starting with `prefix`.
  void remove_all(const std::string& prefix);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A private redis-server on a free loopback port: no persistence, killed at the end.
class RedisServer {
 public:
  // The program: CONVJIT_TEST_REDIS_SERVER, else redis-server on PATH.
  static std::optional<std::string> program();
  // Starts it and returns once it accepts connections (its log says so through a pipe).
  RedisServer();
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  std::string url() const;
  // SIGKILL: no shutdown, connections reset, as a crash or an OOM kill.
  void kill_now();

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  int port_ = 0;
  int out_fd_ = -1;
  std::thread drain_;
};

#define CONVJIT_REDIS_SERVER_OR_SKIP()                                                               \
  if (!::convjit::testing::RedisServer::program()) {                                                 \
    GTEST_SKIP() << "needs the redis-server program to start a server it can kill (apt-get install " \
                    "redis-server, or set CONVJIT_TEST_REDIS_SERVER)";                               \
  }

// A TCP server that accepts connections (the kernel completes them) but never reads
// nor answers: what a hung Redis, or a black-holing proxy, looks like to a client.
class SilentServer {
 public:
  SilentServer();
  ~SilentServer();
  SilentServer(const SilentServer&) = delete;
  SilentServer& operator=(const SilentServer&) = delete;
  std::string url() const;

 private:
  int fd_ = -1;
  int port_ = 0;
};

// A loopback port nothing listens on (bound, then closed), for "connection refused".
int closed_port();

}  // namespace convjit::testing
