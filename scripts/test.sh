#!/usr/bin/env bash
# Builds, then runs every test: C++ unit tests, Python SDK unit tests, and the end-to-end
# tests that start the real build/gantry with real Python workers.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
cd build
ctest --output-on-failure -j "${TEST_JOBS:-2}" "$@"
