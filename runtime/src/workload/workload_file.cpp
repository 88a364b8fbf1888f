#include "workload/workload_file.hpp"

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>
#include <utility>

#include "base/fail.hpp"
#include "workload/json.hpp"

namespace convjit {

namespace {
constexpr long long kIntMax = std::numeric_limits<int>::max();

// Names a problem's place in messages: "kb.json:7:5: problems[4]", at the line and
// column of the value concerned (the problem's own '{' when a field is missing).
struct Place {
  std::string_view origin;
  int index = 0;
  std::string at(const json::Value& v) const {
    return fmt::format("{}:{}:{}: problems[{}]", origin, v.line, v.column, index);
  }
};

// `v` as an int in [min, INT_MAX], else an error naming the place and the field.
// NOTE: the range is checked on the text before any conversion: casting an out-of-range
// double to int is undefined behaviour (issue 12: a spatial extent of 4294967304).
int to_int(const json::Value& v, const Place& place, std::string_view field, int min) {
  if (const auto value = v.integer(min, kIntMax)) return static_cast<int>(*value);
  if (v.written_as_integer()) {
    fail(ErrorCode::kInvalidArgument, "{}: field {}: expected an integer from {} to {}, got {}", place.at(v), field,
         min, kIntMax, v.describe());
  }
  fail(ErrorCode::kInvalidArgument, "{}: field {}: expected an integer, got {}", place.at(v), field, v.describe());
}

const json::Value& member(const json::Value& problem, std::string_view name, const Place& place,
                          std::string_view expected) {
  const json::Value* v = problem.find(name);
  if (v == nullptr) {
    fail(ErrorCode::kInvalidArgument, "{}: field '{}': expected {}, got nothing (the field is missing)",
         place.at(problem), name, expected);
  }
  return *v;
}

int int_field(const json::Value& problem, std::string_view name, const Place& place, int min) {
  return to_int(member(problem, name, place, "an integer"), place, fmt::format("'{}'", name), min);
}

std::vector<int> int_list(const json::Value& problem, std::string_view name, const Place& place, int min) {
  const json::Value& v = member(problem, name, place, "an array of integers");
  if (!v.is_array()) {
    fail(ErrorCode::kInvalidArgument, "{}: field '{}': expected an array of integers, got {}", place.at(v), name,
         v.describe());
  }
  std::vector<int> out;
  for (const auto& item : v.array()) {
    out.push_back(to_int(item, place, fmt::format("'{}'[{}]", name, out.size()), min));
  }
  return out;
}

std::string problem_label(const WorkloadProblem& p) {
  std::string label = p.id.empty() ? std::string("problem") : "#" + p.id;
  if (!p.name.empty()) label += " " + p.name;
  return label;
}
}  // namespace

std::vector<WorkloadProblem> parse_workloads(std::string_view text, std::string_view origin) {
  const json::Value doc = json::parse(text, origin);
  const json::Value* problems = doc.find("problems");
  if (problems == nullptr || !problems->is_array()) {
    fail(ErrorCode::kInvalidArgument, "{}:{}:{}: expected an object with a \"problems\" array", origin,
         problems != nullptr ? problems->line : doc.line, problems != nullptr ? problems->column : doc.column);
  }
  std::vector<WorkloadProblem> out;
  int index = 0;
  for (const auto& p : problems->array()) {
    const Place place{origin, index++};
    if (!p.is_object()) fail(ErrorCode::kInvalidArgument, "{}: expected an object, got {}", place.at(p), p.describe());
    WorkloadProblem item;
    if (const auto* id = p.find("id"); id != nullptr && id->is_number()) item.id = id->token;
    if (const auto* name = p.find("name"); name != nullptr && name->is_string()) item.name = name->string();
    const json::Value* op = p.find("op");
    if (op != nullptr && !op->is_string()) {
      fail(ErrorCode::kInvalidArgument, "{}: field 'op': expected a string, got {}", place.at(*op), op->describe());
    }
    const std::string op_name = op != nullptr ? op->string() : "";
    const auto spatial = int_list(p, "spatial", place, 1);
    if (op_name != "conv" && op_name != "conv_transpose" && op_name != "separable") {
      item.skipped = fmt::format("op '{}' is not supported (conv, conv_transpose and separable are)", op_name);
    } else if (spatial.empty() || spatial.size() > 3) {
      fail(ErrorCode::kInvalidArgument, "{}: field 'spatial': expected 1, 2 or 3 extents, got {}",
           place.at(*p.find("spatial")), spatial.size());
    }
    if (!item.skipped.empty()) {
      out.push_back(std::move(item));
      continue;
    }
    const std::size_t dims = spatial.size();
    const bool transposed = op_name == "conv_transpose";
    const auto kernel = int_list(p, "kernel", place, 1);
    const auto stride = int_list(p, "stride", place, 1);
    const auto padding = int_list(p, "padding", place, 0);
    const auto dilation = int_list(p, "dilation", place, 1);
    // Optional, conv_transpose only (nn.ConvTranspose*d's output_padding); zeros by default.
    std::vector<int> output_padding(dims, 0);
    if (const json::Value* op_field = p.find("output_padding"); op_field != nullptr) {
      output_padding = int_list(p, "output_padding", place, 0);
      if (!transposed && std::any_of(output_padding.begin(), output_padding.end(), [](int v) { return v != 0; })) {
        fail(ErrorCode::kInvalidArgument, "{}: field 'output_padding': only a conv_transpose has one, got {}",
             place.at(*op_field), op_field->describe());
      }
    }
    for (const auto& [list, name] :
         {std::pair{&kernel, "kernel"}, std::pair{&stride, "stride"}, std::pair{&padding, "padding"},
          std::pair{&dilation, "dilation"},
          std::pair{static_cast<const std::vector<int>*>(&output_padding), "output_padding"}}) {
      if (list->size() != dims) {
        fail(ErrorCode::kInvalidArgument, "{}: field '{}': expected {} values, one per spatial dimension, got {}",
             place.at(p.find(name) != nullptr ? *p.find(name) : p), name, dims, list->size());
      }
    }
    // The lists end with width; a lower rank leaves the leading fields at their neutral
    // values (Conv2dDesc: a 1-D problem is h = r = 1, a 2-D one d = t = 1).
    const std::size_t first = 3 - dims;
    auto at = [&](const std::vector<int>& list, std::size_t axis, int neutral) {
      return axis < first ? neutral : list[axis - first];
    };
    bool bias = false;
    if (const json::Value* b = p.find("bias"); b != nullptr) {
      if (!b->is_bool()) {
        fail(ErrorCode::kInvalidArgument, "{}: field 'bias': expected true or false, got {}", place.at(*b),
             b->describe());
      }
      bias = b->boolean();
    }
    // Optional: the tensors' memory layout, "nchw" (KernelBench's, the default) or "nhwc".
    Layout layout = Layout::kNCHW;
    if (const json::Value* l = p.find("layout"); l != nullptr) {
      if (!l->is_string() || (l->string() != "nchw" && l->string() != "nhwc")) {
        fail(ErrorCode::kInvalidArgument, "{}: field 'layout': expected \"nchw\" or \"nhwc\", got {}", place.at(*l),
             l->describe());
      }
      layout = l->string() == "nhwc" ? Layout::kNHWC : Layout::kNCHW;
    }
    // Optional: "batch": "dynamic" makes N the largest batch of one kernel that takes
    // every batch up to it (Conv2dDesc::dynamic_batch); "static" (the default) fixes it.
    bool dynamic_batch = false;
    if (const json::Value* b = p.find("batch"); b != nullptr) {
      if (!b->is_string() || (b->string() != "static" && b->string() != "dynamic")) {
        fail(ErrorCode::kInvalidArgument, "{}: field 'batch': expected \"static\" or \"dynamic\", got {}", place.at(*b),
             b->describe());
      }
      dynamic_batch = b->string() == "dynamic";
    }
    Conv2dDesc d{.n = int_field(p, "N", place, 1),
                 .c = int_field(p, "C", place, 1),
                 .h = at(spatial, 1, 1),
                 .w = at(spatial, 2, 1),
                 .k = int_field(p, "K", place, 1),
                 .r = at(kernel, 1, 1),
                 .s = at(kernel, 2, 1),
                 .stride_h = at(stride, 1, 1),
                 .stride_w = at(stride, 2, 1),
                 .pad_h = at(padding, 1, 0),
                 .pad_w = at(padding, 2, 0),
                 .dilation_h = at(dilation, 1, 1),
                 .dilation_w = at(dilation, 2, 1),
                 .groups = p.find("groups") ? int_field(p, "groups", place, 1) : 1,
                 .bias = bias,
                 .layout = layout,
                 .dynamic_batch = dynamic_batch,
                 .spatial_dims = static_cast<int>(dims),
                 .d = at(spatial, 0, 1),
                 .t = at(kernel, 0, 1),
                 .stride_d = at(stride, 0, 1),
                 .pad_d = at(padding, 0, 0),
                 .dilation_d = at(dilation, 0, 1),
                 .transposed = transposed,
                 .output_padding_d = at(output_padding, 0, 0),
                 .output_padding_h = at(output_padding, 1, 0),
                 .output_padding_w = at(output_padding, 2, 0)};
    // Fields that fit one by one may not fit together (groups must divide the channels,
    // the filter must fit the padded input): named here, at the problem, so that a bad
    // file stops before anything is compiled.
    const auto check = [&](const Conv2dDesc& desc) {
      try {
        desc.validate();
      } catch (const Error& e) {
        if (e.code() == ErrorCode::kInvalidArgument) {
          fail(ErrorCode::kInvalidArgument, "{} ({}): invalid problem: {}", place.at(p), problem_label(item), e.what());
        }
        // kUnsupported (a layout this version cannot run) is counted when the problem runs.
        if (e.code() != ErrorCode::kUnsupported) throw;
      }
    };
    if (op_name == "separable") {
      // Depthwise (c -> c, groups = c) then pointwise (1x1, c -> k).
      Conv2dDesc depthwise = d;
      depthwise.k = d.c;
      depthwise.groups = d.c;
      check(depthwise);  // before its output extents size the pointwise half
      const auto mid = depthwise.output_shape();
      if (mid.p > kIntMax || mid.q > kIntMax || mid.z > kIntMax) {
        fail(ErrorCode::kInvalidArgument,
             "{} ({}): invalid problem: the depthwise output of {}x{}x{} is over {} per side", place.at(p),
             problem_label(item), mid.z, mid.p, mid.q, kIntMax);
      }
      Conv2dDesc pointwise{.n = d.n,
                           .c = d.c,
                           .h = static_cast<int>(mid.p),
                           .w = static_cast<int>(mid.q),
                           .k = d.k,
                           .bias = d.bias,
                           .layout = d.layout,
                           .dynamic_batch = d.dynamic_batch,
                           .spatial_dims = d.spatial_dims,
                           .d = static_cast<int>(mid.z)};
      check(pointwise);
      item.descs = {depthwise, pointwise};
    } else {
      check(d);
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
