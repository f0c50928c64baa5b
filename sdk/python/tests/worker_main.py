"""A worker process for the tests, written as a RunPod handler file (`import runpod`).

TEST_HANDLER picks the handler below; TEST_CONCURRENCY, TEST_AGGREGATE and TEST_REFRESH set the
config. TEST_MARKER names a file that handlers append notes to (e.g. that they were stopped).
"""

import asyncio
import ctypes
import os
import time

import runpod


def _note(text):
    with open(os.environ["TEST_MARKER"], "a", encoding="utf-8") as file:
        file.write(text + "\n")


def sync_echo(job):
    return {"echo": job["input"]}


async def async_echo(job):
    await asyncio.sleep(0.01)
    return {"echo": job["input"], "async": True}


def generator(job):
    for i in range(3):
        yield {"i": i}


async def async_generator(job):
    for i in range(3):
        await asyncio.sleep(0.01)
        yield i


def raises(job):
    raise ValueError("boom " + str(job["input"]))


def returns_error(job):
    return {"error": "bad input"}


def progress(job):
    runpod.serverless.progress_update(job, "half")
    return "finished"


async def async_progress(job):
    runpod.serverless.progress_update(job, {"pct": 50})
    await asyncio.sleep(0.01)
    return "finished"


def returns_nan(job):
    return {"x": [1, 2, float("nan")]}


def streams_infinity(job):
    yield 1
    yield {"y": float("-inf")}


def progress_nan(job):
    runpod.serverless.progress_update(job, {"pct": float("nan")})
    return "finished"


def refresh(job):
    return {"refresh_worker": True, "ran": job["id"]}


def sleeps(job):
    """Sleeps input["s"] seconds; returns when it started and ended."""
    started = time.time()
    time.sleep(job["input"].get("s", 0))
    return {"start": started, "end": time.time()}


async def async_sleeps(job):
    started = time.time()
    await asyncio.sleep(job["input"].get("s", 0))
    return {"start": started, "end": time.time()}


def holds_gil(job):
    """Sleeps in C without releasing the GIL: no other thread of this process can run."""
    libc = ctypes.PyDLL(None)
    for _ in range(int(job["input"]["s"] * 10)):
        libc.usleep(100_000)
    return "held"


def busy(job):
    """Spins in Python until input["s"] seconds pass; notes how it ended."""
    deadline = time.monotonic() + job["input"]["s"]
    try:
        while time.monotonic() < deadline:
            pass
    except BaseException as exc:
        _note(f"{job['id']} {type(exc).__name__}")
        raise
    return "spun"


async def async_busy(job):
    try:
        await asyncio.sleep(job["input"]["s"])
    except asyncio.CancelledError:
        _note(f"{job['id']} CancelledError")
        raise
    return "slept"


INIT_PID = os.getpid()  # the template's pid when this worker was forked from one
INIT_MEMORY = bytearray(b"initialised")  # state made before start(), inherited by a fork


def identity(job):
    return {"pid": os.getpid(), "ppid": os.getppid(), "pod": os.environ.get("RUNPOD_POD_ID"),
            "init_pid": INIT_PID, "init_memory": INIT_MEMORY.decode(), "cwd": os.getcwd(),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "template_socket": os.environ.get("GANTRY_TEMPLATE_SOCKET"),
            "image_var": os.environ.get("TEST_IMAGE_VAR")}


def crash(job):
    os._exit(3)


runpod.serverless.start({
    "handler": globals()[os.environ["TEST_HANDLER"]],
    "concurrency_modifier": lambda current: int(os.environ.get("TEST_CONCURRENCY", "1")),
    "return_aggregate_stream": os.environ.get("TEST_AGGREGATE") == "1",
    "refresh_worker": os.environ.get("TEST_REFRESH") == "1",
})
