"""End-to-end: crash safety of acknowledged jobs, bad input, auth, and the CLI."""
import json
import os
import socket
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import ADMIN_KEY, GANTRY, E2ETest, Server, kill_worker


class CrashTest(E2ETest):
    # A worker that died with the server comes back as lost after 3 intervals: keep them short.
    server_args = ("--ping-interval-ms", "1000")

    def test_kill9_loses_no_acknowledged_job(self):
        self.server.create_endpoint({"id": "d"})
        ids = []
        for i in range(300):
            r = self.server.request("POST", "/v2/d/run", {"input": {"mode": "echo", "i": i}})
            self.assertEqual(r.status, 200)
            ids.append(r.json["id"])
        # One job is running on a worker when the server dies.
        w = self.worker("d", "behaviours.py")
        self.server.wait_status("d", ids[0], {"IN_PROGRESS", "COMPLETED"})
        kill_worker(w)
        self.server.kill9()
        self.server.start()
        self.worker("d", "behaviours.py")
        self.worker("d", "behaviours.py")
        deadline = time.time() + 60
        pending = set(ids)
        while pending and time.time() < deadline:
            for i in list(pending):
                s = self.server.request("GET", "/v2/d/status/" + i)
                self.assertEqual(s.status, 200, "job %s lost: %r" % (i, s))
                if s.json["status"] == "COMPLETED":
                    pending.discard(i)
            time.sleep(0.2)
        # The jobs that were running when their worker died come back after 3 ping intervals
        # and finish too.
        self.assertEqual(pending, set(), "jobs not completed after the restart")

    def test_endpoints_keys_and_workers_survive_restart(self):
        self.server.create_endpoint({"id": "keep", "workersMax": 7})
        key = self.server.request("POST", "/v1/keys", {"name": "ci"}).json["key"]
        w = self.worker("keep", "echo.py")
        self.server.stop()
        self.server.start()
        self.assertEqual(self.server.request("GET", "/v1/endpoints/keep").json["workersMax"], 7)
        self.assertEqual(self.server.request("GET", "/v2/keep/health", key=key).status, 200)
        # The running worker reconnects with its old key and still serves jobs.
        r = self.server.request("POST", "/v2/keep/runsync", {"input": {"z": 1}}, timeout=60)
        self.assertEqual(r.json.get("status"), "COMPLETED", r)
        self.assertEqual(r.json["workerId"], w.worker_id)


