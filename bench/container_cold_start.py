#!/usr/bin/python3
"""Container cold start (issue 5): time from request to first response of an image endpoint
scaled to zero, with the image already pulled and unpacked on the node, against the same handler
(tests/images/worker.py with the same SDK) as a process worker, in the same run on one
`gantry up` (templates off, so both are full starts).

Usage (root, after scripts/setup.sh and scripts/build.sh):
    /usr/bin/python3 bench/container_cold_start.py [--starts 20] [--port 21800]
`podman run` of the image is not measured: podman is not installed by scripts/setup.sh (it is
not needed by Gantry); machine-notes row 1b has its 300-550 ms on this VM.
"""
import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, SDK, GantryUp, pct  # noqa: E402

IMAGES = os.path.join(ROOT, "tests", "images")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--port", type=int, default=21800)
    args = ap.parse_args()
    reg_port = random.randint(22000, 30000)
    reg_dir = tempfile.mkdtemp(prefix="gantry-bench-registry-")
    subprocess.run(["bash", os.path.join(IMAGES, "registry.sh"), "start", str(reg_port), reg_dir],
                   check=True)
    up = None
    try:
        subprocess.run(["bash", os.path.join(IMAGES, "registry.sh"), "push", str(reg_port),
                        "bench/worker:1", "worker"], check=True, stdout=subprocess.DEVNULL)
        up = GantryUp(args.port, ["--no-templates"])
        image = "127.0.0.1:%d/bench/worker:1" % reg_port
        up.call("POST", "/v1/endpoints", {"id": "ctr", "image": image, "idleTimeout": 0,
                                          "memoryMb": 512})
        up.call("POST", "/v1/endpoints", {
            "id": "proc", "idleTimeout": 0, "memoryMb": 512,
            "worker": {"command": ["/usr/bin/python3", os.path.join(IMAGES, "worker.py")],
                       "env": {"PYTHONPATH": SDK}}})
        # The first start pulls and unpacks the image: not timed.
        t0 = time.perf_counter()
        r = up.call("POST", "/v2/ctr/runsync?wait=300000", {"input": {}}, timeout=320)
        assert r["status"] == "COMPLETED", r
        first = (time.perf_counter() - t0) * 1000
        res = {"ctr": [], "proc": []}
        for i in range(args.starts):
            for ep in ("ctr", "proc"):  # interleaved: both see the same machine
                up.wait_zero(ep)
                time.sleep(0.3)
                t0 = time.perf_counter()
                r = up.call("POST", "/v2/%s/runsync" % ep, {"input": {"i": i}})
                res[ep].append((time.perf_counter() - t0) * 1000)
                assert r["status"] == "COMPLETED", r
    finally:
        if up:
            up.close()
        subprocess.run(["bash", os.path.join(IMAGES, "registry.sh"), "stop", str(reg_port),
                        reg_dir])
        shutil.rmtree(reg_dir, ignore_errors=True)
    print("| scale from zero, Python worker (%d starts each) | p50 ms | p99 ms |" % args.starts)
    print("|---|---:|---:|")
    print("| process worker | %.0f | %.0f |" % (pct(res["proc"], 50), pct(res["proc"], 99)))
    print("| container worker (image on the node; runc, overlay, namespaces) | %.0f | %.0f |"
          % (pct(res["ctr"], 50), pct(res["ctr"], 99)))
    print("| first start of the container, with pull and unpack | %.0f | - |" % first)
    print()
    print("container adds %.0f ms at p50 over the process path"
          % (pct(res["ctr"], 50) - pct(res["proc"], 50)))


if __name__ == "__main__":
    main()
