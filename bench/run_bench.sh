#!/usr/bin/env bash
# Gantry benchmark against nginx, all in one run on this machine (load generator and servers
# share the same CPUs). Builds gantry and bench_worker, starts nginx and gantry servers on
# loopback, drives them with wrk, prints a markdown table (bench/bench_report.py) and writes
# bench/results-latest.md.
#
# Usage: bench/run_bench.sh [--no-build]
# Environment (defaults in brackets):
#   DURATION    seconds per wrk run [10]
#   CONNS       connections of the concurrent runs [32]
#   WRK_THREADS wrk threads of the concurrent runs [2]
#   WORKER_THREADS  bench_worker threads per endpoint [1]
#   WORKER_MODE bench_worker --mode: async or simple [async]
#   BATCH       job-take-batch batch_size: most jobs a worker thread holds [8]
#   MEM_JOBS    jobs queued for the memory figure [100000]
#   PY_WORKERS  Python SDK workers for the optional figure (one per endpoint, round robin) [4]
#   PORT_BASE   first port tried; all ports are below 32768 [21000]
#   PHASES      which parts run, in order [nginx run sync mem]; tls: /run and nginx over HTTPS
#   RETRIES     repeats of a wrk run disturbed by other processes (>15% of the CPUs) [2]
#   QUIET_WAIT  seconds to wait for other load to settle before each wrk run [20]
#   KEEP_TMP=1  keep the temp dir (logs, wrk outputs) instead of deleting it
#   GANTRY_BIN  measure this gantry binary instead of building build/gantry (A/B runs)
# The baseline is nginx at its best on this machine: worker_processes auto (one per core).
# Every process it starts is stopped on exit (trap EXIT); every step is bounded by `timeout`,
# and a watchdog ends the whole run after 15 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
WRK_THREADS=${WRK_THREADS:-2}
WORKER_THREADS=${WORKER_THREADS:-1}
WORKER_MODE=${WORKER_MODE:-async}
BATCH=${BATCH:-8}
MEM_JOBS=${MEM_JOBS:-100000}
PY_WORKERS=${PY_WORKERS:-4}
PHASES=${PHASES:-nginx run sync mem}
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

# pick_port: sets PORT to a free loopback port below 32768 (outside the ephemeral range), each
# call a new one.
NEXT_PORT=$PORT_BASE
pick_port() {
  local p=$NEXT_PORT
  while [ $p -lt 32768 ] && ss -Hltn "( sport = :$p )" | grep -q .; do p=$((p + 1)); done
  [ $p -lt 32768 ] || { echo "no free port below 32768" >&2; exit 1; }
  NEXT_PORT=$((p + 1))
  PORT=$p
}

# ---- build ------------------------------------------------------------------------------------
GANTRY=${GANTRY_BIN:-$ROOT/build/gantry}
# The rate limits stay on, checked on every request, but 1000 times RunPod's (which would
# answer most of wrk's requests 429): the rows measure the check, not the refusal. A binary
# from before the limits ignores the variable.
export GANTRY_RATE_LIMIT_SCALE=${GANTRY_RATE_LIMIT_SCALE:-1000}
WORKER=$ROOT/build/bench/bench_worker
BUILD_NOTE="not rebuilt (--no-build)"
[ -n "${GANTRY_BIN:-}" ] && BUILD=0 && BUILD_NOTE="GANTRY_BIN=$GANTRY_BIN, not rebuilt"
if [ $BUILD = 1 ]; then
  log "building gantry and bench_worker"
  if timeout 900 ./scripts/build.sh --target gantry bench_worker >"$T/build.log" 2>&1; then
    BUILD_NOTE="built by this run"
  else
    tail -15 "$T/build.log" >&2
    # The tree is shared with people editing src/: a failed build need not stop the benchmark
    # when binaries exist, but the report says so.
    [ -x "$GANTRY" ] && [ -x "$WORKER" ] || { echo "build failed" >&2; exit 1; }
    BUILD_NOTE="BUILD FAILED, existing binaries used"
    log "build failed; measuring the existing binaries"
  fi
