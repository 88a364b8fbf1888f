#!/usr/bin/env bash
# Fails, listing the files, when a tracked C++ or CUDA file differs from what
# clang-format makes of it with the repository's .clang-format. `--fix` formats them.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check_format: clang-format is not installed" >&2; exit 1; }
mapfile -t files < <(git ls-files '*.cpp' '*.hpp' '*.h' '*.cu' '*.cuh')
if [ "${1:-}" = --fix ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  printf 'check_format: %s differs from clang-format (scripts/check_format.sh --fix)\n' "${bad[@]}" >&2
  exit 1
fi
echo "check_format: ${#files[@]} files formatted ($(clang-format --version | sed 's/.*version //'))"
