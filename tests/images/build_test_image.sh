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
# shellcheck source=image_lib.sh
source "$ROOT/tests/images/image_lib.sh"
# The key covers what goes into the image: these scripts, the worker and the SDK.
KEY="$( (cat "$SELF" "$ROOT/tests/images/image_lib.sh" "$ROOT/tests/images/worker.py" "$ROOT/tests/images/attempts.py";
        find "$ROOT/sdk/python/gantry" "$ROOT/sdk/python/runpod" -name '*.py' | sort | xargs cat) |
  sha256sum | cut -c1-16)"

build() {  # $1: the work directory; leaves the layout in $1/oci
  local work="$1" img="$1/oci"
  debootstrap_rootfs "$work/rootfs" python3
  umoci init --layout "$img"
  umoci new --image "$img:base"
  umoci insert --image "$img:base" \
    --history.created_by "debootstrap --variant=minbase --include=python3 bookworm" \
    "$work/rootfs" /
  umoci config --no-history --image "$img:base" --config.env "$PATH_ENV" --config.workingdir /

  mkdir -p "$work/app"
  cat >"$work/app/handler.py" <<'PY'
print("hello from the image")
PY
  chmod 0644 "$work/app/handler.py"
  umoci insert --image "$img:base" --tag latest --history.created_by "COPY app /app" \
    "$work/app" /app
  umoci config --no-history --image "$img:latest" \
    --config.entrypoint /usr/bin/python3 --config.entrypoint /app/handler.py \
    --config.env GANTRY_TEST_IMAGE=1 --config.workingdir /app
  mkdir -p "$work/worker/sdk"
  cp -r "$ROOT/sdk/python/gantry" "$ROOT/sdk/python/runpod" "$work/worker/sdk/"
  find "$work/worker" -name __pycache__ -prune -exec rm -rf {} +
  cp "$ROOT/tests/images/worker.py" "$ROOT/tests/images/attempts.py" "$work/worker/"
  chmod -R a+rX "$work/worker"
  umoci insert --image "$img:base" --tag worker --history.created_by "COPY sdk worker.py attempts.py /app" \
    "$work/worker" /app
  umoci config --no-history --image "$img:worker" \
    --config.entrypoint /usr/bin/python3 --config.entrypoint /app/worker.py \
    --config.env PYTHONPATH=/app/sdk --config.env PYTHONUNBUFFERED=1 --config.workingdir /app \
    --config.user 1000:1000
  umoci gc --layout "$img"  # blobs of the intermediate manifests and configs
  rm -rf "$work/rootfs" "$work/app" "$work/worker"
}

cached_image "$CACHE" "$KEY" build
