#pragma once
// Pieces shared by the benchmark programs: a declared option list (so --help and the
// errors come from one description), order statistics, JSON output and small helpers.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace convjit::bench {

struct OptionSpec {
  std::string_view name;        // "--iters"
  std::string_view value_name;  // "N"; empty for a flag
  std::string_view help;
};

class Options {
 public:
  Options(std::string_view program, std::string_view synopsis, std::string_view about, std::vector<OptionSpec> specs);

  // Accepts "--opt value" and "--opt=value". Throws Error(kInvalidArgument) naming the
  // option and pointing at --help; positional arguments are refused.
  void parse(int argc, char** argv);
  void print_help() const;

  bool help() const noexcept { return help_; }
  bool has(std::string_view name) const;
  std::optional<std::string> value(std::string_view name) const;  // the last one given
  std::vector<std::string> values(std::string_view name) const;   // every one, in order
  int int_value(std::string_view name, int fallback, int min) const;
  double double_value(std::string_view name, double fallback, double min) const;

 private:
  std::string program_;
  std::string synopsis_;
  std::string about_;
  std::vector<OptionSpec> specs_;
  std::map<std::string, std::vector<std::string>, std::less<>> given_;
  bool help_ = false;
};

// "a,b,,c" -> {"a", "b", "c"}: empty items are dropped.
std::vector<std::string> split_list(std::string_view text, char separator = ',');
// Throws Error(kInvalidArgument) "<what>: expected an integer, got '<text>'".
long long parse_integer(std::string_view text, std::string_view what);

struct Summary {
  int count = 0;
  double median = 0;
  double p10 = 0;
  double p90 = 0;
  double min = 0;
  double mean = 0;
};
// Order statistics of `samples` (copied and sorted); all zero when empty.
Summary summarize(std::vector<double> samples);

// Geometric mean of positive values; 0 when there are none.
double geomean(const std::vector<double>& values);

// Runs fn(begin, end) over [0, count) split among the hardware threads.
void parallel_for(std::int64_t count, const std::function<void(std::int64_t, std::int64_t)>& fn);

// JSON text: strings escaped, non-finite numbers written as null (JSON has no NaN).
std::string json_quote(std::string_view text);
std::string json_number(double value);

// Builds one JSON object, members in insertion order. Named methods rather than
// overloads: a string literal would otherwise pick the bool overload.
class JsonObject {
 public:
  JsonObject& str(std::string_view key, std::string_view value);
  JsonObject& num(std::string_view key, double value);
  JsonObject& integer(std::string_view key, std::int64_t value);
  JsonObject& boolean(std::string_view key, bool value);
  JsonObject& raw(std::string_view key, std::string_view json);  // an already encoded value
  std::string text() const { return "{" + body_ + "}"; }

 private:
  void key(std::string_view name);
  std::string body_;
};
std::string json_array(const std::vector<std::string>& items, bool one_per_line);

// Writes `text` to `path` through a temporary name and a rename, so that a reader (or a
// run killed by a timeout) never sees half a file. Throws Error(kIo) with the system's message.
void write_file_atomically(const std::string& path, std::string_view text);

std::string utc_timestamp();  // "2026-11-20T14:03:07Z"

// A benchmark's main(): runs `body`, prints an error prefixed with `program` and maps
// it to the exit status every benchmark uses: 2 bad command line, 3 no GPU, 1 otherwise.
int run_main(std::string_view program, int argc, char** argv, int (*body)(int, char**));
std::string command_line(int argc, char** argv);

}  // namespace convjit::bench
