#!/usr/bin/env bash
# Gantry benchmark against nginx, all in one run on this machine (load generator and servers
# share the same CPUs). Builds gantry and bench_worker, starts nginx and gantry servers on
# loopback, drives them with wrk, prints a markdown table and writes bench/results-latest.md.
#
# Usage: bench/run_bench.sh [--no-build]
# Environment (defaults in brackets):
#   DURATION    seconds per wrk run [10]
#   CONNS       connections of the concurrent runs [32]
#   WRK_THREADS wrk threads of the concurrent runs [2]
#   WORKER_THREADS  bench_worker threads per endpoint [2]
#   BATCH       job-take-batch batch_size [8]
#   MEM_JOBS    jobs queued for the memory figure [100000]
#   PY_WORKERS  Python SDK workers for the optional figure (one per endpoint, round robin) [4]
#   PORT_BASE   first port tried; all ports are below 32768 [21000]
#   KEEP_TMP=1  keep the temp dir (logs, wrk outputs) instead of deleting it
# Every process it starts is stopped on exit (trap EXIT); every step is bounded by `timeout`,
# and a watchdog ends the whole run after 15 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
WRK_THREADS=${WRK_THREADS:-2}
WORKER_THREADS=${WORKER_THREADS:-2}
BATCH=${BATCH:-8}
MEM_JOBS=${MEM_JOBS:-100000}
PY_WORKERS=${PY_WORKERS:-4}
PORT_BASE=${PORT_BASE:-21000}
PY=/usr/bin/python3
ENDPOINTS=(ep1 ep2 ep3 ep4)

BUILD=1
for a in "$@"; do
  case "$a" in
    --no-build) BUILD=0 ;;
    *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
  esac
done

T=$(mktemp -d /tmp/gantry-bench.XXXXXX)
RES="$T/results.env"   # key=value lines, turned into the markdown table at the end
: >"$RES"
PIDS=()
WATCHDOG=""

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
put() { printf '%s=%s\n' "$1" "$2" >>"$RES"; }

