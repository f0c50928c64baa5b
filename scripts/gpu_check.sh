#!/usr/bin/env bash
# gpu_check.sh: the one prepared check of Gantry's GPU paths, for a machine with an NVIDIA GPU.
#
#   bash scripts/gpu_check.sh
#
# What it checks and prints, each step under its own time limit (it never hangs, and it finishes
# in seconds on a machine without a GPU):
#   1. the machine: kernel, CPUs, `nvidia-smi -L`, driver version and PCIe link (if present);
#   2. the GPUs the node agent reports (NVML through DiscoverNvmlGpus: bench/gpu_inventory_probe);
#   3. the host->GPU weight upload from a forked "template child" against the pinned-copy
#      bandwidth (bench/gpu_upload, default sizes: 488 MiB, 5 runs); the bar is >= 80% of pinned;
#   4. the CUDA driver's checkpoint API (agent/snapshot/cuda_checkpoint.h): Available(), then a
#      suspend/resume of a child holding 256 MiB of GPU memory, with timings and states
#      (bench/cuda_checkpoint_probe --self-test);
#   5. the CudaCheckpointer unit tests that need no CRIU (cuda_checkpoint_test, fake driver);
#   6. a GPU container as the agent makes one: runc with the last GPU's device nodes
#      and the driver's libraries and nvidia-smi bound into a root filesystem that has only a C
#      library; nvidia-smi -L inside must list exactly one GPU
#      (runtime_spec_test RuncTest.GpuContainerSeesItsAssignedGpuOnly, GANTRY_REQUIRE_GPU=1).
#      A GPU machine without runc gets Debian's from here: before the device run, here,
#        mkdir -p .gpucarry && cp /usr/sbin/runc /lib/x86_64-linux-gnu/libseccomp.so.2 .gpucarry/
#        echo /.gpucarry/ >> .git/info/exclude
#      and carry build and .gpucarry.
# It uses the binaries already in build/ (BUILD_DIR overrides): the GPU machine may have no
# compiler and no network. Only when one is missing and cmake is there does it try to build it.
# Everything printed also goes to $OUT/gpu_check.txt when $OUT is set. Exit code: 0 if every step
# ran and passed, 1 otherwise (the summary at the end says which); a machine without a GPU gives
# 1 with "no GPU" in the summary.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
LOG=/dev/null
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT" && LOG="$OUT/gpu_check.txt"
fi

SUMMARY=()
FAILED=0

# step NAME SECONDS CMD...: runs CMD under `timeout`, prints its output, exit code and time.
step() {
  local name=$1 secs=$2
  shift 2
  echo
  echo "## $name"
  echo "\$ $*"
  local t0=$SECONDS rc=0
  timeout -k 5 "$secs" "$@" 2>&1 || rc=$?
  local took=$((SECONDS - t0))
  local what="exit $rc"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then what="TIMED OUT after ${secs}s (exit $rc)"; fi
  echo "($what, ${took}s)"
  SUMMARY+=("$name: $what")
  return "$rc"
}

# bin NAME PATH...: the first existing executable among PATHs; builds target NAME if none.
bin() {
  local name=$1
  shift
  local p
  for p in "$@"; do
    if [ -x "$p" ]; then
      echo "$p"
      return 0
    fi
  done
  if command -v cmake >/dev/null && [ -f "$BUILD_DIR/build.ninja" ]; then
    timeout -k 5 600 cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target "$name" >&2 || true
    for p in "$@"; do
      if [ -x "$p" ]; then
        echo "$p"
        return 0
      fi
    done
  fi
  return 1
}

# Kernel, CPUs, memory, NVIDIA driver: what the bandwidth figures depend on.
machine_info() {
  uname -srm
  echo "CPUs: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
  grep MemTotal /proc/meminfo
  cat /proc/driver/nvidia/version 2>/dev/null || echo "no /proc/driver/nvidia/version"
  echo "devices: $(ls /dev/nvidia* 2>/dev/null | tr '\n' ' ')"
}
export -f machine_info

main() {
  echo "# Gantry GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname)"
  echo "working tree: $(pwd), build dir: $BUILD_DIR"

  step "machine" 20 bash -c machine_info
  if command -v nvidia-smi >/dev/null; then
    step "nvidia-smi -L" 30 nvidia-smi -L || FAILED=1
    step "nvidia-smi query" 30 nvidia-smi \
      --query-gpu=index,name,driver_version,memory.total,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current \
      --format=csv || FAILED=1
  else
    echo
    echo "## nvidia-smi"
    echo "nvidia-smi not found: no NVIDIA driver here"
    SUMMARY+=("nvidia-smi: not found (no GPU)")
    FAILED=1
  fi

  local p
  if p=$(bin gpu_inventory_probe "$BUILD_DIR/gpu_inventory_probe" \
    "$BUILD_DIR/bench/gpu_inventory_probe"); then
    step "agent GPU inventory (NVML)" 30 "$p" || FAILED=1
  else
    SUMMARY+=("agent GPU inventory: no gpu_inventory_probe binary in $BUILD_DIR")
    FAILED=1
  fi

  if p=$(bin gpu_upload "$BUILD_DIR/bench/gpu_upload"); then
    step "host->GPU weight upload from a forked child (bench/gpu_upload)" 300 "$p" || FAILED=1
  else
    SUMMARY+=("gpu_upload: no binary in $BUILD_DIR/bench")
    FAILED=1
  fi

  if p=$(bin cuda_checkpoint_probe "$BUILD_DIR/bench/cuda_checkpoint_probe"); then
    if step "CUDA checkpoint API available" 60 "$p"; then
      step "CUDA checkpoint self-test (suspend/resume of 256 MiB)" 180 "$p" --self-test \
        --mib 256 --timeout-ms 10000 || FAILED=1
    else
      FAILED=1
    fi
  else
    SUMMARY+=("cuda_checkpoint_probe: no binary in $BUILD_DIR/bench")
    FAILED=1
  fi

  if p=$(bin cuda_checkpoint_test "$BUILD_DIR/src/agent/snapshot/cuda_checkpoint_test"); then
    step "CudaCheckpointer unit tests (fake driver, no CRIU)" 120 "$p" \
      --gtest_filter='CudaCheckpointerTest.*' --gtest_brief=1 || FAILED=1
  else
    SUMMARY+=("cuda_checkpoint_test: no binary")
  fi

  if p=$(bin runtime_spec_test "$BUILD_DIR/src/agent/oci/runtime_spec_test"); then
    local runc
    runc=$(command -v runc || true)
    if [ -z "$runc" ] && [ -x .gpucarry/runc ]; then
      runc="$(pwd)/.gpucarry/runc"
      export LD_LIBRARY_PATH="$(pwd)/.gpucarry${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    if [ -n "$runc" ]; then
      step "GPU container: device nodes and driver libraries (runc)" 120 env GANTRY_RUNC="$runc" \
        GANTRY_REQUIRE_GPU=1 "$p" --gtest_filter='RuncTest.GpuContainerSeesItsAssignedGpuOnly' ||
        FAILED=1
    else
      SUMMARY+=("GPU container: no runc here and none carried in .gpucarry (see the header)")
      FAILED=1
    fi
  else
    SUMMARY+=("runtime_spec_test: no binary")
    FAILED=1
  fi

  echo
  echo "## summary"
  printf '%s\n' "${SUMMARY[@]}"
  echo "result: $([ "$FAILED" -eq 0 ] && echo PASS || echo 'NOT ALL PASSED')"
  return "$FAILED"
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
