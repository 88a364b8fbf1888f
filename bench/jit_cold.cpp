// Part (a) of jit_overhead: cold, warm-disk and hot time to first result, each cold and
// warm measurement in a brand-new process (this program, re-executed).
#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>

#include "bench_util.hpp"
#include "convjit/convjit.hpp"
#include "gpu_timer.hpp"
#include "jit_overhead.hpp"
#include "problems.hpp"
#include "tooling/tooling.hpp"

extern char** environ;

namespace convjit::bench {

namespace {

struct ChildResult {
  int exit_code = 0;
  std::string out;
};

// posix_spawn of /proc/self/exe with CONVJIT_CACHE_DIR replaced, stdout captured;
// stderr is inherited so that a child's error is seen as it happens.
ChildResult spawn_self(const std::vector<std::string>& args, const std::filesystem::path& cache_dir) {
  std::fflush(stdout);  // keeps the log in order: the child writes to stderr directly
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(fmt::format("pipe: {}", std::strerror(errno)));
  posix_spawn_file_actions_t actions;
  if (const int rc = posix_spawn_file_actions_init(&actions); rc != 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw std::runtime_error(fmt::format("posix_spawn_file_actions_init: {}", std::strerror(rc)));
  }
  if (const int rc = posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO); rc != 0) {
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[0]);
    ::close(fds[1]);
    throw std::runtime_error(fmt::format("posix_spawn_file_actions_adddup2: {}", std::strerror(rc)));
  }

  std::vector<std::string> env_text;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!std::string_view(*e).starts_with("CONVJIT_CACHE_DIR=")) env_text.emplace_back(*e);
  }
  env_text.push_back("CONVJIT_CACHE_DIR=" + cache_dir.string());
  std::vector<char*> envp, argv;
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> arg_text = args;
  for (auto& a : arg_text) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw std::runtime_error(fmt::format("cannot start /proc/self/exe: {}", std::strerror(rc)));
  }
  ChildResult result;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    result.out.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

// The child's "CHILD {...}" line, as text and parsed; an empty text when it is missing.
struct ChildReport {
  std::string text;
  json::Value value;
};

ChildReport child_report(const ChildResult& r) {
  const auto at = r.out.find("CHILD ");
  if (at == std::string::npos) return {};
  const auto end = r.out.find('\n', at);
  ChildReport report;
  report.text = r.out.substr(at + 6, end == std::string::npos ? std::string::npos : end - at - 6);
  report.value = json::parse(report.text, "jit_overhead child");
  return report;
}

double number(const json::Value& v, std::string_view name) {
  const json::Value* f = v.find(name);
  return f != nullptr && f->is_number() ? f->number() : std::numeric_limits<double>::quiet_NaN();
}

std::string fmt_ms(double v) { return v == v ? fmt::format("{:.2f}", v) : "-"; }

}  // namespace

long long steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int child_main(const std::string& mode, const std::string& shape, long long spawn_ns) {
  const Conv2dDesc d = parse_bench_shape(shape);
  Runtime rt;
  make_runtime_context_current(rt);
  // Device init and allocation happen before the clock starts: first_call_ms is the JIT
  // (compile or disk load, module load) plus one launch and the kernel itself.
  DeviceBuffer x(rt, d.x_elements() * 4), w(rt, d.w_elements() * 4), y(rt, d.y_elements() * 4), b;
  if (d.bias) b = DeviceBuffer(rt, d.k * 4);
  for (DeviceBuffer* buf : {&x, &w, &b}) {
    if (buf->size() > 0) buf->fill_u32(0x3c23d70au);  // 0.01f: finite sums whatever the reduction
  }
  rt.synchronize();
  const long long t0 = steady_now_ns();
  rt.conv2d(d, x.data(), w.data(), b.data(), y.data());
  rt.synchronize();
  const long long t1 = steady_now_ns();
  rt.conv2d(d, x.data(), w.data(), b.data(), y.data());
  rt.synchronize();
  const long long t2 = steady_now_ns();
  const CacheStats s = rt.stats();
  const std::string algorithm(to_string(rt.plan(d).algorithm()));
  fmt::print("CHILD {}\n", JsonObject()
                               .str("mode", mode)
                               .str("shape", shape)
                               .str("algorithm", algorithm)
                               .num("ready_ms", double(t0 - spawn_ns) / 1e6)
                               .num("first_call_ms", double(t1 - t0) / 1e6)
                               .num("first_result_ms", double(t1 - spawn_ns) / 1e6)
                               .num("hot_call_ms", double(t2 - t1) / 1e6)
                               .num("compile_ms", s.compile_ms)
                               .integer("compiles", static_cast<std::int64_t>(s.compiles))
                               .integer("disk_hits", static_cast<std::int64_t>(s.disk_hits))
                               .integer("module_loads", static_cast<std::int64_t>(s.module_loads))
                               .text());
  return 0;
}

