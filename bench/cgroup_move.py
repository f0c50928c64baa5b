#!/usr/bin/python3
"""Moving a just-forked process into a cgroup v1 memory controller: through its
`cgroup.procs` file against through its `tasks` file (the one thread a fork leaves), in the
same run, interleaved. Why: the agent moves container workers forked inside their template's
container into their cgroups on a fork's path; writing to cgroup.procs takes the kernel's cgroup
threadgroup lock, whose first writer after a quiet moment waits for an RCU grace period. So each
move comes after a pause (--gap-ms), as a fork after an idle spell does; with no pause the lock
stays in its slow state and moves are cheap.

Usage (root, cgroup v1 memory hierarchy at /sys/fs/cgroup/memory):
    /usr/bin/python3 bench/cgroup_move.py [--runs 100] [--gap-ms 100]
"""
import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import pct  # noqa: E402

HIERARCHY = "/sys/fs/cgroup/memory"


def paused_child():
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    return pid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--gap-ms", type=int, default=100)
    args = ap.parse_args()
    if not os.path.exists(HIERARCHY + "/tasks"):
        sys.exit("no cgroup v1 memory hierarchy at " + HIERARCHY)
    base = "%s/gantry-bench-move-%d" % (HIERARCHY, os.getpid())
    os.makedirs(base + "/a")
    res = {"cgroup.procs": [], "tasks": []}
    try:
        for _ in range(args.runs):
            for name in res:
                pid = paused_child()
                time.sleep(args.gap_ms / 1000)
                t0 = time.perf_counter()
                with open("%s/a/%s" % (base, name), "w") as f:
                    f.write(str(pid))
                res[name].append((time.perf_counter() - t0) * 1000)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    finally:
        os.rmdir(base + "/a")
        os.rmdir(base)
    print("| move of a just-forked process into a memory cgroup (%d moves each, %d ms apart) "
          "| p50 ms | p99 ms | max ms |" % (args.runs, args.gap_ms))
    print("|---|---:|---:|---:|")
    for name, times in res.items():
        print("| write its pid to `%s` | %.2f | %.2f | %.2f |"
              % (name, pct(times, 50), pct(times, 99), max(times)))


if __name__ == "__main__":
    main()
