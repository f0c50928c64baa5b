"""The worker: takes jobs from Gantry, runs them, reports them, until told to stop.

Threads and what they own:
- main: the asyncio event loop (async handlers run on it), signals, shutdown;
- "gantry-take": the job-take long-poll and the concurrency modifier;
- "gantry-stop": the job-stop long-poll;
- one thread per job (see job.py), which also posts that job's chunks and result;
- "gantry-progress": progress updates (see progress.py);
and a child process for the heartbeat (see heartbeat.py).

Shutdown: SIGTERM or SIGINT stops taking jobs and gives the jobs in flight a grace period;
`refresh_worker` stops taking jobs and waits for the jobs in flight. `run()` then returns.
"""

import asyncio
import logging
import signal
import threading
import time
from typing import Dict, List, Optional, Tuple

from . import progress
from .config import HandlerConfig, WorkerEnv
from .heartbeat import Heartbeat
from .job import JobRun
from .protocol import TooManyRequests, WorkerApi
from .results import ErrorContext

log = logging.getLogger(__name__)

# After a 429 from job-take. Default: 5 s (as RunPod's SDK).
TOO_MANY_REQUESTS_BACKOFF_S = 5.0
# After a failed job-take. Default: 1 s.
TAKE_ERROR_BACKOFF_S = 1.0
# Failed job-stop polls back off from 1 s, doubling to 30 s (RunPod's servers have no job-stop).
STOP_ERROR_BACKOFF_S = (1.0, 30.0)
# An empty long-poll answer that comes back sooner than this is followed by a pause, so a server
# that does not hold the request is not asked in a tight loop.
MIN_EMPTY_POLL_S = 0.2
# How long a stop for a job not (yet) running is remembered.
PENDING_STOP_TTL_S = 30.0
# How long a result waits for the job's earlier progress updates.
PROGRESS_FLUSH_TIMEOUT_S = 5.0


