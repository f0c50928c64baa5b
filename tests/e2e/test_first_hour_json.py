"""End-to-end: numbers as people write them, and what JSON has no form for (NaN, infinities)
refused at once with the value's path, in a job's input as in a handler's result."""
import json
import os
import subprocess
import time
import unittest

from harness import ADMIN_KEY, E2ETest, GANTRY, HANDLERS, PYTHON


class FirstHourJsonTest(E2ETest):
    command = "up"
    server_args = ("--ping-interval-ms", "500", "--stop-grace-ms", "1500")

    def endpoint(self, id, script):
        return self.server.create_endpoint(
            {"id": id, "idleTimeout": 30,
             "worker": {"command": [PYTHON, os.path.join(HANDLERS, script)]}})

    def error_message(self, r):
        self.assertEqual(r.status, 400, r)
        return r.json["error"]["message"]

    def test_non_finite_numbers_in_an_input_are_refused_with_their_path(self):
        self.endpoint("echo", "echo.py")
        s = self.server
        for route in ("run", "runsync"):
            r = s.request("POST", "/v2/echo/" + route,
                          raw_body=b'{"input": {"a": [1, 2, 3, NaN]}}')
            self.assertEqual(self.error_message(r),
                             "input.a[3] is not a finite number: JSON has no NaN")
        # What Python's json.dumps writes for float("inf") (requests' json= does the same).
        r = s.request("POST", "/v2/echo/run", {"input": {"t": {"max": float("inf")}}})
        self.assertEqual(self.error_message(r),
                         "input.t.max is not a finite number: JSON has no Infinity")
        r = s.request("POST", "/v2/echo/run", raw_body=b'{"input": {"a": [1, 2, 3, -Infinity]}}')
        self.assertEqual(self.error_message(r),
                         "input.a[3] is not a finite number: JSON has no Infinity")
        # A number too large for a double parses as an infinity: refused as well.
        r = s.request("POST", "/v2/echo/run", raw_body=b'{"input": {"a": [1, 2, 3, 1e400]}}')
        self.assertTrue(self.error_message(r).startswith("input.a[3] is not a finite number: "),
                        r)
        # Nothing was queued, so nothing was started.
        self.assertEqual(s.request("GET", "/v2/echo/health").json["jobs"]["inQueue"], 0)
        self.assertEqual(s.request("GET", "/v2/echo/requests").json["requests"], [])
        self.assertEqual(self.live("echo"), [])

    def test_a_nan_result_fails_the_job_at_once_and_the_worker_log_says_why(self):
        self.endpoint("nan", "not_json.py")
        started = time.time()
        job = self.server.request("POST", "/v2/nan/run", {"input": {}}).json["id"]
        st = self.server.wait_status("nan", job, {"FAILED", "COMPLETED"}, timeout=30)
        elapsed = time.time() - started
        self.assertEqual(st["status"], "FAILED", st)
        # At once: before, the server refused the result, the job waited to be found dropped
        # (~20 s) and was run again.
        self.assertLess(st["executionTime"], 3000, st)
        self.assertLess(elapsed, 15, st)
        self.assertEqual(self.server.request("GET", "/v2/nan/health").json["jobs"]["retried"], 0)
        error = json.loads(st["error"])
        self.assertEqual(error["error_message"], "output.x[2] is NaN: JSON has no NaN")
        # The worker's log says why.
        def logged():
            lines = self.server.request("GET", "/v1/logs?endpoint=nan").json.get("lines", [])
            return [l["text"] for l in lines if "output.x[2] is NaN" in l["text"]]
        self.assertTrue(self.wait_for(logged, timeout=10, what="the worker's log line"))

    def test_numbers_come_back_as_people_write_them(self):
        self.endpoint("echo", "echo.py")
        r = self.server.request(
            "POST", "/v2/echo/runsync",
            raw_body=b'{"input": {"a": 0.1, "b": 1.0, "c": 3.6799999999999995E-4, "d": 1E16, '
                     b'"e": 12, "f": 1e-7}}', timeout=60)
        self.assertEqual(r.json["status"], "COMPLETED", r)
        want = ('"output":{"echo":{"a":0.1,"b":1.0,"c":0.00036799999999999995,"d":1e+16,'
                '"e":12,"f":1e-07}}')
        self.assertIn(want, r.raw)
        status = self.server.request("GET", "/v2/echo/status/" + r.json["id"])
        self.assertIn(want, status.raw)
        # The CLI prints what the server wrote.
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY)
        out = subprocess.run([GANTRY, "run", "echo", "--input", '{"x":0.5}'], env=env,
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn('{"x":0.5}', out.stdout)
        self.assertNotRegex(out.stdout, r"\d[eE][-+]?\d")


if __name__ == "__main__":
    unittest.main()
