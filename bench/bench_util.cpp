#include "bench_util.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <thread>

#include "tooling/tooling.hpp"

namespace convjit::bench {

Options::Options(std::string_view program, std::string_view synopsis, std::string_view about,
                 std::vector<OptionSpec> specs)
    : program_(program), synopsis_(synopsis), about_(about), specs_(std::move(specs)) {}

void Options::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      help_ = true;
      continue;
    }
    if (!arg.starts_with("--")) {
      fail(ErrorCode::kInvalidArgument, "{}: unexpected argument '{}' (see '{} --help')", program_, arg, program_);
    }
    std::string_view name = arg;
    std::optional<std::string_view> inline_value;
    if (const auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    const auto spec = std::find_if(specs_.begin(), specs_.end(), [&](const OptionSpec& s) { return s.name == name; });
    if (spec == specs_.end()) {
      fail(ErrorCode::kInvalidArgument, "{}: unknown option '{}' (see '{} --help')", program_, name, program_);
    }
    auto& slot = given_[std::string(name)];
    if (spec->value_name.empty()) {
      if (inline_value) fail(ErrorCode::kInvalidArgument, "{}: option {} takes no value", program_, name);
      slot.emplace_back();
    } else if (inline_value) {
      slot.emplace_back(*inline_value);
    } else if (i + 1 < argc) {
      slot.emplace_back(argv[++i]);
    } else {
      fail(ErrorCode::kInvalidArgument, "{}: option {} expects a value {} (see '{} --help')", program_, name,
           spec->value_name, program_);
    }
  }
}

void Options::print_help() const {
  fmt::print("usage: {} {}\n\n{}\n\noptions:\n", program_, synopsis_, about_);
  for (const auto& s : specs_) {
    const std::string head = s.value_name.empty() ? std::string(s.name) : fmt::format("{} {}", s.name, s.value_name);
    fmt::print("  {:<26} {}\n", head, s.help);
  }
  fmt::print("  {:<26} {}\n", "-h, --help", "this text");
}

bool Options::has(std::string_view name) const { return given_.find(name) != given_.end(); }

std::optional<std::string> Options::value(std::string_view name) const {
  const auto it = given_.find(name);
  if (it == given_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> Options::values(std::string_view name) const {
  const auto it = given_.find(name);
  return it == given_.end() ? std::vector<std::string>{} : it->second;
}

int Options::int_value(std::string_view name, int fallback, int min) const {
  const auto text = value(name);
  if (!text) return fallback;
  const long long v = parse_integer(*text, fmt::format("{} {}", program_, name));
  if (v < min || v > 1'000'000'000) {
    fail(ErrorCode::kInvalidArgument, "{} {}: expected an integer >= {}, got {}", program_, name, min, *text);
  }
  return static_cast<int>(v);
}

double Options::double_value(std::string_view name, double fallback, double min) const {
  const auto text = value(name);
  if (!text) return fallback;
  double v = 0;
  const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc{} || end != text->data() + text->size() || !std::isfinite(v) || v < min) {
    fail(ErrorCode::kInvalidArgument, "{} {}: expected a number >= {}, got '{}'", program_, name, min, *text);
  }
  return v;
}

std::vector<std::string> split_list(std::string_view text, char separator) {
  std::vector<std::string> out;
  while (true) {
    const auto cut = text.find(separator);
    const std::string_view item = text.substr(0, cut);
    if (!item.empty()) out.emplace_back(item);
    if (cut == std::string_view::npos) break;
    text.remove_prefix(cut + 1);
  }
  return out;
}

long long parse_integer(std::string_view text, std::string_view what) {
  long long v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) {
    fail(ErrorCode::kInvalidArgument, "{}: expected an integer, got '{}'", what, text);
  }
  return v;
}

