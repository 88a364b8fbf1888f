#include "bench_report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>
#include <utility>

#include "bench_util.hpp"

namespace convjit::bench {

namespace {

bool is_convjit(const std::string& impl) { return impl != "cudnn"; }

std::string fixed(double v, int digits) { return v == v ? fmt::format("{:.{}f}", v, digits) : "-"; }

std::string cut(const std::string& text, std::size_t width) {
  return text.size() <= width ? text : text.substr(0, width - 1) + "~";
}

}  // namespace

double Peaks::for_math(const std::string& math) const {
  if (math == "strict") return fp32;
  if (math == "tf32") return tf32;
  return fp16;
}

Peaks datasheet_peaks(const std::string& gpu_name) {
  const auto has = [&](std::string_view s) { return gpu_name.find(s) != std::string::npos; };
  // NVIDIA datasheets, dense (no 2:4 sparsity): FP32 on FMA units, TF32 and FP16/BF16 on tensor cores.
  if (has("H100") && (has("PCIe") || has("PCI"))) return {51, 378, 756, "NVIDIA H100 PCIe datasheet, dense"};
  if (has("H100") && has("NVL")) return {60, 418, 835, "NVIDIA H100 NVL datasheet, dense"};
  if (has("H100") || has("H200") || has("GH200")) return {67, 495, 990, "NVIDIA H100/H200 SXM datasheet, dense"};
  if (has("A100")) return {19.5, 156, 312, "NVIDIA A100 datasheet, dense"};
  return {0, 0, 0, "unknown GPU: pass --peak-fp32/--peak-tf32/--peak-fp16"};
}

void derive_columns(std::vector<Row>& rows, const Peaks& peaks) {
  std::map<std::string, double> cudnn_ms;  // by id, math and layout
  for (const auto& r : rows) {
    if (r.impl == "cudnn" && r.ok() && r.timed()) cudnn_ms[r.id + "/" + r.math + "/" + r.layout] = r.ms;
  }
  for (auto& r : rows) {
    if (!r.timed()) continue;
    r.tflops = r.flops / (r.ms * 1e-3) / 1e12;
    const double peak = peaks.for_math(r.math);
    r.pct_peak = peak > 0 ? 100.0 * r.tflops / peak : kNaN;
    const auto it = cudnn_ms.find(r.id + "/" + r.math + "/" + r.layout);
    r.speedup = it != cudnn_ms.end() ? it->second / r.ms : kNaN;
  }
}

std::vector<Row> sum_parts(const std::vector<Row>& all_rows, const std::string& group, const Peaks& peaks) {
  std::vector<std::string> parts;
  for (const auto& r : all_rows) {
    if (r.group == group && r.id != group && std::find(parts.begin(), parts.end(), r.id) == parts.end()) {
      parts.push_back(r.id);
    }
  }
  std::vector<Row> out;
  if (parts.size() < 2) return out;
  using Key = std::tuple<std::string, std::string, std::string>;  // (math, layout, impl) -> parts
  std::map<Key, std::vector<const Row*>> by_key;
  std::vector<Key> order;
  for (const auto& r : all_rows) {
    if (r.group != group || r.id == group || !r.timed()) continue;
    const Key key{r.math, r.layout, r.impl};
    if (by_key.find(key) == by_key.end()) order.push_back(key);
    by_key[key].push_back(&r);
  }
  for (const auto& key : order) {
    const auto& rows = by_key[key];
    if (rows.size() != parts.size()) continue;
    Row sum;
    sum.id = group;
    sum.group = group;
    sum.math = std::get<0>(key);
    sum.layout = std::get<1>(key);
    sum.impl = std::get<2>(key);
    sum.ms = sum.p10_ms = sum.p90_ms = sum.rel_err = sum.max_abs_err = 0;
    sum.status = "ok";
    sum.iters = rows.front()->iters;
    for (const Row* r : rows) {
      sum.problem += (sum.problem.empty() ? "" : " + ") + r->id.substr(r->id.find('.') + 1);
      sum.flops += r->flops;
      sum.ms += r->ms;
      sum.p10_ms += r->p10_ms;
      sum.p90_ms += r->p90_ms;
      sum.rel_err = std::max(sum.rel_err, r->rel_err);
      sum.max_abs_err = std::max(sum.max_abs_err, r->max_abs_err);
      sum.nonfinite += r->nonfinite;
      sum.checked += r->checked;
      sum.iters = std::min(sum.iters, r->iters);
      if (!r->ok()) sum.status = fmt::format("FAIL: part {} failed", r->id);
    }
    sum.note = "sum of the parts' medians";
    out.push_back(std::move(sum));
  }
  derive_columns(out, peaks);
  return out;
}

void print_table_header() {
  fmt::print("{:<6} {:<44} {:<6} {:<6} {:<13} {:>9} {:>8} {:>6} {:>8} {:>9}  {}\n", "id", "problem", "math", "layout",
             "impl", "ms", "TFLOP/s", "%peak", "vs cuDNN", "rel err", "status");
}

void print_row(const Row& r) {
  const std::string speed = r.speedup == r.speedup ? fmt::format("{:.2f}x", r.speedup) : "-";
  const std::string err = r.rel_err == r.rel_err ? fmt::format("{:.2e}", r.rel_err) : "-";
  std::string status = r.status;
  std::string note = r.note;
  if (r.predicted_ms == r.predicted_ms) {
    note += fmt::format("{}predicted {:.3f} ms", note.empty() ? "" : ", ", r.predicted_ms);
  }
  if (!note.empty()) status += "  [" + note + "]";
  fmt::print("{:<6} {:<44} {:<6} {:<6} {:<13} {:>9} {:>8} {:>6} {:>8} {:>9}  {}\n", cut(r.id, 6), cut(r.problem, 44),
             r.math, r.layout, r.impl, fixed(r.ms, 3), fixed(r.tflops, 1), fixed(r.pct_peak, 1), speed, err, status);
  std::fflush(stdout);
}

std::vector<GeomeanLine> geomeans(const std::vector<Row>& rows) {
  // One line per math mode and layout, in the order the rows first show them.
  std::vector<std::pair<std::string, std::string>> blocks;
  for (const auto& r : rows) {
    const auto block = std::make_pair(r.math, r.layout);
    if (std::find(blocks.begin(), blocks.end(), block) == blocks.end()) blocks.push_back(block);
  }
  std::vector<GeomeanLine> out;
  for (const auto& [math, layout] : blocks) {
    std::map<std::string, double> cudnn, automatic, best;
    for (const auto& r : rows) {
      if (r.math != math || r.layout != layout || r.id != r.group || !r.ok() || !r.timed()) continue;
      if (r.impl == "cudnn") {
        cudnn[r.group] = r.ms;
      } else if (is_convjit(r.impl)) {
        if (r.impl == "auto") automatic[r.group] = r.ms;
        const auto it = best.find(r.group);
        best[r.group] = it == best.end() ? r.ms : std::min(it->second, r.ms);
      }
    }
    GeomeanLine line{.math = math, .layout = layout};
    std::vector<double> auto_ratios, best_ratios;
    for (const auto& [group, ms] : cudnn) {
      if (auto it = automatic.find(group); it != automatic.end()) auto_ratios.push_back(ms / it->second);
      if (auto it = best.find(group); it != best.end()) best_ratios.push_back(ms / it->second);
    }
    line.problems = static_cast<int>(auto_ratios.size());
    line.auto_vs_cudnn = geomean(auto_ratios);
    line.best_vs_cudnn = geomean(best_ratios);
    out.push_back(line);
  }
  return out;
}

void print_geomeans(const std::vector<GeomeanLine>& lines) {
  fmt::print("\ngeometric mean speedup vs cuDNN (problems where both passed; > 1 means convjit is faster)\n");
  for (const auto& l : lines) {
    if (l.problems == 0) {
      fmt::print("  {:<6} {:<5} no problem where convjit and cuDNN both passed\n", l.math, l.layout);
    } else {
      fmt::print("  {:<6} {:<5} auto {:.2f}x, best algorithm {:.2f}x over {} problem{}\n", l.math, l.layout,
                 l.auto_vs_cudnn, l.best_vs_cudnn, l.problems, l.problems == 1 ? "" : "s");
    }
  }
}

std::string row_json(const Row& r) {
  JsonObject o;
  o.str("id", r.id).str("group", r.group).str("problem", r.problem).str("math", r.math).str("layout", r.layout);
  o.str("impl", r.impl);
  o.num("ms", r.ms).num("p10_ms", r.p10_ms).num("p90_ms", r.p90_ms).integer("iters", r.iters);
  o.num("flops", r.flops).num("tflops", r.tflops).num("pct_peak", r.pct_peak).num("speedup_vs_cudnn", r.speedup);
  o.num("rel_err", r.rel_err).num("max_abs_err", r.max_abs_err).integer("nonfinite", r.nonfinite);
  o.integer("checked", r.checked).boolean("full_check", r.full_check);
  o.num("predicted_ms", r.predicted_ms).str("status", r.status).str("note", r.note);
  return o.text();
}

std::string geomean_json(const GeomeanLine& l) {
  return JsonObject()
      .str("math", l.math)
      .str("layout", l.layout)
      .integer("problems", l.problems)
      .num("auto_vs_cudnn", l.problems ? l.auto_vs_cudnn : kNaN)
      .num("best_vs_cudnn", l.problems ? l.best_vs_cudnn : kNaN)
      .text();
}

}  // namespace convjit::bench
