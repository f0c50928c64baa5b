"""How a handler's return value or exception becomes a job-done body, as RunPod's SDK shapes it."""

import json
import math
import re
import traceback
from typing import Any, NamedTuple, Optional, Set

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
    """JSON bytes (UTF-8, non-ASCII kept).

    Raises ValueError when `body` holds a value JSON has no form for (NaN, an infinity, which
    `json.dumps` would write although no JSON parser takes them; an object it cannot encode),
    naming the first such value by its path from `body`'s keys: "output.x[2] is NaN: JSON has
    no NaN".
    """
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as err:
        raise ValueError(not_json_reason(body, err)) from None


def not_json_reason(value: Any, err: BaseException) -> str:
    """Why `json.dumps(value, allow_nan=False)` raised `err`: the first value JSON cannot hold,
    by its path ("output.x[2] is Infinity: JSON has no Infinity"); `err` itself when the walk
    finds none."""
    try:
        found = _find_not_json(value, "", set())
    except RecursionError:
        found = None
    return found if found is not None else f"the value is not JSON: {err}"


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _key_path(path: str, key: str) -> str:
    if _PLAIN_NAME.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _find_not_json(value: Any, path: str, active: Set[int]) -> Optional[str]:
    """The first value under `value` (at `path`) that JSON cannot hold, described; None if none.
    `active` holds the ids of the containers being walked (a cycle is not JSON either)."""
    name = path or "the value"
    if isinstance(value, float):
        if math.isnan(value):
            return f"{name} is NaN: JSON has no NaN"
        if math.isinf(value):
            token = "Infinity" if value > 0 else "-Infinity"
            return f"{name} is {token}: JSON has no {token}"
        return None
    if value is None or isinstance(value, (str, int)):
        return None
    if not isinstance(value, (list, tuple, dict)):
        return f"{name} is not JSON: Object of type {type(value).__name__} is not JSON serializable"
    if id(value) in active:
        return f"{name} contains itself: JSON has no cycles"
    active.add(id(value))
    try:
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, float) and not math.isfinite(key):
                    return f"{name} has a key that is {key!r}: JSON has no such number"
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    return (f"{name} has a key of type {type(key).__name__}: "
                            "JSON keys are strings")
                label = key if isinstance(key, str) else json.dumps(key)
                found = _find_not_json(item, _key_path(path, label), active)
                if found is not None:
                    return found
        else:
            for index, item in enumerate(value):
                found = _find_not_json(item, f"{path}[{index}]", active)
                if found is not None:
                    return found
    finally:
        active.discard(id(value))
    return None
