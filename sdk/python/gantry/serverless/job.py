"""One job's run: the handler called on a thread of its own, its chunks and result reported.

Handlers follow RunPod's contract: a function (sync, or returning an awaitable), a generator or an
async generator, called with the job dict. Sync code runs on the job's thread; coroutines and
async-generator steps run on the worker's event loop while the job's thread waits for them.
"""

import asyncio
import concurrent.futures
import ctypes
import enum
import inspect
import logging
import threading
from typing import Any, Awaitable, Callable, List, Optional, Protocol, Tuple

from .results import ErrorContext, encode, error_body, result_body

log = logging.getLogger(__name__)


class JobStopped(BaseException):
    """Raised inside a sync handler's thread when the server stops its job.

    A BaseException, so that a handler's `except Exception` does not swallow it.
    """


class Kind(enum.Enum):
    CALL = "call"
    GENERATOR = "generator"
    ASYNC_GENERATOR = "async generator"


def handler_kind(handler: Callable[..., Any]) -> Kind:
    """Streaming handlers are told apart by their function type, as in RunPod's SDK."""
    if inspect.isasyncgenfunction(handler):
        return Kind.ASYNC_GENERATOR
    if inspect.isgeneratorfunction(handler):
        return Kind.GENERATOR
    return Kind.CALL


class JobSink(Protocol):
    """Where a run reports. Called on the job's thread; may block (e.g. on HTTP)."""

    def stream(self, job_id: str, payload: bytes) -> None:
        """One `{"output": chunk}` of a streaming handler, as JSON."""

    def done(self, job_id: str, payload: bytes, is_stream: bool) -> Optional[str]:
        """The job-done body, as JSON. Returns the server's reason when it refused the body
        itself (sending it again would not help), else None."""


_END = object()  # An exhausted generator.


