#pragma once
// conv_bench's rows: the derived columns (TFLOP/s, share of peak, speedup vs cuDNN),
// the printed table, the sums for problems that run as two convolutions, the
// geometric means, and the JSON document.

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace convjit::bench {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Row {
  std::string id;               // "56", "86.dw", "s1"
  std::string group;            // "86" for both halves of 86; rows with id == group are per KernelBench problem
  std::string problem;          // short descriptor text
  std::string math;             // strict, tf32, fp16, bf16
  std::string layout = "nchw";  // nchw, nhwc: x, w and y of every implementation, cuDNN included
  std::string impl;             // direct, implicit_gemm, im2col_gemm, auto, cudnn; "convjit" when none applies
  std::string status;           // "ok", "FAIL: ...", "n/a: ...", "error: ..."
  std::string note;             // kernel, cuDNN algorithm, "= implicit_gemm", "5 iters (slow)"
  double flops = 0;
  double ms = kNaN;            // median
  double predicted_ms = kNaN;  // kAuto's cost model for this kernel (tooling::predicted_ms)
  double p10_ms = kNaN;
  double p90_ms = kNaN;
  int iters = 0;
  double tflops = kNaN;
  double pct_peak = kNaN;
  double speedup = kNaN;  // cuDNN's median / this median, same problem, math and layout
  double rel_err = kNaN;
  double max_abs_err = kNaN;
  std::int64_t nonfinite = 0;
  std::int64_t checked = 0;
  bool full_check = false;

  bool ok() const { return status == "ok"; }
  bool timed() const { return ms == ms; }  // not NaN
};

// Datasheet peaks in TFLOP/s (dense), by math; 0 when unknown.
struct Peaks {
  double fp32 = 0;  // FMA units
  double tf32 = 0;  // tensor cores
  double fp16 = 0;  // tensor cores, also bf16
  std::string source;
  double for_math(const std::string& math) const;
};
// The chip's figures from its name (H100 SXM / PCIe, H200, A100); zero when not known.
Peaks datasheet_peaks(const std::string& gpu_name);

// Fills tflops, pct_peak and speedup of `rows` (one problem, math and layout block, cuDNN included).
void derive_columns(std::vector<Row>& rows, const Peaks& peaks);

// For a problem that runs as several convolutions (86: depthwise then pointwise): one
// row per math, layout and implementation that ran every part, with summed times.
std::vector<Row> sum_parts(const std::vector<Row>& all_rows, const std::string& group, const Peaks& peaks);

void print_table_header();
void print_row(const Row& row);

struct GeomeanLine {
  std::string math;
  std::string layout;
  int problems = 0;
  double auto_vs_cudnn = 0;  // geometric mean of cuDNN ms / convjit auto ms
  double best_vs_cudnn = 0;  // the same with convjit's fastest passing algorithm per problem
};
// Over per-problem rows (id == group) where convjit and cuDNN both passed the check.
std::vector<GeomeanLine> geomeans(const std::vector<Row>& rows);
void print_geomeans(const std::vector<GeomeanLine>& lines);

std::string row_json(const Row& row);
std::string geomean_json(const GeomeanLine& line);

}  // namespace convjit::bench
