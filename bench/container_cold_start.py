#!/usr/bin/python3
"""Container cold start: time from request to first response of an image endpoint
scaled to zero, with the image already pulled and unpacked on the node, against the same handler
(tests/images/worker.py with the same SDK) as a process worker, in the same run on one
`gantry up`. Four endpoints, starts interleaved: container and process, each in full
(`flashboot: false`) and forked from its template (for the container: a worker forked inside
the template's container, docs/containers.md). Each start path is checked on the worker
(`startPath`).

Usage (root, after scripts/setup.sh and scripts/build.sh):
    /usr/bin/python3 bench/container_cold_start.py [--starts 20] [--port 21800]
When podman is installed (`apt-get install --no-install-recommends podman`; scripts/setup.sh
does not install it, Gantry does not need it), the same run also times one local test job
(`worker.py --test_input`) started three ways: directly as a process, with `runc run` of the
unpacked image through Gantry's bundle layout is not separable here, so with `podman run`
(runc, host network, the rlimits this VM allows: nofile above 20000 fails here) against the
process.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (REGISTRY_SH, ROOT, SDK, GantryUp, LocalRegistry,  # noqa: E402
                      pct)

IMAGES = os.path.join(ROOT, "tests", "images")


def podman_runs(image, runs):
    """One local test job per run: directly, and with podman run of the image."""
    conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
    conf.write('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n')
    conf.close()
    env = dict(os.environ, CONTAINERS_CONF=conf.name)
    job = ["--test_input", '{"input": {"op": "whoami"}}']
    subprocess.run(["podman", "pull", "-q", "--tls-verify=false", image], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    out = {"process": [], "podman run": []}
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(["/usr/bin/python3", os.path.join(IMAGES, "worker.py")] + job,
                           env=dict(os.environ, PYTHONPATH=SDK), check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out["process"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            subprocess.run(["podman", "run", "--rm", "--runtime", "runc", "--network", "host",
                            "--cgroup-manager", "cgroupfs", image] + job, env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out["podman run"].append((time.perf_counter() - t0) * 1000)
    finally:
        subprocess.run(["podman", "rmi", "-f", image], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        os.unlink(conf.name)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--port", type=int, default=21800)
    args = ap.parse_args()
    local = {}
    with LocalRegistry() as registry:
        subprocess.run(["bash", REGISTRY_SH, "push", str(registry.port), "bench/worker:1",
                        "worker"], check=True, stdout=subprocess.DEVNULL)
        up = GantryUp(args.port)
        try:
            image = "127.0.0.1:%d/bench/worker:1" % registry.port
            process = {"command": ["/usr/bin/python3", os.path.join(IMAGES, "worker.py")],
                       "env": {"PYTHONPATH": SDK}}
            for ep, spec in (("ctr", {"image": image, "flashboot": False}),
                             ("ctrf", {"image": image}),
                             ("proc", {"worker": process, "flashboot": False}),
                             ("procf", {"worker": process})):
                up.call("POST", "/v1/endpoints", dict(spec, id=ep, idleTimeout=0, memoryMb=512))
            # The first start pulls and unpacks the image: not timed. The first start of each
            # endpoint with templates makes its template.
            t0 = time.perf_counter()
            r = up.call("POST", "/v2/ctr/runsync?wait=300000", {"input": {}}, timeout=320)
            assert r["status"] == "COMPLETED", r
            first = (time.perf_counter() - t0) * 1000
            for ep in ("ctrf", "procf"):
                r = up.call("POST", "/v2/%s/runsync" % ep, {"input": {}})
                assert r["status"] == "COMPLETED", r
                up.wait_ready_template(ep)
            paths = {"ctr": "full", "ctrf": "fork", "proc": "full", "procf": "fork"}
            res = up.interleaved_starts(paths, args.starts)
        finally:
            up.close()
        if shutil.which("podman"):
            local = podman_runs(image, args.starts)
    print("| scale from zero, Python worker (%d starts each) | p50 ms | p99 ms |" % args.starts)
    print("|---|---:|---:|")
    names = {"proc": "process worker, full start",
             "ctr": "container worker, full start (image on the node; runc, overlay, namespaces)",
             "procf": "process worker forked from its template",
             "ctrf": "container worker forked from its template inside its container"}
    for ep in ("proc", "ctr", "procf", "ctrf"):
        print("| %s | %.0f | %.0f |" % (names[ep], pct(res[ep], 50), pct(res[ep], 99)))
    print("| first start of the container, with pull and unpack | %.0f | - |" % first)
    print()
    print("full start: container adds %.0f ms at p50 over the process path"
          % (pct(res["ctr"], 50) - pct(res["proc"], 50)))
    print("fork: container adds %.0f ms at p50 over the process path"
          % (pct(res["ctrf"], 50) - pct(res["procf"], 50)))
    if local:
        print()
        print("| one local test job (`worker.py --test_input`), %d runs each | p50 ms | p99 ms |"
              % args.starts)
        print("|---|---:|---:|")
        for name in ("process", "podman run"):
            print("| %s | %.0f | %.0f |" % (name, pct(local[name], 50), pct(local[name], 99)))


if __name__ == "__main__":
    main()
