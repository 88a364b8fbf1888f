#pragma once
// hiredis, loaded at run time with dlopen on the first use of a remote cache, so that
// convjit, and every program and Python extension embedding it, loads on machines
// without libhiredis. The build needs only hiredis's headers: types and constants come
// from them, functions from the library found at run time, which must be the same
// hiredis (the soname the headers name), since convjit reads its structs. The TLS
// side, hiredis_ssl with the OpenSSL calls convjit makes itself, loads the same way,
// and only for a rediss:// URL.
//
// Only built with hiredis's headers (CONVJIT_HAVE_HIREDIS).

#include <hiredis/hiredis.h>
#if CONVJIT_HAVE_HIREDIS_SSL
#include <hiredis/hiredis_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#endif

#include <string>
#include <string_view>
#include <vector>

namespace convjit {

// Every hiredis function convjit calls, listed once; each member has the type of the
// header's declaration (decltype), so a signature cannot drift from the headers.
#define CONVJIT_HIREDIS_ENTRY_POINTS(X) \
  X(redisConnectWithTimeout)            \
  X(redisSetTimeout)                    \
  X(redisCommandArgv)                   \
  X(freeReplyObject)                    \
  X(redisFree)

// The soname of the hiredis whose headers this build used, e.g. "libhiredis.so.0.14".
std::string hiredis_soname();

class Hiredis {
 public:
  // The process's hiredis: the library CONVJIT_HIREDIS_LIBRARY names (a file name or a
  // path), else hiredis_soname(), else "libhiredis.so" (a development link), each
  // refused unless it is the hiredis generation of the headers. Loaded once per name
  // and kept for the life of the process. Throws Error(kUnsupported) naming every
  // library tried with dlerror's text; a failure is not remembered, so each caller
  // hears the same reason.
  static const Hiredis& get();

#define CONVJIT_DECLARE_HIREDIS_ENTRY(name) decltype(&::name) name = nullptr;
  CONVJIT_HIREDIS_ENTRY_POINTS(CONVJIT_DECLARE_HIREDIS_ENTRY)
#undef CONVJIT_DECLARE_HIREDIS_ENTRY

  // The name it was loaded by, for messages.
  const std::string& library() const noexcept { return library_; }

 private:
  explicit Hiredis(const std::vector<std::string>& names);
  std::string library_;
};

#if CONVJIT_HAVE_HIREDIS_SSL
// hiredis_ssl's calls and OpenSSL's, resolved through hiredis_ssl's handle (dlsym
// searches the libraries it depends on, libssl and libcrypto among them), so convjit
// links neither. Macros of OpenSSL's API (SSL_CTX_set_min_proto_version,
// SSL_set_tlsext_host_name) are spelled at the call site with the *_ctrl functions
// they expand to.
#define CONVJIT_HIREDIS_SSL_ENTRY_POINTS(X) \
  X(redisInitOpenSSL)                       \
  X(redisInitiateSSL)                       \
  X(TLS_client_method)                      \
  X(SSL_CTX_new)                            \
  X(SSL_CTX_free)                           \
  X(SSL_CTX_ctrl)                           \
  X(SSL_CTX_set_verify)                     \
  X(SSL_CTX_set_default_verify_paths)       \
  X(SSL_CTX_load_verify_locations)          \
  X(SSL_CTX_use_certificate_chain_file)     \
  X(SSL_CTX_use_PrivateKey_file)            \
  X(SSL_new)                                \
  X(SSL_free)                               \
  X(SSL_ctrl)                               \
  X(SSL_set1_host)                          \
  X(SSL_get0_param)                         \
  X(SSL_get_verify_result)                  \
  X(X509_VERIFY_PARAM_set1_ip_asc)          \
  X(X509_verify_cert_error_string)          \
  X(ERR_get_error)                          \
  X(ERR_clear_error)                        \
  X(ERR_error_string_n)

class HiredisSsl {
 public:
  // As Hiredis::get(), for CONVJIT_HIREDIS_SSL_LIBRARY, else "libhiredis_ssl.so.<soname>",
  // else "libhiredis_ssl.so"; loads hiredis first.
  static const HiredisSsl& get();

#define CONVJIT_DECLARE_HIREDIS_ENTRY(name) decltype(&::name) name = nullptr;
  CONVJIT_HIREDIS_SSL_ENTRY_POINTS(CONVJIT_DECLARE_HIREDIS_ENTRY)
#undef CONVJIT_DECLARE_HIREDIS_ENTRY

  const std::string& library() const noexcept { return library_; }

 private:
  explicit HiredisSsl(const std::vector<std::string>& names);
  std::string library_;
};
#endif

}  // namespace convjit