class JobRun:
    """Runs one job on its own daemon thread.

    After start(): the handler runs, chunks go to `sink.stream`, the result to `sink.done`, then
    `on_done(run, stop_pod)` is called on the job's thread. A stopped run reports nothing; it
    calls `on_done(run, False)` once its handler has returned. `stop()` may be called from any thread.
    """

    def __init__(
        self,
        job: dict,
        handler: Callable[[dict], Any],
        *,
        loop: asyncio.AbstractEventLoop,
        sink: JobSink,
        errors: ErrorContext,
        aggregate_stream: bool,
        refresh_worker: bool,
        on_done: Callable[["JobRun", bool], None],
    ) -> None:
        self.id: str = job["id"]
        self._job = job
        self._handler = handler
        self._kind = handler_kind(handler)
        self._loop = loop
        self._sink = sink
        self._errors = errors
        self._aggregate_stream = aggregate_stream
        self._refresh_worker = refresh_worker
        self._on_done = on_done
        self._thread = threading.Thread(
            target=self._run, name=f"gantry-job-{self.id}", daemon=True
        )
        self._lock = threading.Lock()
        # Guarded by _lock.
        self._stopped = False
        self._finishing = False  # The result is being reported: too late to stop.
        self._in_sync_handler = False
        self._future: Optional[concurrent.futures.Future] = None

    def start(self) -> None:
        self._thread.start()

    @property
    def finishing(self) -> bool:
        """Whether the result is being (or has been) reported: the server may already have
        requeued the job (a retry) and offer it again before this run calls on_done."""
        with self._lock:
            return self._finishing

    def stop(self) -> bool:
        """Stops the run: cancels its awaited coroutine, or raises JobStopped in its sync handler
        code (when that thread next runs Python bytecode). Returns False when the result is
        already being reported, True otherwise. Idempotent."""
        with self._lock:
            if self._finishing:
                return False
            if not self._stopped:
                self._stopped = True
                if self._future is not None:
                    self._future.cancel()
                elif self._in_sync_handler:
                    _raise_in_thread(self._thread, JobStopped)
            return True

    def _run(self) -> None:
        try:
            body, is_stream = self._execute()
            stop_pod = self._refresh_worker or bool(body.get("stopPod"))
            payload = self._encode(body, stop_pod)
            with self._lock:
                if self._stopped:
                    raise JobStopped()
                self._finishing = True
        except JobStopped:
            log.info("job %s: stopped", self.id)
            # Only now is its slot free: the handler has returned. Until then the job stays in
            # the worker's pings, so a handler that cannot be interrupted gets it killed.
            self._on_done(self, False)
            return
        try:
            refusal = self._sink.done(self.id, payload, is_stream)
            if refusal is not None:
                # Else the job would wait, held by a worker that has finished with it, until
                # the server finds it dropped: fail it now, saying why.
                log.error("job %s: the server refused its result; reporting it failed", self.id)
                error = ValueError(f"the server refused the job's result: {refusal}")
                self._sink.done(self.id, self._error_payload(error, stop_pod), is_stream)
            log.info("job %s: done", self.id)
        finally:
            self._on_done(self, stop_pod)

    def _encode(self, body: dict, stop_pod: bool) -> bytes:
        """The job-done payload; an output that is not JSON becomes the job's error."""
        try:
            return encode(dict(body, stopPod=True) if stop_pod else body)
        except ValueError as err:
            log.error("job %s: its result is not JSON, so it fails: %s", self.id, err)
            return self._error_payload(err, stop_pod)

    def _error_payload(self, error: Exception, stop_pod: bool) -> bytes:
        """A job-done body that fails the job with `error`, which was raised by no handler."""
        body = error_body(error.with_traceback(None), self._errors)
        return encode(dict(body, stopPod=True) if stop_pod else body)

    def _encode_chunk(self, chunk: Any, index: int) -> bytes:
        """A stream chunk's payload. Raises ValueError (which fails the job) when not JSON."""
        try:
            return encode({"output": chunk})
        except ValueError as err:
            log.error("job %s: stream chunk %d is not JSON, so the job fails: %s",
                      self.id, index, err)
            raise ValueError(f"stream chunk {index}: {err}") from None

    def _execute(self) -> Tuple[dict, bool]:
        """Runs the handler: (job-done body, whether it streamed). Raises only JobStopped."""
        log.info("job %s: started", self.id)
        if self._kind is Kind.CALL:
            try:
                value = self._call_sync(self._handler, self._job)
                if inspect.isawaitable(value):
                    value = self._await(value)
                return result_body(value), False
            except Exception as exc:  # The handler's failure is the job's result.
                return error_body(exc, self._errors), False

        chunks: List[Any] = []
        index = 0
        try:
            stream = self._call_sync(self._handler, self._job)
            while True:
                if self._kind is Kind.GENERATOR:
                    chunk = self._call_sync(next, stream, _END)
                else:
                    chunk = self._await(_anext(stream))
                if chunk is _END:
                    break
                if isinstance(chunk, dict) and chunk.get("error"):
                    return {"error": str(chunk["error"])}, True
                self._sink.stream(self.id, self._encode_chunk(chunk, index))
                index += 1
                if self._aggregate_stream:
                    chunks.append(chunk)
        except Exception as exc:
            return error_body(exc, self._errors), True
        return {"output": chunks}, True

    def _call_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Calls handler code on this thread, where stop() may interrupt it."""
        with self._lock:
            if self._stopped:
                raise JobStopped()
            self._in_sync_handler = True
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._in_sync_handler = False

    def _await(self, awaitable: Awaitable[Any]) -> Any:
        """Runs an awaitable on the event loop and waits; stop() cancels it."""
        with self._lock:
            if self._stopped:
                _discard(awaitable)
                raise JobStopped()
            future = asyncio.run_coroutine_threadsafe(_await_any(awaitable), self._loop)
            self._future = future
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._stopped:
                raise JobStopped() from None
            raise RuntimeError("the handler's task was cancelled") from None
        finally:
            with self._lock:
                self._future = None


async def _await_any(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def _anext(stream: Any) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return _END


def _discard(awaitable: Awaitable[Any]) -> None:
    """Closes a coroutine that will never run (avoids the 'never awaited' warning)."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


def _raise_in_thread(thread: threading.Thread, exc_type: type) -> None:
    """Asks CPython to raise `exc_type` in `thread` at its next bytecode; logs if it can't."""
    try:
        set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    except AttributeError:
        log.warning("cannot interrupt %s on this Python; it runs on unattended", thread.name)
        return
    ident = ctypes.c_ulong(thread.ident or 0)
    if set_async_exc(ident, ctypes.py_object(exc_type)) > 1:
        set_async_exc(ident, None)  # Never expected: undo rather than hit other threads.
