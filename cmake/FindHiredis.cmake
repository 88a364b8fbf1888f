# Finds hiredis's headers (Debian: libhiredis-dev), and hiredis_ssl's when they are there
# too (hiredis 1.0 or newer built with OpenSSL, and OpenSSL's headers). convjit needs
# only the headers: it loads the libraries at run time (cache/hiredis_library.hpp), so
# nothing links them.
#
#   Hiredis_FOUND, Hiredis_VERSION    hiredis::headers (include directories only)
#   Hiredis_SSL_FOUND                 hiredis_ssl.h and OpenSSL's headers are there too
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_HIREDIS QUIET hiredis)
endif()

find_path(Hiredis_INCLUDE_DIR hiredis/hiredis.h HINTS ${PC_HIREDIS_INCLUDEDIR} ${PC_HIREDIS_INCLUDE_DIRS})
set(Hiredis_VERSION "")
if(Hiredis_INCLUDE_DIR)
  file(STRINGS "${Hiredis_INCLUDE_DIR}/hiredis/hiredis.h" _hiredis_version_lines
       REGEX "^#define HIREDIS_(MAJOR|MINOR|PATCH) +[0-9]+")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX REPLACE ".*#define HIREDIS_${_part} +([0-9]+).*" "\\1" _hiredis_${_part} "${_hiredis_version_lines}")
  endforeach()
  set(Hiredis_VERSION "${_hiredis_MAJOR}.${_hiredis_MINOR}.${_hiredis_PATCH}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Hiredis REQUIRED_VARS Hiredis_INCLUDE_DIR VERSION_VAR Hiredis_VERSION)
mark_as_advanced(Hiredis_INCLUDE_DIR)

set(Hiredis_SSL_FOUND FALSE)
if(Hiredis_FOUND AND EXISTS "${Hiredis_INCLUDE_DIR}/hiredis/hiredis_ssl.h")
  find_path(Hiredis_OPENSSL_INCLUDE_DIR openssl/ssl.h HINTS ${PC_HIREDIS_INCLUDE_DIRS})
  mark_as_advanced(Hiredis_OPENSSL_INCLUDE_DIR)
  if(Hiredis_OPENSSL_INCLUDE_DIR)
    set(Hiredis_SSL_FOUND TRUE)
  endif()
endif()

if(Hiredis_FOUND AND NOT TARGET hiredis::headers)
  add_library(hiredis::headers INTERFACE IMPORTED)
  set_target_properties(hiredis::headers PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${Hiredis_INCLUDE_DIR}")
  if(Hiredis_SSL_FOUND)
    set_property(TARGET hiredis::headers APPEND PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${Hiredis_OPENSSL_INCLUDE_DIR}")
  endif()
endif()
