#include "compile/ptxas_report.hpp"

#include <regex>
#include <string>

namespace convjit {

ResourceUsage parse_ptxas_report(std::string_view log, std::string_view kernel_name) {
  ResourceUsage usage;
  // ptxas prints "Function properties for <name>" then the stack/spill line, then
  // "Used N registers, ..., M bytes smem" for the entry it compiled.
  const std::string text(log);
  // The name must end its line: a transposed kernel's module also holds <name>_pack,
  // whose report comes first and whose name starts with the kernel's.
  const std::string heading = std::string("Function properties for ") + std::string(kernel_name);
  std::size_t at = std::string::npos;
  for (std::size_t from = text.find(heading); from != std::string::npos; from = text.find(heading, from + 1)) {
    const std::size_t end = from + heading.size();
    if (end == text.size() || text[end] == '\n' || text[end] == '\r') {
      at = from;
      break;
    }
  }
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
