// Part (a) of jit_overhead: cold, warm-disk and hot time to first result, each cold and
// warm measurement in a brand-new process (this program, re-executed).
#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

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

// posix_spawn of /proc/self/exe with the variables of `env` ("NAME=value") replacing
// the parent's, stdout captured; stderr is inherited so that a child's error is seen
// as it happens.
ChildResult spawn_self(const std::vector<std::string>& args, const std::vector<std::string>& env) {
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
    const std::string_view entry(*e);
    const bool replaced = std::any_of(env.begin(), env.end(), [&](const std::string& over) {
      return entry.substr(0, entry.find('=') + 1) == std::string_view(over).substr(0, over.find('=') + 1);
    });
    if (!replaced) env_text.emplace_back(entry);
  }
  env_text.insert(env_text.end(), env.begin(), env.end());
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

namespace {

double ms_between(long long from_ns, long long to_ns) { return double(to_ns - from_ns) / 1e6; }

double median_ms(std::vector<double> ms) {
  if (ms.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// NVRTC's per-phase times (front end, NVVM optimizer, ptxas), which it writes, one row
// per phase and compile, to the file its --time option names (the parent sets
// CONVJIT_NVRTC_TIME=FILE for a cold child). Rows of `skip` (the start-up compile) are
// left out.
struct NvrtcPhases {
  double front_end_ms = std::numeric_limits<double>::quiet_NaN();
  double optimizer_ms = std::numeric_limits<double>::quiet_NaN();
  double ptxas_ms = std::numeric_limits<double>::quiet_NaN();
};
NvrtcPhases read_nvrtc_phases(const std::string& path, std::string_view skip) {
  NvrtcPhases out;
  std::ifstream in(path);
  std::string line;
  const auto add = [](double& to, double v) { to = to == to ? to + v : v; };
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::stringstream row(line);
    for (std::string cell; std::getline(row, cell, ',');) {
      const auto b = cell.find_first_not_of(' ');
      cells.push_back(b == std::string::npos ? "" : cell.substr(b));
    }
    if (cells.size() < 3 || cells[0] == skip) continue;
    char* end = nullptr;
    const double v = std::strtod(cells[2].c_str(), &end);
    if (end == cells[2].c_str()) continue;  // the header
    if (cells[1].find("Frontend") != std::string::npos) add(out.front_end_ms, v);
    if (cells[1].find("NVVM") != std::string::npos) add(out.optimizer_ms, v);
    if (cells[1].find("PTX") != std::string::npos) add(out.ptxas_ms, v);
  }
  return out;
}

constexpr std::string_view kStartProgram = "convjit_nvrtc_start.cu";

}  // namespace

namespace {
// The first tier's child: a cold process whose first call runs the generic kernel while
// the problem's kernel compiles on a background thread.
int tier_child(Runtime& rt, const Conv2dDesc& d, const std::string& shape, long long spawn_ns, const DeviceBuffer& x,
               const DeviceBuffer& w, const DeviceBuffer& b, const DeviceBuffer& y) {
  const auto call = [&] { rt.conv2d(d, x.data(), w.data(), b.data(), y.data()); };
  const long long t0 = steady_now_ns();
  call();
  rt.synchronize();
  const long long t1 = steady_now_ns();
  // The generic kernel's own time while the compile goes on: events around a few more
  // calls, kept only if every one of them was still the first tier's.
  const std::uint64_t runs_before = rt.stats().first_tier_runs;
  std::uint64_t calls = 0;
  const Timing generic = time_launches(
      [&] {
        ++calls;
        call();
      },
      nullptr, TimingPlan{.warmup = 0, .iters = 3, .slow_ms = 20, .slow_iters = 3});
  const bool all_generic = rt.stats().first_tier_runs - runs_before == calls;
  const double generic_ms = all_generic ? median_ms(generic.ms) : std::numeric_limits<double>::quiet_NaN();
  rt.wait_for_compiles();
  const long long t_ready = steady_now_ns();
  const Timing timing =
      time_launches(call, nullptr, TimingPlan{.warmup = 2, .iters = 10, .slow_ms = 20, .slow_iters = 3});
  const double kernel_ms = median_ms(timing.ms);
  const CacheStats s = rt.stats();
  fmt::print("CHILD {}\n", JsonObject()
                               .str("mode", "tier")
                               .str("shape", shape)
                               .num("ready_ms", ms_between(spawn_ns, t0))
                               .num("first_call_ms", ms_between(t0, t1))
                               .num("first_result_ms", ms_between(spawn_ns, t1))
                               .num("generic_kernel_ms", generic_ms)
                               .num("specialized_ready_ms", ms_between(t0, t_ready))
                               .num("kernel_ms", kernel_ms)
                               .num("over_kernel_ms", ms_between(t0, t1) - kernel_ms)
                               .num("compile_ms", s.compile_ms)
                               .integer("first_tier_runs", static_cast<std::int64_t>(s.first_tier_runs))
                               .integer("background_builds", static_cast<std::int64_t>(s.background_builds))
                               .integer("compiles", static_cast<std::int64_t>(s.compiles))
                               .text());
  return 0;
}
}  // namespace

int child_main(const std::string& mode, const std::string& shape, long long spawn_ns, int hold_us) {
  const Conv2dDesc d = parse_bench_shape(shape);
  Runtime rt(RuntimeOptions{.first_tier = mode == "tier"});
  make_runtime_context_current(rt);
  // Device init and allocation happen before the clock starts: first_call_ms is the JIT
  // (compile or disk load, module load) plus the launches and the kernels themselves.
  DeviceBuffer x(rt, d.x_elements() * 4), w(rt, d.w_elements() * 4), y(rt, d.y_elements() * 4), b;
  if (d.bias) b = DeviceBuffer(rt, d.k * 4);
  for (DeviceBuffer* buf : {&x, &w, &b}) {
    if (buf->size() > 0) buf->fill_u32(0x3c23d70au);  // 0.01f: finite sums whatever the reduction
  }
  rt.synchronize();
  const std::string arch = rt.device_arch();
  // NVRTC's once-per-process start (its built-in headers, its cache below it), paid by
  // whichever compile comes first: measured apart, on an empty program, so that the
  // kernel's compile below is the kernel's own. A warm process never calls NVRTC.
  double nvrtc_start_ms = std::numeric_limits<double>::quiet_NaN();
  if (mode == "cold") {
    const long long s0 = steady_now_ns();
    Nvrtc::compile("extern \"C\" __global__ void convjit_nvrtc_start() {}\n", std::string(kStartProgram),
                   Nvrtc::options_for(arch));
    nvrtc_start_ms = ms_between(s0, steady_now_ns());
  }
  // Spun, not slept: the thread stays on its core as host work would.
  for (const long long until = steady_now_ns() + hold_us * 1000ll; steady_now_ns() < until;) {
  }
  if (mode == "tier") return tier_child(rt, d, shape, spawn_ns, x, w, b, y);
  const CacheStats before = rt.stats();
  const long long t0 = steady_now_ns();
  // The steps of rt.conv2d's first call, one at a time: the plan (compile, or disk read
  // and verify, then module load), the plan's workspace, then the call itself.
  const Conv2dPlan plan = rt.plan(d);
  const long long t_plan = steady_now_ns();
  plan.prepare(nullptr);
  const long long t_workspace = steady_now_ns();
  rt.conv2d(d, x.data(), w.data(), b.data(), y.data());
  rt.synchronize();
  const long long t1 = steady_now_ns();
  const CacheStats s = rt.stats();
  rt.conv2d(d, x.data(), w.data(), b.data(), y.data());
  rt.synchronize();
  const long long t2 = steady_now_ns();
  // The kernels' own time (the weight pack too, where the kernel has one: conv2d packs
  // on every call): GPU events around warm calls, median.
  const Timing timing = time_launches([&] { rt.conv2d(d, x.data(), w.data(), b.data(), y.data()); }, nullptr,
                                      TimingPlan{.warmup = 2, .iters = 10, .slow_ms = 20, .slow_iters = 3});
  const double kernel_ms = median_ms(timing.ms);
  NvrtcPhases phases;
  if (const char* file = std::getenv("CONVJIT_NVRTC_TIME"); file != nullptr && mode == "cold") {
    phases = read_nvrtc_phases(file, kStartProgram);
  }

  const double first_call_ms = ms_between(t0, t1);
  const double plan_ms = ms_between(t0, t_plan);
  const double compile_ms = s.compile_ms - before.compile_ms;
  const double key_ms = s.key_ms - before.key_ms;
  const double read_ms = s.disk_read_ms - before.disk_read_ms;
  const double verify_ms = s.disk_verify_ms - before.disk_verify_ms;
  const double module_ms = s.module_load_ms - before.module_load_ms;
  const double function_ms = s.function_load_ms - before.function_load_ms;
  const double first_run_ms = ms_between(t_workspace, t1);
  fmt::print("CHILD {}\n",
             JsonObject()
                 .str("mode", mode)
                 .str("shape", shape)
                 .str("algorithm", std::string(to_string(plan.algorithm())))
                 .str("kernel", plan.kernel_name())
                 .num("ready_ms", ms_between(spawn_ns, t0))
                 .num("nvrtc_start_ms", nvrtc_start_ms)
                 .num("first_call_ms", first_call_ms)
                 .num("first_result_ms", ms_between(spawn_ns, t1))
                 .num("hot_call_ms", ms_between(t1, t2))
                 .num("kernel_ms", kernel_ms)
                 .num("over_kernel_ms", first_call_ms - kernel_ms)
                 .num("plan_ms", plan_ms)
                 .num("compile_ms", compile_ms)
                 .num("nvrtc_front_end_ms", phases.front_end_ms)
                 .num("nvrtc_optimizer_ms", phases.optimizer_ms)
                 .num("nvrtc_ptxas_ms", phases.ptxas_ms)
                 .num("key_ms", key_ms)
                 .num("disk_read_ms", read_ms)
                 .num("disk_verify_ms", verify_ms)
                 .num("module_load_ms", module_ms)
                 .num("function_load_ms", function_ms)
                 .num("plan_other_ms", plan_ms - compile_ms - key_ms - read_ms - verify_ms - module_ms - function_ms)
                 .num("workspace_ms", ms_between(t_plan, t_workspace))
                 .num("first_run_ms", first_run_ms)
                 .num("first_launch_ms", first_run_ms - kernel_ms)
                 .integer("compiles", static_cast<std::int64_t>(s.compiles))
                 .integer("disk_hits", static_cast<std::int64_t>(s.disk_hits))
                 .integer("module_loads", static_cast<std::int64_t>(s.module_loads))
                 .text());
  return 0;
}

ColdResult measure_cold_warm_hot(const ColdOptions& options) {
  ColdResult result;
  fmt::print("\n(a) time to first result, each in a new process (ms); compute cache: {}\n",
             options.machine_compute_cache ? "the machine's (CUDA_CACHE_PATH as set)" : "a new, empty one per child");
  std::vector<std::string> items;
  std::vector<std::pair<std::string, std::pair<json::Value, json::Value>>> rows;  // problem, (cold, warm)
  std::vector<std::pair<std::string, json::Value>> tier_rows;                     // problem, first tier
  for (std::size_t i = 0; i < options.shapes.size(); ++i) {
    const std::string& shape = options.shapes[i];
    const std::filesystem::path dir = options.work_dir / fmt::format("cold-{}", i);
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir / "cache");
    JsonObject item;
    item.str("shape", shape);
    ChildReport reports[3];
    bool failed = false;
    const int runs = options.first_tier ? 3 : 2;
    for (int run = 0; run < runs && !failed; ++run) {
      const char* mode = run == 0 ? "cold" : run == 1 ? "warm" : "tier";
      // The first tier's child starts cold too: a cache of its own, empty.
      const std::filesystem::path cache = run == 2 ? dir / "tier-cache" : dir / "cache";
      std::filesystem::create_directories(cache);
      std::vector<std::string> env = {"CONVJIT_CACHE_DIR=" + cache.string()};
      // NVRTC 12.8+ keeps what it compiles in the CUDA driver's compute cache
      // (CUDA_CACHE_PATH, ~/.nv/ComputeCache) when it finds libcuda: a kernel this
      // machine compiled before, in any process, then costs a fraction of a compile. A
      // cold child gets an empty one of its own: a machine that never compiled it.
      if (!options.machine_compute_cache) {
        const auto nv = dir / fmt::format("nv-compute-cache-{}", mode);
        std::filesystem::create_directories(nv);
        env.push_back("CUDA_CACHE_PATH=" + nv.string());
      }
      const auto time_file = dir / fmt::format("nvrtc-time-{}.csv", mode);
      if (run == 0) {
        env.push_back("CONVJIT_NVRTC_TIME=" + time_file.string());
      }
      const long long spawn = steady_now_ns();
      const ChildResult r = spawn_self({"jit_overhead", "--child", mode, "--shape", shape, "--spawn-ns",
                                        std::to_string(spawn), "--hold-us", std::to_string(options.hold_us)},
                                       env);
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
      const Conv2dDesc d = parse_bench_shape(shape);
      // The data type where it is not f32 (its math mode changes nothing), and channels-last.
      rows.emplace_back(fmt::format("{} {}{}", problem_text(d).substr(0, 36),
                                    d.dtype == DType::kFloat32 ? to_string(d.math) : to_string(d.dtype),
                                    d.layout == Layout::kNHWC ? " nhwc" : ""),
                        std::make_pair(reports[0].value, reports[1].value));
      if (number(reports[1].value, "compiles") > 0) {
        fmt::print("  note: the warm run of {} compiled; the disk cache did not serve it\n", shape);
      }
      item.raw("cold", reports[0].text).raw("warm", reports[1].text);
      if (options.first_tier) {
        item.raw("tier", reports[2].text);
        tier_rows.emplace_back(rows.back().first, reports[2].value);
      }
    }
    items.push_back(item.text());
    if (!options.keep) std::filesystem::remove_all(dir);
  }
  const auto text = [](const json::Value& v, std::string_view name) {
    const json::Value* f = v.find(name);
    return f != nullptr && f->is_string() ? f->string() : std::string("?");
  };
  fmt::print("{:<48} {:<13} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>7}\n", "problem", "algorithm", "kernel",
             "NVRTC", "cold 1st", "cold over", "warm 1st", "warm over", "cold e2e", "warm e2e", "hot");
  fmt::print("{:<48} {:<13} {:>8} {:>8}\n", "", "", "", "start");
  for (const auto& [problem, reports] : rows) {
    const auto& [cold, warm] = reports;
    fmt::print("{:<48} {:<13} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>7}\n", problem,
               text(cold, "algorithm"), fmt_ms(number(warm, "kernel_ms")), fmt_ms(number(cold, "nvrtc_start_ms")),
               fmt_ms(number(cold, "first_call_ms")), fmt_ms(number(cold, "over_kernel_ms")),
               fmt_ms(number(warm, "first_call_ms")), fmt_ms(number(warm, "over_kernel_ms")),
               fmt_ms(number(cold, "first_result_ms")), fmt_ms(number(warm, "first_result_ms")),
               fmt_ms(number(warm, "hot_call_ms")));
  }
  fmt::print(
      "kernel: the kernels' own GPU time (events, median; the weight pack included where conv2d packs);\n"
      "NVRTC start: the process's first NVRTC compile (an empty program), before and apart from the kernel's;\n"
      "1st: first conv2d + synchronize in a new process (empty cache / cache filled by the cold run); over: 1st "
      "- kernel;\n"
      "e2e: from spawning the process to the first result (exec, libraries, CUDA init included); hot: the same "
      "process's second call\n");
  // Where the time over the kernel goes, cold and warm. Each part is wall time on the host.
  for (const bool cold_rows : {true, false}) {
    fmt::print("\n(a) {} first call, where the time goes (ms)\n", cold_rows ? "cold" : "warm");
    if (cold_rows) {
      fmt::print("{:<48} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} {:>7} {:>8} {:>8}\n", "problem",
                 "compile", "front", "NVVM", "ptxas", "key", "module", "func", "other", "wspace", "launch", "kernel",
                 "over");
    } else {
      fmt::print("{:<48} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}\n", "problem", "key", "read",
                 "verify", "module", "func", "other", "wspace", "launch", "kernel", "over");
    }
    for (const auto& [problem, reports] : rows) {
      const json::Value& v = cold_rows ? reports.first : reports.second;
      if (cold_rows) {
        fmt::print("{:<48} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} {:>7} {:>8} {:>8}\n", problem,
                   fmt_ms(number(v, "compile_ms")), fmt_ms(number(v, "nvrtc_front_end_ms")),
                   fmt_ms(number(v, "nvrtc_optimizer_ms")), fmt_ms(number(v, "nvrtc_ptxas_ms")),
                   fmt_ms(number(v, "key_ms")), fmt_ms(number(v, "module_load_ms")),
                   fmt_ms(number(v, "function_load_ms")),
                   fmt_ms(number(v, "plan_other_ms") + number(v, "disk_read_ms") + number(v, "disk_verify_ms")),
                   fmt_ms(number(v, "workspace_ms")), fmt_ms(number(v, "first_launch_ms")),
                   fmt_ms(number(v, "kernel_ms")), fmt_ms(number(v, "over_kernel_ms")));
      } else {
        fmt::print("{:<48} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}\n", problem,
                   fmt_ms(number(v, "key_ms")), fmt_ms(number(v, "disk_read_ms")), fmt_ms(number(v, "disk_verify_ms")),
                   fmt_ms(number(v, "module_load_ms")), fmt_ms(number(v, "function_load_ms")),
                   fmt_ms(number(v, "plan_other_ms")), fmt_ms(number(v, "workspace_ms")),
                   fmt_ms(number(v, "first_launch_ms")), fmt_ms(number(v, "kernel_ms")),
                   fmt_ms(number(v, "over_kernel_ms")));
      }
    }
  }
  fmt::print(
      "compile: NVRTC's wall time for the kernel, split by NVRTC's own --time into front (C++ front end), NVVM\n"
      "(optimizer) and ptxas (PTX to CUBIN); key: specialize the source and hash it into the cache key; read /\n"
      "verify: open and read the cache entry / check its checksum and key; module: cuModuleLoadData and kernel\n"
      "look-up; func: load the kernels onto the device (cuFuncLoad, else lazily at their first launch, inside\n"
      "'launch'); other: the rest of building the plan; wspace: the plan's workspace (packed weights);\n"
      "launch: the first call's launches, pack and synchronize beyond the kernels' own time; over: 1st - kernel\n");
  if (!tier_rows.empty()) {
    fmt::print("\n(a) cold first call with the first tier (ms)\n");
    fmt::print("{:<48} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}\n", "problem", "1st", "generic", "kernel", "over", "ready",
               "compile");
    for (const auto& [problem, v] : tier_rows) {
      fmt::print("{:<48} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}\n", problem, fmt_ms(number(v, "first_call_ms")),
                 fmt_ms(number(v, "generic_kernel_ms")), fmt_ms(number(v, "kernel_ms")),
                 fmt_ms(number(v, "over_kernel_ms")), fmt_ms(number(v, "specialized_ready_ms")),
                 fmt_ms(number(v, "compile_ms")));
    }
    fmt::print(
        "1st: first conv2d + synchronize, served by the generic kernel; generic: its own time (events, median of 3,\n"
        "while the compile went on); kernel: the specialized kernel's time once built; over: 1st - kernel; ready:\n"
        "from the first call until the specialized plan was built (wait_for_compiles); compile: NVRTC's time for it\n");
  }
  result.json = json_array(items, true);
  return result;
}

}  // namespace convjit::bench
