"""A fake of Gantry's worker routes for tests: serves jobs, records every request.

Runs an HTTP/1.1 (keep-alive) server on 127.0.0.1, port 0, on a thread of its own. Routes, as in
docs/runpod-protocol.md section 2: job-take, job-take-batch, job-stop, job-done, job-stream, ping.
Long-polls are held for `hold_s` (short, for tests) instead of ~60 s.
"""

import http.server
import json
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

API_KEY = "test-key"
ENDPOINT = "ep1"


class Request(NamedTuple):
    at: float  # time.monotonic()
    method: str
    route: str  # job-take, job-take-batch, job-stop, job-done, job-stream, ping
    job_id: Optional[str]  # job-done and job-stream only
    query: Dict[str, str]
    headers: Dict[str, str]
    body: Any  # parsed JSON, or None
    status: int  # what the fake answered
    port: int  # the client's port: one per connection


class FakeGantry:
    """Thread-safe. Tests configure it through the public attributes and methods below."""

    def __init__(self, worker_id: str = "w1", hold_s: float = 1.0) -> None:
        self.worker_id = worker_id
        self.hold_s = hold_s
        self._cond = threading.Condition()
        # Guarded by _cond.
        self.requests: List[Request] = []
        self._jobs: List[dict] = []
        self._stops: List[str] = []
        self.take_answers_first: List[int] = []  # Statuses (204, 429) for the first job-takes.
        self.drop_connections = False  # Close every connection after one answer, unannounced.
        self.fail_done: Dict[str, int] = {}  # job id -> number of 500s to answer job-done with
        # job id -> times to requeue it on job-done (a retry), answering only once it is taken.
        self.requeue_on_done: Dict[str, int] = {}
        # (route, job id) -> the message of one 400 to answer the next such post with.
        self.refuse: Dict[Tuple[str, str], str] = {}
        self.on_stop_delivered: Optional[Callable[[List[str]], None]] = None
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, address: None  # Workers hang up at exit.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v2/{ENDPOINT}"

    def env(self) -> Dict[str, str]:
        """The environment Gantry would give the worker."""
        w = self.worker_id
        return {
            "RUNPOD_POD_ID": w,
            "RUNPOD_AI_API_KEY": API_KEY,
            "RUNPOD_ENDPOINT_ID": ENDPOINT,
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.base}/job-take/{w}?gpu=test",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.base}/job-done/{w}/$ID?gpu=test",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{self.base}/job-stream/{w}/$ID?gpu=test",
            "RUNPOD_WEBHOOK_PING": f"{self.base}/ping/{w}",
            "RUNPOD_PING_INTERVAL": "100",
        }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_job(self, job_id: str, job_input: Any) -> None:
        with self._cond:
            self._jobs.append({"id": job_id, "input": job_input})
            self._cond.notify_all()

    def queued(self) -> List[str]:
        with self._cond:
            return [job["id"] for job in self._jobs]

    def stop_jobs(self, *job_ids: str) -> None:
        """The next job-stop answer lists these ids."""
        with self._cond:
            self._stops.extend(job_ids)
            self._cond.notify_all()

    def recorded(self, route: Optional[str] = None, job_id: Optional[str] = None) -> List[Request]:
        with self._cond:
            return [r for r in self.requests
                    if route in (None, r.route) and job_id in (None, r.job_id)]

    def wait_for(self, predicate: Callable[[], Any], timeout_s: float = 5.0) -> Any:
        """Waits until `predicate()` (called with no lock held) is truthy; returns its value.
        Raises AssertionError on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout_s} s; requests: {self.summary()}")
            with self._cond:
                self._cond.wait(min(remaining, 0.05))

    def wait_done(self, job_id: str, timeout_s: float = 5.0) -> Request:
        """The first final (non-progress) job-done for `job_id` that was answered 200."""
        def final() -> Optional[Request]:
            for r in self.recorded("job-done", job_id):
                if r.status == 200 and r.body.get("status") != "IN_PROGRESS":
                    return r
            return None
        return self.wait_for(final, timeout_s)

    def summary(self) -> List[str]:
        return [f"{r.route} {r.job_id or ''} {r.query} -> {r.status}" for r in self.recorded()]

    # -- Serving (called on the server's threads) -------------------------------------------

    def _record(self, request: Request) -> None:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    def _early_take_answer(self) -> Optional[int]:
        with self._cond:
            return self.take_answers_first.pop(0) if self.take_answers_first else None

    def _take(self, batch_size: Optional[int]) -> Optional[List[dict]]:
        deadline = time.monotonic() + self.hold_s
        with self._cond:
            while not self._jobs:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            count = batch_size or 1
            jobs, self._jobs = self._jobs[:count], self._jobs[count:]
            return jobs

    def _stop(self) -> Optional[List[str]]:
        deadline = time.monotonic() + self.hold_s
        with self._cond:
            while not self._stops:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            ids, self._stops = self._stops, []
        if self.on_stop_delivered is not None:
            self.on_stop_delivered(ids)
        return ids

    def _done_status(self, job_id: str) -> int:
        with self._cond:
            if self.fail_done.get(job_id, 0) > 0:
                self.fail_done[job_id] -= 1
                return 500
            requeue = self.requeue_on_done.get(job_id, 0) > 0
            if requeue:
                # The race a real server allows: the job is offered again before the worker
                # has read this answer.
                self.requeue_on_done[job_id] -= 1
                self._jobs.append({"id": job_id, "input": {}})
                self._cond.notify_all()
                self._cond.wait_for(lambda: all(j["id"] != job_id for j in self._jobs), 5.0)
        if requeue:
            time.sleep(0.3)  # The worker reads the new offer first.
        return 200

    def _refusal(self, route: str, job_id: Optional[str]) -> Optional[str]:
        with self._cond:
            return self.refuse.pop((route, job_id or ""), None)


class _NotJson(NamedTuple):
    """A body holding NaN, Infinity or -Infinity: Python's json reads them, Gantry does not."""

    token: str


