"""What a worker is told: the handler config given to `start()` and the `RUNPOD_*` environment.

Both are parsed once, in `start()`, into the immutable structs below; nothing else reads
`os.environ` or the config dict.
"""

import dataclasses
import logging
import uuid
from typing import Any, Callable, Mapping, Optional

log = logging.getLogger(__name__)

# Default: 10 s, RunPod's default RUNPOD_PING_INTERVAL (10000 ms).
DEFAULT_PING_INTERVAL_MS = 10_000
# Default: 10 s for in-flight jobs to finish after SIGTERM.
DEFAULT_SHUTDOWN_GRACE_MS = 10_000


@dataclasses.dataclass(frozen=True)
class HandlerConfig:
    """The `start()` config dict, RunPod's keys; keys it does not know are ignored."""

    handler: Callable[[dict], Any]
    # Called on every job-take loop with the current concurrency; returns the new one.
    # Default: keep the current value, which starts at 1.
    concurrency_modifier: Optional[Callable[[int], int]] = None
    # Generator handlers: job-done carries the list of chunks instead of `[]`. Default: False.
    return_aggregate_stream: bool = False
    # Every job-done carries `"stopPod": true` and the worker exits after it. Default: False.
    refresh_worker: bool = False

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "HandlerConfig":
        """Raises ValueError when `handler` (or a given `concurrency_modifier`) is not callable."""
        handler = config.get("handler")
        if not callable(handler):
            raise ValueError("start() needs a callable config['handler']")
        modifier = config.get("concurrency_modifier")
        if modifier is not None and not callable(modifier):
            raise ValueError("config['concurrency_modifier'] must be callable")
        return cls(
            handler=handler,
            concurrency_modifier=modifier,
            return_aggregate_stream=bool(config.get("return_aggregate_stream", False)),
            refresh_worker=bool(config.get("refresh_worker", False)),
        )


def is_local(environ: Mapping[str, str]) -> bool:
    """True when no job-take URL is set: RunPod's SDK then runs one local test job."""
    return not environ.get("RUNPOD_WEBHOOK_GET_JOB")


@dataclasses.dataclass(frozen=True)
class WorkerEnv:
    """The environment Gantry injects into a worker, with URL templates resolved for it.

    Every URL except `ping_url` already holds a `?`; query parameters are appended with `&`.
    `job_done_url` and `job_stream_url` still hold `$ID`, to be replaced by a job id.
    """

    worker_id: str
    api_key: str
    hostname: str
    job_take_url: str
    job_done_url: str
    # None: the generator chunks of streaming handlers are not posted (a warning is logged).
    job_stream_url: Optional[str]
    # None: this worker has no stop channel (RunPod's own servers have none).
    job_stop_url: Optional[str]
    # None: no heartbeat is sent.
    ping_url: Optional[str]
    ping_interval_s: float
    shutdown_grace_s: float

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "WorkerEnv":
        """Raises ValueError when the job-take or job-done URL is missing."""
        worker_id = environ.get("RUNPOD_POD_ID") or str(uuid.uuid4())

        def url(name: str) -> Optional[str]:
            value = environ.get(name)
            return value.replace("$RUNPOD_POD_ID", worker_id) if value else None

        take = url("RUNPOD_WEBHOOK_GET_JOB")
        done = url("RUNPOD_WEBHOOK_POST_OUTPUT")
        if not take or not done:
            raise ValueError("RUNPOD_WEBHOOK_GET_JOB and RUNPOD_WEBHOOK_POST_OUTPUT must be set")
        take = take.replace("$ID", worker_id)
        stop = url("RUNPOD_WEBHOOK_JOB_STOP")
        if not stop and "/job-take/" in take:
            stop = take.replace("/job-take/", "/job-stop/")
        return cls(
            worker_id=worker_id,
            api_key=environ.get("RUNPOD_AI_API_KEY", ""),
            hostname=environ.get("RUNPOD_POD_HOSTNAME", "unknown"),
            job_take_url=take,
            job_done_url=done,
            job_stream_url=url("RUNPOD_WEBHOOK_POST_STREAM"),
            job_stop_url=stop,
            ping_url=url("RUNPOD_WEBHOOK_PING"),
            ping_interval_s=_ms(environ, "RUNPOD_PING_INTERVAL", DEFAULT_PING_INTERVAL_MS) / 1000,
            shutdown_grace_s=_ms(environ, "GANTRY_SHUTDOWN_GRACE_MS", DEFAULT_SHUTDOWN_GRACE_MS)
            / 1000,
        )


def _ms(environ: Mapping[str, str], name: str, default: int) -> int:
    """A non-negative millisecond count from the environment; `default` if unset or invalid."""
    raw = environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        log.warning("%s=%r is not a millisecond count; using %d", name, raw, default)
        return default
    return value
