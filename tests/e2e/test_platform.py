"""End-to-end on `gantry up`: the server with its in-process agent starts, scales and stops
real worker processes."""
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from harness import ADMIN_KEY, E2ETest, GANTRY, HANDLERS, PYTHON, ROOT, pids_with_env


def handler(name):
    return [PYTHON, os.path.join(HANDLERS, name)]


class UpTest(E2ETest):
    command = "up"
    server_args = ("--ping-interval-ms", "500", "--stop-grace-ms", "1500")

    def endpoint(self, id, script, **spec):
        body = {"id": id, "worker": {"command": handler(script)}}
        body.update(spec)
        return self.server.create_endpoint(body)

    def worker_list(self, endpoint):
        return self.server.request("GET", "/v1/endpoints/%s/workers" % endpoint).json["workers"]

    def test_scale_from_zero_and_back_to_zero(self):
        self.endpoint("echo", "echo.py", idleTimeout=1)
        self.assertEqual(self.live("echo"), [])
        r = self.server.request("POST", "/v2/echo/runsync", {"input": {"x": 1}})
        self.assertEqual(r.json["status"], "COMPLETED", r)
        self.assertEqual(r.json["output"], {"echo": {"x": 1}})
        # The job records that it waited for a cold start, and for how long.
        self.assertEqual(r.json["coldStart"]["workerId"], r.json["workerId"])
        self.assertGreaterEqual(r.json["coldStart"]["waitedMs"], 0)
        ws = self.worker_list("echo")
        self.assertEqual(len(ws), 1)
        cs = ws[0]["coldStart"]
        # The four phases were recorded, in order.
        self.assertTrue(0 <= cs["receivedMs"] <= cs["spawnedMs"] <= cs["readyMs"], cs)
        self.assertEqual(ws[0]["startPath"], "full")
        # Its process runs with its identity in its environment.
        self.assertTrue(pids_with_env("RUNPOD_POD_ID", ws[0]["id"]), "no process of the worker")
        # gantry ps shows the worker with its start path and phases.
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY)
        ps = subprocess.run([GANTRY, "ps", "echo"], env=env, capture_output=True, text=True,
                            timeout=30).stdout
        self.assertIn("RECEIVED/SPAWNED/READY MS", ps)
        self.assertIn("%d/%d/%d" % (cs["receivedMs"], cs["spawnedMs"], cs["readyMs"]), ps)
        # Back to zero after idleTimeout, and its process is gone.
        self.wait_for(lambda: self.live("echo") == [], what="scale to zero")
        self.wait_for(lambda: not pids_with_env("RUNPOD_POD_ID", ws[0]["id"]),
                      what="worker process exit")
        # Its logs were shipped: by endpoint, and by job (the worker's lines while it ran).
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY)
        out = subprocess.run([GANTRY, "logs", "echo"], env=env, capture_output=True, text=True,
                             timeout=30).stdout
        self.assertIn(r.json["id"], out)
        out = subprocess.run([GANTRY, "logs", "echo", "--job", r.json["id"]], env=env,
                             capture_output=True, text=True, timeout=30).stdout
        self.assertIn(r.json["id"] + ": started", out)
        # A new job scales it up again.
        r = self.server.request("POST", "/v2/echo/runsync", {"input": {"x": 2}})
        self.assertEqual(r.json["status"], "COMPLETED", r)
        # Metering: the stopped worker's time is billed, rounded up to the second.
        usage = self.server.request("GET", "/v1/usage?endpoint=echo").json
        stopped = [w for w in usage["workers"] if w["workerId"] == ws[0]["id"]]
        self.assertEqual(len(stopped), 1)
        self.assertGreaterEqual(stopped[0]["billedSeconds"], 1)
        self.assertIsNotNone(stopped[0]["endMs"])
        self.assertGreater(stopped[0]["cost"], 0)
        self.assertEqual(usage["jobs"][0]["jobs"], 2)

    def test_burst_never_exceeds_workers_max_and_all_complete(self):
        self.endpoint("burst", "behaviours.py", workersMax=3, idleTimeout=2,
                      scalerType="REQUEST_COUNT", scalerValue=1)
        ids = [self.server.request("POST", "/v2/burst/run",
                                   {"input": {"mode": "sleep", "seconds": 0.02}}).json["id"]
               for _ in range(200)]
        peak = 0
        stop = threading.Event()

        def watch():
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, len(self.live("burst")))
                time.sleep(0.05)

        t = threading.Thread(target=watch)
        t.start()
        try:
            deadline = time.time() + 90
            pending = set(ids)
            while pending and time.time() < deadline:
                h = self.server.request("GET", "/v2/burst/health").json
                if h["jobs"]["completed"] == 200:
                    pending.clear()
                    break
                time.sleep(0.2)
        finally:
            stop.set()
            t.join()
        self.assertEqual(self.server.request("GET", "/v2/burst/health").json["jobs"]["completed"],
                         200)
        self.assertLessEqual(peak, 3)
        self.assertGreaterEqual(peak, 2, "the burst should have scaled up")

    def test_worker_killed_mid_job_is_replaced_and_job_finished(self):
        self.endpoint("k", "behaviours.py", idleTimeout=5)
        job = self.server.request("POST", "/v2/k/run",
                                  {"input": {"mode": "sleep", "seconds": 2}}).json["id"]
        st = self.server.wait_status("k", job, {"IN_PROGRESS"})
        first = st["workerId"]
        pid = self.wait_for(lambda: subprocess.run(
            ["pgrep", "-f", "behaviours.py"], capture_output=True, text=True).stdout.split(),
            what="worker pid")
        for p in pid:
            os.kill(int(p), signal.SIGKILL)
        done = self.server.wait_status("k", job, {"COMPLETED"}, timeout=40)
        self.assertNotEqual(done["workerId"], first)
        self.assertEqual(done["output"], {"slept": 2})

    def test_hung_handler_past_execution_timeout_is_killed(self):
        self.endpoint("hang", "blocking.py", idleTimeout=30)
        job = self.server.request("POST", "/v2/hang/run",
                                  {"input": {"seconds": 120},
                                   "policy": {"executionTimeout": 5000}}).json["id"]
        st = self.server.wait_status("hang", job, {"IN_PROGRESS"})
        done = self.server.wait_status("hang", job, {"TIMED_OUT"}, timeout=15)
        self.assertIn("execution timeout", done["error"])
        # The stop is ignored (a blocked sync handler); after the grace the worker is killed.
        def gone():
            ws = [w for w in self.worker_list("hang") if w["id"] == st["workerId"]]
            return ws and ws[0]["state"] == "STOPPED"
        self.wait_for(gone, timeout=15, what="the hung worker to be stopped")

    def test_failing_start_makes_endpoint_unhealthy_with_error_visible(self):
        self.endpoint("bad", "crash_at_start.py")
        r = self.server.request("POST", "/v2/bad/run", {"input": {}})
        job = r.json["id"]

        def unhealthy():
            h = self.server.request("GET", "/v2/bad/health").json
            return h if h.get("status") == "unhealthy" else None
        h = self.wait_for(unhealthy, timeout=30, what="unhealthy")
        self.assertGreaterEqual(h["workers"]["unhealthy"], 3)
        self.assertIn("failed to start", h["lastError"])
        ep = self.server.request("GET", "/v1/endpoints/bad").json
        self.assertIn("CUDA out of memory (simulated)", "\n".join(ep["health"]["lastLog"]))
        # The job does not wait for a start that keeps failing: after maxFailedStarts (3) in a
        # row it fails with the worker's error and its last lines; and there is no hot restart
        # loop (backoff).
        st = self.server.wait_status("bad", job, {"FAILED"}, timeout=10)
        self.assertIn("failed to start", st["error"])
        self.assertIn("CUDA out of memory (simulated)", st["error"])
        n = len(self.worker_list("bad"))
        time.sleep(1.0)
        self.assertLessEqual(len(self.worker_list("bad")) - n, 1)

    def test_new_version_drains_old_workers(self):
        self.endpoint("v", "behaviours.py", idleTimeout=30)
        job = self.server.request("POST", "/v2/v/run",
                                  {"input": {"mode": "sleep", "seconds": 2}}).json["id"]
        old = self.server.wait_status("v", job, {"IN_PROGRESS"})["workerId"]
        r = self.server.request("PATCH", "/v1/endpoints/v", {"env": {"VERSION": "2"}})
        self.assertEqual(r.json["version"], 2)
        r2 = self.server.request("POST", "/v2/v/runsync", {"input": {"mode": "echo"}})
        self.assertEqual(r2.json["status"], "COMPLETED", r2)
        self.assertNotEqual(r2.json["workerId"], old, "new jobs go to new workers")
        done = self.server.wait_status("v", job, {"COMPLETED"}, timeout=20)
        self.assertEqual(done["workerId"], old, "the old worker finishes its job")
        self.wait_for(lambda: [w for w in self.worker_list("v") if w["id"] == old][0]["state"]
                      == "STOPPED", what="the old worker to drain")

    def test_fake_gpus_are_assigned_exclusively(self):
        self.server.stop()
        from harness import Server
        self.server = Server(extra_args=self.server_args + ("--fake-gpus", "H100:2"),
                             command="up").start()
        self.endpoint("g", "behaviours.py", gpuTypeIds=["A100-80GB", "H100"], workersMax=3,
                      scalerType="REQUEST_COUNT", scalerValue=1, idleTimeout=30)
        for _ in range(3):
            self.server.request("POST", "/v2/g/run", {"input": {"mode": "sleep", "seconds": 3}})
        ws = self.wait_for(lambda: (lambda l: l if len(l) >= 2 else None)(self.live("g")),
                           what="two workers")
        time.sleep(0.5)
        ws = self.live("g")
        self.assertEqual(len(ws), 2, "only two GPUs: the third worker is throttled")
        self.assertEqual(sorted(g for w in ws for g in w["gpus"]), [0, 1])
        self.assertTrue(all(w["gpuType"] == "H100" for w in ws), "fell back from A100-80GB")
        self.assertGreaterEqual(
            self.server.request("GET", "/v2/g/health").json["workers"]["throttled"], 1)


