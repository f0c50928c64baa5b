"""Tests of the keep-alive HTTP client against the fake Gantry."""

import threading
import time
import unittest

from gantry.serverless.http import HttpSession, SessionClosed
from tests.fake_gantry import API_KEY, FakeGantry


class HttpSessionTest(unittest.TestCase):
    def setUp(self):
        self.fake = FakeGantry(hold_s=5.0)
        self.addCleanup(self.fake.close)
        self.session = HttpSession({"Authorization": API_KEY})
        self.addCleanup(self.session.close)
        self.ping = self.fake.env()["RUNPOD_WEBHOOK_PING"]

    def test_reuses_one_connection(self):
        for _ in range(3):
            self.assertEqual(self.session.request("GET", self.ping).status, 200)
        self.assertEqual(len({r.port for r in self.fake.recorded("ping")}), 1)

    def test_replaces_a_connection_the_server_closed(self):
        self.fake.drop_connections = True
        for _ in range(3):
            self.assertEqual(self.session.request("GET", self.ping).status, 200)
            time.sleep(0.05)  # Lets the server's close reach the client.
        self.assertEqual(len({r.port for r in self.fake.recorded("ping")}), 3)

    def test_close_cuts_a_long_poll_short(self):
        take = self.fake.env()["RUNPOD_WEBHOOK_GET_JOB"] + "&job_in_progress=0"
        errors = []

        def poll():
            try:
                self.session.request("GET", take, timeout_s=10)
            except OSError as err:
                errors.append(err)

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.2)  # The poll is now held by the server.
        started = time.monotonic()
        self.session.close()
        poller.join(2)
        self.assertFalse(poller.is_alive())
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertIsInstance(errors[0], SessionClosed)
        with self.assertRaises(SessionClosed):
            self.session.request("GET", self.ping)


if __name__ == "__main__":
    unittest.main()
