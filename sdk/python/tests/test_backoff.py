"""In-process worker tests of the job-take back-off, with its delays shortened."""

import threading
import unittest
from unittest import mock

from gantry.serverless import worker
from gantry.serverless.config import HandlerConfig, WorkerEnv
from tests.fake_gantry import FakeGantry


class TakeBackoffTest(unittest.TestCase):
    def run_worker(self, first_take_statuses):
        """Runs an in-process worker until its first job (refresh_worker makes it exit);
        the fake answers the first job-takes with `first_take_statuses`."""
        fake = FakeGantry()
        self.addCleanup(fake.close)
        fake.take_answers_first = list(first_take_statuses)
        fake.add_job("j1", {})
        env = WorkerEnv.from_environ(fake.env())
        config = HandlerConfig(handler=lambda job: "ok", refresh_worker=True)
        with self.assertLogs("gantry", "INFO"):  # Keeps the worker's log out of the output.
            thread = threading.Thread(target=worker.Worker(env, config).run)
            thread.start()
            thread.join(5)
        self.assertFalse(thread.is_alive())
        return fake.recorded("job-take")

    def test_429_backs_off(self):
        with mock.patch.object(worker, "TOO_MANY_REQUESTS_BACKOFF_S", 0.4):
            first, second = self.run_worker([429])[:2]
        self.assertEqual((first.status, second.status), (429, 200))
        self.assertGreaterEqual(second.at - first.at, 0.4)

    def test_server_error_backs_off(self):
        with mock.patch.object(worker, "TAKE_ERROR_BACKOFF_S", 0.3):
            first, second = self.run_worker([503])[:2]
        self.assertEqual((first.status, second.status), (503, 200))
        self.assertGreaterEqual(second.at - first.at, 0.3)


if __name__ == "__main__":
    unittest.main()