class AgentRestartTest(E2ETest):
    """A standalone `gantry agent` next to `gantry server`."""
    server_args = ("--ping-interval-ms", "500")

    def start_agent(self):
        # As a real agent runs: a node key of its own, read from a file.
        token_file = os.path.join(self.server.data_dir, "node-a.key")
        if not os.path.exists(token_file):
            r = self.server.request("POST", "/v1/keys",
                                    {"name": "node-a", "scope": "node", "node": "node-a"})
            self.assertEqual(r.status, 201, r)
            with open(token_file, "w") as f:
                f.write(r.json["key"] + "\n")
        env = dict(os.environ)
        log = open(os.path.join(self.server.data_dir, "agent.log"), "ab")
        p = subprocess.Popen([GANTRY, "agent", "--server", self.server.url,
                              "--token-file", token_file, "--node-id", "node-a",
                              "--data-dir", os.path.join(self.server.data_dir, "agent")],
                             stdout=log, stderr=log, env=env)
        log.close()
        self.agents.append(p)
        return p

    def setUp(self):
        super().setUp()
        self.agents = []

    def tearDown(self):
        for a in self.agents:
            if a.poll() is None:
                a.terminate()
                try:
                    a.wait(30)
                except subprocess.TimeoutExpired:
                    a.kill()
        super().tearDown()

    def processes_of(self, worker_id):
        out = subprocess.run(["pgrep", "-f", "behaviours.py"], capture_output=True, text=True)
        n = 0
        for pid in out.stdout.split():
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    if ("RUNPOD_POD_ID=" + worker_id).encode() in f.read():
                        n += 1
            except OSError:
                pass
        return n

    def test_restarted_agent_reconciles_without_duplicates_or_lost_jobs(self):
        self.start_agent()
        self.server.create_endpoint({"id": "ar", "idleTimeout": 30,
                                     "worker": {"command": [PYTHON, os.path.join(
                                         HANDLERS, "behaviours.py")]}})
        job = self.server.request("POST", "/v2/ar/run",
                                  {"input": {"mode": "sleep", "seconds": 3}}).json["id"]
        wid = self.server.wait_status("ar", job, {"IN_PROGRESS"}, timeout=20)["workerId"]
        self.assertEqual(self.processes_of(wid), 1)
        # The agent dies hard; its workers die with it (no orphan keeps running).
        self.agents[0].kill()
        self.agents[0].wait(10)
        deadline = time.time() + 10
        while time.time() < deadline and self.processes_of(wid) > 0:
            time.sleep(0.05)
        self.assertEqual(self.processes_of(wid), 0, "a worker outlived its agent")
        # A new agent reconciles: never two processes for one worker, and the job completes.
        self.start_agent()
        peak = 0
        deadline = time.time() + 40
        done = None
        while time.time() < deadline:
            ws = self.server.request("GET", "/v1/endpoints/ar/workers").json["workers"]
            for w in ws:
                peak = max(peak, self.processes_of(w["id"]))
            st = self.server.request("GET", "/v2/ar/status/" + job).json
            if st["status"] == "COMPLETED":
                done = st
                break
            time.sleep(0.1)
        self.assertIsNotNone(done, "the job was lost with the agent")
        self.assertEqual(done["output"], {"slept": 3})
        self.assertLessEqual(peak, 1, "duplicate worker processes")