# Stops the given PIDs: SIGTERM, up to 5 s, then SIGKILL.
stop_pids() {
  local pid alive i
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for i in $(seq 50); do
    alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null && wait "$WATCHDOG" 2>/dev/null
  [ ${#PIDS[@]} -gt 0 ] && stop_pids "${PIDS[@]}"
  if [ "${KEEP_TMP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    log "temp dir kept: $T"
  else
    rm -rf "$T"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Whole-run bound: 15 minutes.
( trap 'kill $sp 2>/dev/null; exit 0' TERM
  sleep 900 & sp=$!
  wait $sp
  log "watchdog: run took over 15 minutes, stopping"
  kill -TERM $$ ) &
WATCHDOG=$!

# Removes stopped PIDs from PIDS.
forget_pids() {
  local keep=() p q drop
  for p in "${PIDS[@]}"; do
    drop=0
    for q in "$@"; do [ "$p" = "$q" ] && drop=1; done
    [ $drop = 0 ] && keep+=("$p")
  done
  PIDS=("${keep[@]+"${keep[@]}"}")
}
stop() { stop_pids "$@"; forget_pids "$@"; }

NEXT_PORT=$PORT_BASE
pick_port() {
  local p=$NEXT_PORT
  while [ $p -lt 32768 ] && ss -Hltn "( sport = :$p )" | grep -q .; do p=$((p + 1)); done
  [ $p -lt 32768 ] || { echo "no free port below 32768" >&2; exit 1; }
  NEXT_PORT=$((p + 1))
  echo $p
}

# ---- build ------------------------------------------------------------------------------------
if [ $BUILD = 1 ]; then
  log "building gantry and bench_worker"
  timeout 900 ./scripts/build.sh --target gantry bench_worker >"$T/build.log" 2>&1 ||
    { tail -30 "$T/build.log" >&2; exit 1; }
fi
GANTRY=$ROOT/build/gantry
WORKER=$ROOT/build/bench/bench_worker
for b in "$GANTRY" "$WORKER"; do [ -x "$b" ] || { echo "missing $b (build first)" >&2; exit 1; }; done
for t in wrk nginx curl; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done

# ---- helpers ----------------------------------------------------------------------------------
# run_wrk LABEL THREADS CONNS URL [VAR=VALUE...]: runs wrk for DURATION s with wrk_bench.lua and
# records LABEL_rps, LABEL_p50_us, LABEL_p99_us, LABEL_errors, LABEL_non2xx.
run_wrk() {
  local label=$1 threads=$2 conns=$3 url=$4
  shift 4
  log "wrk $label: -t$threads -c$conns -d${DURATION}s $url"
  env "$@" timeout $((DURATION + 60)) wrk -t"$threads" -c"$conns" -d"${DURATION}s" --latency \
    --timeout 10s -s "$ROOT/bench/wrk_bench.lua" "$url" >"$T/wrk-$label.txt" 2>&1 || true
  local line
  line=$(grep '^WRK_RESULT' "$T/wrk-$label.txt" || true)
  if [ -z "$line" ]; then
    log "wrk $label produced no result:"; cat "$T/wrk-$label.txt" >&2
    put "${label}_failed" 1
    return
  fi
  local kv
  for kv in ${line#WRK_RESULT }; do
    case "$kv" in
      rps=*|p50_us=*|p99_us=*|errors=*|non2xx=*|requests=*) put "${label}_${kv%%=*}" "${kv#*=}" ;;
    esac
  done
  log "  $line"
}

# start_gantry NAME [flags...]: starts a server; sets G_PID, G_PORT, G_KEY, G_DIR.
start_gantry() {
  local name=$1
  shift
  G_PORT=$(pick_port)
  G_DIR=$T/$name
  mkdir -p "$G_DIR"
  "$GANTRY" server --listen 127.0.0.1:$G_PORT --data-dir "$G_DIR/data" "$@" >"$G_DIR/server.log" 2>&1 &
  G_PID=$!
  PIDS+=("$G_PID")
  local i
  for i in $(seq 200); do
    grep -q 'listening on' "$G_DIR/server.log" 2>/dev/null && break
    kill -0 $G_PID 2>/dev/null || { cat "$G_DIR/server.log" >&2; exit 1; }
    sleep 0.05
  done
  grep -q 'listening on' "$G_DIR/server.log" || { echo "gantry $name did not start" >&2; exit 1; }
  G_KEY=$(cat "$G_DIR/data/admin.key")
  log "gantry $name: pid $G_PID port $G_PORT $*"
}

# api METHOD PATH [BODY]: admin call on the current server; prints the body, fails on >= 400.
api() {
  curl -sS --fail-with-body --max-time 30 -X "$1" -H "Authorization: Bearer $G_KEY" \
    -H 'Content-Type: application/json' ${3:+--data-binary "$3"} "http://127.0.0.1:$G_PORT$2"
}

create_endpoints() {
  local ep
  for ep in "$@"; do api POST /v1/endpoints "{\"id\":\"$ep\"}" >/dev/null; done
}

# register_worker EP FILE: registers a worker and writes its env as shell `export` lines to FILE.
register_worker() {
  api POST "/v1/endpoints/$1/workers" | $PY -c '
import json, shlex, sys
env = json.load(sys.stdin)["env"]
print("\n".join("export %s=%s" % (k, shlex.quote(str(v))) for k, v in env.items()))' >"$2"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# Sum of inQueue over the current server's given endpoints.
queued() {
  local ep n total=0
  for ep in "$@"; do
    n=$(api GET "/v2/$ep/health" | $PY -c 'import json,sys; print(json.load(sys.stdin)["jobs"]["inQueue"])')
    total=$((total + n))
  done
  echo $total
}

paths_for() {  # paths_for ROUTE EP... -> "/v2/EP1/ROUTE,/v2/EP2/ROUTE,..."
  local route=$1 out="" ep
  shift
  for ep in "$@"; do out+="${out:+,}/v2/$ep/$route"; done
  echo "$out"
}

put date "$(date -u '+%Y-%m-%d %H:%M UTC')"
put machine "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))"
put commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted src changes')"
put duration "$DURATION"
put conns "$CONNS"
put wrk_threads "$WRK_THREADS"
put worker_threads "$WORKER_THREADS"
put batch "$BATCH"

echo '{"input":{"prompt":"hello world","n":1}}' >"$T/small.json"
$PY -c 'import json; print(json.dumps({"input": {"data": "x" * 1000}}))' >"$T/1kb.json"

# ---- nginx ------------------------------------------------------------------------------------
NGX=$T/nginx
mkdir -p "$NGX/www" "$NGX/tmp"
chmod 755 "$T" "$NGX" "$NGX/www"  # nginx's worker runs as nobody when started by root
NGX_PORT=$(pick_port)
# A static answer about the size of a gantry status reply.
echo '{"id":"0b8f6d1c-3a2e-4c1b-9d7e-5f2a8c1e4b90","status":"COMPLETED","delayTime":0,"executionTime":1,"output":{"prompt":"hello world","n":1}}' >"$NGX/www/status.json"
cat >"$NGX/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $NGX/tmp/body;
  proxy_temp_path $NGX/tmp/proxy;
  fastcgi_temp_path $NGX/tmp/fastcgi;
  uwsgi_temp_path $NGX/tmp/uwsgi;
  scgi_temp_path $NGX/tmp/scgi;
  types { application/json json; }
  server {
    listen 127.0.0.1:$NGX_PORT;
    root $NGX/www;
  }
}
EOF
nginx -c "$NGX/nginx.conf" -p "$NGX" >"$NGX/stdout.log" 2>&1 &
NGX_PID=$!
PIDS+=("$NGX_PID")
for i in $(seq 100); do
  curl -sf --max-time 1 "http://127.0.0.1:$NGX_PORT/status.json" >/dev/null 2>&1 && break
  sleep 0.05
done
curl -sf --max-time 2 "http://127.0.0.1:$NGX_PORT/status.json" >/dev/null ||
  { tail -5 "$NGX/stdout.log" "$NGX/error.log" >&2; exit 1; }
log "nginx: pid $NGX_PID port $NGX_PORT (1 worker process)"
run_wrk nginx_c32 "$WRK_THREADS" "$CONNS" "http://127.0.0.1:$NGX_PORT/status.json"
run_wrk nginx_c1 1 1 "http://127.0.0.1:$NGX_PORT/status.json"
stop "$NGX_PID"

# ---- /run acceptance (fsync on, then --no-fsync) ----------------------------------------------
for mode in fsync nofsync; do
  flags=()
  [ $mode = nofsync ] && flags=(--no-fsync)
  start_gantry "run-$mode" "${flags[@]+"${flags[@]}"}"
  create_endpoints "${ENDPOINTS[@]}"
  run_wrk "run_$mode" "$WRK_THREADS" "$CONNS" "http://127.0.0.1:$G_PORT/" \
    BENCH_METHOD=POST BENCH_PATHS="$(paths_for run "${ENDPOINTS[@]}")" \
    BENCH_BODY_FILE="$T/small.json" BENCH_AUTH="Bearer $G_KEY"
  put "run_${mode}_queued" "$(queued "${ENDPOINTS[@]}")"
  stop "$G_PID"
done

# ---- /runsync end to end with bench_worker (batch take) ---------------------------------------
start_gantry sync
create_endpoints "${ENDPOINTS[@]}"
WPIDS=()
for ep in "${ENDPOINTS[@]}"; do
  register_worker "$ep" "$G_DIR/worker-$ep.env"
  ( source "$G_DIR/worker-$ep.env"
    exec timeout $((6 * DURATION + 120)) "$WORKER" --threads "$WORKER_THREADS" --batch "$BATCH" ) \
    >"$G_DIR/worker-$ep.log" 2>&1 &
  WPIDS+=($!)
  PIDS+=($!)
done
# Every endpoint answers before measuring.
for ep in "${ENDPOINTS[@]}"; do
  out=$(api POST "/v2/$ep/runsync?wait=10000" '{"input":{"ping":1}}')
  case "$out" in *COMPLETED*) ;; *) echo "warm-up runsync on $ep failed: $out" >&2; exit 1 ;; esac
done
run_wrk runsync_c32 "$WRK_THREADS" "$CONNS" "http://127.0.0.1:$G_PORT/" \
  BENCH_METHOD=POST BENCH_PATHS="$(paths_for runsync "${ENDPOINTS[@]}")" \
  BENCH_BODY_FILE="$T/small.json" BENCH_AUTH="Bearer $G_KEY"
run_wrk runsync_c1 1 1 "http://127.0.0.1:$G_PORT/" \
  BENCH_METHOD=POST BENCH_PATHS="$(paths_for runsync ep1)" \
  BENCH_BODY_FILE="$T/small.json" BENCH_AUTH="Bearer $G_KEY"
put sync_server_rss_kb "$(rss_kb "$G_PID")"
stop "${WPIDS[@]}"
for ep in "${ENDPOINTS[@]}"; do
  put "worker_${ep}_summary" "$(grep '^bench_worker:' "$G_DIR/worker-$ep.log" | tail -1 || true)"
done

# ---- optional: /runsync with Python SDK workers -----------------------------------------------
PY_EPS=(py1 py2 py3 py4)
if [ -f sdk/python/gantry/__init__.py ] && [ -f sdk/python/examples/echo.py ]; then
  create_endpoints "${PY_EPS[@]}"
  PYPIDS=()
  for i in $(seq 0 $((PY_WORKERS - 1))); do
    ep=${PY_EPS[$((i % 4))]}
    register_worker "$ep" "$G_DIR/py-$i.env"
    ( source "$G_DIR/py-$i.env"
      export PYTHONPATH="$ROOT/sdk/python"
      exec timeout $((2 * DURATION + 90)) $PY "$ROOT/sdk/python/examples/echo.py" ) \
      >"$G_DIR/py-$i.log" 2>&1 &
    PYPIDS+=($!)
    PIDS+=($!)
  done
  py_ok=1
  for ep in "${PY_EPS[@]:0:$((PY_WORKERS < 4 ? PY_WORKERS : 4))}"; do
    out=$(api POST "/v2/$ep/runsync?wait=15000" '{"input":{"ping":1}}' 2>&1 || true)
    case "$out" in *COMPLETED*) ;; *) py_ok=0; put py_error "warm-up runsync on $ep: ${out:0:200}"; break ;; esac
  done
  if [ $py_ok = 1 ]; then
    put py_workers "$PY_WORKERS"
    used=("${PY_EPS[@]:0:$((PY_WORKERS < 4 ? PY_WORKERS : 4))}")
    run_wrk runsync_py "$WRK_THREADS" "$CONNS" "http://127.0.0.1:$G_PORT/" \
      BENCH_METHOD=POST BENCH_PATHS="$(paths_for runsync "${used[@]}")" \
      BENCH_BODY_FILE="$T/small.json" BENCH_AUTH="Bearer $G_KEY"
  else
    log "python workers did not answer; see $G_DIR/py-*.log"
    put py_log "$(tail -3 "$G_DIR/py-0.log" | tr '\n' ' ' | cut -c1-300)"
  fi
  stop "${PYPIDS[@]}"
