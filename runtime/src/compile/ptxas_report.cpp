#include "compile/ptxas_report.hpp"

#include <regex>
#include <string>

namespace convjit {

ResourceUsage parse_ptxas_report(std::string_view log, std::string_view kernel_name) {
  ResourceUsage usage;
  // ptxas prints "Function properties for <name>" then the stack/spill line, then
  // "Used N registers, ..., M bytes smem" for the entry it compiled.
  // The name must end there: "<name>_pack" or "<name>_reduce" of the same module would
  // match a bare prefix search, and ptxas may report them first.
  const std::string text(log);
  const std::string heading = std::string("Function properties for ") + std::string(kernel_name);
  std::size_t at = text.find(heading + "\n");
  if (at == std::string::npos) at = text.find(heading);
  const std::string section = at == std::string::npos ? text : text.substr(at);
  auto grab = [&](const char* pattern) {
    std::smatch m;
    return std::regex_search(section, m, std::regex(pattern)) ? std::stoi(m[1].str()) : 0;
  };
  usage.stack_bytes = grab(R"((\d+) bytes stack frame)");
  usage.spill_store_bytes = grab(R"((\d+) bytes spill stores)");
  usage.spill_load_bytes = grab(R"((\d+) bytes spill loads)");
  usage.registers = grab(R"(Used (\d+) registers)");
  usage.static_shared_bytes = grab(R"((\d+) bytes smem)");
  return usage;
}

}  // namespace convjit
