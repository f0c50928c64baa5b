#!/usr/bin/python3
"""Scale-from-zero benchmark: time from request to first response for the echo Python
worker when the endpoint has no worker, over N starts, with the phase breakdown; and, in the
same run, the same handler started directly (python3 handler.py --test_input ...).

Templates are off here (`gantry up --no-templates`): this measures the full start path.

Usage (from the repository root, after scripts/build.sh):
    /usr/bin/python3 bench/cold_start.py [--starts 20]
Prints a markdown table; standard library only.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchlib import ROOT, GantryUp, pct

HANDLER = os.path.join(ROOT, "examples", "echo", "handler.py")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--port", type=int, default=21400)
    args = ap.parse_args()
    # Full starts only: templates are measured by bench/cold_start_paths.py.
    up = GantryUp(args.port, ["--no-templates"])
    call = up.call

    try:
        call("POST", "/v1/endpoints", {"id": "cold", "idleTimeout": 0,
                                       "worker": {"command": ["/usr/bin/python3", HANDLER]}})
        e2e, phases = [], {"received": [], "spawned": [], "ready": [], "waited": []}
        for i in range(args.starts):
            deadline = time.time() + 30
            while time.time() < deadline:  # wait for zero workers
                ws = call("GET", "/v1/endpoints/cold/workers")["workers"]
                if all(w["state"] == "STOPPED" for w in ws):
                    break
                time.sleep(0.02)
            t0 = time.perf_counter()
            r = call("POST", "/v2/cold/runsync", {"input": {"i": i}})
            e2e.append((time.perf_counter() - t0) * 1000)
            assert r["status"] == "COMPLETED", r
            w = [w for w in call("GET", "/v1/endpoints/cold/workers")["workers"]
                 if w["id"] == r["workerId"]][0]["coldStart"]
            phases["received"].append(w["receivedMs"])
            phases["spawned"].append(w["spawnedMs"])
            phases["ready"].append(w["readyMs"])
            phases["waited"].append(r["coldStart"]["waitedMs"])
        direct = []
        for i in range(args.starts):
            t0 = time.perf_counter()
            subprocess.run(["/usr/bin/python3", HANDLER, "--test_input",
                            json.dumps({"input": {"i": i}})],
                           env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "sdk", "python")),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            direct.append((time.perf_counter() - t0) * 1000)
    finally:
        up.close()

    print("| scale from zero, echo Python worker (%d starts) | p50 ms | p99 ms |" % args.starts)
    print("|---|---:|---:|")
    print("| request -> first response (runsync, client side) | %.1f | %.1f |"
          % (pct(e2e, 50), pct(e2e, 99)))
    for name, label in (("received", "placed -> agent received"),
                        ("spawned", "placed -> process spawned"),
                        ("ready", "placed -> ready (first job-take)"),
                        ("waited", "job's cold-start wait (submitted -> worker ready)")):
        print("| %s | %.1f | %.1f |" % (label, pct(phases[name], 50), pct(phases[name], 99)))
    print("| same handler started directly (`python3 handler.py --test_input`) | %.1f | %.1f |"
          % (pct(direct, 50), pct(direct, 99)))
    print()
    print("platform overhead at p50 (scale-from-zero minus direct start): %.1f ms"
          % (pct(e2e, 50) - pct(direct, 50)))


if __name__ == "__main__":
    main()
