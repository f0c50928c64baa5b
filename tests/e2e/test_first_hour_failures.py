"""End-to-end on `gantry up`: the mistakes a newcomer makes first get a fast, clear answer.
A handler that cannot start fails its jobs with the cause within seconds; an endpoint no node
could ever run says why within a second."""
import os
import subprocess
import time
import unittest

from harness import ADMIN_KEY, E2ETest, GANTRY, HANDLERS, PYTHON


class FirstHourFailuresTest(E2ETest):
    command = "up"
    server_args = ("--ping-interval-ms", "1000")

    def setUp(self):
        super().setUp()
        self.wait_for(self.node, what="the agent's node")  # as a newcomer would wait for `up`

    def endpoint(self, id, script, **spec):
        body = {"id": id, "worker": {"command": [PYTHON, os.path.join(HANDLERS, script)]}}
        body.update(spec)
        return self.server.create_endpoint(body)

    def cli(self, *args, timeout=120):
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY)
        return subprocess.run([GANTRY] + list(args), env=env, capture_output=True, text=True,
                              timeout=timeout)

    def assert_fails_fast_with(self, endpoint, cause):
        """A runsync of the endpoint fails with `cause` in its error, within 30 s (not the
        runsync wait of 90 s), and `gantry run` exits non-zero showing it."""
        start = time.time()
        r = self.server.request("POST", "/v2/%s/runsync" % endpoint, {"input": {}}, timeout=100)
        took = time.time() - start
        self.assertEqual(r.json["status"], "FAILED", r)
        self.assertIn("failed to start", r.json["error"])
        self.assertIn("failed starts in a row", r.json["error"])
        self.assertIn(cause, r.json["error"])
        self.assertLess(took, 30, r)
        start = time.time()
        p = self.cli("run", endpoint, "--input", "{}")
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn(cause, p.stdout + p.stderr)
        self.assertLess(time.time() - start, 30)

    def test_an_import_error_fails_the_job_with_its_traceback(self):
        self.endpoint("imp", "import_error.py")
        self.assert_fails_fast_with(
            "imp", "ModuleNotFoundError: No module named 'no_such_module_for_this_test'")
        h = self.server.request("GET", "/v2/imp/health").json
        self.assertEqual(h["status"], "unhealthy")

    def test_a_syntax_error_fails_the_job_with_its_traceback(self):
        self.endpoint("syn", os.path.join("broken", "syntax_error.py"))
        self.assert_fails_fast_with("syn", "SyntaxError")

    def test_a_new_version_starts_the_count_again(self):
        self.endpoint("fix", "import_error.py", idleTimeout=30)
        r = self.server.request("POST", "/v2/fix/runsync", {"input": {}}, timeout=100)
        self.assertEqual(r.json["status"], "FAILED", r)
        # Fixed and deployed again: the next job runs.
        self.server.request("PATCH", "/v1/endpoints/fix",
                            {"worker": {"command": [PYTHON, os.path.join(HANDLERS, "echo.py")]}})
        r = self.server.request("POST", "/v2/fix/runsync", {"input": {"x": 1}}, timeout=100)
        self.assertEqual(r.json["status"], "COMPLETED", r)
        self.assertEqual(self.server.request("GET", "/v2/fix/health").json["status"], "healthy")

    def test_an_endpoint_no_node_could_run_says_why_within_a_second(self):
        # The README's example asks for H100s; `gantry up` here has none.
        self.endpoint("h100", "echo.py", gpuTypeIds=["H100", "A100-80GB"])
        start = time.time()
        r = self.server.request("POST", "/v2/h100/runsync", {"input": {}}, timeout=100)
        self.assertLess(time.time() - start, 5, r)
        self.assertEqual(r.json["status"], "IN_QUEUE", r)  # it waits for a node that has one
        self.assertIn("no live node has a GPU of type H100 or A100-80GB", r.json["reason"])
        h = self.server.request("GET", "/v2/h100/health").json
        self.assertIn("no live node has a GPU of type H100 or A100-80GB", h["unplaceable"])
        self.assertEqual(h["jobs"]["inQueue"], 1)
        self.assertEqual(self.server.request("GET", "/v2/h100/status/" + r.json["id"]).json["status"],
                         "IN_QUEUE")
        # A CPU endpoint beside it has no such reason.
        self.endpoint("cpu", "echo.py")
        self.assertNotIn("unplaceable", self.server.request("GET", "/v2/cpu/health").json)


if __name__ == "__main__":
    unittest.main()