class _ConstantFound(Exception):
    pass


def _raise_constant(token: str) -> Any:
    raise _ConstantFound(token)


def _parse(raw: bytes) -> Any:
    """The body as JSON, or a _NotJson."""
    try:
        return json.loads(raw, parse_constant=_raise_constant)
    except _ConstantFound as found:
        return _NotJson(str(found))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeGantry

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = _parse(raw) if raw else None
        # /v2/<ep>/<route>/<worker>[/<job>]
        parts = url.path.split("/")
        route = parts[3] if len(parts) > 3 else ""
        job_id = parts[5] if len(parts) > 5 else None
        fake = self.fake

        status, answer = 404, None
        refusal = fake._refusal(route, job_id) if route in ("job-done", "job-stream") else None
        if self.headers.get("Authorization") != API_KEY:
            status = 401
        elif isinstance(body, _NotJson) or refusal is not None:
            # As Gantry answers a body it refuses (a NaN, which JSON does not have, included).
            message = refusal or f"{body.token} is not a finite number: JSON has no NaN"
            status, answer = 400, {"error": {"code": "invalid_argument", "message": message}}
        elif route in ("job-take", "job-take-batch"):
            batch = int(query["batch_size"]) if route == "job-take-batch" else None
            status = fake._early_take_answer()
            if status is None:
                jobs = fake._take(batch)
                status = 204 if not jobs else 200
                answer = jobs if batch else (jobs[0] if jobs else None)
        elif route == "job-stop":
            ids = fake._stop()
            status, answer = (200, {"jobsToStop": ids}) if ids else (204, None)
        elif route == "job-done":
            status, answer = fake._done_status(job_id), {}
        elif route in ("job-stream", "ping"):
            status, answer = 200, {}
        fake._record(Request(time.monotonic(), self.command, route, job_id, query,
                             dict(self.headers), body, status, self.client_address[1]))
        data = b"" if answer is None or status == 204 else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        if data:
            self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)
        if fake.drop_connections:
            self.close_connection = True
