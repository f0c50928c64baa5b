"""In-process tests of JobRun: handler kinds and result shapes, without HTTP."""

import asyncio
import json
import threading
import time
import unittest

from gantry.serverless.job import JobRun
from gantry.serverless.results import ErrorContext


class JobRunTest(unittest.TestCase):
    def setUp(self):
        self.loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        thread.start()

        def stop_loop():
            self.loop.call_soon_threadsafe(self.loop.stop)
            thread.join(2)
            self.loop.close()

        self.addCleanup(stop_loop)

    def run_job(self, handler, aggregate=False, refresh=False):
        """Runs one job; returns (job-done body, is_stream, streamed bodies, stop_pod)."""
        chunks, finished, outcome = [], threading.Event(), {}

        class Sink:
            def stream(self, job_id, payload):
                chunks.append(json.loads(payload))

            def done(self, job_id, payload, is_stream):
                outcome.update(body=json.loads(payload), is_stream=is_stream)

        def on_done(run, stop_pod):
            outcome["stop_pod"] = stop_pod
            finished.set()

        run = JobRun({"id": "j1", "input": 3}, handler, loop=self.loop, sink=Sink(),
                     errors=ErrorContext("w1", "h"), aggregate_stream=aggregate,
                     refresh_worker=refresh, on_done=on_done)
        run.start()
        self.assertTrue(finished.wait(5))
        return outcome["body"], outcome["is_stream"], chunks, outcome["stop_pod"]

    def test_sync_function_returning_a_coroutine(self):
        async def double(x):
            return x * 2

        body, is_stream, _, _ = self.run_job(lambda job: double(job["input"]))
        self.assertEqual((body, is_stream), ({"output": 6}, False))

    def test_output_that_is_not_json_fails_the_job(self):
        body, _, _, _ = self.run_job(lambda job: {"value": object()})
        self.assertIn("not JSON serializable", json.loads(body["error"])["error_message"])

    def test_output_with_nan_fails_the_job_naming_the_value(self):
        body, _, _, _ = self.run_job(lambda job: {"x": [1, 2, float("nan")]})
        self.assertEqual(list(body), ["error"])
        error = json.loads(body["error"])
        self.assertEqual(error["error_message"], "output.x[2] is NaN: JSON has no NaN")
        self.assertEqual(error["error_type"], "<class 'ValueError'>")

    def test_stream_chunk_with_infinity_fails_the_job(self):
        def handler(job):
            yield 1
            yield {"y": float("inf")}
            yield 2

        body, is_stream, chunks, _ = self.run_job(handler)
        self.assertTrue(is_stream)
        self.assertEqual(chunks, [{"output": 1}])
        self.assertEqual(json.loads(body["error"])["error_message"],
                         "stream chunk 1: output.y is Infinity: JSON has no Infinity")

    def test_refused_result_is_followed_by_an_error(self):
        posted, finished = [], threading.Event()

        class Sink:
            def stream(self, job_id, payload):
                pass

            def done(self, job_id, payload, is_stream):
                posted.append(json.loads(payload))
                return "output.n is not a finite number" if len(posted) == 1 else None

        run = JobRun({"id": "j1", "input": 0}, lambda job: {"n": 1}, loop=self.loop,
                     sink=Sink(), errors=ErrorContext("w1", "h"), aggregate_stream=False,
                     refresh_worker=False, on_done=lambda run, stop_pod: finished.set())
        run.start()
        self.assertTrue(finished.wait(5))
        self.assertEqual(posted[0], {"output": {"n": 1}})
        self.assertEqual(json.loads(posted[1]["error"])["error_message"],
                         "the server refused the job's result: output.n is not a finite number")
        self.assertEqual(len(posted), 2)

    def test_refresh_worker_config_marks_every_result(self):
        body, _, _, stop_pod = self.run_job(lambda job: "x", refresh=True)
        self.assertEqual(body, {"output": "x", "stopPod": True})
        self.assertTrue(stop_pod)

    def test_generator_error_chunk_ends_the_stream(self):
        def handler(job):
            yield 1
            yield {"error": "bad chunk"}
            yield 2

        body, is_stream, chunks, _ = self.run_job(handler, aggregate=True)
        self.assertEqual((body, is_stream), ({"error": "bad chunk"}, True))
        self.assertEqual(chunks, [{"output": 1}])

    def test_async_generator_exception_after_chunks(self):
        async def handler(job):
            yield "a"
            raise RuntimeError("midway")

        body, is_stream, chunks, _ = self.run_job(handler)
        self.assertTrue(is_stream)
        self.assertEqual(chunks, [{"output": "a"}])
        self.assertEqual(json.loads(body["error"])["error_message"], "midway")

    def test_stop_before_the_handler_returns_reports_nothing(self):
        started, unwound, reported = threading.Event(), threading.Event(), []

        def handler(job):
            started.set()
            try:
                while True:
                    time.sleep(0.001)
            finally:
                unwound.set()

        class Sink:
            def stream(self, job_id, payload):
                reported.append(payload)

            def done(self, job_id, payload, is_stream):
                reported.append(payload)

        run = JobRun({"id": "j1", "input": 0}, handler, loop=self.loop, sink=Sink(),
                     errors=ErrorContext("w1", "h"), aggregate_stream=False,
                     refresh_worker=False, on_done=lambda run, stop_pod: ended.append(stop_pod))
        ended = []
        run.start()
        self.assertTrue(started.wait(5))
        self.assertTrue(run.stop())
        self.assertTrue(unwound.wait(5))  # JobStopped was raised in the handler.
        time.sleep(0.1)  # Time enough for a (wrong) report to arrive.
        self.assertEqual(reported, [])
        # Its slot is freed only once the handler has returned.
        self.assertEqual(ended, [False])


if __name__ == "__main__":
    unittest.main()
