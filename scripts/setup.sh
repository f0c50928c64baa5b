#!/usr/bin/env bash
# Installs every system dependency of Gantry from Debian packages. Safe to run twice.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build ccache pkgconf git
  clang-format  # scripts/check_format.sh (a test of the fast tier)
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libsqlite3-dev sqlite3 libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev
  # gantry.toml (src/cli/toml.cc): toml++, TOML 1.0, used header-only.
  libtomlplusplus-dev
  python3 python3-torch curl procps
  nginx-light wrk
  # OCI images. runc's recommended criu is left out: Debian 12's is broken here, and
  # build_criu.sh builds one. debootstrap verifies bookworm with debian-archive-keyring (only a
  # Recommends of it); tests/images/build_test_image.sh needs both. crun is preferred where it
  # runs containers (the agent probes it at start and falls back to runc).
  runc crun umoci skopeo docker-registry debootstrap debian-archive-keyring
  # Workers' network namespaces (src/agent/net): the node's firewall chains.
  iptables
  # tests/vm: a VM with cgroup v2 alone (this host is hybrid), booted with Debian's kernel.
  qemu-system-x86 busybox-static kmod
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# RunPod's official JavaScript SDK, for tests/e2e/test_runpod_js.py: the pinned version of
# tests/e2e/js/package-lock.json, with the machine's Node.js and npm (Debian's only where the
# machine has none: they would replace a newer one).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
js_dir="$(dirname "$0")/../tests/e2e/js"
if [ ! -f "$js_dir/node_modules/.package-lock.json" ] ||
   [ "$js_dir/package-lock.json" -nt "$js_dir/node_modules/.package-lock.json" ]; then
  (cd "$js_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
bash "$(dirname "$0")/build_criu.sh"
bash "$(dirname "$0")/../tests/vm/run_in_vm.sh" --prepare
echo "setup: all dependencies present"
