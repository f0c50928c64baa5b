#!/usr/bin/python3
"""Container start cost at the lowest level (issue 5): `runc run` of /bin/true in a bundle
whose rootfs binds the host's /usr read-only (own PID, mount, IPC and UTS namespaces, a memory
limit in a cgroup, as src/agent/oci/runtime_spec.cc writes config.json), against fork/exec of
/bin/true, in the same run. Not yet through `gantry up`: the image path of the agent is not
wired (see the issue note).

Usage (root, after scripts/setup.sh): /usr/bin/python3 bench/runc_start.py [--runs 50]
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
from benchlib import pct  # noqa: E402


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="gantry-runc-bench-")
    try:
        rootfs = os.path.join(d, "bundle", "rootfs")
        for sub in ("usr", "proc", "dev", "tmp"):
            os.makedirs(os.path.join(rootfs, sub))
        for link in ("bin", "lib", "lib64", "sbin"):
            if os.path.islink("/" + link):
                os.symlink(os.readlink("/" + link), os.path.join(rootfs, link))
        runc, direct = [], []
        for i in range(args.runs):
            cid = "b%d-%d" % (os.getpid(), i)
            with open(os.path.join(d, "bundle", "config.json"), "w") as f:
                json.dump(config(rootfs, cid), f)
            t0 = time.perf_counter()
            subprocess.run(["runc", "--root", os.path.join(d, "state"), "run", "--bundle",
                            os.path.join(d, "bundle"), cid], check=True)
            runc.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            subprocess.run(["/bin/true"], check=True)
            direct.append((time.perf_counter() - t0) * 1000)
        print("| /bin/true, %d runs | p50 ms | p99 ms |" % args.runs)
        print("|---|---:|---:|")
        print("| fork/exec (subprocess.run) | %.1f | %.1f |" % (pct(direct, 50), pct(direct, 99)))
        print("| runc run (namespaces, cgroup, mounts) | %.1f | %.1f |" % (pct(runc, 50), pct(runc, 99)))
        print()
        print("runc adds %.1f ms at p50" % (pct(runc, 50) - pct(direct, 50)))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
