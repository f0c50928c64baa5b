#!/usr/bin/python3
"""Cold-start paths benchmark: time from request to first response of an endpoint
scaled to zero whose handler imports torch and loads a 488 MiB model (bench/handlers/
torch_big.py), over N starts per path, all in one run on one `gantry up`:

  direct       the handler started directly (python3 handler.py --test_input): the baseline
  full         scale from zero, flashboot off: process start, import torch, map the model
  full-torch   the same with the model read by torch.load() instead of mapped (most handlers)
  fork         scale from zero with a ready template: a fork of it
  restore-lazy scale from zero with no template but its snapshot (the template was killed):
               CRIU lazy restore of the template, then a fork
  restore-full the same with a full CRIU restore (gantry up --restore-mode full)
  warm         an idle worker that is already running

Every request runs one forward pass over all the weights. Then memory: PSS (smaps_rollup) of
four concurrent workers forked from one template, against one fully started worker.

Usage (from the repository root, after scripts/setup.sh and scripts/build.sh):
    /usr/bin/python3 bench/cold_start_paths.py [--starts 20] [--port 21500]
Prints markdown tables; standard library only.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, SDK, GantryUp, pct, pss_kb, wait_worker_pids  # noqa: E402

HANDLER = os.path.join(ROOT, "bench", "handlers", "torch_big.py")


class Bench:
    def __init__(self, args):
        self.args = args
        self.models = tempfile.mkdtemp(prefix="gantry-bench-models-")
        self.up = GantryUp(args.port, ["--restore-mode", "lazy"])
        self.env = {"BENCH_MODEL_DIR": self.models}

    def endpoint(self, id, **spec):
        body = {"id": id, "idleTimeout": 0, "workersMax": 1, "memoryMb": 4096,
                "env": dict(self.env, **spec.pop("env", {})),
                "worker": {"command": ["/usr/bin/python3", HANDLER]}}
        body.update(spec)
        r = self.up.call("POST", "/v1/endpoints", body)
        assert "error" not in r, r

    def start_once(self, endpoint, i):
        """One request to an endpoint at zero workers: (ms, start path, output)."""
        self.up.wait_zero(endpoint)
        self.wait_pids(0)  # the last worker's process has exited: a quiet machine
        t0 = time.perf_counter()
        r = self.up.call("POST", "/v2/%s/runsync?wait=120000" % endpoint, {"input": {"i": i}})
        ms = (time.perf_counter() - t0) * 1000
        assert r["status"] == "COMPLETED", r
        w = [w for w in self.up.workers(endpoint) if w["id"] == r["workerId"]][0]
        return ms, w["startPath"], r["output"]

    def path(self, endpoint, name, runs, before=None):
        times, paths = [], {}
        for i in range(runs):
            if before:
                before()
            ms, path, _ = self.start_once(endpoint, i)
            times.append(ms)
            paths[path] = paths.get(path, 0) + 1
        print("  %-13s p50 %7.1f ms  p99 %7.1f ms  paths %s" %
              (name, pct(times, 50), pct(times, 99), paths), file=sys.stderr)
        return times, paths

    def wait_template(self, endpoint, snapshot=True, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            t = self.up.template(endpoint)
            if t and t["state"] == "ready" and (t["snapshot"] or not snapshot):
                return t
            time.sleep(0.05)
        raise RuntimeError("no ready template for " + endpoint)

    def kill_template(self, endpoint):
        """Kills the template and waits until the agent has reaped it: only the snapshot is
        left, so the next start takes the restore path."""
        t = self.wait_template(endpoint)
        os.kill(t["pid"], signal.SIGKILL)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.up.template(endpoint)["state"] == "" and not os.path.exists(
                    "/proc/%d" % t["pid"]):
                return
            time.sleep(0.01)
        raise RuntimeError("the template did not go away")

    def direct(self, runs, load="mmap"):
        times = []
        env = dict(os.environ, PYTHONPATH=SDK, BENCH_LOAD=load, **self.env)
        for i in range(runs):
            t0 = time.perf_counter()
            subprocess.run(["/usr/bin/python3", HANDLER, "--test_input",
                            json.dumps({"input": {"i": i}})], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times.append((time.perf_counter() - t0) * 1000)
        print("  %-13s p50 %7.1f ms  p99 %7.1f ms" % ("direct-" + load, pct(times, 50),
                                                      pct(times, 99)), file=sys.stderr)
        return times

    def memory(self):
        """PSS of 4 concurrent forked workers (and their template) vs one fully started one."""
        self.endpoint("mem-full", flashboot=False)
        self.wait_pids(0)
        job = self.up.call("POST", "/v2/mem-full/run", {"input": {"hold": 4}})
        pids = self.wait_pids(1)
        time.sleep(1.5)  # its forward pass is done: every weight was read
        full = pss_kb(pids[0])
        self.up.call("GET", "/v2/mem-full/status/" + job["id"])
        self.up.wait_zero("mem-full")

        self.endpoint("mem-fork", workersMax=4, scalerType="REQUEST_COUNT", scalerValue=1,
                      idleTimeout=2)
        self.up.call("POST", "/v2/mem-fork/runsync?wait=120000", {"input": {}})
        tpl = self.wait_template("mem-fork", snapshot=False)
        self.up.wait_zero("mem-fork")
        self.wait_pids(0)
        for _ in range(4):
            self.up.call("POST", "/v2/mem-fork/run", {"input": {"hold": 6}})
        pids = self.wait_pids(4)
        time.sleep(2.5)
        children = [pss_kb(p) for p in pids]
        template = pss_kb(tpl["pid"])
        paths = [w["startPath"] for w in self.up.workers("mem-fork") if w["state"] != "STOPPED"]
        return full, children, template, paths

    def wait_pids(self, n, timeout=60):
        """The pids of the n workers running the handler (templates left out)."""
        return wait_worker_pids(HANDLER, n, timeout)

    def run(self):
        n = self.args.starts
        res = {}
        print("cold-start paths, %d starts each" % n, file=sys.stderr)
        # The model file is built once, before anything is timed.
        self.direct(1)
        self.direct(1, load="torch")
        res["direct"] = self.direct(n)
        self.endpoint("full", flashboot=False)
        res["full"] = self.path("full", "full", n)
        self.endpoint("full-torch", flashboot=False, env={"BENCH_LOAD": "torch"})
        res["full-torch"] = self.path("full-torch", "full-torch", n)
        self.endpoint("fast")
        self.start_once("fast", -1)  # a full start; the template comes up beside it
        self.wait_template("fast")
        res["fork"] = self.path("fast", "fork", n)
        res["restore-lazy"] = self.path("fast", "restore-lazy", n,
                                        before=lambda: self.kill_template("fast"))
        # Warm: one idle worker that stays.
        self.endpoint("warm", workersMin=1, idleTimeout=3600)
        times = []
        for i in range(n + 1):
            t0 = time.perf_counter()
            r = self.up.call("POST", "/v2/warm/runsync", {"input": {"i": i}})
            assert r["status"] == "COMPLETED", r
            if i:
                times.append((time.perf_counter() - t0) * 1000)
        res["warm"] = (times, {"warm": n})
        print("  %-13s p50 %7.1f ms  p99 %7.1f ms" % ("warm", pct(times, 50), pct(times, 99)),
              file=sys.stderr)
        self.up.call("DELETE", "/v1/endpoints/warm")
        res["memory"] = self.memory()
        # The same snapshot, restored in full: the agent restarts with --restore-mode full.
        self.up.restart(["--restore-mode", "full"])
        self.wait_template("fast")  # restored at the agent's start
        res["restore-full"] = self.path("fast", "restore-full", n,
                                        before=lambda: self.kill_template("fast"))
        return res

    def close(self):
        self.up.close()
        subprocess.run(["rm", "-rf", self.models])


def report(res, n):
    direct = pct(res["direct"], 50)
    full = pct(res["full"][0], 50)
    print("| path (%d starts each; handler imports torch, 488 MiB model) | p50 ms | p99 ms |"
          " full start p50 / this p50 | start paths seen |" % n)
    print("|---|---:|---:|---:|---|")
    print("| direct process start (`python3 handler.py --test_input`), baseline | %.0f | %.0f |"
          " %.2f | - |" % (direct, pct(res["direct"], 99), full / direct))
    labels = [("full", "full start (scale from zero, flashboot off)"),
              ("full-torch", "full start, model read by `torch.load` instead of mapped"),
              ("fork", "fork from the template"),
              ("restore-lazy", "snapshot restore (lazy pages) + fork"),
              ("restore-full", "snapshot restore (full) + fork"),
              ("warm", "idle warm worker")]
    for key, label in labels:
        times, paths = res[key]
        p50 = pct(times, 50)
        print("| %s | %.0f | %.0f | %.1f | %s |" % (
            label, p50, pct(times, 99), full / p50,
            ", ".join("%s %d" % kv for kv in sorted(paths.items()))))
    full_kb, children, template, paths = res["memory"]
    print()
    print("| memory (PSS, after one forward pass each) | MiB |")
    print("|---|---:|")
    print("| one fully started worker | %.0f |" % (full_kb / 1024))
    print("| four workers forked from one template (start paths: %s), together | %.0f |"
          % (", ".join(sorted(paths)), sum(children) / 1024))
    print("| ... and their template | %.0f |" % (template / 1024))
    print("| four forked workers / one full worker | %.2fx |" % (sum(children) / full_kb))
    print("| four forked workers + template / one full worker | %.2fx |"
          % ((sum(children) + template) / full_kb))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--port", type=int, default=21500)
    args = ap.parse_args()
    b = Bench(args)
    try:
        res = b.run()
    finally:
        b.close()
    report(res, args.starts)


if __name__ == "__main__":
    main()
