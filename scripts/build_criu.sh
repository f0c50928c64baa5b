#!/usr/bin/env bash
# Installs CRIU >= 4.1 as /usr/local/lib/gantry/criu (one executable file), built from Debian
# trixie's upstream source tarball. Debian 12 ships CRIU 3.17, which fails on kernels >= 6.13
# ("vdso: Unexpected rt vDSO area bounds" on this kernel).
# Safe to run twice: exits at once when the installed binary already reports >= 4.1.
#
# CRIU caches what it finds out about the kernel in RUNDIR/criu.kdat, but only where RUNDIR is a
# tmpfs; without the cache every criu call probes the kernel again (see bench/RESULTS.md,
# "Cold-start paths", the 09:52 run). /run is
# not a tmpfs on some hosts (this VM), so RUNDIR is /run where it is a tmpfs, else /dev/shm.
#
# Environment: CRIU_DEST (default /usr/local/lib/gantry/criu), JOBS (default 2).
set -euo pipefail

DEST="${CRIU_DEST:-/usr/local/lib/gantry/criu}"
JOBS="${JOBS:-2}"
SRC_LIST=/etc/apt/sources.list.d/gantry-trixie-src.sources
BUILD_DEPS=(
  build-essential pkgconf libbsd-dev libcap-dev libgnutls28-dev libnet1-dev libnftables-dev
  libnl-3-dev libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler protobuf-compiler uuid-dev
  python3-protobuf curl xz-utils
)

log() { echo "build_criu: $*"; }

# Prints "MAJOR MINOR" of `$1 --version` ("Version: 4.1.1"), nothing if it does not run.
criu_version() {
  "$1" --version 2>/dev/null | sed -n 's/^Version: *\([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p' |
    head -n1
}

# True if the binary $1 reports a version >= 4.1.
version_ok() {
  local v major minor
  v="$(criu_version "$1")"
  [ -n "$v" ] || return 1
  read -r major minor <<<"$v"
  [ "$major" -gt 4 ] || { [ "$major" -eq 4 ] && [ "$minor" -ge 1 ]; }
}

is_tmpfs() { [ "$(stat -f -c %T "$1" 2>/dev/null)" = tmpfs ]; }
RUNDIR=/run
if ! is_tmpfs /run && is_tmpfs /dev/shm; then RUNDIR=/dev/shm; fi
STAMP="$DEST.rundir"   # the RUNDIR the installed binary was built with

if [ -x "$DEST" ] && version_ok "$DEST" && [ "$(cat "$STAMP" 2>/dev/null || echo /run)" = "$RUNDIR" ]; then
  log "$DEST is already CRIU $("$DEST" --version | sed -n 's/^Version: *//p') (kdat cache in $RUNDIR); nothing to do"
  exit 0
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

# deb-src for trixie on the mirror the machine already uses (deb-src only: no binary package of
# trixie can be installed through it).
MIRROR="$(sed -n 's/^URIs: *\(\S*\/debian\)\/\?$/\1/p' /etc/apt/sources.list.d/debian.sources \
  2>/dev/null | head -n1)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
WANT_LIST="Types: deb-src
URIs: $MIRROR
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
if [ ! -f "$SRC_LIST" ] || [ "$(cat "$SRC_LIST")" != "$WANT_LIST" ]; then
  log "adding deb-src for trixie ($MIRROR) as $SRC_LIST"
  echo "$WANT_LIST" | $SUDO tee "$SRC_LIST" >/dev/null
fi

# Refresh only our source's index (fast, and leaves the other lists alone).
log "updating the trixie source index"
$SUDO apt-get update -qq -o Dir::Etc::sourceparts=- \
  -o Dir::Etc::sourcelist="$SRC_LIST" -o APT::Get::List-Cleanup=0

log "installing build dependencies"
if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  "${BUILD_DEPS[@]}" >/dev/null; then
  log "apt-get install failed; updating all package lists and retrying"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${BUILD_DEPS[@]}" >/dev/null
fi

WORK="$(mktemp -d /tmp/gantry-criu.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

log "downloading the criu source package from trixie into $WORK"
# The .dsc and the Debian tarball may 404 on the mirror; the upstream tarball is all we need.
apt-get source --download-only criu/trixie >apt-source.log 2>&1 || true
ORIG="$(ls criu_*.orig.tar.* 2>/dev/null | head -n1 || true)"
if [ -z "$ORIG" ]; then
  # --print-uris lines: 'URL' FILE SIZE SHA256:HASH
  line="$(apt-get source --print-uris criu/trixie 2>/dev/null | grep -E "\.orig\.tar\." |
    head -n1 || true)"
  if [ -z "$line" ]; then
    cat apt-source.log >&2
    log "ERROR: apt knows no criu source package in trixie"
    exit 1
  fi
  url="$(echo "$line" | awk '{print $1}' | tr -d "'")"
  ORIG="$(echo "$line" | awk '{print $2}')"
  hash="$(echo "$line" | awk '{print $4}')"
  log "apt-get source did not fetch it; downloading $url"
  curl -fsSL --retry 3 -o "$ORIG" "$url"
  if [[ "$hash" == SHA256:* ]]; then
    echo "${hash#SHA256:}  $ORIG" | sha256sum -c --quiet -
  fi
fi
log "unpacking $ORIG"
mkdir src
tar -xf "$ORIG" -C src --strip-components=1

log "building (make -j$JOBS RUNDIR=$RUNDIR criu; about a minute)"
T0=$(date +%s)
make -C src -j"$JOBS" RUNDIR="$RUNDIR" criu >build.log 2>&1 || {
  tail -n 40 build.log >&2
  log "ERROR: make failed"
  exit 1
}
log "built in $(($(date +%s) - T0)) s"

if ! version_ok src/criu/criu; then
  log "ERROR: the built binary does not report version >= 4.1: $(src/criu/criu --version 2>&1)"
  exit 1
fi
$SUDO install -d -m 0755 "$(dirname "$DEST")"
$SUDO install -m 0755 src/criu/criu "$DEST"
echo "$RUNDIR" | $SUDO tee "$STAMP" >/dev/null
log "installed $DEST (CRIU $("$DEST" --version | sed -n 's/^Version: *//p'))"
