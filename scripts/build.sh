#!/usr/bin/env bash
# Builds Gantry into build/ (binary: build/gantry). Extra args go to the build tool.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}"
fi
cmake --build build -j "${JOBS:-2}" "$@"
