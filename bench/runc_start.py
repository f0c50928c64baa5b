#!/usr/bin/python3
"""Container start cost at the lowest level: `runc run` of a program in a bundle whose
rootfs binds the host's /usr read-only (own PID, mount, IPC and UTS namespaces, a memory limit in
a cgroup, as src/agent/oci/runtime_spec.cc writes config.json), against starting the same
program directly, in the same run, alternating.

Workloads (--workload):
  true   /bin/true: the runtime's own cost.
  torch  the cold-start benchmark's handler (bench/handlers/torch_big.py: imports torch, maps a
         488 MiB model with gantry.weights, one forward pass) run once with --test_input: what a
         container worker of that handler costs to start in full (with `flashboot: false`, or
         for a GPU container; bench/container_torch.py times the fork path). The host's
         python3-torch, this repository's SDK and the handler are bound read-only into the
         container, the model directory read-write.

Usage (root, after scripts/setup.sh): /usr/bin/python3 bench/runc_start.py [--runs 50]
    [--workload true|torch]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, SDK, pct  # noqa: E402

HANDLERS = os.path.join(ROOT, "bench", "handlers")
MODEL_DIR = "/tmp/gantry-bench-models"  # the handler's default: shared with cold_start_paths.py


def config(rootfs, cid):
    caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
            "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
    return {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"],
                    "env": ["PATH=/usr/bin:/bin"], "cwd": "/", "noNewPrivileges": True,
                    "capabilities": {"bounding": caps, "effective": caps, "permitted": caps}},
        "root": {"path": rootfs, "readonly": False},
        "hostname": cid,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
        ],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")],
                  "resources": {"memory": {"limit": 256 << 20}, "pids": {"limit": 4096}},
                  "cgroupsPath": "/gantry/bench-" + cid},
    }


def workload(name):
    """(argv in the container, extra config mounts, argv on the host, host env, memory MiB)"""
    if name == "true":
        return ["/bin/true"], [], ["/bin/true"], None, 256
    test_input = '{"input": {}}'
    mounts = [{"destination": "/sdk", "type": "bind", "source": SDK, "options": ["rbind", "ro"]},
              {"destination": "/handlers", "type": "bind", "source": HANDLERS,
               "options": ["rbind", "ro"]},
              {"destination": "/models", "type": "bind", "source": MODEL_DIR,
               "options": ["rbind", "rw"]},
              # Debian resolves libblas.so.3 and friends through /etc/alternatives.
              {"destination": "/etc/alternatives", "type": "bind", "source": "/etc/alternatives",
               "options": ["rbind", "ro"]},
              {"destination": "/etc/ld.so.cache", "type": "bind", "source": "/etc/ld.so.cache",
               "options": ["bind", "ro"]}]
    inside = ["/usr/bin/python3", "/handlers/torch_big.py", "--test_input", test_input]
    host = ["/usr/bin/python3", os.path.join(HANDLERS, "torch_big.py"), "--test_input",
            test_input]
    env = dict(os.environ, PYTHONPATH=SDK, BENCH_MODEL_DIR=MODEL_DIR)
    return inside, mounts, host, env, 4096


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--workload", choices=("true", "torch"), default="true")
    args = ap.parse_args()
    inside, mounts, host, env, memory_mb = workload(args.workload)
    d = tempfile.mkdtemp(prefix="gantry-runc-bench-")
    try:
        rootfs = os.path.join(d, "bundle", "rootfs")
        for sub in ("usr", "proc", "dev", "tmp", "sdk", "handlers", "models", "etc/alternatives"):
            os.makedirs(os.path.join(rootfs, sub))
        open(os.path.join(rootfs, "etc", "ld.so.cache"), "w").close()
        for link in ("bin", "lib", "lib64", "sbin"):
            if os.path.islink("/" + link):
                os.symlink(os.readlink("/" + link), os.path.join(rootfs, link))
        if args.workload == "torch":  # builds the model file once, outside the timed runs
            os.makedirs(MODEL_DIR, exist_ok=True)
            subprocess.run(host, env=env, check=True, stdout=subprocess.DEVNULL)
        out = None if args.workload == "true" else subprocess.DEVNULL
        runc, direct = [], []
        for i in range(args.runs):
            cid = "b%d-%d" % (os.getpid(), i)
            c = config(rootfs, cid)
            c["process"]["args"] = inside
            c["process"]["env"] += ["PYTHONPATH=/sdk", "BENCH_MODEL_DIR=/models", "HOME=/tmp"]
            c["mounts"] += mounts
            c["linux"]["resources"]["memory"]["limit"] = memory_mb << 20
            with open(os.path.join(d, "bundle", "config.json"), "w") as f:
                json.dump(c, f)
            t0 = time.perf_counter()
            subprocess.run(["runc", "--root", os.path.join(d, "state"), "run", "--bundle",
                            os.path.join(d, "bundle"), cid], check=True,
                           stdout=None if os.environ.get("BENCH_DEBUG") else out)
            runc.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            subprocess.run(host, env=env, check=True, stdout=out)
            direct.append((time.perf_counter() - t0) * 1000)
        what = "/bin/true" if args.workload == "true" else "torch_big.py --test_input (one job)"
        print("| %s, %d runs | p50 ms | p99 ms |" % (what, args.runs))
        print("|---|---:|---:|")
        print("| started directly (subprocess.run) | %.1f | %.1f |" % (pct(direct, 50),
                                                                       pct(direct, 99)))
        print("| runc run (namespaces, cgroup, mounts) | %.1f | %.1f |" % (pct(runc, 50),
                                                                          pct(runc, 99)))
        print()
        print("runc adds %.1f ms at p50" % (pct(runc, 50) - pct(direct, 50)))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
