// convjit cache: look at and maintain the on-disk kernel cache, through DiskCache's
// own maintenance functions (the same locking and verification the runtime uses).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <map>

#include "commands.hpp"
#include "common.hpp"
#include "tooling/tooling.hpp"

namespace convjit::cli {

namespace fs = std::filesystem;

namespace {

constexpr OptionSpec kLong{"--long", "", "also show each entry's key hash and file"};
constexpr OptionSpec kRemove{"--remove", "", "remove the failing entries convjit made (never a link, FIFO, ...)"};
constexpr OptionSpec kMaxSize{"--max-size", "SIZE",
                              "target total size such as 500M or 2G (default: the cache's limit)"};

const CommandSpec kLsSpec{.name = "cache ls",
                          .synopsis = "[options]",
                          .summary = "List the entries, least recently used first (the next to be evicted on top).",
                          .options = {kLong, kDirOption}};
const CommandSpec kStatsSpec{.name = "cache stats",
                             .synopsis = "[options]",
                             .summary =
                                 "What the cache directory holds: entries, bytes, entries per arch; and the "
                                 "remote cache's configuration and health.",
                             .details =
                                 "Hit and compile counters belong to a process: prewarm and run print theirs.\n"
                                 "Exit status 1 when a remote cache is configured but cannot be used.",
                             .options = {kDirOption}};
const CommandSpec kVerifySpec{.name = "cache verify",
                              .synopsis = "[options]",
                              .summary = "Read and verify every entry in full (checksums, key, ownership and mode).",
                              .details =
                                  "Anything but a regular file where an entry belongs (a symbolic link, FIFO,\n"
                                  "directory, socket, device) is reported too, and --remove leaves it.\n"
                                  "Exit status 1 when an entry fails; the runtime would rebuild it on use.",
                              .options = {kRemove, kDirOption}};
const CommandSpec kPruneSpec{.name = "cache prune",
                             .synopsis = "[--max-size SIZE] [options]",
                             .summary = "Evict least recently used entries until the cache is at most SIZE.",
                             .options = {kMaxSize, kDirOption}};
const CommandSpec kClearSpec{.name = "cache clear",
                             .synopsis = "[options]",
                             .summary = "Remove every entry (and entries of older cache formats).",
                             .details =
                                 "Removes only what convjit made: its entry, temp and lock files, then the\n"
                                 "directories of other cache formats once nothing else is in them. Anything\n"
                                 "else (a user's files, links, files convjit cannot recognize) is left and\n"
                                 "listed with the reason. Exit status 1 when a file of convjit's could not be\n"
                                 "removed.",
                             .options = {kDirOption}};

std::string local_time(fs::file_time_type t) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(
      std::chrono::time_point_cast<std::chrono::system_clock::duration>(std::chrono::file_clock::to_sys(t)));
  std::tm tm{};
  ::localtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &tm);
  return text;
}

// The cache at --dir, or nullopt (after saying so) when there is none: looking at a
// cache must not create one.
std::optional<DiskCache> open_cache(const Args& args, bool readonly) {
  const fs::path dir = cache_dir_from(args);
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fmt::print("no cache at {}\n", dir.string());
    return std::nullopt;
  }
  // The same settings a Runtime would use (CONVJIT_CACHE_MAX_SIZE, CONVJIT_CACHE_READONLY).
  DiskCacheOptions options = disk_cache_options(runtime_options(args));
  options.readonly = options.readonly || readonly;
  return DiskCache(dir, options);
}

int ls_main(const Args& args) {
  const auto cache = open_cache(args, /*readonly=*/true);
  if (!cache) return kExitOk;
  const auto entries = cache->list();
  std::uint64_t total = 0;
  if (!entries.empty()) fmt::print("{:<19}  {:>10}  {:<6}  {}\n", "LAST USED", "SIZE", "ARCH", "PROBLEM");
  for (const auto& e : entries) {
    total += e.bytes;
    fmt::print("{:<19}  {:>10}  {:<6}  {}\n", local_time(e.last_used), format_bytes(e.bytes),
               e.arch.empty() ? "?" : e.arch, e.problem);
    if (args.has("--long")) fmt::print("{:<19}  {:>10}  {:<6}  {}\n", "", "", "", e.path.string());
  }
  fmt::print("{} entr{}, {} in {}\n", entries.size(), entries.size() == 1 ? "y" : "ies", format_bytes(total),
             cache->version_dir().string());
  return kExitOk;
}

