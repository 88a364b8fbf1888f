// A randomized fuzz test of the entry reader, bounded in time so it runs in CI:
// CONVJIT_FUZZ_SECONDS (default 2) and CONVJIT_FUZZ_SEED (default: random, printed)
// reproduce or lengthen a run. Whatever the bytes, the reader must not crash, must
// say why it rejects, and must accept only exact serializations of an entry; a load's
// reader (read_entry_for_load) must accept only the sections of one.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <random>

#include "cache/entry_file.hpp"

namespace convjit {
namespace {

using Rng = std::mt19937_64;

std::string random_bytes(Rng& rng, std::size_t max_size) {
  std::string out(std::uniform_int_distribution<std::size_t>(0, max_size)(rng), '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

CacheEntry random_entry(Rng& rng) {
  CacheEntry e{random_bytes(rng, 200), random_bytes(rng, 40), random_bytes(rng, 400), random_bytes(rng, 400),
               random_bytes(rng, 600), random_bytes(rng, 60), random_bytes(rng, 100)};
  e.compile_ms = std::uniform_real_distribution<double>(0, 5000)(rng);
  return e;
}

std::string mutate(Rng& rng, std::string bytes, const std::string& other) {
  auto pick = [&](std::size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  const int rounds = 1 + static_cast<int>(pick(4));
  for (int round = 0; round < rounds; ++round) {
    switch (pick(9)) {
      case 0:  // flip a few bits
        for (std::size_t i = 0, n = 1 + pick(8); i < n && !bytes.empty(); ++i)
          bytes[pick(bytes.size())] ^= 1 << pick(8);
        break;
      case 1:  // truncate
        bytes.resize(pick(bytes.size() + 1));
        break;
      case 2:  // insert random bytes
        bytes.insert(pick(bytes.size() + 1), random_bytes(rng, 16));
        break;
      case 3: {  // delete a range
        const std::size_t at = pick(bytes.size() + 1);
        bytes.erase(at, pick(bytes.size() - at + 1));
        break;
      }
      case 4: {  // duplicate a range
        const std::size_t at = pick(bytes.size() + 1);
        bytes.insert(pick(bytes.size() + 1), bytes.substr(at, pick(64)));
        break;
      }
      case 5: {  // rewrite a section size with a number, possibly huge
        const std::size_t sha = bytes.find(" sha256:", pick(bytes.size() + 1));
        if (sha == std::string::npos) break;
        const std::size_t space = bytes.rfind(' ', sha - 1);
        if (space == std::string::npos) break;
        const std::string sizes[] = {
            "0", "1", "18446744073709551615", "99999999999999999999999", "-1", std::to_string(rng() % 100000), ""};
        bytes.replace(space + 1, sha - space - 1, sizes[pick(std::size(sizes))]);
        break;
      }
      case 6: {  // splice in part of another entry
        const std::size_t at = pick(other.size() + 1);
        bytes.replace(pick(bytes.size() + 1), pick(64), other.substr(at, pick(256)));
        break;
      }
      case 7:  // newline games: the format is line-framed
        if (!bytes.empty()) bytes[pick(bytes.size())] = pick(2) ? '\n' : ' ';
        break;
      default:  // nothing like an entry at all
        bytes = random_bytes(rng, 300);
        break;
    }
  }
  return bytes;
}

TEST(EntryFileFuzz, RandomMutationsAreRejectedWithAReasonOrAreExactSerializations) {
  const char* seconds_env = std::getenv("CONVJIT_FUZZ_SECONDS");
  const char* seed_env = std::getenv("CONVJIT_FUZZ_SEED");
  const double seconds = seconds_env != nullptr ? std::atof(seconds_env) : 2.0;
  const std::uint64_t seed = seed_env != nullptr ? std::strtoull(seed_env, nullptr, 10) : std::random_device{}();
  RecordProperty("seed", std::to_string(seed));
  SCOPED_TRACE("CONVJIT_FUZZ_SEED=" + std::to_string(seed));
  Rng rng(seed);

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::size_t cases = 0;
  std::size_t accepted = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const CacheEntry entry = random_entry(rng);
    const std::string good = serialize_entry(entry);
    std::string why;
    // Structure-aware half: every valid entry round-trips.
    const auto parsed = parse_entry(good, why);
    ASSERT_TRUE(parsed) << why;
    ASSERT_EQ(*parsed, entry);
    const std::string other = serialize_entry(random_entry(rng));
    for (int i = 0; i < 50; ++i, ++cases) {
      const std::string bad = mutate(rng, good, other);
      why.clear();
      const auto result = parse_entry(bad, why);
      if (result) {
        ++accepted;
        ASSERT_EQ(serialize_entry(*result), bad) << "accepted bytes that are not an exact serialization";
      } else {
        ASSERT_FALSE(why.empty()) << "rejected without a reason";
      }
      why.clear();
      if (!peek_entry_key(bad, why)) {
        ASSERT_FALSE(why.empty());
      }
      // A load's reader: whatever parses whole loads, and what it accepts holds exactly the
      // sections of the entry it was (the sha256 of each section it reads must match).
      why.clear();
      std::uint64_t bytes_read = 0;
      const auto loaded = read_entry_for_load(
          bad.size(),
          [&](std::uint64_t offset, std::size_t max, std::string& out) {
            out.assign(offset < bad.size() ? std::string_view(bad).substr(offset, max) : std::string_view());
            return 0;
          },
          why, bytes_read);
      if (loaded) {
        CacheEntry expected = result ? *result : entry;
        expected.source.clear();
        expected.ptx.clear();
        ASSERT_EQ(*loaded, expected) << "a load accepted sections that are not the entry's";
      } else {
        ASSERT_FALSE(result) << "a load rejected what parses whole: " << why;
        ASSERT_FALSE(why.empty()) << "a load rejected without a reason";
      }
    }
  }
  EXPECT_GT(cases, 1000u) << "the fuzz loop barely ran";
  RecordProperty("cases", std::to_string(cases));
  std::printf("fuzzed %zu mutated entries in %.1f s (seed %llu, %zu accepted as exact serializations)\n", cases,
              seconds, static_cast<unsigned long long>(seed), accepted);
}

}  // namespace
}  // namespace convjit
