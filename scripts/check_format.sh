#!/usr/bin/env bash
# Fails, listing the files, when a C++ source differs from clang-format's output (.clang-format:
# Google base, 100 columns). Fix with: clang-format -i FILE...
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files 'src/*.cc' 'src/*.h' 'bench/*.cc' 'bench/*.h' 2>/dev/null ||
                     find src bench -name '*.cc' -o -name '*.h')
[ ${#files[@]} -gt 0 ] || { echo "check_format: no sources found" >&2; exit 1; }
bad=()
for f in "${files[@]}"; do
  [ -f "$f" ] || continue
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "not clang-formatted (clang-format -i to fix):" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
echo "check_format: ${#files[@]} files formatted"