fi
for b in "$GANTRY" "$WORKER"; do [ -x "$b" ] || { echo "missing $b (build first)" >&2; exit 1; }; done
# Run private copies: others rebuild build/ while this runs, and every row must measure the same
# binary.
BUILT_AT=$(date -u -r "$GANTRY" '+%Y-%m-%d %H:%M:%S UTC')
mkdir -p "$T/bin"
cp "$GANTRY" "$T/bin/gantry"
cp "$WORKER" "$T/bin/bench_worker"
GANTRY=$T/bin/gantry
WORKER=$T/bin/bench_worker
for t in wrk nginx curl; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done

# ---- helpers ----------------------------------------------------------------------------------
# CPU accounting, to tell how much of the machine other programs took during a measurement
# (people share this machine: a compiler running meanwhile changes every figure).
# machine_ticks: "busy total" jiffies of all CPUs; busy = user + nice + system + steal (steal:
# time the VM lost to its host). Interrupt time is left out: loopback traffic is ours.
machine_ticks() { awk '/^cpu / {b = $2 + $3 + $4 + $9; t = b + $5 + $6 + $7 + $8; print b, t}' /proc/stat; }
# mine_ticks: CPU jiffies of this script and all its descendants (reaped children included) plus
# those of kernel threads (the block-I/O workers run our fsyncs).
mine_ticks() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root=$$ '
    { s = $0; sub(/^[0-9]+ \(.*\) /, "", s); split(s, f, " ")
      pid = $1; pp[pid] = f[2]; t[pid] = f[12] + f[13] + f[14] + f[15] }
    END { for (p in t) {
            if (p == 2 || pp[p] == 2) { sum += t[p]; continue }  # kernel threads
            q = p; n = 0
            while (q != "" && q != root && q > 1 && n++ < 64) q = pp[q]
            if (q == root) sum += t[p] }
          print sum + 0 }'
}
# other_pct B0 T0 M0 B1 T1 M1: the share of all CPUs other programs used in between.
other_pct() {
  awk -v b=$(($4 - $1)) -v t=$(($5 - $2)) -v m=$(($6 - $3)) \
    'BEGIN { x = (t > 0 ? 100 * (b - m) / t : 0); if (x < 0) x = 0; printf "%.0f", x }'
}
# cpu_begin / cpu_end LABEL: records LABEL_other_pct for the time in between.
cpu_begin() { read -r CPU_B0 CPU_T0 < <(machine_ticks); CPU_M0=$(mine_ticks); }
cpu_end() {
  local b1 t1 m1
  read -r b1 t1 < <(machine_ticks)
  m1=$(mine_ticks)
  put "${1}_other_pct" "$(other_pct "$CPU_B0" "$CPU_T0" "$CPU_M0" "$b1" "$t1" "$m1")"
}
# Waits (up to QUIET_WAIT s) until other programs use under 10% of the machine for 1 s.
wait_quiet() {
  local i b0 t0 m0 b1 t1 m1 pct=0
  for i in $(seq "${QUIET_WAIT:-20}"); do
    read -r b0 t0 < <(machine_ticks); m0=$(mine_ticks)
    sleep 1
    read -r b1 t1 < <(machine_ticks); m1=$(mine_ticks)
    pct=$(other_pct "$b0" "$t0" "$m0" "$b1" "$t1" "$m1")
    [ "$pct" -lt 10 ] && return 0
    [ "$i" = 1 ] && log "waiting for other load to settle (${pct}% of the CPUs busy elsewhere)"
  done
  log "other programs still busy (${pct}%); measuring anyway"
}

