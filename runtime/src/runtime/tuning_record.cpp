#include "runtime/tuning_record.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <sstream>

#include "base/log.hpp"
#include "base/sha256.hpp"
#include "specialize/algorithm.hpp"

namespace convjit {

namespace {
// Bump when the record's lines change.
constexpr std::string_view kMagic = "convjit-tuning 1\n";

std::string body_of(const std::string& key, Algorithm choice, const std::string& timings) {
  return fmt::format("{}key {}\nchoice {}\ntimes {}\n", kMagic, key, to_string(choice), timings);
}
}  // namespace

TuningRecords::TuningRecords(std::filesystem::path cache_dir) : dir_(std::move(cache_dir) / "tuning" / "v1") {}

std::filesystem::path TuningRecords::path_for(const std::string& key) const {
  return dir_ / (sha256_hex(key) + ".choice");
}

std::optional<Algorithm> TuningRecords::load(const std::string& key) const {
  std::ifstream in(path_for(key), std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  const std::string all = text.str();
  const std::size_t sum_at = all.rfind("sha256 ");
  if (sum_at == std::string::npos || !all.starts_with(kMagic)) return std::nullopt;
  const std::string body = all.substr(0, sum_at);
  if (all.substr(sum_at) != fmt::format("sha256 {}\n", sha256_hex(body))) {
    log::warn("tuning record '{}' is damaged; tuning again", path_for(key).string());
    return std::nullopt;
  }
  for (Algorithm a : {Algorithm::kDirect, Algorithm::kImplicitGemm, Algorithm::kIm2colGemm}) {
    const std::string prefix = fmt::format("{}key {}\nchoice {}\n", kMagic, key, to_string(a));
    if (body.starts_with(prefix)) return a;
  }
  return std::nullopt;  // another key under the same name, or an unknown algorithm
}

void TuningRecords::store(const std::string& key, Algorithm choice, const std::string& timings) const {
  const std::string body = body_of(key, choice, timings);
  const std::string text = fmt::format("{}sha256 {}\n", body, sha256_hex(body));
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  const std::filesystem::path target = path_for(key);
  const std::filesystem::path temp = target.string() + fmt::format(".tmp.{}.{:x}", ::getpid(), std::random_device{}());
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      log::warn("cannot write tuning record '{}'; the choice stays in memory", temp.string());
      std::filesystem::remove(temp, ec);
      return;
    }
  }
  // NOTE: rename publishes atomically; a concurrent tuner of the same key writes the
  // same kind of record, and either one winning is fine.
  std::filesystem::rename(temp, target, ec);
  if (ec) {
    log::warn("cannot publish tuning record '{}': {}", target.string(), ec.message());
    std::filesystem::remove(temp, ec);
  }
}

}  // namespace convjit
