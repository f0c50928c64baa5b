"""What the Python benchmarks share: percentiles and a `gantry up` to talk to (standard library
only; run with /usr/bin/python3 from the repository root after scripts/build.sh)."""
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
REGISTRY_SH = os.path.join(ROOT, "tests", "images", "registry.sh")
GANTRY = os.environ.get("GANTRY_BIN", os.path.join(ROOT, "build", "gantry"))  # as tests/e2e
SDK = os.path.join(ROOT, "sdk", "python")
KEY = "gk_bench_cold_start_key_0123"  # 24 characters at least (GANTRY_ADMIN_KEY)


def pct(xs, p):
    """The p-th percentile of xs (nearest rank)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def pss_kb(pid):
    """Proportional set size of `pid` in KiB (/proc/PID/smaps_rollup); 0 if unknown."""
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def worker_pids(marker):
    """Pids of live workers whose command line holds `marker` (e.g. the handler's path): the
    processes in a worker's cgroup (".../gantry/w-..."), so neither templates nor their spares
    (nor a worker's heartbeat process, whose command line is another)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if marker.encode() not in f.read():
                    continue
            with open("/proc/%s/cgroup" % d) as f:
                if "/gantry/w-" not in f.read():
                    continue
            with open("/proc/%s/stat" % d) as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(int(d))
        except OSError:
            pass
    return out


def wait_worker_pids(marker, n, timeout=60):
    """worker_pids(marker) once there are exactly n."""
    deadline = time.time() + timeout
    pids = []
    while time.time() < deadline:
        pids = worker_pids(marker)
        if len(pids) == n:
            return pids
        time.sleep(0.05)
    raise RuntimeError("expected %d workers, found %s" % (n, pids))


class LocalRegistry:
    """Debian's docker-registry on 127.0.0.1 (tests/images/registry.sh) for the length of a
    `with` block; `port` is its port."""

    def __init__(self):
        self.port = random.randint(22000, 30000)
        self.dir = tempfile.mkdtemp(prefix="gantry-bench-registry-")

    def __enter__(self):
        subprocess.run(["bash", REGISTRY_SH, "start", str(self.port), self.dir], check=True)
        return self

    def __exit__(self, *exc):
        subprocess.run(["bash", REGISTRY_SH, "stop", str(self.port), self.dir])
        shutil.rmtree(self.dir, ignore_errors=True)


class GantryUp:
    """`gantry up` on `port` with its own data dir (kept across restart()), stopped by close()."""

    def __init__(self, port, extra_args=(), data_dir=None):
        self.port = port
        self.extra_args = list(extra_args)
        self.data = data_dir or tempfile.mkdtemp(prefix="gantry-bench-")
        self.proc = None
        self.start()

    def start(self):
        env = dict(os.environ, GANTRY_ADMIN_KEY=KEY)
        self.proc = subprocess.Popen(
            [GANTRY, "up", "--listen", "127.0.0.1:%d" % self.port, "--data-dir", self.data] +
            self.extra_args, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.data, "log"), "a"), env=env)
        for _ in range(200):
            try:
                self.call("GET", "/healthz")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("gantry up did not start; see " + self.data + "/log")

    def restart(self, extra_args=None):
        self.stop()
        if extra_args is not None:
            self.extra_args = list(extra_args)
        self.start()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)

    def close(self):
        """Stops it and removes its data dir (kept, and named, with BENCH_KEEP=1)."""
        self.stop()
        if os.environ.get("BENCH_KEEP"):
            print("kept " + self.data, file=sys.stderr)
        else:
            shutil.rmtree(self.data, ignore_errors=True)

    def call(self, method, path, body=None, timeout=120):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c.request(method, path, json.dumps(body) if body is not None else None,
                  {"Authorization": "Bearer " + KEY})
        r = c.getresponse()
        out = json.loads(r.read() or b"null")
        c.close()
        return out

    def workers(self, endpoint):
        return self.call("GET", "/v1/endpoints/%s/workers" % endpoint)["workers"]

    def wait_zero(self, endpoint, timeout=60):
        """Until the endpoint has no live worker."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(w["state"] == "STOPPED" for w in self.workers(endpoint)):
                return
            time.sleep(0.02)
        raise RuntimeError("endpoint %s did not scale to zero" % endpoint)

    def node(self):
        nodes = self.call("GET", "/v1/nodes")["nodes"]
        return nodes[0] if nodes else {}

    def template(self, endpoint):
        for t in self.node().get("templates", []):
            if t["endpointId"] == endpoint:
                return t
        return None

    def wait_ready_template(self, endpoint, timeout=300):
        """Until the node has a ready template of the endpoint; returns it."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            t = self.template(endpoint)
            if t and t["state"] == "ready":
                return t
            time.sleep(0.1)
        raise RuntimeError("no ready template for " + endpoint)

    def interleaved_starts(self, paths, starts, progress=False):
        """`starts` requests to each endpoint of `paths` (endpoint -> the start path its workers
        must take), each from zero workers, interleaved so that all see the same machine; the
        times to the response in ms, by endpoint. Checks every worker's start path."""
        res = {ep: [] for ep in paths}
        for i in range(starts):
            for ep in paths:
                self.wait_zero(ep)
                time.sleep(0.3)
                t0 = time.perf_counter()
                r = self.call("POST", "/v2/%s/runsync?wait=120000" % ep, {"input": {"i": i}})
                res[ep].append((time.perf_counter() - t0) * 1000)
                assert r["status"] == "COMPLETED", r
                path = self.start_path(ep, r["workerId"])
                assert path == paths[ep], (ep, path)
            if progress:
                print("  start %d: %s" % (i, ", ".join("%s %.0f ms" % (ep, res[ep][-1])
                                                        for ep in paths)), file=sys.stderr)
        return res

    def start_path(self, endpoint, worker_id, timeout=10):
        """The worker's start path once its agent has reported it (a fork may answer before the
        agent's next status)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for w in self.workers(endpoint):
                if w["id"] == worker_id and w["startPath"]:
                    return w["startPath"]
            time.sleep(0.02)
        return None