else
  put py_error "sdk/python/gantry or sdk/python/examples/echo.py is missing"
fi
stop "$G_PID"

# ---- memory: MEM_JOBS queued ~1 KB jobs, no workers --------------------------------------------
start_gantry mem
create_endpoints mem
sleep 0.5
put mem_rss_idle_kb "$(rss_kb "$G_PID")"
per_thread=$(( (MEM_JOBS + WRK_THREADS - 1) / WRK_THREADS ))
log "memory: queueing $MEM_JOBS jobs of ~1 KB"
env BENCH_METHOD=POST BENCH_PATHS=/v2/mem/run BENCH_BODY_FILE="$T/1kb.json" \
  BENCH_AUTH="Bearer $G_KEY" BENCH_MAX=$per_thread \
  timeout 200 wrk -t"$WRK_THREADS" -c"$CONNS" -d120s --timeout 10s -s "$ROOT/bench/wrk_bench.lua" \
  "http://127.0.0.1:$G_PORT/" >"$T/wrk-mem.txt" 2>&1 || true
grep '^WRK_RESULT' "$T/wrk-mem.txt" >&2 || cat "$T/wrk-mem.txt" >&2
n=$(queued mem)
if [ "$n" -lt "$MEM_JOBS" ]; then  # errors: top up with single requests
  log "only $n queued; topping up"
  for i in $(seq $((MEM_JOBS - n))); do
    api POST /v2/mem/run "@$T/1kb.json" >/dev/null
  done
  n=$(queued mem)
