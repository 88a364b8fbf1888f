#include "workload/workload_file.hpp"

#include <cmath>
#include <fstream>
#include <sstream>

#include "core/fail.hpp"
#include "workload/json.hpp"

namespace convjit {

namespace {
int int_field(const json::Value& problem, std::string_view name, std::string_view where) {
  const json::Value* v = problem.find(name);
  if (v == nullptr || !v->is_number() || v->number() != std::floor(v->number()) || std::abs(v->number()) > 2e9) {
    fail(ErrorCode::kInvalidArgument, "{}: field '{}': expected an integer", where, name);
  }
  return static_cast<int>(v->number());
}

std::vector<int> int_list(const json::Value& problem, std::string_view name, std::string_view where) {
  const json::Value* v = problem.find(name);
  if (v == nullptr || !v->is_array()) fail(ErrorCode::kInvalidArgument, "{}: field '{}': expected an array", where, name);
  std::vector<int> out;
  for (const auto& item : v->array()) {
    if (!item.is_number() || item.number() != std::floor(item.number())) {
      fail(ErrorCode::kInvalidArgument, "{}: field '{}': expected an array of integers", where, name);
    }
    out.push_back(static_cast<int>(item.number()));
  }
  return out;
}
}  // namespace

std::vector<WorkloadProblem> parse_workloads(std::string_view text, std::string_view origin) {
  const json::Value doc = json::parse(text, origin);
  const json::Value* problems = doc.find("problems");
  if (problems == nullptr || !problems->is_array()) {
    fail(ErrorCode::kInvalidArgument, "{}: expected an object with a \"problems\" array", origin);
  }
  std::vector<WorkloadProblem> out;
  int index = 0;
  for (const auto& p : problems->array()) {
    const std::string where = fmt::format("{}: problems[{}]", origin, index++);
    if (!p.is_object()) fail(ErrorCode::kInvalidArgument, "{}: expected an object", where);
    WorkloadProblem item;
    if (const auto* id = p.find("id"); id != nullptr && id->is_number()) item.id = fmt::format("{}", id->number());
    if (const auto* name = p.find("name"); name != nullptr && name->is_string()) item.name = name->string();
    const json::Value* op = p.find("op");
    const std::string op_name = op != nullptr && op->is_string() ? op->string() : "";
    const auto spatial = int_list(p, "spatial", where);
    if (op_name != "conv" && op_name != "separable") {
      item.skipped = fmt::format("op '{}' is not supported (forward 2D conv only)", op_name);
    } else if (spatial.size() != 2) {
      item.skipped = fmt::format("{}D convolution is not supported (2D only)", spatial.size());
    }
    if (!item.skipped.empty()) {
      out.push_back(std::move(item));
      continue;
    }
    const auto kernel = int_list(p, "kernel", where);
    const auto stride = int_list(p, "stride", where);
    const auto padding = int_list(p, "padding", where);
    const auto dilation = int_list(p, "dilation", where);
    for (const auto* list : {&kernel, &stride, &padding, &dilation}) {
      if (list->size() != 2) fail(ErrorCode::kInvalidArgument, "{}: expected 2 values per spatial list", where);
    }
    const json::Value* bias = p.find("bias");
    Conv2dDesc d{.n = int_field(p, "N", where), .c = int_field(p, "C", where), .h = spatial[0], .w = spatial[1],
                 .k = int_field(p, "K", where), .r = kernel[0], .s = kernel[1], .stride_h = stride[0],
                 .stride_w = stride[1], .pad_h = padding[0], .pad_w = padding[1], .dilation_h = dilation[0],
                 .dilation_w = dilation[1], .groups = p.find("groups") ? int_field(p, "groups", where) : 1,
                 .bias = bias != nullptr && bias->is_bool() && bias->boolean()};
    if (op_name == "separable") {
      // Depthwise (c -> c, groups = c) then pointwise (1x1, c -> k).
      Conv2dDesc depthwise = d;
      depthwise.k = d.c;
      depthwise.groups = d.c;
      const auto mid = depthwise.output_shape();
      Conv2dDesc pointwise{.n = d.n, .c = d.c, .h = static_cast<int>(mid.p), .w = static_cast<int>(mid.q), .k = d.k,
                           .bias = d.bias};
      item.descs = {depthwise, pointwise};
    } else {
      item.descs = {d};
    }
    out.push_back(std::move(item));
  }
  return out;
}

std::vector<WorkloadProblem> load_workloads(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(ErrorCode::kIo, "cannot open workload file '{}'", file.string());
  std::ostringstream text;
  text << in.rdbuf();
  return parse_workloads(text.str(), file.string());
}

}  // namespace convjit
