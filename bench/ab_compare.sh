#!/usr/bin/env bash
# A/B of two gantry binaries on this machine: bench/run_bench.sh (nginx in every run) with each,
# alternating, RUNS times each, in one invocation; then bench/ab_summary.py prints the medians.
#
#   bench/ab_compare.sh OLD_BINARY NEW_BINARY [OUT_DIR]
# Environment: RUNS [3], PHASES [nginx run sync], and whatever run_bench.sh takes.
# Build bench_worker first (scripts/build.sh): both binaries are driven by the same one.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [OUT_DIR]" >&2; exit 2; }
old=$(readlink -f "$1")
new=$(readlink -f "$2")
out=${3:-$(mktemp -d /tmp/gantry-ab.XXXXXX)}
mkdir -p "$out"
cd "$(dirname "$0")/.."
for i in $(seq "${RUNS:-3}"); do
  for which in old new; do
    bin=$old
    [ $which = new ] && bin=$new
    echo "=== run $i $which $(date -u +%H:%M:%S)" >&2
    GANTRY_BIN=$bin PHASES=${PHASES:-nginx run sync} bench/run_bench.sh >"$out/log-$i-$which.txt" 2>&1
    cp bench/results-latest.md "$out/res-$i-$which.md"
  done
done
/usr/bin/python3 bench/ab_summary.py "$out"
