"""End-to-end: what a newcomer sees of workers is true and calm. README's hand-started worker
works as written, a registered worker that never starts is not `initializing` for long, and a
normal scale-down leaves no error or warning anywhere."""
import os
import re
import subprocess
import time

from harness import ADMIN_KEY, E2ETest, GANTRY, HANDLERS, PYTHON, ROOT, pids_with_env


def readme_block(containing):
    """The lines of README.md's first ```sh block that contains `containing`."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        for block in re.findall(r"```sh\n(.*?)```", f.read(), re.S):
            if containing in block:
                return block
    raise AssertionError("README.md has no sh block with " + containing)


def warnings_about(text, worker_id):
    """The WARN/ERROR lines (or lines naming a 401) of a log that mention the worker."""
    return [l for l in text.splitlines()
            if worker_id in l and re.search(r"\b(WARN|WARNING|ERROR)\b|\b401\b", l)]


class HandStartedWorkerTest(E2ETest):
    """`gantry server` alone: the only worker is the one started by hand."""

    def cli_env(self):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY)
        return env

    def test_readme_worker_env_then_handler_runs_a_job(self):
        deploy = subprocess.run([GANTRY, "deploy", "examples/echo"], cwd=ROOT,
                                env=self.cli_env(), capture_output=True, text=True, timeout=60)
        self.assertEqual(deploy.returncode, 0, deploy.stderr)
        # README's lines exactly (only the binary's path differs when GANTRY_BIN is elsewhere).
        script = readme_block("worker-env")
        self.assertIn('eval "$(build/gantry worker-env echo)"', script)
        if os.path.realpath(GANTRY) != os.path.realpath(os.path.join(ROOT, "build", "gantry")):
            script = script.replace("build/gantry", GANTRY)
        log_path = os.path.join(self.server.data_dir, "worker-by-hand.log")
        with open(log_path, "ab") as log:
            shell = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=self.cli_env(),
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.workers.append(shell)
        r = self.server.request("POST", "/v2/echo/runsync", {"input": {"hello": "world"}},
                                timeout=100)
        with open(log_path, errors="replace") as f:
            log_text = f.read()
        self.assertEqual(r.json and r.json["status"], "COMPLETED", "%r\n%s" % (r, log_text))
        self.assertEqual(r.json["output"], {"echo": {"hello": "world"}})
        ws = self.server.request("GET", "/v1/workers?endpoint=echo").json["workers"]
        self.assertEqual([w["id"] for w in ws], [r.json["workerId"]])
        self.assertEqual(ws[0]["state"], "READY")
        self.assertNotIn("No module named", log_text)


class StartTimeoutTest(E2ETest):
    server_args = ("--worker-start-timeout-s", "2")

    def test_registered_worker_that_never_starts_stops_counting_as_initializing(self):
        self.server.create_endpoint({"id": "byhand"})
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY)
        out = subprocess.run([GANTRY, "worker-env", "byhand"], env=env, capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        worker_id = re.search(r"export RUNPOD_POD_ID='([^']+)'", out.stdout).group(1)

        def health():
            return self.server.request("GET", "/v2/byhand/health").json["workers"]
        self.assertEqual(health()["initializing"], 1)
        started = time.time()
        self.wait_for(lambda: health()["initializing"] == 0, timeout=15,
                      what="the never-started worker to stop counting as initializing")
        self.assertGreaterEqual(time.time() - started, 1.0)
        ws = self.server.request("GET", "/v1/workers?endpoint=byhand").json["workers"]
        self.assertEqual([w["id"] for w in ws], [worker_id])
        self.assertEqual(ws[0]["state"], "UNHEALTHY")
        self.assertIn("not started after 2 s", ws[0]["lastError"])


class QuietScaleDownTest(E2ETest):
    command = "up"
    server_args = ("--ping-interval-ms", "500")

    def test_idle_scale_down_logs_no_warning_and_sets_no_last_error(self):
        self.server.create_endpoint({"id": "quiet", "idleTimeout": 1,
                                     "worker": {"command": [PYTHON,
                                                            os.path.join(HANDLERS, "echo.py")]}})
        r = self.server.request("POST", "/v2/quiet/runsync", {"input": {"x": 1}}, timeout=100)
        self.assertEqual(r.json["status"], "COMPLETED", r)
        wid = r.json["workerId"]
        server_log_path = os.path.join(self.server.data_dir, "server.log")
        before_stop = os.path.getsize(server_log_path)  # its start's lines are not the stop's
        self.scale_to_zero("quiet")
        self.wait_for(lambda: not pids_with_env("RUNPOD_POD_ID", wid), what="its process exit")
        ep = self.server.request("GET", "/v1/endpoints/quiet").json
        w = [w for w in ep["workers"] if w["id"] == wid][0]
        self.assertEqual(w["state"], "STOPPED")
        self.assertEqual(w.get("lastError", ""), "", w)
        self.assertEqual(w["stopReason"], "idle for 1 s")
        self.assertNotIn("lastError", ep["health"])
        # The worker's own lines: it took the job, was told to stop, and left without a word.
        lines = self.server.request("GET", "/v1/logs?worker=" + wid).json["lines"]
        text = "\n".join(l["text"] for l in lines)
        self.assertIn("SIGTERM", text)
        self.assertEqual([l for l in text.splitlines()
                          if re.search(r"\b(WARN|WARNING|ERROR)\b|\b401\b|Traceback", l)], [],
                         text)
        with open(server_log_path, errors="replace") as f:
            f.seek(before_stop)
            server_log = f.read()
        self.assertEqual(warnings_about(server_log, wid), [], server_log)
        self.assertRegex(server_log, r"INFO +workers: %s is stopping: idle for 1 s" % wid)
        self.assertRegex(server_log, r"INFO +workers: %s stopped: idle for 1 s" % wid)
