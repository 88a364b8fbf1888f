#include <pwd.h>
#include <unistd.h>

#include <cstdlib>

#include "convjit/runtime.hpp"

namespace convjit {

std::filesystem::path default_cache_dir() {
  auto env = [](const char* name) -> const char* {
    const char* value = std::getenv(name);
    return value != nullptr && *value != '\0' ? value : nullptr;
  };
  if (const char* dir = env("CONVJIT_CACHE_DIR")) return dir;
  if (const char* xdg = env("XDG_CACHE_HOME")) return std::filesystem::path(xdg) / "convjit";
  const char* home = env("HOME");
  if (home == nullptr) {
    if (const passwd* pw = getpwuid(getuid()); pw != nullptr) home = pw->pw_dir;
  }
  if (home == nullptr) return std::filesystem::temp_directory_path() / "convjit-cache";
  return std::filesystem::path(home) / ".cache" / "convjit";
}

}  // namespace convjit
