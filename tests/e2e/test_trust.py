"""End-to-end: trust boundaries on the real binary. Keys have scopes: an invoke key calls its
endpoints and nothing else, a node key acts for its node only, and no key but an admin key
touches keys. (The worker sandbox is not built yet: see docs/security.md.)"""
import http.server
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import ADMIN_KEY, E2ETest, GANTRY


class ScopedKeysTest(E2ETest):
    def cli(self, *args, key=ADMIN_KEY):
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=key)
        return subprocess.run([GANTRY] + list(args), env=env, capture_output=True, text=True,
                              timeout=60)

    def create_key(self, *args):
        p = self.cli("keys", "create", *args)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.strip()  # the key alone on stdout

    def test_an_invoke_key_calls_its_endpoint_and_nothing_else(self):
        for ep in ("echo", "other"):
            self.server.create_endpoint({"id": ep})
        key = self.create_key("--name", "ci", "--endpoint", "echo")
        s = self.server
        self.assertEqual(s.request("POST", "/v2/echo/run", {"input": 1}, key=key).status, 200)
        self.assertEqual(s.request("GET", "/v2/echo/health", key=key).status, 200)
        r = s.request("POST", "/v2/other/run", {"input": 1}, key=key)
        self.assertEqual(r.status, 403, r)
        self.assertIn("may not call endpoint other", r.json["error"]["message"])
        # Before scopes, a key named "ci" could revoke the admin key.
        admin_id = [k["id"] for k in s.request("GET", "/v1/keys").json["keys"]
                    if k["name"] == "admin"][0]
        for method, path in (("DELETE", "/v1/keys/" + admin_id), ("GET", "/v1/keys"),
                             ("POST", "/v1/endpoints"), ("GET", "/v1/nodes"),
                             ("POST", "/v1/nodes/n1"), ("GET", "/v1/logs")):
            r = s.request(method, path, {"id": "x"} if method == "POST" else None, key=key)
            self.assertEqual(r.status, 403, (method, path, r))
        p = self.cli("keys", "ls", key=key)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("this route needs admin", p.stderr)
        # The admin key still works, and is listed with its scope.
        ls = self.cli("keys", "ls").stdout
        self.assertRegex(ls, r"admin +admin")
        self.assertRegex(ls, r"ci +invoke +endpoints echo")

    def test_a_read_key_reads_and_a_deploy_key_deploys(self):
        read = self.create_key("--scope", "read")
        deploy = self.create_key("--scope", "deploy")
        s = self.server
        self.assertEqual(s.request("POST", "/v1/endpoints", {"id": "r"}, key=read).status, 403)
        self.assertEqual(s.request("POST", "/v1/endpoints", {"id": "d"}, key=deploy).status, 201)
        self.assertEqual(s.request("GET", "/v1/endpoints/d", key=read).status, 200)
        self.assertEqual(s.request("POST", "/v2/d/run", {"input": 1}, key=read).status, 403)
        self.assertEqual(s.request("POST", "/v2/d/run", {"input": 1}, key=deploy).status, 200)
        self.assertEqual(s.request("POST", "/v1/keys", {"name": "x"}, key=deploy).status, 403)

    def test_a_node_key_acts_for_its_own_node_only(self):
        key = self.create_key("--name", "gpu-b", "--scope", "node", "--node", "gpu-b")
        token = os.path.join(self.server.data_dir, "gpu-b.key")
        with open(token, "w") as f:
            f.write(key + "\n")
        # Posing as another node: refused at registration, and the agent says why.
        p = subprocess.run([GANTRY, "agent", "--server", self.server.url, "--token-file", token,
                            "--node-id", "gpu-a", "--fake-gpus", "H100:1",
                            "--data-dir", os.path.join(self.server.data_dir, "agent-a")],
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertIn("403", p.stderr)
        self.assertEqual(self.server.request("GET", "/v1/nodes").json["nodes"], [])
        r = self.server.request("GET", "/v1/nodes/gpu-a/assignment", key=key)
        self.assertEqual(r.status, 403, r)
        # Its own node: registered.
        agent = subprocess.Popen([GANTRY, "agent", "--server", self.server.url,
                                  "--token-file", token, "--node-id", "gpu-b",
                                  "--fake-gpus", "H100:1",
                                  "--data-dir", os.path.join(self.server.data_dir, "agent-b")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            self.wait_for(lambda: [n for n in self.server.request("GET", "/v1/nodes").json["nodes"]
                                   if n["id"] == "gpu-b"], what="node gpu-b", timeout=30)
        finally:
            agent.terminate()
            _, err = agent.communicate(timeout=30)
        self.assertNotIn("warning: --token", err)  # a file is how a token should come

    def test_no_token_for_the_agent_is_a_usage_error(self):
        env = {k: v for k, v in os.environ.items() if k != "GANTRY_TOKEN"}
        p = subprocess.run([GANTRY, "agent", "--server", self.server.url], env=env,
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--token-file", p.stderr)


class _Hook(http.server.BaseHTTPRequestHandler):
    calls = []

    def do_POST(self):
        _Hook.calls.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


class WebhookTargetTest(E2ETest):
    """A client picks a webhook's URL: it must not make the server call its own loopback, the
    cloud's metadata address or the private network."""

    def test_a_webhook_to_loopback_is_refused_by_address_and_by_name(self):
        hook = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
        threading.Thread(target=hook.serve_forever, daemon=True).start()
        _Hook.calls = []
        try:
            self.server.create_endpoint({"id": "wh"})
            self.worker("wh", "echo.py")
            port = hook.server_address[1]
            r = self.server.request("POST", "/v2/wh/run", {
                "input": {}, "webhook": "http://127.0.0.1:%d/hook" % port})
            self.assertEqual(r.status, 400, r)
            self.assertIn("127.0.0.1 is a loopback address", r.json["error"]["message"])
            r = self.server.request("POST", "/v2/wh/run", {
                "input": {}, "webhook": "http://169.254.169.254/latest/meta-data/"})
            self.assertEqual(r.status, 400, r)
            # A name is judged by what it resolves to, when the webhook is sent.
            r = self.server.request("POST", "/v2/wh/run", {
                "input": {"x": 1}, "webhook": "http://localhost:%d/hook" % port})
            self.assertEqual(r.status, 200, r)
            self.server.wait_status("wh", r.json["id"], {"COMPLETED"}, timeout=30)
            def refusal_logged():
                with open(os.path.join(self.server.data_dir, "server.log"), errors="replace") as f:
                    return re.search(r"refused: localhost: \S+ is a loopback address", f.read())
            self.wait_for(refusal_logged, what="the refusal logged")
            time.sleep(0.5)
            self.assertEqual(_Hook.calls, [])
        finally:
            hook.shutdown()


class BadClientTest(E2ETest):
    """Nothing unauthenticated may cost the server more than a small, fixed amount."""
    # A low descriptor limit: the server caps its connections from it.
    server_prefix = ("prlimit", "--nofile=160:160")

    def raw(self):
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=5)
        self.addCleanup(s.close)
        return s

    def test_an_upload_without_a_key_is_refused_before_its_body(self):
        s = self.raw()
        s.sendall(b"POST /v2/x/run HTTP/1.1\r\nHost: x\r\nContent-Length: 20971520\r\n\r\n")
        s.sendall(b"a" * 1000)  # a slow upload: the rest never comes
        reply = s.recv(4096).decode(errors="replace")
        self.assertTrue(reply.startswith("HTTP/1.1 413"), reply)
        # With a key, the same size gets through to the route (which has its own 10 MiB cap).
        s = self.raw()
        s.sendall(("POST /v2/x/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: 16\r\n\r\n{\"input\": {}}   " % ADMIN_KEY).encode())
        reply = s.recv(4096).decode(errors="replace")
        self.assertTrue(reply.startswith("HTTP/1.1 404"), reply)  # no endpoint x

    def test_fifty_slow_uploads_without_a_key_are_refused_before_their_bodies(self):
        # 50 clients at once, each announcing 20 MiB (no key, or a wrong one) and sending it
        # slowly until answered: were their bodies read, the server would hold 1000 MiB.
        pid = self.server.proc.pid  # prlimit execs the server: the same process
        before = vm_kib(pid, "VmRSS")
        results = []

        def upload(i):
            s = self.raw()
            s.settimeout(30)
            auth = "" if i % 2 else "Authorization: Bearer gk_not_a_key_of_this_server_00\r\n"
            s.sendall(("POST /v2/x/run HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n"
                       % (auth, 20 << 20)).encode())
            sent, reply = 0, ""
            try:
                while sent < 20 << 20 and not reply:
                    if select.select([s], [], [], 0.02)[0]:
                        reply = s.recv(4096).decode(errors="replace")
                        break
                    s.sendall(b"a" * (16 << 10))
                    sent += 16 << 10
            except OSError as err:  # the server closed it: its answer, if any, is there
                reply = reply or "closed: %s" % err
            results.append((reply.split("\r\n", 1)[0], sent))

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(len(results), 50)
        for status, sent in results:
            self.assertRegex(status, r"^HTTP/1.1 (401|413) ", results)
            self.assertLess(sent, 1 << 20, results)  # answered long before its body came
        grown_mb = (vm_kib(pid, "VmHWM") - before) >> 10
        self.assertLess(grown_mb, 100)
        self.assertEqual(self.server.request("GET", "/healthz", key=None).status, 200)

    def test_idle_sockets_beyond_the_descriptor_limit_do_not_lock_out_a_client(self):
        idle = []
        for _ in range(250):
            try:
                idle.append(self.raw())
            except OSError:
                break  # the kernel's backlog is full: also what a flood looks like
        self.assertGreater(len(idle), 100)
        started = time.time()
        r = self.server.request("GET", "/healthz", key=None, timeout=10)
        self.assertEqual(r.status, 200, r)
        self.assertLess(time.time() - started, 5)
        # And a real request with a key, too.
        self.assertEqual(self.server.request("GET", "/v1/endpoints").status, 200)


def vm_kib(pid, field):
    """A memory figure of `pid` from /proc/PID/status, in KiB (VmRSS: now; VmHWM: its peak)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for pid %d" % (field, pid))


class StreamFloodTest(E2ETest):
    """A worker may stream without end: a job holds at most 64 MiB and 65536 chunks of it
    (JobsOptions); past them the server refuses the worker's posts (413), and its memory stays
    bounded whatever the worker sends."""

    def test_a_worker_streaming_600_mb_is_cut_and_the_server_stays_small(self):
        self.server.create_endpoint({"id": "flood"})
        self.worker("flood", "stream_flood.py")
        pid = self.server.proc.pid
        job = self.server.request("POST", "/v2/flood/run", {"input": {"mb": 600}}).json["id"]
        # A client reads the stream as it comes; the server answers /healthz throughout.
        chunks = size = 0
        deadline = time.time() + 120
        while True:
            self.assertLess(time.time(), deadline, "the flood job did not end")
            s = self.server.request("GET", "/v2/flood/stream/" + job, timeout=30)
            self.assertEqual(s.status, 200, s)
            chunks += len(s.json["stream"])
            size += sum(len(c["output"]) for c in s.json["stream"])
            self.assertEqual(self.server.request("GET", "/healthz", key=None).status, 200)
            if s.json["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
                break
        # The worker sent ~600 MiB: the server's peak memory meanwhile is a small part of it
        # (about 200 MB here: the 64 MiB of chunks it holds, twice while a client reads them).
        peak_mb = vm_kib(pid, "VmHWM") >> 10
        self.assertLess(peak_mb, 400, "the server's peak RSS was %d MB" % peak_mb)
        st = self.server.request("GET", "/v2/flood/status/" + job, timeout=60).json
        self.assertEqual(st["status"], "COMPLETED", {k: v for k, v in st.items() if k != "output"})
        # Cut, and it says so: what the stream delivered is what the job held, 64 MiB at most.
        self.assertIn("streamCut", st)
        self.assertRegex(st["streamCut"], r"^the stream was cut after \d+ chunks")
        self.assertLessEqual(size, 64 << 20)
        self.assertGreater(chunks, 32)
        self.assertEqual(len(st["output"]), chunks)  # the job's output: the chunks it kept
        # Answering that 64 MiB output costs copies of it for a moment (its peak then was
        # about 370 MB here); they are given back.
        self.assertLess(vm_kib(pid, "VmRSS") >> 10, 400)
        self.assertEqual(self.server.request("GET", "/healthz", key=None).status, 200)


class AdminKeyTest(unittest.TestCase):
    def test_a_short_chosen_admin_key_is_refused(self):
        data = tempfile.mkdtemp(prefix="gantry-e2e-")
        try:
            p = subprocess.run([GANTRY, "server", "--listen", "127.0.0.1:0", "--data-dir", data],
                               env=dict(os.environ, GANTRY_ADMIN_KEY="secret"),
                               capture_output=True, text=True, timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("GANTRY_ADMIN_KEY is shorter than 24 characters", p.stderr)
        finally:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
