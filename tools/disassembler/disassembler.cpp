#include "disassembler.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string_view>
#include <vector>

#include "tooling/tooling.hpp"

extern char** environ;

namespace convjit::disasm {

namespace fs = std::filesystem;

namespace {
std::vector<fs::path> search_dirs() {
  std::vector<fs::path> dirs;
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::string_view rest = path;
    while (!rest.empty()) {
      const std::size_t colon = rest.find(':');
      if (colon != 0) dirs.emplace_back(rest.substr(0, colon));
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
  }
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    if (const char* root = std::getenv(var); root != nullptr && *root != '\0') dirs.push_back(fs::path(root) / "bin");
  }
  dirs.emplace_back("/usr/local/cuda/bin");
  // First occurrence wins, as on PATH; duplicates would only lengthen the error message.
  std::vector<fs::path> unique;
  for (auto& dir : dirs) {
    if (std::find(unique.begin(), unique.end(), dir) == unique.end()) unique.push_back(std::move(dir));
  }
  return unique;
}

std::optional<fs::path> find_program(std::string_view name) {
  for (const auto& dir : search_dirs()) {
    const fs::path candidate = dir / name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

// A temporary file removed when it goes out of scope.
class TempFile {
 public:
  TempFile(const std::string& bytes, std::string_view suffix) {
    std::string name = (fs::temp_directory_path() / fmt::format("convjit-XXXXXX{}", suffix)).string();
    const int fd = ::mkstemps(name.data(), static_cast<int>(suffix.size()));
    if (fd < 0)
      fail(ErrorCode::kIo, "cannot create a temporary file in '{}': {}", fs::temp_directory_path().string(),
           std::strerror(errno));
    path_ = name;
    std::size_t written = 0;
    while (written < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        ::close(fd);
        fail(ErrorCode::kIo, "cannot write '{}': {}", path_.string(), std::strerror(err));
      }
      written += static_cast<std::size_t>(n);
    }
    ::close(fd);
  }
  ~TempFile() {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A file descriptor closed when it goes out of scope (or earlier, by reset()).
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// posix_spawn_file_actions_t owned by RAII.
class FileActions {
 public:
  FileActions() { ::posix_spawn_file_actions_init(&actions_); }
  ~FileActions() { ::posix_spawn_file_actions_destroy(&actions_); }
  FileActions(const FileActions&) = delete;
  FileActions& operator=(const FileActions&) = delete;
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_;
};

// Starts the disassembler on `cubin_path`, code sections only.
pid_t spawn_disassembler(const Disassembler& tool, const fs::path& cubin_path,
                         const posix_spawn_file_actions_t* actions) {
  std::vector<std::string> argv_text = {tool.program.string()};
  // Code sections only: the CUBIN's debug and constant sections drown the SASS.
  argv_text.emplace_back(tool.is_cuobjdump ? "-sass" : "--print-code");
  argv_text.push_back(cubin_path.string());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid = 0;
  if (const int err = ::posix_spawn(&pid, argv[0], actions, nullptr, argv.data(), environ); err != 0) {
    fail(ErrorCode::kIo, "cannot run '{}': {}", tool.program.string(), std::strerror(err));
  }
  return pid;
}

// The child's exit status (128 + the signal when one killed it).
int wait_for(const Disassembler& tool, pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail(ErrorCode::kIo, "waiting for '{}': {}", tool.program.string(), std::strerror(errno));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}
}  // namespace

std::optional<Disassembler> find_disassembler() {
  // NOTE: cuobjdump -sass runs nvdisasm itself (from PATH or NVDISASM_PATH), so
  // nvdisasm goes first; cuobjdump alone works only where it can find nvdisasm.
  if (auto p = find_program("nvdisasm")) return Disassembler{*p, false};
  if (auto p = find_program("cuobjdump")) return Disassembler{*p, true};
  return std::nullopt;
}

std::string disassembler_search_path() {
  std::string out;
  for (const auto& dir : search_dirs()) {
    if (!out.empty()) out += ':';
    out += dir.string();
  }
  return out;
}

int print_sass(const Disassembler& tool, const std::string& cubin) {
  const TempFile file(cubin, ".cubin");
  // NOTE: the child writes to our stdout directly; flush ours first so the order holds.
  std::fflush(stdout);
  return wait_for(tool, spawn_disassembler(tool, file.path(), nullptr));
}

std::string sass(const Disassembler& tool, const std::string& cubin) {
  const TempFile file(cubin, ".cubin");
  // stderr goes to a file, not a second pipe: reading one pipe while the child blocks
  // on the other, full, would deadlock; its messages are short.
  const TempFile errors("", ".err");
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC) != 0) fail(ErrorCode::kIo, "cannot make a pipe: {}", std::strerror(errno));
  Fd read_end(ends[0]);
  Fd write_end(ends[1]);
  FileActions actions;
  // dup2 clears close-on-exec on the child's fd 1; both original ends close at exec.
  ::posix_spawn_file_actions_adddup2(actions.get(), write_end.get(), STDOUT_FILENO);
  ::posix_spawn_file_actions_addopen(actions.get(), STDERR_FILENO, errors.path().c_str(), O_WRONLY | O_TRUNC, 0);
  const pid_t pid = spawn_disassembler(tool, file.path(), actions.get());
  // Our copy of the write end must go, or the read below never sees end-of-file.
  write_end.reset();

  // Read while the child runs, so that it never waits on a full pipe.
  std::string out;
  char buffer[1 << 16];
  int read_error = 0;
  for (;;) {
    const ssize_t n = ::read(read_end.get(), buffer, sizeof buffer);
    if (n > 0) {
      out.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      read_error = errno;
      break;
    }
  }
  read_end.reset();  // a child still writing now gets EPIPE instead of blocking
  const int status = wait_for(tool, pid);
  if (read_error != 0) {
    fail(ErrorCode::kIo, "reading the output of '{}': {}", tool.program.string(), std::strerror(read_error));
  }
  if (status != 0) {
    std::ifstream err_file(errors.path());
    std::string message((std::istreambuf_iterator<char>(err_file)), std::istreambuf_iterator<char>());
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
    fail(ErrorCode::kIo, "'{}' exited with status {}{}{}", tool.program.string(), status, message.empty() ? "" : ": ",
         message);
  }
  return out;
}

}  // namespace convjit::disasm