class Worker:
    """Runs jobs from Gantry with a handler. Build it in `start()`; `run()` on the main thread."""

    def __init__(self, env: WorkerEnv, config: HandlerConfig) -> None:
        self._env = env
        self._config = config
        self._api = WorkerApi(env)
        self._heartbeat = (
            Heartbeat(env.ping_url, env.api_key, env.ping_interval_s) if env.ping_url else None
        )
        self._progress = progress.ProgressReporter(
            lambda job_id, payload: self._api.post_done(job_id, payload, is_stream=False)
        )
        self._errors = ErrorContext(env.worker_id, env.hostname)
        self._concurrency = 1  # Owned by the take thread.
        self._closing = threading.Event()  # No more jobs are taken.
        self._drained = threading.Event()  # Shutdown is past the drain: pollers end.
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._close_requested: Optional[asyncio.Event] = None
        self._cond = threading.Condition()
        # Guarded by _cond.
        self._running: Dict[str, JobRun] = {}
        self._taking = False  # A job-take is in flight: its jobs are ours to run, even if closing.
        self._pending_stops: Dict[str, float] = {}  # job id -> monotonic expiry
        self._offered_again: Dict[str, dict] = {}  # job id -> a new attempt of a finishing run
        self._deadline: Optional[float] = None  # monotonic; None: wait for every job

    def run(self) -> None:
        """Works until closed, then drains and returns. Call it once, on the main thread."""
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            _cancel_leftover_tasks(loop)
            asyncio.set_event_loop(None)
            loop.close()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._close_requested = asyncio.Event()
        handled = _add_signal_handlers(loop, self._on_signal)
        progress.install(self._progress)
        if self._heartbeat is not None:
            self._heartbeat.start()
        else:
            log.warning("RUNPOD_WEBHOOK_PING is not set: no heartbeat")
        if self._env.job_stream_url is None:
            log.warning("RUNPOD_WEBHOOK_POST_STREAM is not set: streamed chunks are not posted")
        threading.Thread(target=self._take_loop, name="gantry-take", daemon=True).start()
        if self._api.has_stop_channel:
            threading.Thread(target=self._stop_loop, name="gantry-stop", daemon=True).start()
        log.info("worker %s: taking jobs", self._env.worker_id)
        try:
            await self._close_requested.wait()
            if not await loop.run_in_executor(None, self._wait_drained):
                with self._cond:
                    left = sorted(self._running)
                log.warning("exiting with %d job(s) still running: %s", len(left), left)
        finally:
            self._drained.set()
            self._api.close()
            self._progress.close()
            progress.install(None)
            if self._heartbeat is not None:
                self._heartbeat.stop()
            for signum in handled:
                loop.remove_signal_handler(signum)
        log.info("worker %s: stopped", self._env.worker_id)

    # -- Closing --------------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        log.info("%s: finishing jobs in flight, then exiting", signal.Signals(signum).name)
        self._close(grace_s=self._env.shutdown_grace_s)

    def _close(self, grace_s: Optional[float]) -> None:
        """Stops taking jobs; the drain ends within `grace_s` (None: when all jobs are done).
        Thread-safe; a later call can only shorten the drain."""
        with self._cond:
            if grace_s is not None:
                deadline = time.monotonic() + grace_s
                if self._deadline is None or deadline < self._deadline:
                    self._deadline = deadline
            first = not self._closing.is_set()
            self._closing.set()
            self._cond.notify_all()
        if first:
            self._api.close_take()
            assert self._loop is not None and self._close_requested is not None
            self._loop.call_soon_threadsafe(self._close_requested.set)

    def _wait_drained(self) -> bool:
        """Waits until no job runs nor is being taken (True) or the deadline passes (False)."""
        with self._cond:
            while self._running or self._taking:
                wait_s = 0.5  # Re-reads the deadline, which a signal may bring forward.
                if self._deadline is not None:
                    wait_s = min(wait_s, self._deadline - time.monotonic())
                    if wait_s <= 0:
                        return False
                self._cond.wait(wait_s)
        return True

    # -- Taking jobs ----------------------------------------------------------------------

    def _take_loop(self) -> None:
        while True:
            concurrency = self._next_concurrency()
            with self._cond:
                if self._closing.is_set():
                    return
                free = concurrency - len(self._running)
                if free <= 0:
                    self._cond.wait(1.0)  # A finished job, a close, or the modifier's next say.
                    continue
                in_progress = bool(self._running)
                self._taking = True
            jobs, pause_s = self._take(free if concurrency > 1 else None, in_progress)
            with self._cond:
                for job in jobs:
                    self._start_job(job)
                self._taking = False
                self._cond.notify_all()
            self._closing.wait(pause_s)

    def _take(self, batch_size: Optional[int], in_progress: bool) -> Tuple[List[dict], float]:
        """One job-take: (jobs, seconds to pause before the next). Never raises."""
        started = time.monotonic()
        try:
            jobs = self._api.take(batch_size, in_progress)
        except TooManyRequests:
            log.warning("job-take: 429, backing off %.0f s", TOO_MANY_REQUESTS_BACKOFF_S)
            return [], TOO_MANY_REQUESTS_BACKOFF_S
        except Exception as err:  # Network, protocol: never fatal, never a tight loop.
            if not self._closing.is_set():
                log.error("job-take failed: %r", err)
            return [], TAKE_ERROR_BACKOFF_S
        if jobs:
            return jobs, 0.0
        return [], MIN_EMPTY_POLL_S - (time.monotonic() - started)

    def _next_concurrency(self) -> int:
        """The concurrency the modifier (if any) asks for; the old one if the modifier fails."""
        modifier = self._config.concurrency_modifier
        if modifier is not None:
            try:
                self._concurrency = max(0, int(modifier(self._concurrency)))
            except Exception as err:  # User code: keep the current value.
                log.error("concurrency_modifier failed: %r", err)
        return self._concurrency

    def _start_job(self, job: dict) -> None:
        """Starts a job just taken, even while closing (the server has handed it over).
        Caller holds _cond."""
        job_id = job["id"]
        current = self._running.get(job_id)
        if current is not None:
            if current.finishing:
                # Its result has reached the server, which requeued it (a retry) before this
                # run left _running: start the new attempt once the old one has.
                self._offered_again[job_id] = job
            else:
                log.warning("job %s: offered again while running; ignored", job_id)
            return
        if self._take_pending_stop(job_id):
            log.info("job %s: stopped before it started", job_id)
            return
        assert self._loop is not None
        run = JobRun(
            job,
            self._config.handler,
            loop=self._loop,
            sink=_RemoteSink(self._api, self._progress),
            errors=self._errors,
            aggregate_stream=self._config.return_aggregate_stream,
            refresh_worker=self._config.refresh_worker,
            on_done=self._on_job_done,
        )
        self._running[job_id] = run
        self._publish_running()
        run.start()

    def _on_job_done(self, run: JobRun, stop_pod: bool) -> None:
        if stop_pod:
            log.info("job %s: refresh_worker set; exiting after the jobs in flight", run.id)
            self._close(grace_s=None)
        with self._cond:
            if self._running.get(run.id) is run:
                del self._running[run.id]
                self._publish_running()
            again = self._offered_again.pop(run.id, None)
            if again is not None:
                self._start_job(again)
            self._cond.notify_all()

    # -- Stopping jobs --------------------------------------------------------------------

    def _stop_loop(self) -> None:
        backoff_s = STOP_ERROR_BACKOFF_S[0]
        while not self._drained.is_set():
            started = time.monotonic()
            try:
                job_ids = self._api.poll_stop()
            except Exception as err:  # Network, protocol: back off, keep polling.
                if not self._drained.is_set():
                    log.warning("job-stop failed: %r; retrying in %.0f s", err, backoff_s)
                    self._drained.wait(backoff_s)
                    backoff_s = min(backoff_s * 2, STOP_ERROR_BACKOFF_S[1])
                continue
            backoff_s = STOP_ERROR_BACKOFF_S[0]
            if not job_ids:
                self._drained.wait(MIN_EMPTY_POLL_S - (time.monotonic() - started))
            for job_id in job_ids:
                self._stop_job(job_id)

    def _stop_job(self, job_id: str) -> None:
        with self._cond:
            run = self._running.get(job_id)
            if run is None:
                self._pending_stops[job_id] = time.monotonic() + PENDING_STOP_TTL_S
                return
            if run.stop():
                # It leaves _running (and the pings) when its handler returns (_on_job_done).
                log.info("job %s: stopped by the server", job_id)

    def _take_pending_stop(self, job_id: str) -> bool:
        """Whether a stop for `job_id` is pending (and consumes it). Caller holds _cond."""
        now = time.monotonic()
        for expired in [i for i, expiry in self._pending_stops.items() if expiry <= now]:
            del self._pending_stops[expired]
        return self._pending_stops.pop(job_id, None) is not None

    def _publish_running(self) -> None:
        """Tells the heartbeat the jobs in progress. Caller holds _cond (keeps updates in order)."""
        if self._heartbeat is not None:
            self._heartbeat.set_jobs(self._running)