fi
sleep 1
put mem_jobs "$n"
put mem_input_bytes "$(wc -c <"$T/1kb.json")"
put mem_rss_kb "$(rss_kb "$G_PID")"
put mem_hwm_kb "$(hwm_kb "$G_PID")"
put mem_disk_kb "$(du -sk "$G_DIR/data" | cut -f1)"
stop "$G_PID"
# The same jobs after a restart (loaded from the store).
log "memory: restarting on the same data dir"
G_PORT2=$(pick_port)
t0=$(date +%s.%N)
"$GANTRY" server --listen 127.0.0.1:$G_PORT2 --data-dir "$G_DIR/data" >"$G_DIR/server2.log" 2>&1 &
G_PID=$!
PIDS+=("$G_PID")
for i in $(seq 1200); do
  grep -q 'listening on' "$G_DIR/server2.log" 2>/dev/null && break
  kill -0 $G_PID 2>/dev/null || break
  sleep 0.05
done
t1=$(date +%s.%N)
if grep -q 'listening on' "$G_DIR/server2.log"; then
  put mem_restart_s "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')"
  put mem_restart_rss_kb "$(rss_kb "$G_PID")"
fi
stop "$G_PID"

# ---- report -----------------------------------------------------------------------------------
$PY - "$RES" "$ROOT/bench/results-latest.md" <<'PYEOF'
import sys

