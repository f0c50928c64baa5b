#!/usr/bin/env bash
# One row of bench/run_bench.sh, alone and short, for profiling and A/B comparisons of builds:
# a fresh `gantry server` on loopback, 4 endpoints, wrk -t2 -c32 for DUR seconds, then the CPU
# ticks each server (and worker) thread used. No nginx and no ratios: use run_bench.sh for the
# figures in bench/RESULTS.md.
#
# Usage: bench/profile_row.sh run|runsync [server flags, e.g. --no-fsync]
# Environment: G (the gantry binary) [build/gantry], DUR [8], PORT [21500],
#   PERF=1 to record a CPU profile of the server (perf record -e cpu-clock, PERFG=1 with call
#   graphs) into bench-profile.perf.data in the current directory.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROW=${1:?usage: bench/profile_row.sh run|runsync [server flags]}
shift
G=${G:-$ROOT/build/gantry}
W=$ROOT/build/bench/bench_worker
DUR=${DUR:-8}
PORT=${PORT:-21500}
D=$(mktemp -d /tmp/gantry-profile.XXXXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"' EXIT

"$G" server --listen 127.0.0.1:$PORT --data-dir "$D/data" "$@" >"$D/log" 2>&1 &
PID=$!
PIDS+=($PID)
for _ in $(seq 100); do grep -q 'listening on' "$D/log" && break; sleep 0.05; done
KEY=$(cat "$D/data/admin.key")
api() {
  curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json' ${3:+--data-binary "$3"} "http://127.0.0.1:$PORT$2"
}
WPIDS=()
for ep in a b c d; do
  api POST /v1/endpoints '{"id":"'$ep'"}' >/dev/null
  if [ "$ROW" = runsync ]; then
    api POST /v1/endpoints/$ep/workers | /usr/bin/python3 -c '
import json, shlex, sys
env = json.load(sys.stdin)["env"]
print("\n".join("export %s=%s" % (k, shlex.quote(str(v))) for k, v in env.items()))' >"$D/w-$ep.env"
    (source "$D/w-$ep.env"; exec "$W" --threads 1 --batch 8 --mode async) >"$D/w-$ep.log" 2>&1 &
    WPIDS+=($!)
    PIDS+=($!)
  fi
done
if [ "$ROW" = runsync ]; then
  for ep in a b c d; do api POST "/v2/$ep/runsync?wait=10000" '{"input":{"ping":1}}' >/dev/null; done
fi
echo '{"input":{"prompt":"hello world","n":1}}' >"$D/small.json"
ticks() {
  for p in $PID "${WPIDS[@]}"; do
    for t in /proc/$p/task/*; do echo "$(basename "$t") $(cat "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done
  done | sort
}
ticks >"$D/before"
PP=""
if [ -n "${PERF:-}" ]; then
  perf record -e cpu-clock -F 2000 ${PERFG:+-g} -p $PID -o bench-profile.perf.data \
    -- sleep $((DUR - 2)) >/dev/null 2>&1 &
  PP=$!
fi
BENCH_METHOD=POST BENCH_PATHS=/v2/a/$ROW,/v2/b/$ROW,/v2/c/$ROW,/v2/d/$ROW \
  BENCH_BODY_FILE="$D/small.json" BENCH_AUTH="Bearer $KEY" \
  wrk -t2 -c32 -d${DUR}s -s "$ROOT/bench/wrk_bench.lua" "http://127.0.0.1:$PORT/" | grep WRK_RESULT
ticks >"$D/after"
if [ -n "$PP" ]; then wait "$PP" || true; fi
echo "CPU ticks (1/100 s) per thread during the row:"
join "$D/before" "$D/after" | awk '{printf "  %s %s %d\n", $1, $2, $5 - $3}' | sort -k3 -rn | head -8
