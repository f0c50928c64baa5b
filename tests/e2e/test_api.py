"""End-to-end: every client and worker route, with real Python workers."""
import http.server
import json
import threading
import time
import unittest

from harness import ADMIN_KEY, E2ETest, kill_worker


class ClientRoutesTest(E2ETest):
    def test_run_status_and_runsync(self):
        self.server.create_endpoint({"id": "echo"})
        self.worker("echo", "echo.py")
        r = self.server.request("POST", "/v2/echo/run", {"input": {"x": 1}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["status"], "IN_QUEUE")
        done = self.server.wait_status("echo", r.json["id"], {"COMPLETED"})
        self.assertEqual(done["output"], {"echo": {"x": 1}})
        for k in ("delayTime", "executionTime", "workerId"):
            self.assertIn(k, done)
        r = self.server.request("POST", "/v2/echo/runsync", {"input": {"y": 2}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["status"], "COMPLETED")
        self.assertEqual(r.json["output"], {"echo": {"y": 2}})
        # The raw key (no Bearer) is accepted as RunPod accepts it.
        r = self.server.request("GET", "/v2/echo/health", key=None,
                                headers={"Authorization": ADMIN_KEY})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["jobs"]["completed"], 2)

    def test_runsync_wait_expiry_returns_non_terminal_status(self):
        self.server.create_endpoint({"id": "slow"})
        r = self.server.request("POST", "/v2/slow/runsync?wait=1000", {"input": {}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["status"], "IN_QUEUE")
        # The job keeps living and is readable by status.
        self.assertEqual(self.server.request("GET", "/v2/slow/status/" + r.json["id"]).status, 200)

    def test_health_has_all_keys(self):
        self.server.create_endpoint({"id": "h"})
        r = self.server.request("GET", "/v2/h/health")
        self.assertEqual(set(r.json["jobs"]), {"completed", "failed", "inProgress", "inQueue",
                                               "retried"})
        self.assertEqual(set(r.json["workers"]), {"idle", "initializing", "ready", "running",
                                                  "throttled", "unhealthy"})

    def test_stream_chunks_and_aggregate(self):
        self.server.create_endpoint({"id": "gen"})
        self.worker("gen", "stream.py")
        r = self.server.request("POST", "/v2/gen/run", {"input": {"n": 4, "gap": 0.05}})
        job = r.json["id"]
        chunks = []
        deadline = time.time() + 15
        status = None
        while time.time() < deadline:
            s = self.server.request("GET", "/v2/gen/stream/" + job)
            self.assertEqual(s.status, 200, s)
            self.assertIn("stream", s.json)
            chunks += [c["output"] for c in s.json["stream"]]
            status = s.json["status"]
            if status == "COMPLETED":
                break
            time.sleep(0.02)
        self.assertEqual(status, "COMPLETED")
        self.assertEqual(chunks, [{"chunk": i} for i in range(4)])
        # Drained: a later call has an empty (but present) stream.
        s = self.server.request("GET", "/v2/gen/stream/" + job)
        self.assertEqual(s.json["stream"], [])
        done = self.server.wait_status("gen", job, {"COMPLETED"})
        self.assertEqual(done["output"], [{"chunk": i} for i in range(4)])

    def test_progress_then_result(self):
        self.server.create_endpoint({"id": "b"})
        self.worker("b", "behaviours.py")
        r = self.server.request("POST", "/v2/b/run", {"input": {"mode": "progress", "seconds": 1.5}})
        job = r.json["id"]
        seen = None
        deadline = time.time() + 10
        while time.time() < deadline:
            s = self.server.request("GET", "/v2/b/status/" + job).json
            if s["status"] == "IN_PROGRESS" and s.get("output") == {"step": 1}:
                seen = s
                break
            time.sleep(0.05)
        self.assertIsNotNone(seen, "progress never showed while running")
        done = self.server.wait_status("b", job, {"COMPLETED"})
        self.assertEqual(done["output"], {"done": True})

    def test_runpod_handler_runs_unchanged(self):
        self.server.create_endpoint({"id": "rp"})
        self.worker("rp", "runpod_style.py")
        r = self.server.request("POST", "/v2/rp/runsync", {"input": {"text": "hi"}})
        self.assertEqual(r.json["status"], "COMPLETED", r)
        self.assertEqual(r.json["output"], {"upper": "HI"})

    def test_failures_retry_and_error_shape(self):
        self.server.create_endpoint({"id": "b"})
        self.worker("b", "behaviours.py")
        r = self.server.request("POST", "/v2/b/runsync", {"input": {"mode": "fail", "why": "x"}})
        self.assertEqual(r.json["status"], "FAILED", r)
        err = json.loads(r.json["error"])
        self.assertIn("ValueError", err["error_type"])
        self.assertIn("bad thing: x", err["error_message"])
        self.assertIn("Traceback", err["error_traceback"])
        r2 = self.server.request("POST", "/v2/b/runsync", {"input": {"mode": "error_dict"}})
        self.assertEqual(r2.json["status"], "FAILED", r2)
        self.assertEqual(r2.json["error"], "handler said no")
        job = r.json["id"]
        rr = self.server.request("POST", "/v2/b/retry/" + job)
        self.assertEqual(rr.status, 200, rr)
        self.assertEqual(rr.json, {"id": job, "status": "IN_QUEUE"})
        self.server.wait_status("b", job, {"FAILED"})
        health = self.server.request("GET", "/v2/b/health").json
        self.assertGreaterEqual(health["jobs"]["retried"], 1)
        # Only FAILED or TIMED_OUT jobs can be retried.
        ok = self.server.request("POST", "/v2/b/runsync", {"input": {"mode": "echo"}}).json
        self.assertEqual(self.server.request("POST", "/v2/b/retry/" + ok["id"]).status, 409)

    def test_purge_queue_removes_only_queued(self):
        self.server.create_endpoint({"id": "p"})
        ids = [self.server.request("POST", "/v2/p/run", {"input": {"i": i}}).json["id"]
               for i in range(5)]
        r = self.server.request("POST", "/v2/p/purge-queue")
        self.assertEqual(r.json, {"removed": 5, "status": "completed"})
        for i in ids:
            self.assertEqual(self.server.request("GET", "/v2/p/status/" + i).status, 404)

    def test_cancel_queued_and_running(self):
        self.server.create_endpoint({"id": "b"})
        queued = self.server.request("POST", "/v2/b/run", {"input": {"mode": "echo"}}).json["id"]
        r = self.server.request("POST", "/v2/b/cancel/" + queued)
        self.assertEqual(r.json, {"id": queued, "status": "CANCELLED"})
        self.worker("b", "behaviours.py")
        running = self.server.request(
            "POST", "/v2/b/run", {"input": {"mode": "sleep", "seconds": 60}}).json["id"]
        self.server.wait_status("b", running, {"IN_PROGRESS"})
        r = self.server.request("POST", "/v2/b/cancel/" + running)
        self.assertEqual(r.json["status"], "CANCELLED")
        # The worker is told to stop it and frees its slot: it no longer holds the job.
        deadline = time.time() + 10
        while time.time() < deadline:
            ws = self.server.request("GET", "/v1/endpoints/b/workers").json["workers"]
            if ws and ws[0]["jobs"] == [] and ws[0]["state"] == "READY":
                break
            time.sleep(0.1)
        else:
            self.fail("worker still holds the cancelled job: %r" % ws)
        self.assertEqual(self.server.request("GET", "/v2/b/status/" + queued).json["status"],
                         "CANCELLED")
        # The worker still serves new jobs.
        r = self.server.request("POST", "/v2/b/runsync", {"input": {"mode": "echo"}})
        self.assertEqual(r.json["status"], "COMPLETED")


class TimeoutTest(E2ETest):
    server_args = ("--stop-grace-ms", "2000")

    def test_execution_timeout_then_kill_of_ignoring_worker(self):
        self.server.create_endpoint({"id": "blk"})
        self.worker("blk", "blocking.py")
        r = self.server.request(
            "POST", "/v2/blk/run", {"input": {"seconds": 60}, "policy": {"executionTimeout": 5000}})
        job = r.json["id"]
        self.server.wait_status("blk", job, {"IN_PROGRESS"})
        done = self.server.wait_status("blk", job, {"TIMED_OUT"}, timeout=10)
        self.assertIn("execution timeout", done["error"])
        # A sync handler that cannot be interrupted is given the grace period, then stopped:
        # the worker's key stops working (an agent will kill the process).
        deadline = time.time() + 15
        state = None
        while time.time() < deadline:
            ws = self.server.request("GET", "/v1/endpoints/blk/workers").json["workers"]
            state = ws[0]["state"] if ws else None
            if state in ("STOPPED", "READY") and not ws[0]["jobs"]:
                break
            time.sleep(0.1)
        self.assertIn(state, ("STOPPED", "READY"))

    def test_ttl_expiry_deletes_queued_job(self):
        self.server.create_endpoint({"id": "t"})
        r = self.server.request("POST", "/v2/t/run", {"input": {}, "policy": {"ttl": 10000}})
        job = r.json["id"]
        self.assertEqual(self.server.request("GET", "/v2/t/status/" + job).status, 200)
        time.sleep(10.3)
        self.assertEqual(self.server.request("GET", "/v2/t/status/" + job).status, 404)


class Hook(http.server.BaseHTTPRequestHandler):
    calls = []
    fail_first = 1

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hook.calls.append((time.time(), json.loads(body)))
        code = 500 if len(Hook.calls) <= Hook.fail_first else 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


class WebhookTest(E2ETest):
    server_args = ("--webhook-retry-ms", "300", "--webhook-allow", "127.0.0.1")

    def test_webhook_delivered_with_retry(self):
        hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
        t = threading.Thread(target=hook.serve_forever, daemon=True)
        t.start()
        try:
            Hook.calls = []
            self.server.create_endpoint({"id": "wh"})
            self.worker("wh", "echo.py")
            url = "http://127.0.0.1:%d/hook" % hook.server_address[1]
            r = self.server.request("POST", "/v2/wh/run", {"input": {"a": 1}, "webhook": url})
            job = r.json["id"]
            deadline = time.time() + 15
            while time.time() < deadline and len(Hook.calls) < 2:
                time.sleep(0.05)
            self.assertEqual(len(Hook.calls), 2, "first delivery fails, the retry succeeds")
            self.assertEqual(Hook.calls[1][1]["id"], job)
            self.assertEqual(Hook.calls[1][1]["status"], "COMPLETED")
            self.assertEqual(Hook.calls[1][1]["output"], {"echo": {"a": 1}})
            self.assertGreaterEqual(Hook.calls[1][0] - Hook.calls[0][0], 0.25)
            time.sleep(1)
            self.assertEqual(len(Hook.calls), 2, "no delivery after a success")
        finally:
            hook.shutdown()


class LivenessTest(E2ETest):
    server_args = ("--ping-interval-ms", "400")

    def test_requeued_job_completes_on_second_worker(self):
        self.server.create_endpoint({"id": "b2"})
        w1 = self.worker("b2", "behaviours.py")
        r = self.server.request("POST", "/v2/b2/run", {"input": {"mode": "sleep", "seconds": 2}})
        job = r.json["id"]
        st = self.server.wait_status("b2", job, {"IN_PROGRESS"})
        self.assertEqual(st["workerId"], w1.worker_id)
        kill_worker(w1)
        # 3 silent ping intervals (1.2 s) later the job is back in the queue.
        self.server.wait_status("b2", job, {"IN_QUEUE"}, timeout=10)
        health = self.server.request("GET", "/v2/b2/health").json
        self.assertEqual(health["workers"]["unhealthy"], 1)
        w2 = self.worker("b2", "behaviours.py")
        done = self.server.wait_status("b2", job, {"COMPLETED"}, timeout=15)
        self.assertEqual(done["workerId"], w2.worker_id)
        self.assertEqual(done["output"], {"slept": 2})


if __name__ == "__main__":
    unittest.main()