res = {}
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").partition("=")
    res[k] = v

def num(k):
    try:
        return float(res[k])
    except (KeyError, ValueError):
        return None

def ms(us):
    return "–" if us is None else "%.3f" % (us / 1000.0)

def ratio(a, b, fmt="%.2f"):
    return "–" if a is None or b is None or b == 0 else fmt % (a / b)

rows = [
    ("nginx static file, -c%s" % res["conns"], "nginx_c32", None),
    ("nginx static file, -c1", "nginx_c1", None),
    ("gantry `/run` (fsync on, default), -c%s, 4 endpoints" % res["conns"], "run_fsync", "nginx_c32"),
    ("gantry `/run` (`--no-fsync`), -c%s, 4 endpoints" % res["conns"], "run_nofsync", "nginx_c32"),
    ("gantry `/runsync` e2e, C++ bench_worker, -c%s, 4 endpoints" % res["conns"], "runsync_c32", "nginx_c32"),
    ("gantry `/runsync` e2e, C++ bench_worker, -c1", "runsync_c1", "nginx_c1"),
]
if "runsync_py_rps" in res:
    rows.append(("gantry `/runsync` e2e, %s Python SDK workers, -c%s" % (res["py_workers"], res["conns"]),
                 "runsync_py", "nginx_c32"))

out = []
out.append("Run: %s, commit %s, %s; wrk %ss per row, -t%s for -c%s rows; bench_worker %s threads/endpoint, batch %s."
           % (res["date"], res["commit"], res["machine"], res["duration"], res["wrk_threads"],
              res["conns"], res["worker_threads"], res["batch"]))
