#!/usr/bin/env bash
# Writes the PTX of every kernel in a descriptor list (default tests/data/ptx_descriptors.txt,
# lines "arch algorithm shape"), one file per line, into DIR, without the lines that name
# source files or positions (.loc, .file, comments) or NVRTC's optional "used_bytes_mask"
# pragma, which varies between compiles of the same source. Compare two snapshots with
# `diff -r`: a refactor that must not change a kernel leaves them identical. No GPU needed.
# NVRTC 13.0 numbers the virtual registers of some kernels (the f16 depthwise ones) differently
# from one compile of the same source to the next; NORMALIZE=1 writes every register as
# %<class>N so that two snapshots compare instruction by instruction.
# NVRTC also writes every namespace-scope constexpr of the source (the prologue's constants
# and the template's) as a .global variable, and with -lineinfo a .debug_str section naming
# each inlined function: renaming a constant or a helper, or adding a prologue constant,
# changes those lines and not one instruction. CODE_ONLY=1 leaves both out.
# usage: scripts/ptx_snapshot.sh DIR [LIST]   (CONVJIT: the convjit binary, default build/tools/convjit)
set -euo pipefail
out=$1
list=${2:-$(dirname "$0")/../tests/data/ptx_descriptors.txt}
cli=${CONVJIT:-build/tools/convjit}
mkdir -p "$out"
export CONVJIT_CACHE_DIR="${CONVJIT_CACHE_DIR:-$(mktemp -d)}"
n=0
grep -v '^#' "$list" | while read -r arch algorithm shape; do
  n=$((n + 1))
  name=$(printf '%03d_%s_%s_%s' "$n" "$arch" "$algorithm" "$(echo "$shape" | tr -c 'a-z0-9=,\n' '_')")
  "$cli" inspect "$shape" --arch "$arch" --algorithm "$algorithm" --ptx 2>&1 |
    grep -vE '^\s*(\.loc|\.file|//)|used_bytes_mask' |
    if [ "${CODE_ONLY:-0}" = 1 ]; then
      sed -E '/^\.global \.align [0-9]+ \.[a-z]+[0-9]+ _ZN[0-9]+_INTERNAL_/d; /^\s*\.section\s+\.debug_str/,$d'
    else cat; fi |
    if [ "${NORMALIZE:-0}" = 1 ]; then sed -E 's/%([a-z]+)[0-9]+/%\1N/g; s/%([a-z]+)<[0-9]+>/%\1<N>/g'; else cat; fi \
    > "$out/$name.ptx" || true
done
echo "$(ls "$out" | wc -l) kernels in $out"