Summary summarize(std::vector<double> samples) {
  Summary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  const auto at = [&](double q) { return samples[static_cast<std::size_t>(q * double(samples.size() - 1) + 0.5)]; };
  s.count = static_cast<int>(samples.size());
  // The median of an even count is the mean of the middle two, as numpy and PyTorch report it.
  const std::size_t mid = samples.size() / 2;
  s.median = samples.size() % 2 ? samples[mid] : 0.5 * (samples[mid - 1] + samples[mid]);
  s.p10 = at(0.1);
  s.p90 = at(0.9);
  s.min = samples.front();
  double sum = 0;
  for (double v : samples) sum += v;
  s.mean = sum / double(samples.size());
  return s;
}

double geomean(const std::vector<double>& values) {
  double log_sum = 0;
  int count = 0;
  for (double v : values) {
    if (v > 0 && std::isfinite(v)) {
      log_sum += std::log(v);
      ++count;
    }
  }
  return count == 0 ? 0.0 : std::exp(log_sum / count);
}

void parallel_for(std::int64_t count, const std::function<void(std::int64_t, std::int64_t)>& fn) {
  if (count <= 0) return;
  const std::int64_t threads = std::min<std::int64_t>(std::max(1u, std::thread::hardware_concurrency()), count);
  if (threads == 1) {
    fn(0, count);
    return;
  }
  std::vector<std::jthread> pool;
  for (std::int64_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] { fn(count * t / threads, count * (t + 1) / threads); });
  }
}

std::string json_quote(std::string_view text) {
  std::string out = "\"";
  for (const char ch : text) {
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(ch)));
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

std::string json_number(double value) { return std::isfinite(value) ? fmt::format("{}", value) : "null"; }

void JsonObject::key(std::string_view name) {
  if (!body_.empty()) body_ += ", ";
  body_ += json_quote(name);
  body_ += ": ";
}
JsonObject& JsonObject::str(std::string_view k, std::string_view value) {
  key(k);
  body_ += json_quote(value);
  return *this;
}
JsonObject& JsonObject::num(std::string_view k, double value) {
  key(k);
  body_ += json_number(value);
  return *this;
}
JsonObject& JsonObject::integer(std::string_view k, std::int64_t value) {
  key(k);
  body_ += std::to_string(value);
  return *this;
}
JsonObject& JsonObject::boolean(std::string_view k, bool value) {
  key(k);
  body_ += value ? "true" : "false";
  return *this;
}
JsonObject& JsonObject::raw(std::string_view k, std::string_view json) {
  key(k);
  body_ += json;
  return *this;
}

std::string json_array(const std::vector<std::string>& items, bool one_per_line) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ",";
    if (one_per_line) out += "\n  ";
    out += items[i];
  }
  return out + (one_per_line && !items.empty() ? "\n]" : "]");
}

void write_file_atomically(const std::string& path, std::string_view text) {
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(ErrorCode::kIo, "cannot write '{}': {}", tmp, std::strerror(errno));
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.flush();
    if (!out) fail(ErrorCode::kIo, "cannot write '{}': {}", tmp, std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    fail(ErrorCode::kIo, "cannot rename '{}' to '{}': {}", tmp, path, std::strerror(err));
  }
}

std::string utc_timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::string command_line(int argc, char** argv) {
  std::string out;
  for (int i = 0; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i > 0) out += ' ';
    const bool plain = !arg.empty() && arg.find_first_of(" \t\"'\\$`*?;&|<>()") == std::string_view::npos;
    if (plain) {
      out += arg;
    } else {
      out += '\'';
      for (const char ch : arg) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
      out += '\'';
    }
  }
  return out;
}

int run_main(std::string_view program, int argc, char** argv, int (*body)(int, char**)) {
  // Line-buffered even into a file or pipe: a run killed by a time bound (a device call's
  // `timeout`) still leaves every row it printed.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    return body(argc, argv);
  } catch (const Error& e) {
    // Option errors already name the program.
    const std::string_view what = e.what();
    fmt::print(stderr, "{}{}\n", what.starts_with(program) ? "" : fmt::format("{}: ", program), what);
    switch (e.code()) {
      case ErrorCode::kInvalidArgument:
        return 2;
      case ErrorCode::kNoDriver:
      case ErrorCode::kNoDevice:
        return 3;
      default:
        return 1;
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: {}\n", program, e.what());
    return 1;
  }
}

}  // namespace convjit::bench