void print_disk_stats(const Args& args, const std::optional<DiskCache>& cache) {
  const auto entries = cache->list();
  std::uint64_t total = 0;
  std::map<std::string, std::pair<std::size_t, std::uint64_t>> per_arch;
  for (const auto& e : entries) {
    total += e.bytes;
    auto& [count, bytes] = per_arch[e.arch.empty() ? "?" : e.arch];
    ++count;
    bytes += e.bytes;
  }
  const std::uint64_t limit = cache->options().max_bytes;
  fmt::print("directory  {}\n", cache->version_dir().string());
  fmt::print("entries    {}, {}{}\n", entries.size(), format_bytes(total),
             limit == 0
                 ? std::string(" (no size limit)")
                 : fmt::format(" of a {} limit ({:.1f}%)", format_bytes(limit), 100.0 * double(total) / double(limit)));
  for (const auto& [arch, usage] : per_arch) {
    fmt::print("  {:<8} {} entr{}, {}\n", arch, usage.first, usage.first == 1 ? "y" : "ies",
               format_bytes(usage.second));
  }
  if (!entries.empty()) {
    fmt::print("last used  oldest {}, newest {}\n", local_time(entries.front().last_used),
               local_time(entries.back().last_used));
  }
  // Directories of other cache formats are dead weight: no runtime of this version reads them.
  std::size_t stale = 0;
  for (const auto& d : fs::directory_iterator(cache->root())) {
    const std::string name = d.path().filename().string();
    std::error_code ec;
    if (is_version_dir_name(name) && d.path() != cache->version_dir() && fs::is_directory(d.symlink_status(ec))) {
      ++stale;
    }
  }
  if (stale != 0) {
    fmt::print(
        "other      {} director{} of other cache formats ('convjit cache clear' removes what convjit made in them)\n",
        stale, stale == 1 ? "y" : "ies");
  }
  if (disk_cache_options(runtime_options(args)).readonly) fmt::print("mode       read-only (CONVJIT_CACHE_READONLY)\n");
}

// The remote cache a Runtime here would use and whether its server answers; nothing
// when none is configured. False when one is configured but cannot be used.
bool print_remote_stats(const Args& args) {
  const RemoteCacheSetup setup = open_remote_cache(runtime_options(args));
  if (!setup.configured) return true;
  if (!setup.cache) {
    fmt::print("remote     off: {}\n", setup.note);
    return false;
  }
  const RemoteCacheOptions& options = setup.cache->options();
  fmt::print("remote     {} ({}, entries signed with the key from {})\n", setup.where,
             options.readonly ? "read-only" : "read-write", setup.key_source);
  const RemoteCache::Health health = setup.cache->health(/*count_entries=*/true);
  if (!health.reachable) {
    fmt::print("           unreachable: {}\n", health.error);
    return false;
  }
  fmt::print("server     Redis {}, PING {:.1f} ms, {} used, maxmemory {}, policy {}\n",
             health.server_version.empty() ? "?" : health.server_version, health.ping_ms,
             health.used_memory.empty() ? "?" : health.used_memory,
             health.maxmemory.empty() || health.maxmemory == "0B" ? "none" : health.maxmemory,
             health.maxmemory_policy.empty() ? "?" : health.maxmemory_policy);
  if (health.counted) {
    fmt::print("entries    {} of format v{} under '{}', {} fleet lock{} held; they expire {} h after publication\n",
               health.entries, options.format_version, options.prefix, health.locks, health.locks == 1 ? "" : "s",
               std::chrono::duration_cast<std::chrono::hours>(options.ttl).count());
  } else if (!health.error.empty()) {
    fmt::print("entries    cannot be counted: {}\n", health.error);
  }
  if (health.maxmemory == "0B" || health.maxmemory_policy == "noeviction") {
    fmt::print(
        "note       Redis bounds the cache's size: set maxmemory and maxmemory-policy allkeys-lru on the "
        "server (docs/cache.md)\n");
  }
  return true;
}

int stats_main(const Args& args) {
  if (const auto cache = open_cache(args, /*readonly=*/true)) print_disk_stats(args, cache);
  return print_remote_stats(args) ? kExitOk : kExitFailed;
}