class _RemoteSink:
    """Reports a job to Gantry: chunks to job-stream, the result to job-done."""

    def __init__(self, api: WorkerApi, reporter: progress.ProgressReporter) -> None:
        self._api = api
        self._progress = reporter

    def stream(self, job_id: str, payload: bytes) -> None:
        self._api.post_stream(job_id, payload)

    def done(self, job_id: str, payload: bytes, is_stream: bool) -> Optional[str]:
        self._progress.flush(job_id, PROGRESS_FLUSH_TIMEOUT_S)
        return self._api.post_done(job_id, payload, is_stream).refusal


def _add_signal_handlers(loop: asyncio.AbstractEventLoop, callback) -> list:
    """Routes SIGTERM and SIGINT to `callback(signum)`; the signals it could route."""
    handled = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, callback, signum)
            handled.append(signum)
        except (ValueError, RuntimeError, NotImplementedError):
            log.warning("cannot handle %s here (not the main thread?)", signum.name)
    return handled


def _cancel_leftover_tasks(loop: asyncio.AbstractEventLoop, timeout_s: float = 1.0) -> None:
    """Cancels tasks still on the loop (handlers outliving the grace period), briefly waits."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=timeout_s))
    try:
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), timeout_s))
    except asyncio.TimeoutError:
        log.warning("async generators still open at exit")
