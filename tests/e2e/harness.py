"""End-to-end harness: starts the real build/gantry server and real Python workers.

Standard library only; run with /usr/bin/python3. Every wait is bounded.
"""
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GANTRY = os.environ.get("GANTRY_BIN", os.path.join(ROOT, "build", "gantry"))
SDK = os.path.join(ROOT, "sdk", "python")
HANDLERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "handlers")
PYTHON = "/usr/bin/python3"
ADMIN_KEY = "gk_e2e_admin_key_0123456789"
# What hostile workers try (fork bombs, connections), shared with the test image's worker.
ATTEMPTS = os.path.join(ROOT, "tests", "images", "attempts.py")


class Response:
    def __init__(self, status, body, headers):
        self.status = status
        self.raw = body
        self.headers = headers
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "Response(%d, %r)" % (self.status, self.raw[:300])


class Server:
    """A gantry server process on a free port with its own data dir."""

    def __init__(self, data_dir=None, extra_args=(), command="server", prefix=(), env=None,
                 ca_file=None):
        """command: "server" (workers started by the tests) or "up" (with the agent). prefix:
        a command the server runs under (e.g. prlimit). env: more environment for it. ca_file:
        the CA that request() verifies an https:// server with."""
        self.env = dict(env or {})
        self.ssl_context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="gantry-e2e-")
        self.extra_args = list(extra_args)
        self.prefix = list(prefix)
        self.command = command
        self.proc = None
        self.url = None
        self.port = None

    def start(self, port=None):
        """Starts the server; a restart keeps the port, so running workers reconnect."""
        if port is None:
            port = self.port or 0
        env = dict(os.environ, GANTRY_ADMIN_KEY=ADMIN_KEY, **self.env)
        with open(os.path.join(self.data_dir, "server.log"), "ab") as log:
            self.proc = subprocess.Popen(
                self.prefix + [GANTRY, self.command, "--listen", "127.0.0.1:%d" % port, "--data-dir",
                 self.data_dir] + self.extra_args,
                stdout=subprocess.PIPE, stderr=log, env=env)
        deadline = time.time() + 10
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError("server exited: see %s/server.log" % self.data_dir)
            m = re.search(r"listening on (https?://[\d.]+:(\d+))", line)
            if m:
                self.url, self.port = m.group(1), int(m.group(2))
                return self
        raise RuntimeError("server did not start")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stdout.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def request(self, method, path, body=None, key=ADMIN_KEY, headers=None, timeout=30,
                raw_body=None):
        if self.url.startswith("https://"):
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if key is not None:
            h["Authorization"] = "Bearer " + key
        data = raw_body if raw_body is not None else (
            json.dumps(body).encode() if body is not None else None)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            return Response(r.status, r.read().decode(errors="replace"), dict(r.getheaders()))
        finally:
            conn.close()

    def create_endpoint(self, spec):
        r = self.request("POST", "/v1/endpoints", spec)
        assert r.status == 201, r
        return r.json

    def register_worker(self, endpoint):
        r = self.request("POST", "/v1/endpoints/%s/workers" % endpoint)
        assert r.status == 201, r
        return r.json

    def start_worker(self, endpoint, handler, extra_env=None, log_dir=None):
        """A worker process of `handler` (in tests/e2e/handlers) for `endpoint`; its output
        goes to worker-ID.log in `log_dir` (default: the data directory)."""
        reg = self.register_worker(endpoint)
        env = dict(os.environ)
        env.update(reg["env"])
        env["PYTHONPATH"] = SDK
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra_env or {})
        with open(os.path.join(log_dir or self.data_dir, "worker-%s.log" % reg["workerId"]),
                  "ab") as log:
            proc = subprocess.Popen([PYTHON, os.path.join(HANDLERS, handler)], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.worker_id = reg["workerId"]
        proc.secret = reg["env"]["RUNPOD_AI_API_KEY"]
        return proc

    def wait_status(self, endpoint, job_id, statuses, timeout=20):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = self.request("GET", "/v2/%s/status/%s" % (endpoint, job_id))
            if last.status == 200 and last.json["status"] in statuses:
                return last.json
            time.sleep(0.05)
        raise AssertionError("job %s never reached %s; last %r\n%s"
                             % (job_id, statuses, last, self.log_tails()))

    def log_tails(self, lines=40):
        """The last lines of the server's log and of each worker's it started, for a failure
        message (the data directory is removed after the test)."""
        out = []
        for name in sorted(os.listdir(self.data_dir)):
            if name == "server.log" or (name.startswith("worker-") and name.endswith(".log")):
                with open(os.path.join(self.data_dir, name), errors="replace") as f:
                    tail = f.read().splitlines()[-lines:]
                out.append("---- %s (last %d lines)\n%s" % (name, len(tail), "\n".join(tail)))
        return "\n".join(out)


def pids_with_env(name, value):
    """Pids of the live processes whose environment holds name=value (from /proc/PID/environ: a
    worker's identity is in its environment, not on its command line)."""
    want = ("%s=%s" % (name, value)).encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                if want in f.read().split(b"\0") and proc_state(int(d)) not in (None, "Z"):
                    out.append(int(d))
        except OSError:
            pass
    return out


def proc_state(pid):
    """The state letter of `pid` from /proc, None when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def kill_worker(proc, sig=signal.SIGKILL):
    """Kills the worker and its heartbeat child (its whole session)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


class E2ETest(unittest.TestCase):
    server_args = ()
    server_prefix = ()
    command = "server"

    def setUp(self):
        self.server = Server(extra_args=self.server_args, command=self.command,
                             prefix=self.server_prefix).start()
        self.workers = []

    def tearDown(self):
        for w in self.workers:
            kill_worker(w)
        self.server.stop()
        if not os.environ.get("GANTRY_E2E_KEEP"):
            shutil.rmtree(self.server.data_dir, ignore_errors=True)

    def wait_for(self, pred, timeout=20, what="condition"):
        """pred()'s first true value, polled every 50 ms; fails the test after `timeout` s."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = pred()
            if v:
                return v
            time.sleep(0.05)
        self.fail("timed out waiting for " + what)

    def node(self):
        """The one node of `gantry up`; {} until its agent has registered."""
        nodes = self.server.request("GET", "/v1/nodes").json["nodes"]
        self.assertLessEqual(len(nodes), 1)
        if not nodes:
            return {}
        return self.server.request("GET", "/v1/nodes/" + nodes[0]["id"]).json

    def template(self, endpoint):
        """The node's template (or snapshot) report of `endpoint`; None if it has none."""
        return next((t for t in self.node().get("templates", []) if t["endpointId"] == endpoint),
                    None)

    def ready_template(self, endpoint, snapshot=False, timeout=60):
        """The endpoint's template once it is ready (and, with `snapshot`, checkpointed)."""
        return self.wait_for(lambda: (lambda t: t if t and t["state"] == "ready" and
                                      (t["snapshot"] or not snapshot) else None)(
                                          self.template(endpoint)),
                             what="a ready template" + (" with a snapshot" if snapshot else ""),
                             timeout=timeout)

    def live(self, endpoint):
        """The endpoint's workers that are not stopped."""
        ws = self.server.request("GET", "/v1/endpoints/%s/workers" % endpoint).json["workers"]
        return [w for w in ws if w["state"] != "STOPPED"]

    def scale_to_zero(self, endpoint):
        self.wait_for(lambda: self.live(endpoint) == [], what="scale to zero")

    def worker_report(self, worker_id):
        """The worker as /v1/workers shows it, once its agent has reported how it started (a
        forked worker may answer its first job before the agent's next status)."""
        return self.wait_for(lambda: next(
            (w for w in self.server.request("GET", "/v1/workers").json["workers"]
             if w["id"] == worker_id and w["startPath"]), None),
            what="the start path of " + worker_id)

    def admin_cli(self, *args):
        """`gantry ARGS` against this test's server with the admin key."""
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY)
        return subprocess.run([GANTRY] + list(args), env=env, capture_output=True, text=True,
                              timeout=120)

    def deploy_bundle(self, handler_dir, toml):
        """Deploys a bundle of handler_dir's handler.py, ATTEMPTS and a gantry.toml of `toml`
        (made in a temporary directory, removed when the test ends); asserts it deployed."""
        d = tempfile.mkdtemp(prefix="gantry-bundle-")
        self.addCleanup(shutil.rmtree, d, True)
        shutil.copy(os.path.join(handler_dir, "handler.py"), d)
        shutil.copy(ATTEMPTS, d)
        with open(os.path.join(d, "gantry.toml"), "w") as f:
            f.write(toml)
        p = self.admin_cli("deploy", d)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def worker(self, endpoint, handler, **kw):
        w = self.server.start_worker(endpoint, handler, **kw)
        self.workers.append(w)
        return w


def tcp_service(host):
    """A TCP service on `host` (a thread) at a free port below 32768 that sends "host-secret" to
    whoever connects: what a worker must not reach. (socket, port); close the socket to end it."""
    for _ in range(100):
        port = random.randint(20000, 32000)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, port))
        except OSError:
            s.close()
            continue
        s.listen(8)

        def loop(s=s):
            while True:
                try:
                    c, _ = s.accept()
                except OSError:
                    return
                with c:
                    c.sendall(b"host-secret")

        threading.Thread(target=loop, daemon=True).start()
        return s, port
    raise RuntimeError("no free port")
