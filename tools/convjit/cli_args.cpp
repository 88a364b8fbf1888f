#include "cli_args.hpp"

#include <fmt/format.h>

#include <charconv>

#include "tooling/tooling.hpp"

namespace convjit::cli {

namespace {
template <typename... Args>
[[noreturn]] void usage_error(const CommandSpec& spec, fmt::format_string<Args...> format, Args&&... args) {
  fail(ErrorCode::kInvalidArgument, "convjit {}: {} (see 'convjit {} --help')", spec.name,
       fmt::format(format, std::forward<Args>(args)...), spec.name);
}

const OptionSpec* find_option(const CommandSpec& spec, std::string_view name) {
  for (const auto& option : spec.options) {
    if (option.name == name) return &option;
  }
  return nullptr;
}
}  // namespace

std::optional<std::string> Args::value(std::string_view name) const {
  auto it = options.find(name);
  if (it == options.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> Args::values(std::string_view name) const {
  auto it = options.find(name);
  return it == options.end() ? std::vector<std::string>{} : it->second;
}

Args parse_args(const CommandSpec& spec, std::span<const std::string_view> argv) {
  Args args;
  bool options_done = false;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string_view arg = argv[i];
    if (options_done || arg.size() < 2 || arg[0] != '-') {
      args.positionals.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      args.help = true;
      continue;
    }
    const std::size_t eq = arg.find('=');
    const std::string_view name = arg.substr(0, eq);
    const OptionSpec* option = find_option(spec, name);
    if (option == nullptr) usage_error(spec, "unknown option '{}'", name);
    if (option->value_name.empty()) {
      if (eq != std::string_view::npos) usage_error(spec, "option '{}' takes no value, got '{}'", name, arg);
      args.options[std::string(name)].emplace_back();
      continue;
    }
    std::string_view value;
    if (eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < argv.size()) {
      value = argv[++i];
    } else {
      usage_error(spec, "option '{}' expects a value ({}), got the end of the command line", name, option->value_name);
    }
    args.options[std::string(name)].emplace_back(value);
  }
  if (args.help) return args;
  if (args.positionals.size() < spec.min_positionals) {
    usage_error(spec, "expected {}, got {} argument{}", spec.synopsis, args.positionals.size(),
                args.positionals.size() == 1 ? "" : "s");
  }
  if (args.positionals.size() > spec.max_positionals) {
    usage_error(spec, "unexpected argument '{}' (expected {})", args.positionals[spec.max_positionals], spec.synopsis);
  }
  return args;
}

void print_help(const CommandSpec& spec) {
  fmt::print("usage: convjit {} {}\n\n{}\n", spec.name, spec.synopsis, spec.summary);
  if (!spec.options.empty()) {
    fmt::print("\noptions:\n");
    for (const auto& option : spec.options) {
      const std::string left =
          option.value_name.empty() ? std::string(option.name) : fmt::format("{} {}", option.name, option.value_name);
      fmt::print("  {:<22} {}\n", left, option.help);
    }
    fmt::print("  {:<22} {}\n", "-h, --help", "this text");
  }
  if (!spec.details.empty()) fmt::print("\n{}\n", spec.details);
}

int parse_count(const CommandSpec& spec, std::string_view option, std::string_view text, int min) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value < min) {
    usage_error(spec, "option '{}' expects a whole number >= {}, got '{}'", option, min, text);
  }
  return value;
}

}  // namespace convjit::cli
