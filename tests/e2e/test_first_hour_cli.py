"""End-to-end on `gantry up`: the CLI as a newcomer meets it in the first hour, and as a script
uses it. --json after a subcommand, `JOB=$(gantry run ... --async)`, a generator's chunks as they
come, a failed job's traceback as text, the exit codes (docs/cli.md), a typo'd gantry.toml
caught before anything is uploaded."""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import ADMIN_KEY, E2ETest, GANTRY, HANDLERS, PYTHON


def handler(name):
    return [PYTHON, os.path.join(HANDLERS, name)]


class FirstHourCliTest(E2ETest):
    command = "up"

    def env(self):
        return dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY,
                    HOME=self.server.data_dir)

    def cli(self, *args, timeout=120):
        return subprocess.run([GANTRY] + list(args), env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def endpoint(self, id, script, **spec):
        body = {"id": id, "worker": {"command": handler(script)}}
        body.update(spec)
        return self.server.create_endpoint(body)

    def test_json_goes_before_or_after_the_subcommand(self):
        self.endpoint("echo", "echo.py")
        for args in (["ps", "--json"], ["--json", "ps"], ["ps", "echo", "--json"]):
            p = self.cli(*args)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("workers", json.loads(p.stdout), args)
        p = self.cli("endpoint", "get", "echo", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["id"], "echo")
        p = self.cli("endpoint", "ls", "--json")
        self.assertEqual([e["id"] for e in json.loads(p.stdout)["endpoints"]], ["echo"])

    def test_async_job_id_in_a_shell_variable_then_status(self):
        self.endpoint("echo", "echo.py")
        # What a script writes: the job id alone on stdout.
        script = ('JOB=$("$G" run echo --input \'{"a": 1}\' --async) || exit 9\n'
                  'echo "$JOB"\n')
        p = subprocess.run(["bash", "-c", script], env=dict(self.env(), G=GANTRY),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        job = p.stdout.strip()
        self.assertRegex(job, r"^[A-Za-z0-9_-]+$")
        self.assertEqual(p.stderr, "")
        # status: exit 4 while it is not done, then 0 with its output on stdout.
        deadline = time.time() + 60
        while True:
            st = self.cli("status", "echo", job)
            if st.returncode != 4 or time.time() > deadline:
                break
            self.assertIn("job %s is IN_" % job, st.stderr)
            time.sleep(0.2)
        self.assertEqual(st.returncode, 0, st.stderr)
        self.assertEqual(json.loads(st.stdout), {"echo": {"a": 1}})
        got = json.loads(self.cli("status", "echo", job, "--json").stdout)
        self.assertEqual(got["status"], "COMPLETED")
        self.assertEqual(got["id"], job)

    def test_a_generators_chunks_are_printed_as_they_come(self):
        self.endpoint("gen", "stream.py")
        # Started once, so that the chunks below are not behind a cold start.
        r = self.server.request("POST", "/v2/gen/runsync", {"input": {"n": 1}})
        self.assertEqual(r.json["status"], "COMPLETED", r)
        p = subprocess.Popen([GANTRY, "run", "gen", "--input", '{"n": 3, "gap": 0.6}'],
                             env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        lines = []
        try:
            for line in p.stdout:
                lines.append((time.time(), line.rstrip("\n")))
            ended = time.time()
            p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
        err = p.stderr.read()
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual([json.loads(text) for _, text in lines],
                         [{"chunk": 0}, {"chunk": 1}, {"chunk": 2}], err)
        # Each chunk came when the handler yielded it, not all at the end: 0.6 s apart.
        self.assertGreater(ended - lines[0][0], 0.9, lines)
        self.assertGreater(lines[2][0] - lines[0][0], 0.9, lines)

    def test_a_failed_job_prints_its_traceback_as_text_and_exits_1(self):
        self.endpoint("beh", "behaviours.py")
        p = self.cli("run", "beh", "--input", '{"mode": "fail", "why": "x"}')
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertIn("is FAILED:\nTraceback (most recent call last):\n", p.stderr)
        self.assertIn("\nValueError: bad thing: x\n", p.stderr)
        self.assertNotIn("\\n", p.stderr)

    def test_exit_codes_of_usage_and_an_unreachable_server(self):
        self.assertEqual(self.cli("run", "echo", "--input", "{oops").returncode, 2)
        self.assertEqual(self.cli("ps", "--nope").returncode, 2)
        p = self.cli("run", "nope", "--input", "{}")
        self.assertEqual(p.returncode, 1)
        self.assertIn("nope", p.stderr)
        p = subprocess.run([GANTRY, "--url", "http://127.0.0.1:1", "ps"], env=self.env(),
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 3)
        self.assertIn("cannot reach the server", p.stderr)

    def test_a_typo_in_gantry_toml_is_caught_before_any_upload(self):
        d = tempfile.mkdtemp(prefix="gantry-typo-")
        try:
            text = "print('never uploaded %f')\n" % time.time()
            with open(os.path.join(d, "handler.py"), "w") as f:
                f.write(text)
            with open(os.path.join(d, "gantry.toml"), "w") as f:
                f.write('id = "typo"\nworkersMaxx = 2\n[worker]\n'
                        'command = ["/usr/bin/python3", "handler.py"]\n')
            p = self.cli("deploy", d)
            self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
            self.assertIn("unknown field: workersMaxx (did you mean workersMax?)", p.stderr)
            self.assertNotIn("uploading", p.stderr)
            # The server got nothing: no endpoint, and the handler's blob is still missing.
            self.assertEqual(self.server.request("GET", "/v1/endpoints/typo").status, 404)
            digest = hashlib.sha256(text.encode()).hexdigest()
            r = self.server.request("POST", "/v1/blobs/missing", {"digests": [digest]})
            self.assertEqual(r.json["missing"], [digest], r)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        # The server's own refusal names the field it means too.
        r = self.server.request("POST", "/v1/endpoints", {"id": "t2", "workersMaxx": 2})
        self.assertEqual(r.status, 400, r)
        self.assertIn("unknown field: workersMaxx (did you mean workersMax?)",
                      r.json["error"]["message"])

    def test_deploy_of_a_directory_that_does_not_exist(self):
        p = self.cli("deploy", "/nonexistent-dir")
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stderr, "gantry: directory /nonexistent-dir does not exist\n")

    def test_an_endpoint_no_node_can_run_is_reported_within_seconds(self):
        self.endpoint("big", "echo.py", gpuTypeIds=["H100", "A100-80GB"])
        start = time.time()
        p = self.cli("run", "big", "--input", "{}", "--wait", "8000", timeout=60)
        took = time.time() - start
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn("is IN_QUEUE: ", p.stderr)
        self.assertIn("H100", p.stderr)
        self.assertLess(took, 5, p.stderr)
        # deploy says so too, and still deploys.
        d = tempfile.mkdtemp(prefix="gantry-big-")
        try:
            with open(os.path.join(d, "gantry.toml"), "w") as f:
                f.write('id = "big2"\ngpuTypeIds = ["H100"]\n[worker]\n'
                        'command = ["/usr/bin/python3", "handler.py"]\n')
            with open(os.path.join(d, "handler.py"), "w") as f:
                f.write("pass\n")
            p = self.cli("deploy", d)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("warning: ", p.stderr)
            self.assertIn("H100", p.stderr)
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