ColdResult measure_cold_warm_hot(const ColdOptions& options) {
  ColdResult result;
  fmt::print("\n(a) time to first result, each in a new process (ms)\n");
  fmt::print("{:<44} {:<6} {:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "problem", "math", "algorithm", "cold 1st",
             "NVRTC", "warm 1st", "hot", "cold e2e", "warm e2e");
  std::vector<std::string> items;
  for (std::size_t i = 0; i < options.shapes.size(); ++i) {
    const std::string& shape = options.shapes[i];
    const std::filesystem::path dir = options.work_dir / fmt::format("cold-{}", i);
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    JsonObject item;
    item.str("shape", shape);
    ChildReport reports[2];
    bool failed = false;
    for (int run = 0; run < 2 && !failed; ++run) {
      const char* mode = run == 0 ? "cold" : "warm";
      const long long spawn = steady_now_ns();
      const ChildResult r =
          spawn_self({"jit_overhead", "--child", mode, "--shape", shape, "--spawn-ns", std::to_string(spawn)}, dir);
      reports[run] = child_report(r);
      if (r.exit_code != 0 || !reports[run].value.is_object()) {
        fmt::print("{:<44} {} run failed with exit status {}\n", shape, mode, r.exit_code);
        item.str("error", fmt::format("{} child exited with status {}", mode, r.exit_code));
        failed = true;
        result.ok = false;
        if (r.exit_code == 3) {
          items.push_back(item.text());
          result.json = json_array(items, true);
          return result;  // no GPU: the other shapes would fail the same way
        }
      }
    }
    if (!failed) {
      const json::Value& cold = reports[0].value;
      const json::Value& warm = reports[1].value;
      const json::Value* algo = cold.find("algorithm");
      const Conv2dDesc d = parse_bench_shape(shape);
      fmt::print("{:<44} {:<6} {:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n", problem_text(d).substr(0, 44),
                 to_string(d.math), algo != nullptr && algo->is_string() ? algo->string() : "?",
                 fmt_ms(number(cold, "first_call_ms")), fmt_ms(number(cold, "compile_ms")),
                 fmt_ms(number(warm, "first_call_ms")), fmt_ms(number(warm, "hot_call_ms")),
                 fmt_ms(number(cold, "first_result_ms")), fmt_ms(number(warm, "first_result_ms")));
      if (number(warm, "compiles") > 0) fmt::print("  note: the warm run compiled; the disk cache did not serve it\n");
      item.raw("cold", reports[0].text).raw("warm", reports[1].text);
    }
    items.push_back(item.text());
    if (!options.keep) std::filesystem::remove_all(dir);
  }
  fmt::print(
      "cold/warm 1st: first conv2d + synchronize in a new process (empty cache / cache filled by the cold run);\n"
      "NVRTC: compile time the cold process recorded; hot: the same process's second call;\n"
      "e2e: from spawning the process to the first result (exec, libraries, CUDA init included)\n");
  result.json = json_array(items, true);
  return result;
}

}  // namespace convjit::bench