# run_wrk LABEL THREADS CONNS URL [VAR=VALUE...]: runs wrk for DURATION s with wrk_bench.lua and
# records LABEL_rps, LABEL_p50_us, LABEL_p99_us, LABEL_errors, LABEL_non2xx, LABEL_other_pct.
# A run during which other programs used over 15% of the CPUs is repeated (RETRIES times at
# most); the last one counts. "@A@" in a VAR=VALUE becomes the attempt number (0, 1, ...).
run_wrk() {
  local label=$1 threads=$2 conns=$3 url=$4 attempt other line kv
  shift 4
  for attempt in $(seq 0 "${RETRIES:-2}"); do
    wait_quiet
    log "wrk $label: -t$threads -c$conns -d${DURATION}s $url"
    cpu_begin
    local args=() a
    for a in "$@"; do args+=("${a//@A@/$attempt}"); done
    env "${args[@]}" timeout $((DURATION + 60)) wrk -t"$threads" -c"$conns" -d"${DURATION}s" --latency \
      --timeout 10s -s "$ROOT/bench/wrk_bench.lua" "$url" >"$T/wrk-$label.txt" 2>&1 || true
    cpu_end "$label"
    line=$(grep '^WRK_RESULT' "$T/wrk-$label.txt" || true)
    if [ -z "$line" ]; then
      log "wrk $label produced no result:"; cat "$T/wrk-$label.txt" >&2
      put "${label}_failed" 1
      return
    fi
    for kv in ${line#WRK_RESULT }; do
      case "$kv" in
        rps=*|p50_us=*|p99_us=*|errors=*|non2xx=*|requests=*) put "${label}_${kv%%=*}" "${kv#*=}" ;;
      esac
    done
    other=$(grep "^${label}_other_pct=" "$RES" | tail -1 | cut -d= -f2)
    log "  $line (other load: ${other}%)"
    [ "$other" -le 15 ] && break
    [ "$attempt" -lt "${RETRIES:-2}" ] && log "  other programs used ${other}% of the CPUs: repeating"
  done
  put "${label}_attempts" $((attempt + 1))
}