int verify_main(const Args& args) {
  const bool remove = args.has("--remove");
  const auto cache = open_cache(args, /*readonly=*/!remove);
  if (!cache) return kExitOk;
  const auto bad = cache->verify_all();
  // Misplaced things (a link where an entry belongs) are not entries, so list() does not count them.
  const std::size_t count =
      cache->list().size() + std::count_if(bad.begin(), bad.end(), [](const auto& b) { return b.misplaced; });
  for (const auto& b : bad) {
    std::string outcome;
    if (remove && !b.not_convjits.empty()) {
      outcome = fmt::format(" (left: {})", b.not_convjits);
    } else if (remove && cache->remove_entry(b.path)) {
      outcome = " (removed)";
    }
    fmt::print("BAD        {}: {}{}\n", b.path.string(), b.why, outcome);
  }
  const bool removable = std::any_of(bad.begin(), bad.end(), [](const auto& b) { return b.not_convjits.empty(); });
  fmt::print("verified   {} entr{} in {}: {} good, {} bad{}\n", count, count == 1 ? "y" : "ies",
             cache->version_dir().string(), count - std::min(count, bad.size()), bad.size(),
             !removable || remove ? "" : " (the runtime rebuilds a bad entry on use; --remove deletes them now)");
  return bad.empty() ? kExitOk : kExitFailed;
}

int prune_main(const Args& args) {
  const auto cache = open_cache(args, /*readonly=*/false);
  if (!cache) return kExitOk;
  std::uint64_t target = cache->options().max_bytes;
  if (const auto text = args.value("--max-size")) {
    const auto size = parse_byte_size(*text);
    if (!size) {
      fail(ErrorCode::kInvalidArgument,
           "convjit cache prune: option '--max-size' expects a size such as 500M or 2G, got '{}'", *text);
    }
    target = *size;
  }
  if (target == 0 && !args.value("--max-size")) {
    fmt::print("the cache has no size limit; give --max-size\n");
    return kExitUsage;
  }
  const auto report = cache->evict_to(target);
  fmt::print("pruned     {} entr{}, {}; {} left, target {}\n", report.entries, report.entries == 1 ? "y" : "ies",
             format_bytes(report.bytes), format_bytes(cache->total_size()), format_bytes(target));
  return kExitOk;
}

int clear_main(const Args& args) {
  const auto cache = open_cache(args, /*readonly=*/false);
  if (!cache) return kExitOk;
  const auto report = cache->clear();
  const fs::path& root = cache->root();
  const auto shown = [&](const fs::path& p) { return p.lexically_relative(root).string(); };
  fmt::print("cleared    {} entr{}, {} from {}{}\n", report.entries, report.entries == 1 ? "y" : "ies",
             format_bytes(report.bytes), root.string(),
             report.other_files == 0 ? std::string()
                                     : fmt::format(", and {} lock, temp or marker file{}", report.other_files,
                                                   report.other_files == 1 ? "" : "s"));
  for (const auto& dir : report.removed_dirs) {
    fmt::print("removed    {} (a directory of another cache format)\n", shown(dir));
  }
  bool failed = false;
  for (const auto& left : report.left) {
    fmt::print("left       {}: {}\n", shown(left.path), left.why);
    failed = failed || left.error;
  }
  return failed ? kExitFailed : kExitOk;
}

struct Action {
  std::string_view name;
  const CommandSpec& spec;
  int (*main)(const Args&);
};

const Action kActions[] = {
    {"ls", kLsSpec, ls_main},          {"stats", kStatsSpec, stats_main}, {"verify", kVerifySpec, verify_main},
    {"prune", kPruneSpec, prune_main}, {"clear", kClearSpec, clear_main},
};

}  // namespace

void print_cache_overview() {
  fmt::print("usage: convjit cache [ACTION] [options]\n\nactions (default: stats):\n");
  for (const Action& a : kActions) fmt::print("  {:<8} {}\n", a.name, a.spec.summary);
  fmt::print(
      "\noptions:\n  {:<22} {}\n\n'convjit cache ACTION --help' describes each action.\n"
      "The directory is --dir, else $CONVJIT_CACHE_DIR, else $XDG_CACHE_HOME/convjit, else ~/.cache/convjit.\n",
      "--dir D", "cache directory");
}

int cache_main(std::span<const std::string_view> argv) {
  if (!argv.empty() && (argv[0] == "-h" || argv[0] == "--help" || argv[0] == "help")) {
    print_cache_overview();
    return kExitOk;
  }
  const bool named = !argv.empty() && !argv[0].starts_with('-');
  const std::string_view name = named ? argv[0] : "stats";
  for (const Action& action : kActions) {
    if (action.name != name) continue;
    const Args args = parse_args(action.spec, named ? argv.subspan(1) : argv);
    if (args.help) {
      print_help(action.spec);
      return kExitOk;
    }
    return action.main(args);
  }
  fail(ErrorCode::kInvalidArgument, "convjit cache: unknown action '{}'; expected ls, stats, verify, prune or clear",
       name);
}

}  // namespace convjit::cli
