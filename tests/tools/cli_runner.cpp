#include "tools/cli_runner.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

extern char** environ;

namespace convjit::testing {

namespace {
std::string slurp(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}
}  // namespace

CliResult run_cli(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  TempDir scratch;
  const auto out_file = scratch.path() / "stdout";
  const auto err_file = scratch.path() / "stderr";

  std::vector<std::string> env_text;
  for (char** e = environ; *e != nullptr; ++e) env_text.emplace_back(*e);
  for (const auto& change : env) {
    const std::string name = change.substr(0, change.find('='));
    std::erase_if(env_text, [&](const std::string& e) { return e.substr(0, e.find('=')) == name; });
    if (change.find('=') != std::string::npos) env_text.push_back(change);
  }
  std::vector<char*> envp;
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);

  std::vector<std::string> argv_text = {CONVJIT_CLI_PATH};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  CliResult result;
  if (spawned != 0) {
    result.err = "cannot start " + argv_text[0];
    return result;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = slurp(out_file);
  result.err = slurp(err_file);
  return result;
}

std::filesystem::path CliTest::write_file(const std::string& name, const std::string& text) const {
  const auto path = dir_.path() / name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

CliResult CliTest::cli(const std::vector<std::string>& args, std::vector<std::string> env) const {
  env.insert(env.begin(), {"CONVJIT_CACHE_DIR=" + cache_dir().string(), "CONVJIT_PROGRESS"});
  return run_cli(args, env);
}

bool disassembler_available() {
  std::vector<std::string> dirs = {"/usr/local/cuda/bin"};
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    if (const char* root = std::getenv(var); root != nullptr && *root != '\0')
      dirs.push_back(std::string(root) + "/bin");
  }
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::stringstream parts(path);
    for (std::string dir; std::getline(parts, dir, ':');) dirs.push_back(dir);
  }
  for (const auto& dir : dirs) {
    // cuobjdump alone cannot show SASS: it runs nvdisasm.
    if (access((dir + "/nvdisasm").c_str(), X_OK) == 0) return true;
  }
  return false;
}

}  // namespace convjit::testing