out.append("")
out.append("| scenario | req/s | p50 ms | p99 ms | errors | rps / nginx | p50 / nginx |")
out.append("|---|---:|---:|---:|---:|---:|---:|")
for title, key, base in rows:
    if res.get(key + "_failed"):
        out.append("| %s | failed | | | | | |" % title)
        continue
    rps, p50, p99 = num(key + "_rps"), num(key + "_p50_us"), num(key + "_p99_us")
    errs = int(num(key + "_errors") or 0) + int(num(key + "_non2xx") or 0)
    out.append("| %s | %s | %s | %s | %d | %s | %s |" % (
        title, "–" if rps is None else "{:,.0f}".format(rps), ms(p50), ms(p99), errs,
        ratio(rps, num(base + "_rps")) if base else "1.00" if key == "nginx_c32" else "",
        ratio(p50, num(base + "_p50_us")) if base else "1.00" if key == "nginx_c1" else ""))
out.append("")
out.append("Ratios: -c%s rows against nginx -c%s; -c1 rows against nginx -c1." % (res["conns"], res["conns"]))
if "runsync_py_rps" not in res:
    out.append("Python SDK workers: not measured (%s%s)." % (
        res.get("py_error", "unknown"), ("; log: " + res["py_log"]) if res.get("py_log") else ""))
out.append("")

mem_jobs = num("mem_jobs")
rss = num("mem_rss_kb")
idle = num("mem_rss_idle_kb")
out.append("| memory (no workers) | value |")
out.append("|---|---:|")
out.append("| jobs queued via `/run` (input ~%s bytes of JSON body) | %s |" % (res.get("mem_input_bytes"), "{:,.0f}".format(mem_jobs or 0)))
out.append("| server VmRSS idle, before | %.1f MB |" % ((idle or 0) / 1024))
out.append("| server VmRSS with the jobs queued | %.1f MB |" % ((rss or 0) / 1024))
out.append("| server VmHWM (peak) | %.1f MB |" % ((num("mem_hwm_kb") or 0) / 1024))
if mem_jobs and rss and idle:
    out.append("| RSS per queued job | %.0f bytes |" % ((rss - idle) * 1024 / mem_jobs))
out.append("| data dir on disk | %.1f MB |" % ((num("mem_disk_kb") or 0) / 1024))
if "mem_restart_s" in res:
    out.append("| restart with the jobs: time to listening / VmRSS | %s s / %.1f MB |" % (
        res["mem_restart_s"], (num("mem_restart_rss_kb") or 0) / 1024))
out.append("")

def check(name, ok, measured):
    return "| %s | %s | %s |" % (name, measured, "**met**" if ok else "**missed**")

out.append("| target | measured | |")
out.append("|---|---|---|")
n32, n1 = num("nginx_c32_rps"), num("nginx_c1_rps")
r = num("run_fsync_rps")
if r and n32:
    out.append(check("`/run` >= 50% of nginx rps (fsync on)", r / n32 >= 0.5, "%.0f%% (no-fsync: %s)" % (
        100 * r / n32, ("%.0f%%" % (100 * num("run_nofsync_rps") / n32)) if num("run_nofsync_rps") else "–")))
s = num("runsync_c32_rps")
if s and n32:
    out.append(check("`/runsync` e2e >= 25% of nginx rps", s / n32 >= 0.25, "%.0f%%" % (100 * s / n32)))
p50, np50, p99 = num("runsync_c1_p50_us"), num("nginx_c1_p50_us"), num("runsync_c1_p99_us")
if p50 and np50:
    out.append(check("single-client `/runsync` p50 <= 4x nginx -c1 p50", p50 <= 4 * np50,
                     "%.1fx (%s ms vs %s ms)" % (p50 / np50, ms(p50), ms(np50))))
if p99:
    out.append(check("single-client `/runsync` p99 <= 2 ms", p99 <= 2000, "%s ms" % ms(p99)))
if rss:
    out.append(check("%s queued 1 KB jobs < 300 MB RSS" % "{:,.0f}".format(mem_jobs or 0),
                     rss / 1024 < 300, "%.1f MB" % (rss / 1024)))
text = "\n".join(out) + "\n"
sys.stdout.write(text)
open(sys.argv[2], "w").write(text)
PYEOF
log "written bench/results-latest.md"