class DeployTest(E2ETest):
    command = "up"

    def deploy(self, d):
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY,
                   HOME=self.server.data_dir)
        p = subprocess.run([GANTRY, "deploy", d], env=env, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout

    def test_deploy_uploads_only_changes_and_new_versions_drain_old_workers(self):
        d = tempfile.mkdtemp(prefix="gantry-deploy-")
        try:
            shutil.copy(os.path.join(ROOT, "examples", "echo", "handler.py"), d)
            with open(os.path.join(d, "gantry.toml"), "w") as f:
                f.write('id = "dep"\nidleTimeout = 30\n[worker]\n'
                        'command = ["/usr/bin/python3", "handler.py"]\n')
            os.makedirs(os.path.join(d, "data"))
            with open(os.path.join(d, "data", "weights.bin"), "wb") as f:
                f.write(os.urandom(300_000))
            out = self.deploy(d)
            self.assertIn("version 1", out)
            self.assertIn("3 files, 3 uploaded", out)
            r = self.server.request("POST", "/v2/dep/runsync", {"input": {"a": 1}})
            self.assertEqual(r.json.get("output"), {"echo": {"a": 1}}, r)
            first = r.json["workerId"]
            # The same files again: nothing uploaded, no new version.
            out = self.deploy(d)
            self.assertIn("version 1", out)
            self.assertIn("0 uploaded", out)
            # One file changed: only it is uploaded; a new version; the old worker drains.
            with open(os.path.join(d, "handler.py"), "a") as f:
                f.write("\n# v2\n")
            out = self.deploy(d)
            self.assertIn("version 2", out)
            self.assertIn("3 files, 1 uploaded", out)
            r = self.server.request("POST", "/v2/dep/runsync", {"input": {"a": 2}})
            self.assertEqual(r.json.get("output"), {"echo": {"a": 2}}, r)
            self.assertNotEqual(r.json["workerId"], first)
            deadline = time.time() + 20
            while time.time() < deadline:
                ws = self.server.request("GET", "/v1/endpoints/dep/workers").json["workers"]
                if [w for w in ws if w["id"] == first][0]["state"] == "STOPPED":
                    break
                time.sleep(0.1)
            else:
                self.fail("the old version's worker did not drain")
            # The bundle is unpacked on the node, with the large file intact.
            bundle = self.server.request("GET", "/v1/endpoints/dep").json["bundle"]
            unpacked = os.path.join(self.server.data_dir, "bundles", bundle, "data",
                                    "weights.bin")
            self.assertEqual(os.path.getsize(unpacked), 300_000)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_torch_example_serves_a_model_made_at_first_start(self):
        if subprocess.run([PYTHON, "-c", "import torch"], capture_output=True).returncode != 0:
            self.skipTest("Debian's python3-torch is not installed (scripts/setup.sh installs it)")
        d = os.path.join(ROOT, "examples", "torch-model")
        self.deploy(d)
        r = self.server.request("POST", "/v2/torch-model/runsync", {"input": {"seed": 7}},
                                timeout=120)
        self.assertEqual(r.json.get("status"), "COMPLETED", r)
        out = r.json["output"]
        self.assertIn(out["class"], range(4))
        self.assertAlmostEqual(sum(out["probs"]), 1.0, places=2)
        # Made once, in the endpoint's cache on the node (the agent's sandbox.h).
        if os.geteuid() == 0:
            area = "/var/lib/gantry-workers/" + hashlib.sha256(
                os.path.abspath(self.server.data_dir).encode()).hexdigest()[:12]
            made = glob.glob(os.path.join(area, "*", "cache", "weights", "mlp-16-64-4.gw"))
        else:
            made = glob.glob(os.path.join(self.server.data_dir, "workers", "cache", "weights",
                                          "mlp-16-64-4.gw"))
        self.assertEqual(len(made), 1, made)
        again = self.server.request("POST", "/v2/torch-model/runsync",
                                    {"input": {"seed": 7}}, timeout=120)
        self.assertEqual(again.json["output"], out, "same weights, same answer")

    def test_deploy_errors_are_clear(self):
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY)
        p = subprocess.run([GANTRY, "deploy", "/nonexistent-dir"], env=env, capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("directory /nonexistent-dir does not exist", p.stderr)
        r = self.server.request("POST", "/v1/endpoints", {"id": "x", "bundle": "0" * 64})
        self.assertEqual(r.status, 404, r)
        self.assertIn("bundle not uploaded", r.json["error"]["message"])


if __name__ == "__main__":
    unittest.main()