# start_gantry NAME [flags...]: starts a server; sets G_PID, G_PORT, G_KEY, G_DIR.
start_gantry() {
  local name=$1
  shift
  pick_port
  G_PORT=$PORT
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
# G_SCHEME: https for a server started with --tls-cert (phase_tls), verified with the test CA.
G_SCHEME=http
TLS_DIR=$ROOT/src/http/testdata
api() {
  curl -sS --fail-with-body --max-time 30 --cacert "$TLS_DIR/ca.pem" -X "$1" \
    -H "Authorization: Bearer $G_KEY" -H 'Content-Type: application/json' \
    ${3:+--data-binary "$3"} "$G_SCHEME://127.0.0.1:$G_PORT$2"
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
put commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo " + uncommitted src changes ($(git diff --shortstat HEAD -- src | sed "s/^ *//"))")"
put build "$BUILD_NOTE; build/gantry of $BUILT_AT, sha256 $(sha256sum "$GANTRY" | cut -c1-12)"
put loadavg "$(cut -d' ' -f1-3 /proc/loadavg)"
put duration "$DURATION"
put conns "$CONNS"
put wrk_threads "$WRK_THREADS"
put worker_threads "$WORKER_THREADS"
put batch "$BATCH"
put worker_mode "$WORKER_MODE"

echo '{"input":{"prompt":"hello world","n":1}}' >"$T/small.json"
$PY -c 'import json; print(json.dumps({"input": {"data": "x" * 1000}}))' >"$T/1kb.json"

# ---- nginx ------------------------------------------------------------------------------------
# start_nginx NAME SCHEME: nginx (worker_processes auto) serving a static answer about the size of
# a gantry status reply over SCHEME (http, or https with the test certificate and connections
# kept alive for a whole row: nginx's default of 1000 requests a connection would add, over
# TLS, a handshake per 1000 requests that gantry does not pay). Sets NGX_DIR, NGX_PORT, NGX_PID.
start_nginx() {
  local name=$1 scheme=$2 i listen_tls="" tls_lines="" keepalive=""
  NGX_DIR=$T/$name
  mkdir -p "$NGX_DIR/www" "$NGX_DIR/tmp"
  chmod 755 "$T" "$NGX_DIR" "$NGX_DIR/www"  # nginx's worker runs as nobody when started by root
  pick_port
  NGX_PORT=$PORT
  echo '{"id":"0b8f6d1c-3a2e-4c1b-9d7e-5f2a8c1e4b90","status":"COMPLETED","delayTime":0,"executionTime":1,"output":{"prompt":"hello world","n":1}}' >"$NGX_DIR/www/status.json"
  if [ "$scheme" = https ]; then
    listen_tls=" ssl"
    keepalive="keepalive_requests 10000000;"
    tls_lines="ssl_certificate $TLS_DIR/server.pem; ssl_certificate_key $TLS_DIR/server.key; ssl_protocols TLSv1.2 TLSv1.3;"
  fi
  cat >"$NGX_DIR/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $NGX_DIR/nginx.pid;
error_log $NGX_DIR/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $NGX_DIR/tmp/body;
  proxy_temp_path $NGX_DIR/tmp/proxy;
  fastcgi_temp_path $NGX_DIR/tmp/fastcgi;
  uwsgi_temp_path $NGX_DIR/tmp/uwsgi;
  scgi_temp_path $NGX_DIR/tmp/scgi;
  types { application/json json; }
  $keepalive
  server {
    listen 127.0.0.1:$NGX_PORT$listen_tls;
    $tls_lines
    root $NGX_DIR/www;
  }
}
EOF
  nginx -c "$NGX_DIR/nginx.conf" -p "$NGX_DIR" >"$NGX_DIR/stdout.log" 2>&1 &
  NGX_PID=$!
  PIDS+=("$NGX_PID")
  local url="$scheme://127.0.0.1:$NGX_PORT/status.json"
  for i in $(seq 100); do
    curl -sf --max-time 1 --cacert "$TLS_DIR/ca.pem" "$url" >/dev/null 2>&1 && break
    sleep 0.05
  done
  curl -sf --max-time 2 --cacert "$TLS_DIR/ca.pem" "$url" >/dev/null ||
    { tail -5 "$NGX_DIR/stdout.log" "$NGX_DIR/error.log" >&2; exit 1; }
  log "nginx ($scheme): pid $NGX_PID port $NGX_PORT ($(nproc) worker processes: worker_processes auto)"
}

phase_nginx() {
  start_nginx nginx http
  put nginx_bytes "$(wc -c <"$NGX_DIR/www/status.json")"
  run_wrk nginx_c32 "$WRK_THREADS" "$CONNS" "http://127.0.0.1:$NGX_PORT/status.json"
  run_wrk nginx_c1 1 1 "http://127.0.0.1:$NGX_PORT/status.json"
  stop "$NGX_PID"
}

# ---- /run acceptance (fsync on, then --no-fsync) ----------------------------------------------
phase_run() {
  local mode flags i
  for mode in fsync nofsync; do
    flags=()
    [ $mode = nofsync ] && flags=(--no-fsync)
    start_gantry "run-$mode" "${flags[@]+"${flags[@]}"}"
    # Every attempt of a row gets fresh endpoints ("@A@" = attempt): a queue holds at most
    # 250 000 jobs (then 429), and repeated rows would fill it.
    for i in $(seq 0 "${RETRIES:-2}"); do
      create_endpoints "${ENDPOINTS[@]/#/r$i}" "c$i"
    done
    run_wrk "run_$mode" "$WRK_THREADS" "$CONNS" "http://127.0.0.1:$G_PORT/" \
      BENCH_METHOD=POST BENCH_PATHS="$(paths_for run "${ENDPOINTS[@]/#/r@A@}")" \
      BENCH_BODY_FILE="$T/small.json" BENCH_AUTH="Bearer $G_KEY"
    # One client: the cost of one durable write per request.
    run_wrk "run_${mode}_c1" 1 1 "http://127.0.0.1:$G_PORT/" \
      BENCH_METHOD=POST BENCH_PATHS="$(paths_for run c@A@)" \
      BENCH_BODY_FILE="$T/small.json" BENCH_AUTH="Bearer $G_KEY"
    stop "$G_PID"
  done
}

# ---- TLS: /run over HTTPS against nginx over HTTPS, same certificate, kept-alive connections ---
phase_tls() {
  local i
  start_nginx nginx-tls https
  run_wrk nginx_tls_c32 "$WRK_THREADS" "$CONNS" "https://127.0.0.1:$NGX_PORT/status.json"
  run_wrk nginx_tls_c1 1 1 "https://127.0.0.1:$NGX_PORT/status.json"
  stop "$NGX_PID"
  start_gantry run-tls --tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key"
  G_SCHEME=https
  for i in $(seq 0 "${RETRIES:-2}"); do
    create_endpoints "${ENDPOINTS[@]/#/t$i}" "u$i"
  done
  run_wrk run_tls_c32 "$WRK_THREADS" "$CONNS" "https://127.0.0.1:$G_PORT/" \
    BENCH_METHOD=POST BENCH_PATHS="$(paths_for run "${ENDPOINTS[@]/#/t@A@}")" \
    BENCH_BODY_FILE="$T/small.json" BENCH_AUTH="Bearer $G_KEY"
  run_wrk run_tls_c1 1 1 "https://127.0.0.1:$G_PORT/" \
    BENCH_METHOD=POST BENCH_PATHS="$(paths_for run u@A@)" \
    BENCH_BODY_FILE="$T/small.json" BENCH_AUTH="Bearer $G_KEY"
  stop "$G_PID"
  G_SCHEME=http
}

# ---- /runsync end to end with bench_worker (batch take), then Python SDK workers ---------------
phase_sync() {
  local ep out wpids=()
  start_gantry sync
  create_endpoints "${ENDPOINTS[@]}"
  for ep in "${ENDPOINTS[@]}"; do
    register_worker "$ep" "$G_DIR/worker-$ep.env"
    ( source "$G_DIR/worker-$ep.env"
      exec timeout $((6 * DURATION + 120)) "$WORKER" --threads "$WORKER_THREADS" --batch "$BATCH" \
        --mode "$WORKER_MODE" ) \
      >"$G_DIR/worker-$ep.log" 2>&1 &
    wpids+=($!)
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
  stop "${wpids[@]}"
  for ep in "${ENDPOINTS[@]}"; do
    put "worker_${ep}_summary" "$(grep '^bench_worker:' "$G_DIR/worker-$ep.log" | tail -1 || true)"
  done
  phase_python
  stop "$G_PID"
}

# Optional: /runsync with Python SDK workers (sdk/python/examples/echo.py), on the sync server.
phase_python() {
  local py_eps=(py1 py2 py3 py4) pypids=() i ep out py_ok=1 used
  if ! [ -f sdk/python/gantry/__init__.py ] || ! [ -f sdk/python/examples/echo.py ]; then
    put py_error "sdk/python/gantry or sdk/python/examples/echo.py is missing"
    return
  fi
  [ "$PY_WORKERS" -ge 1 ] || { put py_error "PY_WORKERS=0"; return; }
  used=("${py_eps[@]:0:$((PY_WORKERS < 4 ? PY_WORKERS : 4))}")
  create_endpoints "${used[@]}"
  for i in $(seq 0 $((PY_WORKERS - 1))); do
    ep=${used[$((i % ${#used[@]}))]}
    register_worker "$ep" "$G_DIR/py-$i.env"
    ( source "$G_DIR/py-$i.env"
      export PYTHONPATH="$ROOT/sdk/python"
      exec timeout $((2 * DURATION + 90)) $PY "$ROOT/sdk/python/examples/echo.py" ) \
      >"$G_DIR/py-$i.log" 2>&1 &
    pypids+=($!)
    PIDS+=($!)
  done
  for ep in "${used[@]}"; do
    out=$(api POST "/v2/$ep/runsync?wait=15000" '{"input":{"ping":1}}' 2>&1 || true)
    case "$out" in
      *COMPLETED*) ;;
      *) py_ok=0; put py_error "warm-up runsync on $ep answered ${out:0:200}"; break ;;
    esac
  done
  if [ $py_ok = 1 ]; then
    put py_workers "$PY_WORKERS"
    run_wrk runsync_py "$WRK_THREADS" "$CONNS" "http://127.0.0.1:$G_PORT/" \
      BENCH_METHOD=POST BENCH_PATHS="$(paths_for runsync "${used[@]}")" \
      BENCH_BODY_FILE="$T/small.json" BENCH_AUTH="Bearer $G_KEY"
  else
    log "python workers did not answer; see $G_DIR/py-*.log"
    put py_log "$(tail -3 "$G_DIR/py-0.log" | tr '\n' ' ' | cut -c1-300)"
  fi
  stop "${pypids[@]}"
}

# ---- memory: MEM_JOBS queued ~1 KB jobs, no workers --------------------------------------------
phase_mem() {
  local per_thread n i wpid t0 t1
  start_gantry mem
  create_endpoints mem
  sleep 0.5
  put mem_rss_idle_kb "$(rss_kb "$G_PID")"
  per_thread=$(( (MEM_JOBS + WRK_THREADS - 1) / WRK_THREADS ))
  log "memory: queueing $MEM_JOBS jobs of ~1 KB"
  # Each wrk thread stops after per_thread answers; wrk itself only ends after -d, so it is
  # interrupted (SIGINT: it prints its summary) once the queue holds them all.
  t0=$(date +%s.%N)
  env BENCH_METHOD=POST BENCH_PATHS=/v2/mem/run BENCH_BODY_FILE="$T/1kb.json" \
    BENCH_AUTH="Bearer $G_KEY" BENCH_MAX=$per_thread \
    wrk -t"$WRK_THREADS" -c"$CONNS" -d200s --timeout 10s -s "$ROOT/bench/wrk_bench.lua" \
    "http://127.0.0.1:$G_PORT/" >"$T/wrk-mem.txt" 2>&1 &
  wpid=$!
  PIDS+=("$wpid")
  for i in $(seq 1800); do  # at most ~180 s
    sleep 0.1
    kill -0 "$wpid" 2>/dev/null || break
    if [ $((i % 5)) = 0 ] && [ "$(queued mem)" -ge "$MEM_JOBS" ]; then break; fi
  done
  t1=$(date +%s.%N)
  kill -INT "$wpid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$wpid" 2>/dev/null || break; sleep 0.1; done
  stop "$wpid"
  grep '^WRK_RESULT' "$T/wrk-mem.txt" >&2 || tail -5 "$T/wrk-mem.txt" >&2
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
  put mem_submit_s "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')"
  put mem_input_bytes "$(wc -c <"$T/1kb.json")"
  put mem_rss_kb "$(rss_kb "$G_PID")"
  put mem_hwm_kb "$(hwm_kb "$G_PID")"
  put mem_disk_kb "$(du -sk "$G_DIR/data" | cut -f1)"
  stop "$G_PID"

  # The same jobs after a restart (loaded from the store).
  log "memory: restarting on the same data dir"
  local port
  pick_port
  port=$PORT
  t0=$(date +%s.%N)
  "$GANTRY" server --listen 127.0.0.1:$port --data-dir "$G_DIR/data" >"$G_DIR/server2.log" 2>&1 &
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
}

for phase in $PHASES; do
  case "$phase" in
    nginx|run|sync|mem|tls) "phase_$phase" ;;
    *) echo "unknown phase $phase (known: nginx run sync mem tls)" >&2; exit 2 ;;
  esac
done

# ---- report -----------------------------------------------------------------------------------
$PY "$ROOT/bench/bench_report.py" "$RES" "$ROOT/bench/results-latest.md"
log "written bench/results-latest.md"
