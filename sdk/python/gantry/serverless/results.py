"""How a handler's return value or exception becomes a job-done body, as RunPod's SDK shapes it."""

import json
import traceback
from typing import Any, NamedTuple

from ..version import RUNPOD_VERSION


class ErrorContext(NamedTuple):
    """Who reports an error: fields of every error body."""

    worker_id: str
    hostname: str


def result_body(value: Any) -> dict:
    """The job-done body for a handler's return value.

    A dict is split: its "error" (when truthy) becomes the body's error, a truthy
    "refresh_worker" becomes `"stopPod": true`, the rest is the output. An empty output is
    left out. Anything else is the output as is. `value` is not modified.
    """
    if isinstance(value, dict):
        output = dict(value)
        error = output.pop("error", None)
        refresh = output.pop("refresh_worker", None)
        body: dict = {"output": output}
        if error:
            body["error"] = error
        if refresh:
            body["stopPod"] = True
    else:
        body = {"output": value}
    if body.get("output") == {}:
        del body["output"]
    return body


def error_body(exc: BaseException, context: ErrorContext) -> dict:
    """The job-done body for an exception the handler raised: the error is a JSON string."""
    info = {
        "error_type": str(type(exc)),
        "error_message": str(exc),
        "error_traceback": "".join(traceback.format_exception(exc)),
        "hostname": context.hostname,
        "worker_id": context.worker_id,
        "runpod_version": RUNPOD_VERSION,
    }
    return {"error": json.dumps(info)}


def encode(body: Any) -> bytes:
    """JSON bytes (UTF-8, non-ASCII kept). Raises TypeError/ValueError if `body` isn't JSON."""
    return json.dumps(body, ensure_ascii=False).encode("utf-8")
