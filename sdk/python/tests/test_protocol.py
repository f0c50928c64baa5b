"""Unit tests of the pure protocol pieces: URLs, environment, job-done bodies."""

import json
import unittest

from gantry.serverless.config import HandlerConfig, WorkerEnv, is_local
from gantry.serverless.heartbeat import ping_url
from gantry.serverless.job import Kind, handler_kind
from gantry.serverless.protocol import job_url, take_url
from gantry.serverless.results import ErrorContext, encode, error_body, result_body

TAKE = "http://h:1/v2/ep/job-take/w1?gpu=A100"


class UrlTest(unittest.TestCase):
    def test_take_url(self):
        self.assertEqual(take_url(TAKE, None, False), TAKE + "&job_in_progress=0")
        self.assertEqual(take_url(TAKE, 4, True),
                         "http://h:1/v2/ep/job-take-batch/w1?gpu=A100&batch_size=4"
                         "&job_in_progress=1")

    def test_job_url(self):
        self.assertEqual(job_url("http://h/v2/ep/job-done/w1/$ID?gpu=x", "j1", True),
                         "http://h/v2/ep/job-done/w1/j1?gpu=x&isStream=true")

    def test_ping_url(self):
        self.assertEqual(ping_url("http://h/v2/ep/ping/w1", ["a", "b"], "1.12.0+g"),
                         "http://h/v2/ep/ping/w1?job_id=a,b&runpod_version=1.12.0%2Bg")
        self.assertEqual(ping_url("http://h/p", [], "1"), "http://h/p?runpod_version=1")


class WorkerEnvTest(unittest.TestCase):
    ENV = {
        "RUNPOD_POD_ID": "w1",
        "RUNPOD_AI_API_KEY": "k",
        "RUNPOD_WEBHOOK_GET_JOB": "http://h/v2/ep/job-take/$RUNPOD_POD_ID?gpu=x",
        "RUNPOD_WEBHOOK_POST_OUTPUT": "http://h/v2/ep/job-done/w1/$ID?gpu=x",
        "RUNPOD_WEBHOOK_PING": "http://h/v2/ep/ping/$RUNPOD_POD_ID",
        "RUNPOD_PING_INTERVAL": "2500",
    }

    def test_parses_and_derives_stop_url(self):
        env = WorkerEnv.from_environ(self.ENV)
        self.assertEqual(env.job_take_url, "http://h/v2/ep/job-take/w1?gpu=x")
        self.assertEqual(env.job_stop_url, "http://h/v2/ep/job-stop/w1?gpu=x")
        self.assertEqual(env.ping_url, "http://h/v2/ep/ping/w1")
        self.assertEqual(env.ping_interval_s, 2.5)
        self.assertIsNone(env.job_stream_url)
        self.assertFalse(is_local(self.ENV))

    def test_stop_url_override_and_bad_interval(self):
        with self.assertLogs("gantry", "WARNING"):
            env = WorkerEnv.from_environ({**self.ENV, "RUNPOD_WEBHOOK_JOB_STOP": "http://s/stop",
                                          "RUNPOD_PING_INTERVAL": "soon"})
        self.assertEqual(env.job_stop_url, "http://s/stop")
        self.assertEqual(env.ping_interval_s, 10.0)

    def test_missing_urls(self):
        with self.assertRaises(ValueError):
            WorkerEnv.from_environ({"RUNPOD_WEBHOOK_GET_JOB": "http://h/t?x=1"})
        self.assertTrue(is_local({}))


class ResultBodyTest(unittest.TestCase):
    def test_plain_values(self):
        self.assertEqual(result_body("x"), {"output": "x"})
        self.assertEqual(result_body(None), {"output": None})
        self.assertEqual(result_body([1]), {"output": [1]})

    def test_dict_keys(self):
        value = {"error": "bad", "refresh_worker": True, "a": 1}
        self.assertEqual(result_body(value), {"output": {"a": 1}, "error": "bad", "stopPod": True})
        self.assertEqual(value, {"error": "bad", "refresh_worker": True, "a": 1})  # Untouched.
        self.assertEqual(result_body({"error": "bad"}), {"error": "bad"})
        self.assertEqual(result_body({"error": None, "a": 1}), {"output": {"a": 1}})
        self.assertEqual(result_body({}), {})

    def test_error_body(self):
        try:
            raise KeyError("k")
        except KeyError as exc:
            body = error_body(exc, ErrorContext("w1", "host"))
        info = json.loads(body["error"])
        self.assertEqual(info["error_type"], "<class 'KeyError'>")
        self.assertEqual(info["error_message"], "'k'")
        self.assertIn("raise KeyError", info["error_traceback"])
        self.assertEqual((info["worker_id"], info["hostname"]), ("w1", "host"))


class EncodeTest(unittest.TestCase):
    def reason(self, body):
        with self.assertRaises(ValueError) as caught:
            encode(body)
        return str(caught.exception)

    def test_numbers_as_json_has_them(self):
        self.assertEqual(encode({"output": [0.1, 1.0, 3.6799999999999995e-4, 10**20, "\u00e9"]}),
                         '{"output": [0.1, 1.0, 0.00036799999999999995, 100000000000000000000, '
                         '"\u00e9"]}'.encode())

    def test_what_json_cannot_hold_is_named_by_its_path(self):
        inf = float("inf")
        self.assertEqual(self.reason({"output": {"x": [1, 2, float("nan")]}}),
                         "output.x[2] is NaN: JSON has no NaN")
        self.assertEqual(self.reason({"output": inf}), "output is Infinity: JSON has no Infinity")
        self.assertEqual(self.reason({"output": {"a b": [(0, -inf)]}}),
                         'output["a b"][0][1] is -Infinity: JSON has no -Infinity')
        self.assertEqual(self.reason({"output": {"v": {1, 2}}}),
                         "output.v is not JSON: Object of type set is not JSON serializable")
        self.assertEqual(self.reason({"output": {(1, 2): 3}}),
                         "output has a key of type tuple: JSON keys are strings")
        self.assertEqual(self.reason({"output": {7: float("nan")}}),
                         'output["7"] is NaN: JSON has no NaN')
        self.assertEqual(self.reason(float("nan")), "the value is NaN: JSON has no NaN")
        cycle = []
        cycle.append(cycle)
        self.assertEqual(self.reason({"output": cycle}),
                         "output[0] contains itself: JSON has no cycles")


class HandlerConfigTest(unittest.TestCase):
    def test_kinds(self):
        def call(job):
            return job

        async def coroutine(job):
            return job

        def generator(job):
            yield job

        async def async_generator(job):
            yield job

        self.assertIs(handler_kind(call), Kind.CALL)
        self.assertIs(handler_kind(coroutine), Kind.CALL)
        self.assertIs(handler_kind(generator), Kind.GENERATOR)
        self.assertIs(handler_kind(async_generator), Kind.ASYNC_GENERATOR)

    def test_from_dict(self):
        config = HandlerConfig.from_dict({"handler": print, "return_aggregate_stream": 1,
                                          "rp_args": {}})
        self.assertTrue(config.return_aggregate_stream)
        self.assertFalse(config.refresh_worker)
        with self.assertRaises(ValueError):
            HandlerConfig.from_dict({"handler": None})


if __name__ == "__main__":
    unittest.main()