class BadInputTest(E2ETest):
    def setUp(self):
        super().setUp()
        self.server.create_endpoint({"id": "bi"})

    def assertError(self, r, status):
        self.assertEqual(r.status, status, r)
        self.assertIn("error", r.json, r)
        self.assertIn("code", r.json["error"])
        self.assertIn("message", r.json["error"])

    def test_client_route_errors(self):
        s = self.server
        self.assertError(s.request("POST", "/v2/bi/run", raw_body=b"{not json"), 400)
        self.assertError(s.request("POST", "/v2/bi/run", {"nope": 1}), 400)
        self.assertError(s.request("POST", "/v2/bi/run", [1, 2]), 400)
        big = b'{"input": "' + b"a" * (10 * 1024 * 1024 + 10) + b'"}'
        self.assertError(s.request("POST", "/v2/bi/run", raw_body=big), 413)
        huge = b'{"input": "' + b"a" * (21 * 1024 * 1024) + b'"}'
        r = s.request("POST", "/v2/bi/runsync", raw_body=huge)
        self.assertEqual(r.status, 413, r)
        self.assertError(s.request("POST", "/v2/nope/run", {"input": {}}), 404)
        self.assertError(s.request("GET", "/v2/bi/status/no-such-job"), 404)
        self.assertError(s.request("POST", "/v2/bi/run", {"input": {}}, key=None), 401)
        self.assertError(s.request("POST", "/v2/bi/run", {"input": {}}, key="wrong"), 401)
        for policy in ({"executionTimeout": 10}, {"ttl": 5}, {"lowPriority": "yes"},
                       {"bogus": 1}, "x"):
            self.assertError(s.request("POST", "/v2/bi/run", {"input": {}, "policy": policy}), 400)
        self.assertError(s.request("POST", "/v2/bi/run", {"input": {}, "webhook": "ftp://x"}), 400)
        self.assertError(s.request("POST", "/v2/bi/runsync?wait=abc", {"input": {}}), 400)
        # Nothing was queued by any of that.
        self.assertEqual(s.request("GET", "/v2/bi/health").json["jobs"]["inQueue"], 0)

    def test_management_errors(self):
        s = self.server
        self.assertError(s.request("POST", "/v1/endpoints", {"id": "bi"}), 409)
        self.assertError(s.request("POST", "/v1/endpoints", {"workersMax": -3}), 400)
        self.assertError(s.request("POST", "/v1/endpoints", {"id": "a b"}), 400)
        self.assertError(s.request("PATCH", "/v1/endpoints/bi", {"scalerType": "X"}), 400)
        self.assertError(s.request("GET", "/v1/endpoints/zzz"), 404)
        self.assertEqual(s.request("GET", "/v1/endpoints/bi").json["scalerType"], "QUEUE_DELAY")

    def test_worker_keys_are_per_worker(self):
        a = self.server.register_worker("bi")
        b = self.server.register_worker("bi")
        take = "/v2/bi/job-take/%s" % a["workerId"]
        r = self.server.request("GET", take, key=None,
                                headers={"Authorization": b["env"]["RUNPOD_AI_API_KEY"]})
        self.assertError(r, 403)
        self.assertError(self.server.request("GET", take, key=None), 401)
        self.assertError(self.server.request("GET", take, key=ADMIN_KEY), 401)
        # Its own key works: nothing queued -> 204 after the long-poll; ask with a job queued.
        self.server.request("POST", "/v2/bi/run", {"input": {"q": 1}})
        r = self.server.request("GET", take + "?job_in_progress=0", key=None,
                                headers={"Authorization": a["env"]["RUNPOD_AI_API_KEY"]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["input"], {"q": 1})
        # job-done bodies are JSON whatever the Content-Type says; job-done is idempotent.
        done = "/v2/bi/job-done/%s/%s?gpu=cpu&isStream=false" % (a["workerId"], r.json["id"])
        for _ in range(2):
            d = self.server.request(
                "POST", done, key=None, raw_body=json.dumps({"output": 5}).encode(),
                headers={"Authorization": a["env"]["RUNPOD_AI_API_KEY"],
                         "Content-Type": "application/x-www-form-urlencoded"})
            self.assertEqual(d.status, 200, d)
        st = self.server.request("GET", "/v2/bi/status/" + r.json["id"]).json
        self.assertEqual((st["status"], st["output"]), ("COMPLETED", 5))

    def test_half_open_connection_does_not_block_others(self):
        sock = socket.create_connection(("127.0.0.1", self.server.port))
        sock.sendall(b"POST /v2/bi/run HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        r = self.server.request("GET", "/v2/bi/health")
        self.assertEqual(r.status, 200)
        sock.close()


class CliTest(E2ETest):
    def cli(self, *args, ok=True):
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY,
                   HOME=self.server.data_dir)
        p = subprocess.run([GANTRY] + list(args), env=env, capture_output=True, text=True,
                           timeout=60)
        if ok:
            self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def test_endpoint_run_status_keys(self):
        self.cli("endpoint", "create", "cli-ep", "--workers-max", "2", "--gpu", "cpu")
        ls = self.cli("endpoint", "ls").stdout
        self.assertIn("cli-ep", ls)
        self.assertIn("ID", ls.splitlines()[0])
        got = json.loads(self.cli("--json", "endpoint", "get", "cli-ep").stdout)
        self.assertEqual(got["workersMax"], 2)
        bad = self.cli("endpoint", "create", "x", "--scaler", "NOPE", ok=False)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("scalerType", bad.stderr)
        # worker-env prints a shell environment for one new worker.
        env_text = self.cli("worker-env", "cli-ep").stdout
        self.assertIn("export RUNPOD_WEBHOOK_GET_JOB='", env_text)
        self.worker("cli-ep", "echo.py")
        out = self.cli("run", "cli-ep", "--input", '{"v": 3}').stdout
        self.assertEqual(json.loads(out), {"echo": {"v": 3}})
        job = self.cli("run", "cli-ep", "--input", "{}", "--async").stdout.strip()
        deadline = time.time() + 10
        while time.time() < deadline:
            # Exit 4 while the job is not done (docs/cli.md).
            p = self.cli("--json", "status", "cli-ep", job, ok=False)
            self.assertIn(p.returncode, (0, 4), p.stderr)
            st = json.loads(p.stdout)
            if st["status"] == "COMPLETED":
                break
            time.sleep(0.1)
        self.assertEqual(st["status"], "COMPLETED")
        self.assertEqual(json.loads(self.cli("status", "cli-ep", job).stdout), {"echo": {}})
        bad = self.cli("run", "cli-ep", "--input", "{oops", ok=False)
        self.assertEqual(bad.returncode, 2)
        created = json.loads(self.cli("--json", "keys", "create", "--name", "robot").stdout)
        self.assertTrue(created["key"].startswith("gk_"))
        self.assertIn("robot", self.cli("keys", "ls").stdout)
        self.cli("keys", "revoke", created["id"])
        self.assertNotIn("robot", self.cli("keys", "ls").stdout)
        self.cli("endpoint", "rm", "cli-ep")
        self.assertEqual(self.cli("endpoint", "get", "cli-ep", ok=False).returncode, 1)

    def test_url_and_key_from_flags_or_config_file(self):
        base = {k: v for k, v in os.environ.items() if not k.startswith("GANTRY_")}
        home = os.path.join(self.server.data_dir, "home")
        env = dict(base, HOME=home, GANTRY_DATA_DIR=os.path.join(home, "none"))
        p = subprocess.run([GANTRY, "--url", self.server.url, "--api-key", ADMIN_KEY, "keys", "ls"],
                           env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        os.makedirs(os.path.join(home, ".config", "gantry"))
        with open(os.path.join(home, ".config", "gantry", "config.json"), "w") as f:
            json.dump({"url": self.server.url, "apiKey": ADMIN_KEY}, f)
        p = subprocess.run([GANTRY, "keys", "ls"], env=env, capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("admin", p.stdout)

    def test_help_and_missing_key(self):
        self.assertIn("endpoint", self.cli("--help").stdout)
        env = dict(os.environ, GANTRY_URL=self.server.url, HOME=self.server.data_dir,
                   GANTRY_DATA_DIR=self.server.data_dir + "/none")
        env.pop("GANTRY_API_KEY", None)
        p = subprocess.run([GANTRY, "endpoint", "ls"], env=env, capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("401", p.stderr)


class FirstStartKeyTest(unittest.TestCase):
    def test_generated_admin_key_is_printed_once_and_saved_0600(self):
        import re
        import shutil
        import tempfile
        d = tempfile.mkdtemp(prefix="gantry-key-")
        try:
            env = {k: v for k, v in os.environ.items() if k != "GANTRY_ADMIN_KEY"}
            for attempt in range(2):
                p = subprocess.Popen([GANTRY, "server", "--listen", "127.0.0.1:0", "--data-dir", d],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                     text=True)
                lines = []
                while True:
                    line = p.stdout.readline()
                    lines.append(line)
                    if "listening" in line or not line:
                        break
                p.terminate()
                p.wait(10)
                p.stdout.close()
                printed = [l for l in lines if "Admin API key" in l]
                if attempt == 0:
                    self.assertEqual(len(printed), 1)
                    key = re.search(r"(gk_\w+)", printed[0]).group(1)
                else:
                    self.assertEqual(printed, [], "the key is printed only at first start")
            path = os.path.join(d, "admin.key")
            self.assertEqual(open(path).read().strip(), key)
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        finally:
            shutil.rmtree(d, ignore_errors=True)


@unittest.skipUnless(os.geteuid() == 0, "mounting a small file system needs root")
class DiskFullTest(E2ETest):
    """/run on a full disk: a job answered 503 is gone, never run, after space returns and
    after a restart; every acknowledged one is there, once."""

    def setUp(self):
        self.mnt = tempfile.mkdtemp(prefix="gantry-full-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", self.mnt], check=True)
        os.mkdir(os.path.join(self.mnt, "data"), 0o700)
        self.server = Server(data_dir=os.path.join(self.mnt, "data")).start()
        self.workers = []

    def tearDown(self):
        for w in self.workers:
            kill_worker(w)
        self.server.stop()
        subprocess.run(["umount", "-l", self.mnt])
        shutil.rmtree(self.mnt, ignore_errors=True)

    def listed(self):
        ids, cursor = [], ""
        while True:
            r = self.server.request("GET", "/v2/d/requests?limit=100" +
                                    ("&cursor=" + cursor if cursor else ""))
            self.assertEqual(r.status, 200, r)
            ids += [q["id"] for q in r.json["requests"]]
            cursor = r.json["nextCursor"]
            if not cursor:
                return ids

    def test_a_job_refused_for_a_full_disk_is_gone_and_an_acknowledged_one_stays_once(self):
        self.server.create_endpoint({"id": "d"})
        # Fill all but a little of the file system, so that the jobs' records fill the rest.
        st = os.statvfs(self.mnt)
        filler = os.path.join(self.mnt, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * (st.f_bavail * st.f_frsize - 1_500_000))
        acked, refused = [], 0
        pad = "x" * 100_000
        for i in range(300):
            r = self.server.request("POST", "/v2/d/run", {"input": {"i": i, "pad": pad}})
            if r.status == 200:
                acked.append(r.json["id"])
            else:
                self.assertEqual(r.status, 503, r)
                refused += 1
                if refused == 5:
                    break
        self.assertGreater(len(acked), 0)
        self.assertEqual(refused, 5, "the disk never filled up")
        os.remove(filler)  # space returns
        # A job that is written now is accepted again.
        r = self.server.request("POST", "/v2/d/run", {"input": {"after": True}})
        self.assertEqual(r.status, 200, r)
        acked.append(r.json["id"])
        for when in ("after space returned", "after a restart"):
            listed = self.listed()
            self.assertEqual(len(listed), len(set(listed)), when)
            self.assertEqual(sorted(listed), sorted(acked), when)
            health = self.server.request("GET", "/v2/d/health").json
            self.assertEqual(health["jobs"]["inQueue"], len(acked), (when, health))
            self.server.stop()
            self.server.start()

    def test_a_result_whose_write_fails_is_not_shown_and_lands_once_space_returns(self):
        self.server.create_endpoint({"id": "d"})
        pad = "x" * 600_000
        r = self.server.request("POST", "/v2/d/run", {"input": {"pad": pad}})
        self.assertEqual(r.status, 200, r)
        job = r.json["id"]
        # Leave too little for the echoed 600 kB output, then start the worker (its log goes
        # elsewhere).
        st = os.statvfs(self.mnt)
        filler = os.path.join(self.mnt, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 100_000))
        logs = tempfile.mkdtemp(prefix="gantry-logs-")
        self.addCleanup(shutil.rmtree, logs, True)
        self.worker("d", "echo.py", log_dir=logs)
        # The worker takes it, runs it and posts the result, which cannot be written: it is
        # answered 503 (and retries), and nobody is shown a result the store does not hold.
        self.wait_for(lambda: self.server.request("GET", "/v2/d/status/" + job).json.get(
            "workerId"), what="the worker to take the job")
        deadline = time.time() + 4
        while time.time() < deadline:
            status = self.server.request("GET", "/v2/d/status/" + job).json
            self.assertNotIn(status["status"], ("COMPLETED", "FAILED"), "shown before durable")
            time.sleep(0.1)
        log = ""
        for name in os.listdir(logs):
            with open(os.path.join(logs, name)) as f:
                log += f.read()
        self.assertIn("503", log)  # it was answered so, not left unsent
        os.remove(filler)  # space returns: the result lands (posted again, or the job rerun)
        done = self.server.wait_status("d", job, {"COMPLETED"}, timeout=90)
        self.assertEqual(done["output"], {"echo": {"pad": pad}})
        self.server.stop()
        self.server.start()
        after = self.server.request("GET", "/v2/d/status/" + job).json
        self.assertEqual(after["status"], "COMPLETED", after)
        self.assertEqual(after["output"], {"echo": {"pad": pad}})


if __name__ == "__main__":
    unittest.main()
