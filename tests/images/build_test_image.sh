#!/usr/bin/env bash
# Builds the OCI test image used by the image store's tests and the end-to-end tests: Debian
# bookworm (debootstrap minbase) with python3, plus /app/handler.py. Prints the path of
# its OCI layout (one line) on stdout; everything else goes to stderr.
#
# The layout holds three tags:
#   base    - one layer: the debootstrap rootfs. Config: Env PATH=..., WorkingDir /.
#   latest  - base + a second layer with /app/handler.py. Config: Entrypoint
#             ["/usr/bin/python3", "/app/handler.py"], Env PATH=... and GANTRY_TEST_IMAGE=1,
#             WorkingDir /app.
#   worker  - base + a layer with this repository's Python SDK in /app/sdk and the end-to-end
#             tests' image worker (tests/images/worker.py) as /app/worker.py: a RunPod-style
#             worker, as a user's image would bring one. Config: Entrypoint
#             ["/usr/bin/python3", "/app/worker.py"], Env PYTHONPATH=/app/sdk, WorkingDir /app,
#             User 1000:1000 (it runs as non-root).
# So the tags share their first layer (blob deduplication can be tested).
#
# Cached under $GANTRY_TEST_IMAGE_CACHE (default /var/cache/gantry-test-images)/<key>/oci, where
# <key> is a hash of this script: a second run prints the path in milliseconds, a change to this
# script builds a new image. Concurrent runs are serialised by a lock; a build is made aside and
# renamed into place, so an interrupted build leaves no half image behind.
# Cold: about 1-2 minutes (debootstrap downloads ~30 MB of packages from the mirror).
#
# Needs root (debootstrap), debootstrap, umoci, and the Debian mirror that apt uses (or
# $GANTRY_DEBIAN_MIRROR). scripts/setup.sh installs the tools.
set -euo pipefail

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
CACHE="${GANTRY_TEST_IMAGE_CACHE:-/var/cache/gantry-test-images}"
ROOT="$(dirname "$SELF")/../.."
# The key covers what goes into the image: this script, the worker and the SDK.
KEY="$( (cat "$SELF" "$ROOT/tests/images/worker.py";
        find "$ROOT/sdk/python/gantry" "$ROOT/sdk/python/runpod" -name '*.py' | sort | xargs cat) |
  sha256sum | cut -c1-16)"
OUT="$CACHE/$KEY"

log() { echo "build_test_image: $*" >&2; }

if [ -f "$OUT/done" ]; then
  echo "$OUT/oci"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ -f "$OUT/done" ]; then  # built by a concurrent run while this one waited
  echo "$OUT/oci"
  exit 0
fi

# The Debian mirror apt is configured with (the first one serving bookworm), else Debian's.
mirror() {
  if [ -n "${GANTRY_DEBIAN_MIRROR:-}" ]; then
    echo "$GANTRY_DEBIAN_MIRROR"
    return
  fi
  local m
  # shellcheck disable=SC2016  # apt-get's own $(FIELD) syntax
  m="$(apt-get indextargets --format '$(REPO_URI) $(CODENAME) $(TARGET_OF)' 2>/dev/null |
    awk '$2 == "bookworm" && $3 == "deb" { print $1; exit }')"
  echo "${m:-http://deb.debian.org/debian/}"
}

for tool in debootstrap umoci; do
  command -v "$tool" >/dev/null || { log "$tool is missing: run scripts/setup.sh"; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { log "needs root (debootstrap)"; exit 1; }

WORK="$CACHE/.build-$KEY-$$"
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS

MIRROR="$(mirror)"
log "debootstrap bookworm from $MIRROR into $WORK/rootfs"
if ! debootstrap --variant=minbase --include=python3 bookworm "$WORK/rootfs" "$MIRROR" \
  >"$WORK/debootstrap.log" 2>&1; then
  tail -n 30 "$WORK/debootstrap.log" >&2
  exit 1
fi
# What a container does not need: package lists and caches, logs.
rm -rf "$WORK/rootfs"/var/lib/apt/lists/* "$WORK/rootfs"/var/cache/apt/* \
  "$WORK/rootfs"/var/log/*.log "$WORK/rootfs"/var/cache/debconf/*-old
log "debootstrap done in $((SECONDS - start)) s"

PATH_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMG="$WORK/oci"
umoci init --layout "$IMG"
umoci new --image "$IMG:base"
umoci insert --image "$IMG:base" --history.created_by "debootstrap --variant=minbase --include=python3 bookworm" \
  "$WORK/rootfs" /
umoci config --no-history --image "$IMG:base" --config.env "$PATH_ENV" --config.workingdir /

mkdir -p "$WORK/app"
cat >"$WORK/app/handler.py" <<'EOF'
print("hello from the image")
EOF
chmod 0644 "$WORK/app/handler.py"
umoci insert --image "$IMG:base" --tag latest --history.created_by "COPY app /app" "$WORK/app" /app
umoci config --no-history --image "$IMG:latest" \
  --config.entrypoint /usr/bin/python3 --config.entrypoint /app/handler.py \
  --config.env GANTRY_TEST_IMAGE=1 --config.workingdir /app
mkdir -p "$WORK/worker/sdk"
cp -r "$ROOT/sdk/python/gantry" "$ROOT/sdk/python/runpod" "$WORK/worker/sdk/"
find "$WORK/worker" -name __pycache__ -prune -exec rm -rf {} +
cp "$ROOT/tests/images/worker.py" "$WORK/worker/worker.py"
chmod -R a+rX "$WORK/worker"
umoci insert --image "$IMG:base" --tag worker --history.created_by "COPY sdk worker.py /app" \
  "$WORK/worker" /app
umoci config --no-history --image "$IMG:worker" \
  --config.entrypoint /usr/bin/python3 --config.entrypoint /app/worker.py \
  --config.env PYTHONPATH=/app/sdk --config.env PYTHONUNBUFFERED=1 --config.workingdir /app \
  --config.user 1000:1000
umoci gc --layout "$IMG"  # blobs of the intermediate manifests and configs

rm -rf "$WORK/rootfs" "$WORK/app" "$WORK/worker"
rm -rf "$OUT"
mv "$WORK" "$OUT"
trap - EXIT
touch "$OUT/done"
# Images of older versions of this script.
for old in "$CACHE"/????????????????; do
  if [ "$old" != "$OUT" ] && [ -f "$old/done" ]; then rm -rf "$old"; fi
done
log "built $OUT/oci (tags base, latest, worker) in $((SECONDS - start)) s; $(du -sh "$OUT/oci" | cut -f1)"
echo "$OUT/oci"
