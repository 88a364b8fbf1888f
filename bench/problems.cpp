#include "problems.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "bench_util.hpp"
#include "tooling/tooling.hpp"

namespace convjit::bench {

namespace {

Conv2dDesc parse_comma_shape(std::string_view text) {
  static constexpr std::string_view kFields[] = {"n", "c",      "h",   "w",        "k",     "r",
                                                 "s", "stride", "pad", "dilation", "groups"};
  const auto items = split_list(text, ',');
  if (items.size() < 7 || items.size() > 11 || std::count(text.begin(), text.end(), ',') + 1 != long(items.size())) {
    fail(ErrorCode::kInvalidArgument, "--shape '{}': expected n,c,h,w,k,r,s[,stride,pad,dilation,groups]", text);
  }
  int v[11] = {1, 1, 1, 1, 1, 1, 1, /*stride*/ 1, /*pad*/ 0, /*dilation*/ 1, /*groups*/ 1};
  for (std::size_t i = 0; i < items.size(); ++i) {
    const long long value = parse_integer(items[i], fmt::format("--shape '{}': field {}", text, kFields[i]));
    const long long min = kFields[i] == "pad" ? 0 : 1;
    if (value < min || value > 1'000'000'000) {
      fail(ErrorCode::kInvalidArgument, "--shape '{}': field {}: expected >= {}, got {}", text, kFields[i], min, value);
    }
    v[i] = static_cast<int>(value);
  }
  return Conv2dDesc{.n = v[0],
                    .c = v[1],
                    .h = v[2],
                    .w = v[3],
                    .k = v[4],
                    .r = v[5],
                    .s = v[6],
                    .stride_h = v[7],
                    .stride_w = v[7],
                    .pad_h = v[8],
                    .pad_w = v[8],
                    .dilation_h = v[9],
                    .dilation_w = v[9],
                    .groups = v[10]};
}

bool selected(const std::vector<std::string>& ids, const std::string& id, const std::string& group) {
  return ids.empty() || std::find(ids.begin(), ids.end(), id) != ids.end() ||
         std::find(ids.begin(), ids.end(), group) != ids.end();
}

}  // namespace

Conv2dDesc parse_bench_shape(std::string_view text) {
  // The one-line form starts with a letter ("n8c64..."); "pad=2,4" may put commas in it too.
  const bool comma_form = !text.empty() && text.front() >= '0' && text.front() <= '9';
  Conv2dDesc desc = comma_form ? parse_comma_shape(text) : parse_shape(text, "--shape");
  try {
    desc.validate();
  } catch (const Error& e) {
    // kUnsupported (a dtype this version lacks) is the runner's business: it prints n/a.
    if (e.code() != ErrorCode::kUnsupported) fail(ErrorCode::kInvalidArgument, "--shape '{}': {}", text, e.what());
  }
  return desc;
}

std::optional<std::filesystem::path> default_workload_file() {
  const std::filesystem::path relative = "workloads/kernelbench_level1_conv.json";
#ifdef CONVJIT_BENCH_SOURCE_DIR
  if (const auto built = std::filesystem::path(CONVJIT_BENCH_SOURCE_DIR) / relative; std::filesystem::exists(built)) {
    return built;
  }
#endif
  if (std::filesystem::exists(relative)) return relative;
  return std::nullopt;
}

ProblemSelection select_problems(const SelectionRequest& request) {
  ProblemSelection out;
  std::vector<std::string> matched;
  if (request.workloads) {
    for (const auto& w : load_workloads(*request.workloads)) {
      if (!w.skipped.empty()) {
        if (!selected(request.ids, w.id, w.id)) continue;
        matched.push_back(w.id);
        out.skipped.push_back({w.id, w.skipped});
        continue;
      }
      const bool halves = w.descs.size() > 1;
      for (std::size_t i = 0; i < w.descs.size(); ++i) {
        const std::string id = halves ? fmt::format("{}.{}", w.id, i == 0 ? "dw" : "pw") : w.id;
        if (!selected(request.ids, id, w.id)) continue;
        matched.push_back(id);
        matched.push_back(w.id);
        out.problems.push_back({id, w.id, w.name, w.descs[i]});
      }
    }
  }
  for (const auto& id : request.ids) {
    if (std::find(matched.begin(), matched.end(), id) == matched.end()) {
      fail(ErrorCode::kInvalidArgument, "--ids: no problem '{}' in {}", id,
           request.workloads ? request.workloads->string() : std::string("(no workload file)"));
    }
  }
  int index = 0;
  for (const auto& text : request.shapes) {
    const std::string id = fmt::format("s{}", ++index);
    out.problems.push_back({id, id, text, parse_bench_shape(text)});
  }
  if (request.batch_scale != 1.0) {
    for (auto& p : out.problems) {
      p.desc.n = std::max(1, static_cast<int>(std::lround(p.desc.n * request.batch_scale)));
    }
  }
  return out;
}

std::string problem_text(const Conv2dDesc& desc) {
  Conv2dDesc plain = desc;
  plain.math = Conv2dDesc{}.math;
  plain.dtype = Conv2dDesc{}.dtype;
  plain.layout = Conv2dDesc{}.layout;  // a column of its own
  return to_short_string(plain);
}

}  // namespace convjit::bench
