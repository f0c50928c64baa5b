"""End-to-end tests: a real worker process (tests/worker_main.py) against the fake Gantry."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from tests.fake_gantry import API_KEY, FakeGantry

SDK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_MAIN = os.path.join(SDK_ROOT, "tests", "worker_main.py")
EXIT_TIMEOUT_S = 5.0


class WorkerTestCase(unittest.TestCase):
    """Each test gets a fake Gantry and may start one worker process against it."""

    def setUp(self):
        self.fake = FakeGantry()
        self.addCleanup(self.fake.close)
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.marker = os.path.join(self.tmp.name, "marker")
        self.proc = None

    def start_worker(self, handler, **env):
        full_env = {
            **os.environ,
            **self.fake.env(),
            "PYTHONPATH": SDK_ROOT,
            "TEST_HANDLER": handler,
            "TEST_MARKER": self.marker,
            **env,
        }
        self.log_file = open(os.path.join(self.tmp.name, "worker.log"), "w+b")
        self.addCleanup(self.log_file.close)
        self.proc = subprocess.Popen([sys.executable, WORKER_MAIN], env=full_env,
                                     stdout=self.log_file, stderr=subprocess.STDOUT)
        self.addCleanup(self._reap)
        return self.proc

    def _reap(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def worker_log(self):
        self.log_file.seek(0)
        return self.log_file.read().decode(errors="replace")

    def wait_exit(self, timeout_s=EXIT_TIMEOUT_S):
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.fail(f"worker did not exit; log:\n{self.worker_log()}")

    def wait_for_ping_listing(self, job_id):
        """Waits until the worker has started `job_id`: its heartbeat lists it."""
        self.fake.wait_for(lambda: [r for r in self.fake.recorded("ping")
                                    if job_id in r.query.get("job_id", "").split(",")])

    def notes(self):
        if not os.path.exists(self.marker):
            return []
        with open(self.marker, encoding="utf-8") as file:
            return file.read().split()


class HandlerKindsTest(WorkerTestCase):
    def test_sync_handler(self):
        for i in range(3):
            self.fake.add_job(f"j{i}", {"x": i})
        self.start_worker("sync_echo")
        dones = [self.fake.wait_done(f"j{i}") for i in range(3)]
        self.assertEqual(dones[0].body, {"output": {"echo": {"x": 0}}})
        self.assertEqual(dones[0].query["isStream"], "false")
        self.assertEqual(dones[0].query["gpu"], "test")
        first_take = self.fake.recorded("job-take")[0]
        self.assertEqual(first_take.query["job_in_progress"], "0")
        self.assertTrue(all(r.headers.get("Authorization") == API_KEY
                            for r in self.fake.recorded()))
        # Keep-alive: one connection for the takes, one (reused by each job) for the results.
        self.assertEqual(len({r.port for r in self.fake.recorded("job-take")}), 1)
        self.assertEqual(len({r.port for r in dones}), 1)

    def test_async_handler(self):
        self.fake.add_job("j1", "hi")
        self.start_worker("async_echo")
        self.assertEqual(self.fake.wait_done("j1").body,
                         {"output": {"echo": "hi", "async": True}})

    def test_generator_streams_chunks_then_empty_output(self):
        self.fake.add_job("j1", {})
        self.start_worker("generator")
        done = self.fake.wait_done("j1")
        self.assertEqual(done.body, {"output": []})
        self.assertEqual(done.query["isStream"], "true")
        chunks = [r.body for r in self.fake.recorded("job-stream", "j1")]
        self.assertEqual(chunks, [{"output": {"i": 0}}, {"output": {"i": 1}},
                                  {"output": {"i": 2}}])

    def test_async_generator_aggregates_stream(self):
        self.fake.add_job("j1", {})
        self.start_worker("async_generator", TEST_AGGREGATE="1")
        done = self.fake.wait_done("j1")
        self.assertEqual(done.body, {"output": [0, 1, 2]})
        self.assertEqual(done.query["isStream"], "true")
        self.assertEqual(len(self.fake.recorded("job-stream", "j1")), 3)


class ErrorsTest(WorkerTestCase):
    def test_exception_is_reported_like_runpod(self):
        self.fake.add_job("j1", 7)
        self.start_worker("raises")
        body = self.fake.wait_done("j1").body
        self.assertEqual(list(body), ["error"])
        error = json.loads(body["error"])
        self.assertEqual(set(error), {"error_type", "error_message", "error_traceback",
                                      "hostname", "worker_id", "runpod_version"})
        self.assertEqual(error["error_type"], "<class 'ValueError'>")
        self.assertEqual(error["error_message"], "boom 7")
        self.assertIn("in raises", error["error_traceback"])
        self.assertEqual(error["worker_id"], "w1")
        self.assertTrue(error["runpod_version"].startswith("1.12.0+gantry"))

    def test_returned_error_fails_the_job(self):
        self.fake.add_job("j1", {})
        self.start_worker("returns_error")
        self.assertEqual(self.fake.wait_done("j1").body, {"error": "bad input"})

    def test_job_done_is_retried_after_500(self):
        self.fake.fail_done["j1"] = 2
        self.fake.add_job("j1", {})
        self.start_worker("sync_echo")
        self.fake.wait_done("j1")
        self.assertEqual([r.status for r in self.fake.recorded("job-done", "j1")],
                         [500, 500, 200])

    def test_job_offered_again_while_its_result_is_reported_runs_again(self):
        # A retry: the server requeues the job on job-done and offers it again before the
        # worker has read the job-done answer. The new attempt must run, not be ignored.
        self.fake.requeue_on_done["j1"] = 1
        self.fake.add_job("j1", {})
        self.start_worker("sync_echo", TEST_CONCURRENCY="2")  # A take while j1 is reported.
        self.fake.wait_for(lambda: len(self.fake.recorded("job-done", "j1")) == 2)
        self.assertNotIn("ignored", self.worker_log())


class NotJsonTest(WorkerTestCase):
    """Gantry refuses NaN and infinities (JSON has none); the worker must not send them."""

    def test_nan_result_fails_the_job_at_once_naming_the_value(self):
        self.fake.add_job("j1", {})
        started = time.monotonic()
        self.start_worker("returns_nan")
        error = json.loads(self.fake.wait_done("j1").body["error"])
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(error["error_message"], "output.x[2] is NaN: JSON has no NaN")
        self.assertEqual([r.status for r in self.fake.recorded("job-done", "j1")], [200])
        self.assertIn("output.x[2] is NaN: JSON has no NaN", self.worker_log())

    def test_infinite_stream_chunk_fails_the_job(self):
        self.fake.add_job("j1", {})
        self.start_worker("streams_infinity")
        error = json.loads(self.fake.wait_done("j1").body["error"])
        self.assertEqual(error["error_message"],
                         "stream chunk 1: output.y is -Infinity: JSON has no -Infinity")
        self.assertEqual([r.body for r in self.fake.recorded("job-stream", "j1")],
                         [{"output": 1}])

    def test_nan_progress_update_is_dropped_and_logged(self):
        self.fake.add_job("j1", {})
        self.start_worker("progress_nan")
        self.assertEqual(self.fake.wait_done("j1").body, {"output": "finished"})
        self.assertEqual(len(self.fake.recorded("job-done", "j1")), 1)
        self.assertIn("output.pct is NaN: JSON has no NaN", self.worker_log())

    def test_refused_result_is_logged_and_fails_the_job_at_once(self):
        self.fake.refuse[("job-done", "j1")] = "output.echo is not what the server takes"
        self.fake.add_job("j1", {})
        self.start_worker("sync_echo")
        error = json.loads(self.fake.wait_done("j1").body["error"])
        self.assertEqual(error["error_message"], "the server refused the job's result: "
                                                 "output.echo is not what the server takes")
        self.assertEqual([r.status for r in self.fake.recorded("job-done", "j1")], [400, 200])
        self.fake.wait_for(lambda: "not what the server takes" in self.worker_log())
        self.assertIn("HTTP 400: output.echo is not what the server takes", self.worker_log())

    def test_refused_progress_update_is_logged(self):
        self.fake.refuse[("job-done", "j1")] = "progress refused here"
        self.fake.add_job("j1", {})
        self.start_worker("progress")
        self.assertEqual(self.fake.wait_done("j1").body, {"output": "finished"})
        self.fake.wait_for(lambda: "HTTP 400: progress refused here" in self.worker_log())

    def test_refused_stream_chunk_is_logged(self):
        self.fake.refuse[("job-stream", "j1")] = "chunk refused here"
        self.fake.add_job("j1", {})
        self.start_worker("generator")
        self.assertEqual(self.fake.wait_done("j1").body, {"output": []})
        self.fake.wait_for(lambda: "HTTP 400: chunk refused here" in self.worker_log())


class ProgressTest(WorkerTestCase):
    def check_progress(self, handler, value):
        self.fake.add_job("j1", {})
        self.start_worker(handler)
        self.fake.wait_done("j1")
        posts = self.fake.recorded("job-done", "j1")
        self.assertEqual([r.body for r in posts],
                         [{"status": "IN_PROGRESS", "output": value}, {"output": "finished"}])
        self.assertEqual(posts[0].query["isStream"], "false")

    def test_progress_from_sync_handler(self):
        self.check_progress("progress", "half")

    def test_progress_from_async_handler(self):
        self.check_progress("async_progress", {"pct": 50})


class RefreshTest(WorkerTestCase):
    def check_exits_after_one_job(self, handler, **env):
        self.fake.add_job("j1", {})
        self.fake.add_job("j2", {})
        self.start_worker(handler, **env)
        self.assertIs(self.fake.wait_done("j1").body.get("stopPod"), True)
        self.assertEqual(self.wait_exit(), 0)
        self.assertEqual(self.fake.queued(), ["j2"])

    def test_refresh_worker_returned_by_handler(self):
        self.check_exits_after_one_job("refresh")

    def test_refresh_worker_in_config(self):
        self.check_exits_after_one_job("sync_echo", TEST_REFRESH="1")


class TakeTest(WorkerTestCase):
    def test_concurrency_uses_batch_route_and_overlaps_jobs(self):
        for i in range(3):
            self.fake.add_job(f"j{i}", {"s": 0.5})
        self.start_worker("sleeps", TEST_CONCURRENCY="3")
        results = [self.fake.wait_done(f"j{i}").body["output"] for i in range(3)]
        take = self.fake.recorded("job-take-batch")[0]
        self.assertEqual(take.query["batch_size"], "3")
        self.assertEqual(take.query["job_in_progress"], "0")
        self.assertEqual(self.fake.recorded("job-take"), [])
        self.assertLess(max(r["start"] for r in results), min(r["end"] for r in results))

    def test_no_content_keeps_polling_without_a_tight_loop(self):
        self.fake.take_answers_first = [204, 204, 204]
        self.fake.add_job("j1", {})
        self.start_worker("sync_echo")
        self.fake.wait_done("j1")
        takes = self.fake.recorded("job-take")
        self.assertEqual([r.status for r in takes[:4]], [204, 204, 204, 200])
        gaps = [b.at - a.at for a, b in zip(takes, takes[1:4])]
        self.assertTrue(all(gap > 0.1 for gap in gaps), gaps)


class HeartbeatTest(WorkerTestCase):
    def pings_with(self, job_id):
        return [r for r in self.fake.recorded("ping")
                if job_id in r.query.get("job_id", "").split(",")]

    def test_ping_lists_jobs_in_progress_even_while_the_gil_is_held(self):
        self.fake.add_job("j1", {"s": 1.0})
        self.start_worker("holds_gil")
        self.fake.wait_for(lambda: len(self.pings_with("j1")) >= 5, timeout_s=5)
        ping = self.pings_with("j1")[0]
        self.assertEqual(ping.query["job_id"], "j1")
        self.assertTrue(ping.query["runpod_version"].startswith("1.12.0+gantry"))
        done_at = self.fake.wait_done("j1").at
        self.fake.wait_for(lambda: [r for r in self.fake.recorded("ping")
                                    if r.at > done_at + 0.2 and "job_id" not in r.query])

    def test_heartbeat_dies_with_the_worker(self):
        self.start_worker("sync_echo")
        self.fake.wait_for(lambda: self.fake.recorded("ping"))
        self.proc.kill()
        self.proc.wait()
        time.sleep(0.3)  # Lets a ping already on the wire land.
        count = len(self.fake.recorded("ping"))
        time.sleep(0.5)  # Five ping intervals.
        self.assertEqual(len(self.fake.recorded("ping")), count)


class StopTest(WorkerTestCase):
    def check_stop_frees_slot(self, handler):
        self.fake.add_job("j1", {"s": 30})
        self.start_worker(handler)
        self.wait_for_ping_listing("j1")
        self.fake.stop_jobs("j1")
        self.fake.add_job("j2", {"s": 0})
        self.fake.wait_done("j2")
        self.assertEqual(self.fake.recorded("job-done", "j1"), [])
        self.fake.wait_for(lambda: "j1" in self.notes())
        return self.notes()

    def test_stop_cancels_async_handler(self):
        self.assertIn("CancelledError", self.check_stop_frees_slot("async_busy"))

    def test_stop_interrupts_sync_handler(self):
        self.assertIn("JobStopped", self.check_stop_frees_slot("busy"))

    def test_stop_before_job_is_offered_is_remembered(self):
        # Offered a little after the stop was answered, as a server re-offering it might.
        self.fake.on_stop_delivered = lambda ids: threading.Timer(
            0.2, self.fake.add_job, ("j1", {"s": 30})).start()
        self.fake.stop_jobs("j1")
        self.start_worker("busy")
        self.fake.wait_for(lambda: "j1" not in self.fake.queued() and
                           self.fake.recorded("job-stop"))
        self.fake.add_job("j2", {"s": 0})
        self.fake.wait_done("j2")
        self.assertEqual(self.fake.recorded("job-done", "j1"), [])
        self.assertEqual(self.notes(), [])  # j1's handler never ran.


class ShutdownTest(WorkerTestCase):
    def test_sigterm_lets_the_job_in_flight_finish(self):
        self.fake.add_job("j1", {"s": 0.5})
        self.start_worker("sleeps")
        self.wait_for_ping_listing("j1")
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.wait_exit(), 0)
        self.assertIn("output", self.fake.wait_done("j1", timeout_s=0).body)

    def test_sigterm_when_idle_exits_promptly(self):
        self.start_worker("sync_echo")
        self.fake.wait_for(lambda: self.fake.recorded("ping"))
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.wait_exit(), 0)
        self.assertLess(time.monotonic() - started, 2.0)

    def test_sigterm_while_being_stopped_exits_without_a_warning(self):
        # A normal stop (idleness): the server answers job-take 204 at once until the agent's
        # SIGTERM, and the key keeps working. The worker leaves quietly: INFO lines only.
        self.fake.add_job("j1", {})
        self.start_worker("sync_echo")
        self.fake.wait_done("j1")
        with self.fake._cond:
            self.fake.take_answers_first = [204] * 1000
        seen = len(self.fake.recorded("job-take"))
        self.fake.wait_for(lambda: len(self.fake.recorded("job-take")) >= seen + 2, timeout_s=15)
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.wait_exit(), 0)
        log = self.worker_log()
        self.assertIn("SIGTERM", log)
        noisy = [line for line in log.splitlines()
                 if any(word in line for word in ("WARNING", "ERROR", "Traceback", "heartbeat:"))]
        self.assertEqual(noisy, [], log)


class LocalRunTest(unittest.TestCase):
    ECHO = os.path.join(SDK_ROOT, "examples", "echo.py")

    def run_echo(self, args, cwd):
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
        env["PYTHONPATH"] = SDK_ROOT
        return subprocess.run([sys.executable, self.ECHO, *args], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=10)

    def test_test_input_argument(self):
        with tempfile.TemporaryDirectory() as cwd:
            done = self.run_echo(["--test_input", '{"input": {"a": 1}}'], cwd)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(json.loads(done.stdout), {"output": {"a": 1}})

    def test_test_input_file(self):
        with tempfile.TemporaryDirectory() as cwd:
            with open(os.path.join(cwd, "test_input.json"), "w", encoding="utf-8") as file:
                file.write('{"input": "from file"}')
            done = self.run_echo([], cwd)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(json.loads(done.stdout), {"output": "from file"})

    def test_no_test_input_fails(self):
        with tempfile.TemporaryDirectory() as cwd:
            done = self.run_echo([], cwd)
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stdout, "")


if __name__ == "__main__":
    unittest.main()
