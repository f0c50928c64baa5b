#!/usr/bin/python3
"""What the worker sandbox costs a cold start (agent/sandbox.h): the torch handler of
cold_start_paths.py (imports torch, maps a 488 MiB model) started in full and forked from its
template, by an agent that gives the endpoint a user of its own and each worker a network
namespace of its own (the default as root), by one with users of their own but the host's
network (--host-network), and by one started with --insecure-same-user --host-network (workers
as the agent's user on its network, as before the sandbox), against the handler run directly.
The modes alternate in rounds, each on a fresh `gantry up`, so that drift on this shared machine
falls on all.

Usage (from the repository root, as root, after scripts/setup.sh and scripts/build.sh):
    /usr/bin/python3 bench/sandbox_cost.py [--starts 10] [--rounds 2] [--port 21600]
Prints a markdown table; standard library only.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import GantryUp, pct  # noqa: E402
from cold_start_paths import Bench  # noqa: E402

MODES = [("sandboxed", []), ("sandboxed, host network", ["--host-network"]),
         ("same-user, host network", ["--insecure-same-user", "--host-network"])]


class SandboxBench(Bench):
    def __init__(self, args, extra):
        self.args = args
        self.models = args.models
        self.up = GantryUp(args.port, extra)
        self.env = {"BENCH_MODEL_DIR": self.models}

    def close(self):
        self.up.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--port", type=int, default=21600)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: workers get users of their own only under a root agent")
    # The model, built once by root and readable by every worker's user.
    args.models = tempfile.mkdtemp(prefix="gantry-bench-models-")
    os.chmod(args.models, 0o755)
    res = {"direct": []}
    for mode, _ in MODES:
        res[mode] = {"full": ([], {}), "fork": ([], {})}
    try:
        for r in range(args.rounds):
            for mode, extra in MODES:
                print("round %d, %s" % (r + 1, mode), file=sys.stderr)
                b = SandboxBench(args, extra)
                try:
                    if not res["direct"]:
                        b.direct(1)  # builds the model file before anything is timed
                    if mode == MODES[0][0]:
                        res["direct"] += b.direct(args.starts)
                    b.endpoint("full", flashboot=False)
                    times, paths = b.path("full", "full", args.starts)
                    res[mode]["full"][0].extend(times)
                    for k, v in paths.items():
                        res[mode]["full"][1][k] = res[mode]["full"][1].get(k, 0) + v
                    b.endpoint("fast")
                    b.start_once("fast", -1)
                    b.wait_template("fast", snapshot=False)
                    times, paths = b.path("fast", "fork", args.starts)
                    res[mode]["fork"][0].extend(times)
                    for k, v in paths.items():
                        res[mode]["fork"][1][k] = res[mode]["fork"][1].get(k, 0) + v
                finally:
                    b.close()
    finally:
        os.system("rm -rf " + args.models)
    n = args.starts * args.rounds
    direct = pct(res["direct"], 50)
    print("| start (%d each; torch + 488 MiB model) | p50 ms | p99 ms | p50 over direct |"
          " start paths seen |" % n)
    print("|---|---:|---:|---:|---|")
    print("| direct process start, baseline | %.0f | %.0f | - | - |" %
          (direct, pct(res["direct"], 99)))
    for path in ("full", "fork"):
        for mode, _ in MODES:
            times, paths = res[mode][path]
            print("| %s, %s | %.0f | %.0f | %+.0f ms | %s |" % (
                path, mode, pct(times, 50), pct(times, 99), pct(times, 50) - direct,
                ", ".join("%s %d" % kv for kv in sorted(paths.items()))))


if __name__ == "__main__":
    main()
