# Writes one kernel template into a C++ source as a byte array, so the installed
# library carries its templates and needs no source tree at run time.
# Its sha256 goes with it: cache keys hash every template and header, and a warm start
# computes a key before it can read the cache, so the digest is computed here, once.
# Inputs: INPUT (the .cu file), OUTPUT (the .cpp to write), SYMBOL (C identifier).
file(READ "${INPUT}" content HEX)
file(SHA256 "${INPUT}" digest)
string(LENGTH "${content}" hex_len)
math(EXPR byte_len "${hex_len} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${content}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
file(WRITE "${OUTPUT}.tmp"
"// Generated from ${INPUT}; do not edit.\n#include <cstddef>\nnamespace convjit::embedded {\nextern const unsigned char ${SYMBOL}[] = {\n${bytes}0x00};\nextern const std::size_t ${SYMBOL}_size = ${byte_len};\nextern const char ${SYMBOL}_sha256[] = \"${digest}\";\n}  // namespace convjit::embedded\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
