"""End-to-end: RunPod's official JavaScript SDK (npm runpod-sdk, pinned in tests/e2e/js, installed
by scripts/setup.sh with npm ci), unmodified, against the real binary and real Python workers.
Each step runs `node js/sdk_check.mjs STEP ...`, which prints what the SDK returned."""
import json
import os
import shutil
import subprocess
import time
import unittest

from harness import ADMIN_KEY, E2ETest, HANDLERS, PYTHON

JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")
NODE = shutil.which("node")


def handler(name):
    return [PYTHON, os.path.join(HANDLERS, name)]


class RunpodJsSdkTest(E2ETest):
    command = "up"
    server_args = ("--ping-interval-ms", "1000")

    @classmethod
    def setUpClass(cls):
        # Not a skip: scripts/setup.sh installs both, and CI must run this test.
        if not NODE:
            raise RuntimeError("no node on PATH: run scripts/setup.sh")
        if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "runpod-sdk")):
            raise RuntimeError("runpod-sdk is not installed in tests/e2e/js: run scripts/setup.sh")

    def setUp(self):
        super().setUp()
        self.server.create_endpoint({"id": "beh", "workersMax": 2, "idleTimeout": 30,
                                     "worker": {"command": handler("behaviours.py")}})
        self.server.create_endpoint({"id": "gen", "idleTimeout": 30,
                                     "worker": {"command": handler("stream.py")}})

    def sdk(self, step, endpoint, arg=None, timeout=120):
        """Runs one step; (what the SDK returned, the lines it printed before)."""
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY)
        args = [NODE, os.path.join(JS_DIR, "sdk_check.mjs"), step, endpoint]
        if arg is not None:
            args.append(arg if isinstance(arg, str) else json.dumps(arg))
        p = subprocess.run(args, env=env, cwd=JS_DIR, capture_output=True, text=True,
                           timeout=timeout)
        lines = p.stdout.strip().splitlines()
        self.assertTrue(lines, "no output from %s: %s" % (step, p.stderr))
        out = json.loads(lines[-1])
        self.assertEqual(p.returncode, 0, "%s: %s %s" % (step, out, p.stderr))
        return out["result"], lines[:-1]

    def test_run_sync_short_and_past_its_wait(self):
        # Shorter than runSync's timeout: /runsync answers with the result.
        r, printed = self.sdk("runSync", "beh", {"input": {"mode": "sleep", "seconds": 0.2},
                                                 "timeout": 4000})
        self.assertEqual(r["status"], "COMPLETED", r)
        self.assertEqual(r["output"], {"slept": 0.2})
        self.assertTrue(r["completed"] and r["succeeded"], r)
        self.assertEqual(printed, [])  # no /status-sync needed
        # About 1.5x the timeout: /runsync answers IN_PROGRESS after 4 s, and the SDK falls back
        # to /status-sync, which answers when the job ends (no 404, no busy polling).
        start = time.time()
        r, printed = self.sdk("runSync", "beh", {"input": {"mode": "sleep", "seconds": 6},
                                                 "timeout": 4000})
        self.assertEqual(r["status"], "COMPLETED", r)
        self.assertEqual(r["output"], {"slept": 6})
        self.assertTrue(r["succeeded"], r)
        self.assertIn("%s: COMPLETED" % r["id"], printed)  # the SDK's /status-sync answer
        self.assertLess(len(printed), 4, printed)  # held until the end, not polled
        self.assertLess(time.time() - start, 30)

    def test_run_status_and_status_sync(self):
        queued, _ = self.sdk("run", "beh", {"mode": "sleep", "seconds": 1})
        self.assertIn(queued["status"], ("IN_QUEUE", "IN_PROGRESS"), queued)
        job = queued["id"]
        st, _ = self.sdk("status", "beh", job)
        self.assertEqual(st["id"], job)
        self.assertIn(st["status"], ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"), st)
        self.assertTrue(st["started"], st)
        done, _ = self.sdk("statusSync", "beh", job)
        self.assertEqual(done["status"], "COMPLETED", done)
        self.assertEqual(done["output"], {"slept": 1})
        self.assertTrue(done["completed"], done)
        # The endpoint's recent requests list it.
        reqs = self.server.request("GET", "/v2/beh/requests").json["requests"]
        self.assertIn(job, [x["id"] for x in reqs])

    def test_stream_of_a_generator(self):
        r, _ = self.sdk("stream", "gen", {"n": 5, "gap": 0.3})
        self.assertEqual(r["chunks"], [{"output": {"chunk": i}} for i in range(5)], r)
        self.assertEqual(r["final"]["status"], "COMPLETED", r)

    def test_cancel_health_and_purge_queue(self):
        queued, _ = self.sdk("run", "beh", {"mode": "sleep", "seconds": 60})
        job = queued["id"]
        self.server.wait_status("beh", job, {"IN_PROGRESS"}, timeout=60)
        cancelled, _ = self.sdk("cancel", "beh", job)
        self.assertEqual(cancelled["status"], "CANCELLED", cancelled)
        self.assertEqual(self.server.request("GET", "/v2/beh/status/" + job).json["status"],
                         "CANCELLED")
        health, _ = self.sdk("health", "beh")
        self.assertGreaterEqual(health["jobs"]["completed"], 0)
        for k in ("idle", "initializing", "ready", "running", "throttled", "unhealthy"):
            self.assertIn(k, health["workers"])
        # An endpoint with no workers keeps its jobs queued; purgeQueue drops them.
        self.server.create_endpoint({"id": "parked", "workersMax": 0,
                                     "worker": {"command": handler("echo.py")}})
        for i in range(3):
            self.server.request("POST", "/v2/parked/run", {"input": {"i": i}})
        purged, _ = self.sdk("purgeQueue", "parked")
        self.assertEqual(purged, {"removed": 3, "status": "completed"})
        self.assertEqual(self.server.request("GET", "/v2/parked/health").json["jobs"]["inQueue"], 0)


if __name__ == "__main__":
    unittest.main()
