#!/usr/bin/env bash
# A local OCI registry for tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1, plain
# HTTP, storage on disk.
#
#   registry.sh start PORT DIR [USER:PASSWORD]
#       Starts the registry on 127.0.0.1:PORT with its config, data, log and pid file in DIR, and
#       returns once it answers on /v2/ (or fails, quoting its log). With USER:PASSWORD, every
#       request needs HTTP basic auth with them (htpasswd, bcrypt). Use a port below 32768
#       (outside the ephemeral range, which starts at 32768 here).
#   registry.sh stop PORT DIR
#       Stops the registry started with DIR (SIGTERM, then SIGKILL after 5 s). Safe to run twice.
#   registry.sh push PORT NAME:TAG [SRC_TAG] [USER:PASSWORD]
#       Pushes tag SRC_TAG (default latest) of the test image (build_test_image.sh, built first
#       if not cached) to 127.0.0.1:PORT/NAME:TAG.
#
# The registry runs in the background, detached from the caller (its own session); `stop` ends
# it by the pid in DIR/registry.pid. Needs docker-registry, skopeo, curl (scripts/setup.sh).
set -euo pipefail

HERE="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
REGISTRY_BIN="${GANTRY_DOCKER_REGISTRY:-/usr/bin/docker-registry}"

die() {
  echo "registry.sh: $*" >&2
  exit 1
}

usage() { die "usage: registry.sh start PORT DIR [USER:PASS] | stop PORT DIR | push PORT NAME:TAG [SRC_TAG] [USER:PASS]"; }

# A bcrypt hash of $1 (glibc's libcrypt does bcrypt; the registry accepts only bcrypt).
bcrypt() {
  local salt
  salt="$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9./' | head -c 22)"
  PW="$1" SALT="$salt" perl -e 'print crypt($ENV{PW}, "\$2b\$05\$" . $ENV{SALT})'
}

cmd_start() {
  local port="$1" dir="$2" creds="${3:-}"
  [ -x "$REGISTRY_BIN" ] || die "$REGISTRY_BIN is missing: run scripts/setup.sh"
  mkdir -p "$dir/data"
  dir="$(readlink -f "$dir")"
  if [ -f "$dir/registry.pid" ] && kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null; then
    die "a registry from $dir is already running (pid $(cat "$dir/registry.pid"))"
  fi
  local auth=""
  if [ -n "$creds" ]; then
    local hash
    hash="$(bcrypt "${creds#*:}")"
    # shellcheck disable=SC2016  # a literal "$2b$"
    [ "${hash:0:4}" = '$2b$' ] || die "cannot make a bcrypt hash (libcrypt)"
    printf '%s:%s\n' "${creds%%:*}" "$hash" >"$dir/htpasswd"
    auth="auth:
  htpasswd:
    realm: gantry-test
    path: $dir/htpasswd"
  fi
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
$auth
EOF
  setsid "$REGISTRY_BIN" serve "$dir/config.yml" </dev/null >"$dir/registry.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/registry.pid"
  # Up when /v2/ answers: 200 without auth, 401 with it.
  for _ in $(seq 1 200); do
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)"
    if [ "$code" = 200 ] || [ "$code" = 401 ]; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$dir/registry.log" >&2
      die "the registry exited at start (port $port taken?)"
    fi
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  tail -n 20 "$dir/registry.log" >&2
  die "the registry did not answer on 127.0.0.1:$port within 10 s"
}

cmd_stop() {
  local dir="$2"
  [ -f "$dir/registry.pid" ] || return 0
  local pid
  pid="$(cat "$dir/registry.pid")"
  # Only a process that is this registry (its command line names this config).
  if grep -qs "$dir/config.yml" "/proc/$pid/cmdline" 2>/dev/null ||
    grep -qs "$(readlink -f "$dir")/config.yml" "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      # Gone, or a zombie waiting for PID 1 to reap it.
      state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
      [ -z "$state" ] || [ "$state" = Z ] && break
      sleep 0.05
    done
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
    if [ -n "$state" ] && [ "$state" != Z ]; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$dir/registry.pid"
}

cmd_push() {
  local port="$1" ref="$2" src_tag="${3:-latest}" creds="${4:-}"
  local layout
  layout="$(bash "$HERE/build_test_image.sh")"
  local args=(--insecure-policy copy --quiet --dest-tls-verify=false)
  [ -n "$creds" ] && args+=(--dest-creds "$creds")
  skopeo "${args[@]}" "oci:$layout:$src_tag" "docker://127.0.0.1:$port/$ref" >&2
}

[ $# -ge 3 ] || usage
case "$1" in
  start) cmd_start "$2" "$3" "${4:-}" ;;
  stop) cmd_stop "$2" "$3" ;;
  push) cmd_push "$2" "$3" "${4:-}" "${5:-}" ;;
  *) usage ;;
esac
