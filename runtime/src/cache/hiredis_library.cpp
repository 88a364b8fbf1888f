// Only with hiredis's headers; without them the remote cache is compiled out.
#if CONVJIT_HAVE_HIREDIS
#include "cache/hiredis_library.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#include "base/fail.hpp"

namespace convjit {

namespace {

#define CONVJIT_HIREDIS_TEXT(x) #x
#define CONVJIT_HIREDIS_EXPAND_TEXT(x) CONVJIT_HIREDIS_TEXT(x)
// "0.14" for hiredis 0.14, "1.1.0" for 1.1 and 1.2: the part after ".so." of both libraries.
constexpr std::string_view kSonameVersion = CONVJIT_HIREDIS_EXPAND_TEXT(HIREDIS_SONAME);
constexpr int kHeadersMajor = HIREDIS_MAJOR;

std::string headers_version() { return fmt::format("{}.{}.{}", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH); }

// The names to try: the override alone when it is set (the user said which library),
// else the soname of the headers' version, else the unversioned development link.
std::vector<std::string> library_names(const char* variable, std::string_view stem) {
  if (const char* named = std::getenv(variable); named != nullptr && *named != '\0') return {named};
  return {fmt::format("{}.{}", stem, kSonameVersion), std::string(stem)};
}

std::string dl_error_text(std::string_view fallback) {
  const char* text = dlerror();
  return text != nullptr ? std::string(text) : std::string(fallback);
}

// NOTE: hiredis 1.0 reordered redisContext (err is no longer the first field) and added
// a field to redisReply, so a library of the other generation than the headers would
// be read wrongly rather than fail. Its soname tells them apart, but a development
// link or a path given by the user may lead to either; redisConnectWithOptions, new in
// 1.0, tells them apart in the library itself.
std::string generation_mismatch(void* handle, const std::string& name) {
  const bool library_is_1x = dlsym(handle, "redisConnectWithOptions") != nullptr;
  dlerror();
  if (library_is_1x == (kHeadersMajor >= 1)) return {};
  return fmt::format(
      "{} is hiredis {}, but this convjit was built with the headers of hiredis {}, whose structs differ", name,
      library_is_1x ? "1.0 or newer" : "older than 1.0", headers_version());
}

// Sets *slot to the symbol's address; false, with why, when the library lacks it.
bool resolve(void* handle, const std::string& library, const char* symbol, void** slot, std::string& why) {
  dlerror();
  *slot = dlsym(handle, symbol);
  if (*slot != nullptr) return true;
  why = fmt::format("{} has no {}: {}", library, symbol, dl_error_text("not found"));
  return false;
}

// Opens the first of `names` that loads and passes `fill` (which resolves the entry
// points, or says why not), and returns its name; throws naming every failure.
// NOTE: a handle that loads is never closed: the library stays for the life of the
// process, as the tables whose functions point into it do.
template <typename Fill>
std::string open_first(const std::vector<std::string>& names, std::string_view what, Fill fill) {
  std::vector<std::string> failures;
  for (const std::string& name : names) {
    void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      failures.push_back(dl_error_text(name + ": cannot be loaded"));
      continue;
    }
    std::string why = fill(handle, name);
    if (why.empty()) return name;
    dlclose(handle);
    failures.push_back(std::move(why));
  }
  std::string reasons;
  for (const std::string& failure : failures) reasons += (reasons.empty() ? "" : "; ") + failure;
  fail(ErrorCode::kUnsupported,
       "cannot load {}, so the remote cache is unavailable: {}; install the hiredis {} library (Debian and Ubuntu: "
       "libhiredis{}) or name it with {}",
       what, reasons, headers_version(), kSonameVersion,
       what == "hiredis" ? "CONVJIT_HIREDIS_LIBRARY" : "CONVJIT_HIREDIS_SSL_LIBRARY");
}

// One table per list of names, made on first use and kept for the life of the process.
template <typename Table, typename Make>
const Table& load_once(const std::vector<std::string>& names, Make make) {
  static std::mutex mutex;
  // NOTE: never freed: a RedisStore holds a reference to its table, and one owned by an
  // object with static storage can be destroyed at exit after any static here.
  static auto* loaded = new std::map<std::vector<std::string>, std::unique_ptr<Table>>();
  std::lock_guard lock(mutex);
  std::unique_ptr<Table>& slot = (*loaded)[names];
  if (!slot) slot = make(names);
  return *slot;
}

}  // namespace

std::string hiredis_soname() { return fmt::format("libhiredis.so.{}", kSonameVersion); }

const Hiredis& Hiredis::get() {
  return load_once<Hiredis>(
      library_names("CONVJIT_HIREDIS_LIBRARY", "libhiredis.so"),
      [](const std::vector<std::string>& names) { return std::unique_ptr<Hiredis>(new Hiredis(names)); });
}

Hiredis::Hiredis(const std::vector<std::string>& names) {
  library_ = open_first(names, "hiredis", [this](void* handle, const std::string& name) {
    std::string why;
#define CONVJIT_RESOLVE_HIREDIS_ENTRY(entry) \
  if (!resolve(handle, name, #entry, reinterpret_cast<void**>(&entry), why)) return why;
    CONVJIT_HIREDIS_ENTRY_POINTS(CONVJIT_RESOLVE_HIREDIS_ENTRY)
#undef CONVJIT_RESOLVE_HIREDIS_ENTRY
    return generation_mismatch(handle, name);
  });
}

#if CONVJIT_HAVE_HIREDIS_SSL
const HiredisSsl& HiredisSsl::get() {
  // NOTE: hiredis_ssl calls into hiredis but, as hiredis's Makefile builds it, does not
  // name it among its dependencies: it expects hiredis in the global scope. So hiredis,
  // loaded local, is promoted to global first (RTLD_NOLOAD reopens the loaded library,
  // the one CONVJIT_HIREDIS_LIBRARY may have named), and only when TLS is asked for.
  const Hiredis& hiredis = Hiredis::get();
  if (dlopen(hiredis.library().c_str(), RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL) == nullptr) {
    fail(ErrorCode::kUnsupported, "cannot make {} visible to hiredis_ssl, so TLS is unavailable: {}", hiredis.library(),
         dl_error_text("unknown reason"));
  }
  return load_once<HiredisSsl>(
      library_names("CONVJIT_HIREDIS_SSL_LIBRARY", "libhiredis_ssl.so"),
      [](const std::vector<std::string>& names) { return std::unique_ptr<HiredisSsl>(new HiredisSsl(names)); });
}

HiredisSsl::HiredisSsl(const std::vector<std::string>& names) {
  library_ = open_first(names, "hiredis_ssl", [this](void* handle, const std::string& name) {
    std::string why;
#define CONVJIT_RESOLVE_HIREDIS_ENTRY(entry) \
  if (!resolve(handle, name, #entry, reinterpret_cast<void**>(&entry), why)) return why;
    CONVJIT_HIREDIS_SSL_ENTRY_POINTS(CONVJIT_RESOLVE_HIREDIS_ENTRY)
#undef CONVJIT_RESOLVE_HIREDIS_ENTRY
    return why;
  });
}
#endif

}  // namespace convjit

#endif  // CONVJIT_HAVE_HIREDIS
