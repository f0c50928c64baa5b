"""A local test run, as RunPod's SDK does one when no job-take URL is set (or `--test_input` is
given): one job, from `--test_input '{"input": ...}'` or ./test_input.json, run once.

The job-done body is printed as one JSON line on stdout; streamed chunks and progress updates
are logged. The exit status is 1 when the job failed, else 0.
"""

import asyncio
import json
import logging
import os
from typing import Optional

from .config import HandlerConfig
from .job import JobRun
from .results import ErrorContext

log = logging.getLogger(__name__)

TEST_INPUT_FILE = "test_input.json"


def load_test_job(test_input: Optional[str]) -> dict:
    """The test job from `--test_input`, else from ./test_input.json; its id defaults to
    "local_test". Raises ValueError when there is none, it isn't JSON, or it has no "input"."""
    if test_input is not None:
        source, text = "--test_input", test_input
    elif os.path.exists(TEST_INPUT_FILE):
        source = TEST_INPUT_FILE
        with open(TEST_INPUT_FILE, encoding="utf-8") as file:
            text = file.read()
    else:
        raise ValueError(f"no job-take URL, no --test_input, no {TEST_INPUT_FILE}: nothing to run")
    try:
        job = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{source} is not JSON: {err}") from None
    if not isinstance(job, dict) or job.get("input") is None:
        raise ValueError(f'{source} has no "input"')
    return {**job, "id": str(job.get("id", "local_test"))}


def run_local(config: HandlerConfig, job: dict) -> int:
    """Runs `job` with the handler, prints its job-done body; returns the exit status."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    finished = loop.create_future()
    sink = _PrintSink()
    run = JobRun(
        job,
        config.handler,
        loop=loop,
        sink=sink,
        errors=ErrorContext(os.environ.get("RUNPOD_POD_ID", "local"), "local"),
        aggregate_stream=config.return_aggregate_stream,
        refresh_worker=config.refresh_worker,
        on_done=lambda _run, _stop_pod: loop.call_soon_threadsafe(finished.set_result, None),
    )
    try:
        run.start()
        loop.run_until_complete(finished)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    print(sink.result, flush=True)
    failed = json.loads(sink.result).get("error") is not None
    log.info("job %s %s", job["id"], "failed" if failed else "completed")
    return 1 if failed else 0


class _PrintSink:
    """Keeps the result for printing; logs streamed chunks."""

    def __init__(self) -> None:
        self.result = ""

    def stream(self, job_id: str, payload: bytes) -> None:
        log.info("job %s: streamed %s", job_id, payload.decode("utf-8"))

    def done(self, job_id: str, payload: bytes, is_stream: bool) -> None:
        self.result = payload.decode("utf-8")

