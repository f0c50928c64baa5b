"""Progress updates: `{"status": "IN_PROGRESS", "output": value}` posted to a job's job-done URL.

`progress_update()` never blocks on the network: updates are posted in order by one background
thread. A job's result waits (briefly) for its earlier updates, so that an update does not land
after the result it precedes.
"""

import collections
import logging
import queue
import threading
import time
from typing import Any, Callable, Optional

from .results import encode

log = logging.getLogger(__name__)


class ProgressReporter:
    """Posts progress updates on one background thread, in the order submitted. Thread-safe."""

    def __init__(self, post: Callable[[str, bytes], Any]) -> None:
        """`post(job_id, payload)` sends one update; it is called on the reporter's thread."""
        self._post = post
        self._queue: "queue.SimpleQueue[Optional[tuple]]" = queue.SimpleQueue()
        self._cond = threading.Condition()
        # Guarded by _cond: updates submitted but not yet posted, per job id.
        self._pending: collections.Counter = collections.Counter()
        self._thread: Optional[threading.Thread] = None

    def submit(self, job_id: str, value: Any) -> None:
        """Queues an update. A value that is not JSON is logged and dropped."""
        try:
            payload = encode({"status": "IN_PROGRESS", "output": value})
        except (TypeError, ValueError) as err:
            log.error("job %s: progress update dropped, not JSON: %s", job_id, err)
            return
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="gantry-progress", daemon=True
                )
                self._thread.start()
            self._pending[job_id] += 1
        self._queue.put((job_id, payload))

    def flush(self, job_id: str, timeout_s: float) -> None:
        """Waits up to `timeout_s` until the updates queued for `job_id` have been posted."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending[job_id] > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("job %s: result sent before its progress updates", job_id)
                    return
                self._cond.wait(remaining)

    def close(self) -> None:
        """Stops the thread after the updates already queued. Idempotent."""
        self._queue.put(None)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job_id, payload = item
            try:
                self._post(job_id, payload)
            finally:
                with self._cond:
                    self._pending[job_id] -= 1
                    if self._pending[job_id] <= 0:
                        del self._pending[job_id]
                    self._cond.notify_all()


_lock = threading.Lock()
_reporter: Optional[ProgressReporter] = None  # Guarded by _lock; set by the running worker.


def install(reporter: Optional[ProgressReporter]) -> None:
    """Makes `reporter` the one progress_update() uses (None: updates are only logged)."""
    global _reporter
    with _lock:
        _reporter = reporter


def progress_update(job: dict, progress: Any) -> None:
    """Reports the progress of a running job: its status shows `progress` until it finishes.

    Callable from any thread and from async handlers; returns at once (RunPod's SDK sends the
    update in the background too). Outside a worker (local test runs) the update is logged.
    """
    with _lock:
        reporter = _reporter
    if reporter is None:
        log.info("job %s: progress %r", job.get("id"), progress)
        return
    reporter.submit(job["id"], progress)
