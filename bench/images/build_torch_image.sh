#!/usr/bin/env bash
# Builds the container cold-start benchmark's torch image (bench/container_torch.py): Debian
# bookworm (debootstrap minbase) with python3-torch, this repository's Python SDK in /app/sdk and
# the cold-start handler bench/handlers/torch_big.py as /app/torch_big.py. Prints the path of its
# OCI layout (one line, tag "torch") on stdout; everything else goes to stderr.
# Config: Entrypoint ["/usr/bin/python3", "/app/torch_big.py"], Env PYTHONPATH=/app/sdk and
# BENCH_MODEL_DIR=/runpod-volume/models (the model file lives in a named volume), User 1000:1000.
#
# Cached under $GANTRY_BENCH_IMAGE_CACHE (default /var/cache/gantry-bench-images)/<key>/oci, <key>
# a hash of this script, the handler and the SDK. Cold: several minutes (debootstrap downloads
# torch and its dependencies, ~400 MB). Needs root, debootstrap and umoci (scripts/setup.sh).
set -euo pipefail

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
ROOT="$(dirname "$SELF")/../.."
CACHE="${GANTRY_BENCH_IMAGE_CACHE:-/var/cache/gantry-bench-images}"
# shellcheck source=../../tests/images/image_lib.sh
source "$ROOT/tests/images/image_lib.sh"

KEY="$( (cat "$SELF" "$ROOT/bench/handlers/torch_big.py";
        find "$ROOT/sdk/python/gantry" "$ROOT/sdk/python/runpod" -name '*.py' | sort | xargs cat) |
  sha256sum | cut -c1-16)"

build() {  # $1: the work directory; leaves the layout in $1/oci
  local work="$1" img="$1/oci"
  debootstrap_rootfs "$work/rootfs" python3,python3-torch
  umoci init --layout "$img"
  umoci new --image "$img:torch"
  umoci insert --image "$img:torch" --history.created_by "debootstrap --include=python3-torch" \
    "$work/rootfs" /
  mkdir -p "$work/app/sdk"
  cp -r "$ROOT/sdk/python/gantry" "$ROOT/sdk/python/runpod" "$work/app/sdk/"
  find "$work/app" -name __pycache__ -prune -exec rm -rf {} +
  cp "$ROOT/bench/handlers/torch_big.py" "$work/app/torch_big.py"
  chmod -R a+rX "$work/app"
  umoci insert --image "$img:torch" --history.created_by "COPY sdk torch_big.py /app" \
    "$work/app" /app
  umoci config --no-history --image "$img:torch" \
    --config.entrypoint /usr/bin/python3 --config.entrypoint /app/torch_big.py \
    --config.env "$PATH_ENV" --config.env PYTHONPATH=/app/sdk \
    --config.env PYTHONUNBUFFERED=1 --config.env BENCH_MODEL_DIR=/runpod-volume/models \
    --config.workingdir /app --config.user 1000:1000
  umoci gc --layout "$img"
  rm -rf "$work/rootfs" "$work/app"
}

cached_image "$CACHE" "$KEY" build
