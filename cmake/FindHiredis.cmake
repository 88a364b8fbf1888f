# Finds hiredis, the Redis client library (Debian: libhiredis-dev), and hiredis_ssl
# (hiredis 1.0 or newer built with OpenSSL) when it is there too.
#
#   Hiredis_FOUND, Hiredis_VERSION    hiredis::hiredis
#   Hiredis_SSL_FOUND                 hiredis::hiredis_ssl (links OpenSSL)
#
# Installed with convjit's package, so a consumer of a static convjit finds the same.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_HIREDIS QUIET hiredis)
  pkg_check_modules(PC_HIREDIS_SSL QUIET hiredis_ssl)
endif()

find_path(Hiredis_INCLUDE_DIR hiredis/hiredis.h HINTS ${PC_HIREDIS_INCLUDEDIR} ${PC_HIREDIS_INCLUDE_DIRS})
find_library(Hiredis_LIBRARY NAMES hiredis HINTS ${PC_HIREDIS_LIBDIR} ${PC_HIREDIS_LIBRARY_DIRS})
find_library(Hiredis_SSL_LIBRARY NAMES hiredis_ssl HINTS ${PC_HIREDIS_SSL_LIBDIR} ${PC_HIREDIS_SSL_LIBRARY_DIRS})
set(Hiredis_VERSION "${PC_HIREDIS_VERSION}")

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Hiredis REQUIRED_VARS Hiredis_LIBRARY Hiredis_INCLUDE_DIR
                                  VERSION_VAR Hiredis_VERSION)
mark_as_advanced(Hiredis_INCLUDE_DIR Hiredis_LIBRARY Hiredis_SSL_LIBRARY)

if(Hiredis_FOUND AND NOT TARGET hiredis::hiredis)
  add_library(hiredis::hiredis UNKNOWN IMPORTED)
  set_target_properties(hiredis::hiredis PROPERTIES IMPORTED_LOCATION "${Hiredis_LIBRARY}"
                                                    INTERFACE_INCLUDE_DIRECTORIES "${Hiredis_INCLUDE_DIR}")
endif()

set(Hiredis_SSL_FOUND FALSE)
if(Hiredis_FOUND AND Hiredis_SSL_LIBRARY AND EXISTS "${Hiredis_INCLUDE_DIR}/hiredis/hiredis_ssl.h")
  find_package(OpenSSL QUIET)
  if(OpenSSL_FOUND)
    set(Hiredis_SSL_FOUND TRUE)
    if(NOT TARGET hiredis::hiredis_ssl)
      add_library(hiredis::hiredis_ssl UNKNOWN IMPORTED)
      set_target_properties(hiredis::hiredis_ssl PROPERTIES IMPORTED_LOCATION "${Hiredis_SSL_LIBRARY}"
                                                            INTERFACE_LINK_LIBRARIES "hiredis::hiredis;OpenSSL::SSL")
    endif()
  endif()
endif()
