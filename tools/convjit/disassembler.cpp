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
#include <vector>

#include "core/fail.hpp"

extern char** environ;

namespace convjit::cli {

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
  explicit TempFile(const std::string& bytes) {
    std::string name = (fs::temp_directory_path() / "convjit-XXXXXX.cubin").string();
    const int fd = ::mkstemps(name.data(), 6);
    if (fd < 0) fail(ErrorCode::kIo, "cannot create a temporary file in '{}': {}", fs::temp_directory_path().string(),
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
  const TempFile file(cubin);
  std::vector<std::string> argv_text = {tool.program.string()};
  // Code sections only: the CUBIN's debug and constant sections drown the SASS.
  argv_text.emplace_back(tool.is_cuobjdump ? "-sass" : "--print-code");
  argv_text.push_back(file.path().string());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);

  // NOTE: the child writes to our stdout directly; flush ours first so the order holds.
  std::fflush(stdout);
  pid_t pid = 0;
  if (const int err = ::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ); err != 0) {
    fail(ErrorCode::kIo, "cannot run '{}': {}", tool.program.string(), std::strerror(err));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail(ErrorCode::kIo, "waiting for '{}': {}", tool.program.string(), std::strerror(errno));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

}  // namespace convjit::cli
