"""The heartbeat: `GET <ping url>?job_id=a,b&runpod_version=V` every ping interval.

It runs in a child process (a fresh interpreter, not a fork), so that no handler can starve it:
not a CPU-bound one, not a C call that holds the GIL. The worker tells it the ids of the jobs in
progress through a small file it replaces atomically; the child reads it before each ping.
The worker kills the child when it stops. Should the worker die instead, however it dies, the
child sees its stdin reach end-of-file (or its parent change), removes the file and exits.
"""

import http.client
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from typing import Iterable, List, Optional

from ..version import RUNPOD_VERSION

log = logging.getLogger(__name__)

# Pings are never closer than this, whatever RUNPOD_PING_INTERVAL says.
MIN_PING_INTERVAL_S = 0.05
# How often the child checks that its parent is still the worker.
PARENT_CHECK_S = 1.0

_SDK_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CHILD_CODE = (
    f"import sys; sys.path.insert(0, {_SDK_ROOT!r}); "
    "from gantry.serverless.heartbeat import child_main; child_main()"
)


def ping_url(base: str, job_ids: Iterable[str], version: str = RUNPOD_VERSION) -> str:
    """The URL of one ping; `job_id` is left out when no job is in progress (as RunPod does)."""
    ids = ",".join(job_ids)
    query = f"job_id={urllib.parse.quote(ids, safe=',')}&" if ids else ""
    return f"{base}?{query}runpod_version={urllib.parse.quote(version, safe='')}"


class Heartbeat:
    """The worker's side of the heartbeat process. Thread-safe."""

    def __init__(self, url: str, api_key: str, interval_s: float) -> None:
        self._url = url
        self._api_key = api_key
        self._interval_s = max(interval_s, MIN_PING_INTERVAL_S)
        self._lock = threading.Lock()
        # Guarded by _lock.
        self._dir: Optional[str] = None
        self._process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        """Starts the child process; the first ping goes out at once."""
        with self._lock:
            self._dir = tempfile.mkdtemp(prefix="gantry-heartbeat-")
            self._write_jobs([])
            config = {
                "url": self._url,
                "api_key": self._api_key,
                "interval_s": self._interval_s,
                "jobs_path": self._jobs_path(),
                "parent_pid": os.getpid(),
            }
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-c", _CHILD_CODE], stdin=subprocess.PIPE
            )
            # The config goes through the pipe, not argv, to keep the API key out of `ps`.
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps(config).encode() + b"\n")
            self._process.stdin.flush()

    def set_jobs(self, job_ids: Iterable[str]) -> None:
        """Sets the ids the next pings carry. Callers serialize calls to keep their order."""
        with self._lock:
            if self._dir is not None:
                self._write_jobs(list(job_ids))

    def stop(self) -> None:
        """Kills the child and removes its files. Idempotent."""
        with self._lock:
            process, self._process = self._process, None
            directory, self._dir = self._dir, None
        if process is not None:
            process.kill()
            process.wait()
            if process.stdin is not None:
                process.stdin.close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def _jobs_path(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "jobs.json")

    def _write_jobs(self, job_ids: List[str]) -> None:
        path = self._jobs_path()
        with open(path + ".tmp", "w", encoding="utf-8") as file:
            json.dump(job_ids, file)
        os.replace(path + ".tmp", path)


def child_main() -> None:
    """The heartbeat process: reads its config line from stdin, then pings until stdin closes."""
    from .http import HttpSession  # Imported here: the worker side does not need it.

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s heartbeat: %(message)s")
    # The worker decides when the heartbeat ends; a signal to the process group must not.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    config = json.loads(_read_line(0))
    interval_s = float(config["interval_s"])
    session = HttpSession({"Authorization": config["api_key"]}, max_idle=1)
    job_ids: List[str] = []
    next_ping = time.monotonic()
    while True:
        wait_s = min(max(next_ping - time.monotonic(), 0.0), PARENT_CHECK_S)
        readable, _, _ = select.select([0], [], [], wait_s)
        if (readable and not os.read(0, 4096)) or os.getppid() != config["parent_pid"]:
            # The worker died (it kills us when it exits normally): clean up after it.
            shutil.rmtree(os.path.dirname(config["jobs_path"]), ignore_errors=True)
            return
        if time.monotonic() < next_ping:
            continue
        job_ids = _read_jobs(config["jobs_path"], job_ids)
        try:
            response = session.request(
                "GET", ping_url(config["url"], job_ids), timeout_s=max(interval_s, 1.0)
            )
            if response.status != 200:
                log.warning("ping answered HTTP %d", response.status)
        except (OSError, http.client.HTTPException) as err:
            log.warning("ping failed: %r", err)
        next_ping += interval_s
        if next_ping < time.monotonic():
            next_ping = time.monotonic() + interval_s  # Skip pings missed while blocked.


def _read_line(fd: int) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 4096)
        if not chunk:
            raise SystemExit(0)
        data += chunk
    return data


def _read_jobs(path: str, previous: List[str]) -> List[str]:
    """The job ids the worker last wrote; `previous` if the file can't be read."""
    try:
        with open(path, encoding="utf-8") as file:
            ids = json.load(file)
    except (OSError, ValueError):
        return previous
    return [str(job_id) for job_id in ids] if isinstance(ids, list) else previous
