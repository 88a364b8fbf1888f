#include "problem_input.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "tooling/tooling.hpp"

namespace convjit::cli {

namespace {
std::string read_file(const std::filesystem::path& file) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec))
    fail(ErrorCode::kIo, "cannot read '{}': it is a directory", file.string());
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(ErrorCode::kIo, "cannot open '{}': {}", file.string(), std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool looks_like_json(const std::filesystem::path& file, const std::string& text) {
  if (file.extension() == ".json") return true;
  const std::size_t first = text.find_first_not_of(" \t\r\n");
  return first != std::string::npos && text[first] == '{';
}

std::string problem_label(const WorkloadProblem& p) {
  std::string label = p.id.empty() ? std::string("problem") : "#" + p.id;
  if (!p.name.empty()) label += " " + p.name;
  return label;
}
}  // namespace

void load_problem_file(const std::filesystem::path& file, ProblemList& into) {
  const std::string text = read_file(file);
  if (!looks_like_json(file, text)) {
    for (const ShapeLine& line : parse_shape_lines(text, file.string())) {
      into.problems.push_back(
          Problem{fmt::format("{}:{} {}", file.string(), line.line, to_short_string(line.desc)), line.desc});
    }
    return;
  }
  for (const WorkloadProblem& p : parse_workloads(text, file.string())) {
    const std::string label = problem_label(p);
    if (!p.skipped.empty()) {
      into.skipped.push_back(SkippedProblem{label, p.skipped});
      continue;
    }
    if (p.descs.size() == 2) {
      // A separable conv runs as its depthwise then its pointwise half.
      into.problems.push_back(Problem{label + " (depthwise)", p.descs[0]});
      into.problems.push_back(Problem{label + " (pointwise)", p.descs[1]});
      continue;
    }
    for (const Conv2dDesc& d : p.descs) into.problems.push_back(Problem{label, d});
  }
}

}  // namespace convjit::cli
