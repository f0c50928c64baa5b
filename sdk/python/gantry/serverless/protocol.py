"""The worker's side of the job routes (job-take, job-stop, job-done, job-stream).

See docs/runpod-protocol.md, section 2. Every request carries `Authorization: <api key>` (raw, no
`Bearer`). Result posts carry their body as JSON and are retried; the heartbeat lives in
`heartbeat.py`.
"""

import dataclasses
import http.client
import logging
import time
from typing import Any, List, Optional, Sequence

from .config import WorkerEnv
from .http import HttpSession, Response

log = logging.getLogger(__name__)

# The server holds job-take and job-stop for up to ~60 s; wait a little longer than that.
LONG_POLL_TIMEOUT_S = 75.0
# Default: 30 s per attempt to post a result.
POST_TIMEOUT_S = 30.0
# Default: 3 attempts in all, 0.5 s then 1 s apart (RunPod's SDK: 3 attempts).
DEFAULT_RETRY_DELAYS_S = (0.5, 1.0)


class TooManyRequests(Exception):
    """The server answered 429: back off before asking again."""


class ProtocolError(Exception):
    """The server answered with a status or body the protocol does not allow here."""


# Statuses by which the server refuses a posted body itself (malformed, a number JSON cannot
# hold, too large): posting it again would not help.
BODY_REFUSED = (400, 413)


@dataclasses.dataclass(frozen=True)
class PostResult:
    """How a POST of a result, stream chunk or progress update ended. True when it was taken."""

    taken: bool
    status: Optional[int] = None  # the last answer's HTTP status; None when none came
    message: str = ""  # the server's error.message (or its body) when it answered an error

    def __bool__(self) -> bool:
        return self.taken

    @property
    def refusal(self) -> Optional[str]:
        """The server's reason when it refused the body itself (BODY_REFUSED), else None."""
        if self.status in BODY_REFUSED:
            return self.message or f"HTTP {self.status}"
        return None


def take_url(base: str, batch_size: Optional[int], in_progress: bool) -> str:
    """The job-take URL; `batch_size` None means the single-job route, else the batch route."""
    url = base
    if batch_size is not None:
        url = url.replace("/job-take/", "/job-take-batch/") + f"&batch_size={batch_size}"
    return url + f"&job_in_progress={1 if in_progress else 0}"


def job_url(template: str, job_id: str, is_stream: bool) -> str:
    """A job-done or job-stream URL for one job (RunPod's SDK appends `isStream` to both)."""
    return template.replace("$ID", job_id) + f"&isStream={'true' if is_stream else 'false'}"


class WorkerApi:
    """Client for the job routes of one worker. Thread-safe.

    take() and poll_stop() each use a session of their own, so that close_take() and close()
    can cut their long-polls short without disturbing result posts in flight.
    """

    def __init__(
        self, env: WorkerEnv, retry_delays_s: Sequence[float] = DEFAULT_RETRY_DELAYS_S
    ) -> None:
        self._env = env
        self._retry_delays_s = tuple(retry_delays_s)
        headers = {"Authorization": env.api_key}
        self._take_http = HttpSession(headers, max_idle=1)
        self._stop_http = HttpSession(headers, max_idle=1)
        self._post_http = HttpSession(headers)

    @property
    def has_stop_channel(self) -> bool:
        return self._env.job_stop_url is not None

    def take(self, batch_size: Optional[int], in_progress: bool) -> List[dict]:
        """Long-polls for jobs; [] when none came. `batch_size` as in take_url().

        Raises TooManyRequests on 429, ProtocolError on any other unexpected answer, and
        OSError / HTTPException when no answer came.
        """
        url = take_url(self._env.job_take_url, batch_size, in_progress)
        response = self._take_http.request("GET", url, timeout_s=LONG_POLL_TIMEOUT_S)
        body = _expect_json(response, "job-take")
        if body is None:
            return []
        jobs = [body] if isinstance(body, dict) else body
        if not isinstance(jobs, list):
            raise ProtocolError(f"job-take answered {type(body).__name__}, not a job")
        valid = [job for job in jobs if isinstance(job, dict) and isinstance(job.get("id"), str)]
        if len(valid) != len(jobs):
            log.error("job-take: ignored %d job(s) without a string id", len(jobs) - len(valid))
        return valid

    def poll_stop(self) -> List[str]:
        """Long-polls job-stop; the ids of jobs to stop, [] when none. Raises as take()."""
        assert self._env.job_stop_url is not None
        response = self._stop_http.request(
            "GET", self._env.job_stop_url, timeout_s=LONG_POLL_TIMEOUT_S
        )
        body = _expect_json(response, "job-stop")
        if body is None:
            return []
        ids = body.get("jobsToStop") if isinstance(body, dict) else None
        if not isinstance(ids, list):
            raise ProtocolError("job-stop answered without a jobsToStop list")
        return [job_id for job_id in ids if isinstance(job_id, str)]

    def post_done(self, job_id: str, payload: bytes, is_stream: bool) -> PostResult:
        """POSTs a job-done body (a result or a progress update)."""
        url = job_url(self._env.job_done_url, job_id, is_stream)
        return self._post(url, payload, job_id)

    def post_stream(self, job_id: str, payload: bytes) -> PostResult:
        """POSTs one `{"output": chunk}` body to job-stream."""
        if self._env.job_stream_url is None:
            return PostResult(False)
        return self._post(job_url(self._env.job_stream_url, job_id, False), payload, job_id)

    def close_take(self) -> None:
        """Cuts a job-take long-poll short; later take() calls raise SessionClosed."""
        self._take_http.close()

    def close(self) -> None:
        """Closes every connection, including those of posts in flight."""
        self._take_http.close()
        self._stop_http.close()
        self._post_http.close()

    def _post(self, url: str, payload: bytes, job_id: str) -> PostResult:
        """POSTs with retries on no answer, 429 and 5xx; other statuses are final. A failure is
        logged with the server's message, which says what it refused and why."""
        headers = {"Content-Type": "application/json", "X-Request-ID": job_id}
        problem: Any = None
        result = PostResult(False)
        for delay in (0.0,) + self._retry_delays_s:
            time.sleep(delay)
            try:
                response = self._post_http.request(
                    "POST", url, body=payload, headers=headers, timeout_s=POST_TIMEOUT_S
                )
            except (OSError, http.client.HTTPException) as err:
                problem, result = err, PostResult(False)
                continue
            if 200 <= response.status < 300:
                return PostResult(True, response.status)
            result = PostResult(False, response.status, _error_message(response))
            problem = f"HTTP {response.status}" + (f": {result.message}" if result.message else "")
            if response.status < 500 and response.status != 429:
                break
        log.error("job %s: POST %s failed: %s", job_id, _route(url), problem)
        return result


def _expect_json(response: Response, route: str) -> Any:
    """The JSON body of a long-poll answer; None for 204 (nothing this time)."""
    if response.status == 204:
        return None
    if response.status == 429:
        raise TooManyRequests()
    if response.status != 200:
        raise ProtocolError(f"{route} answered HTTP {response.status}")
    try:
        return response.json()
    except ValueError as err:
        raise ProtocolError(f"{route} answered invalid JSON: {err}") from None


def _error_message(response: Response) -> str:
    """The message of an error answer: its `{"error": {"message": ...}}`, else its body's start."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        if isinstance(message, str):
            return message
    return response.body[:200].decode("utf-8", "replace").strip()


def _route(url: str) -> str:
    """A URL without its query string, for log lines."""
    return url.split("?", 1)[0]
