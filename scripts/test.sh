#!/usr/bin/env bash
# Builds, then runs every test in tiers, fastest first (tests/CMakeLists.txt):
#   unit        C++ and Python SDK unit tests, clang-format and the size rule (under a minute)
#   integration unit tests driving real external tools at length (registry, skopeo, umoci)
#   e2e         the real build/gantry with real Python workers
#   vm          the cgroup-dependent tests again in a VM with cgroup v2 alone
# TIERS="unit" (or any subset, in order) runs only those; extra arguments go to each ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
cd build
for tier in ${TIERS:-unit integration e2e vm}; do
  echo "== tier: $tier"
  ctest --output-on-failure --no-tests=error -j "${TEST_JOBS:-2}" -L "^${tier}\$" "$@"
done
