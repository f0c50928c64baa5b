"""Template mode: a worker process parked after its initialisation, forked on demand (DESIGN §4).

When the agent starts a process with `GANTRY_TEMPLATE_SOCKET` set, everything the handler file
does before `serverless.start()` (imports, model load) is the template's initialisation. Then
`start()` calls `serve()` here, which connects to the agent's Unix socket at that path and
waits. Each worker is a fork of this process; `serve()` returns in the worker only, after it
has taken its identity, and `start()` goes on as in any worker.

Protocol: one JSON object per line in each direction; file descriptors ride along a request
with SCM_RIGHTS.

  template → agent  {"op": "ready", "pid": N}        once connected (again after a snapshot)
  agent → template  {"op": "fork", "id": W, "env": {...}, "workdir": D, "cgroupProcs": [...],
                     "agentPid": A}   with two fds: the worker's stdout and stderr
  template → agent  {"pid": N} | {"error": "..."}    once the worker is in its own session
                                                      and cgroups, a child of the agent
  agent → template  {"op": "park"}                   before a snapshot: the template points
                                                      fds 0-2 at /dev/null, closes the socket
                                                      and stops itself (SIGSTOP); once
                                                      continued (SIGCONT, after the dump or a
                                                      restore) it connects again
  EOF from the agent: the template exits.

The worker is a grandchild of the template: the middle process exits at once, so the worker is
re-parented to the agent (a child subreaper) and the agent reaps it like any worker it started.
It dies with the agent (PR_SET_PDEATHSIG once the agent is its parent), not with the template.
"""

import ctypes
import json
import os
import signal
import socket
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

ENV_SOCKET = "GANTRY_TEMPLATE_SOCKET"
_MAX_LINE = 1 << 20
_PR_SET_PDEATHSIG = 1
_REPARENT_WAIT_S = 5.0


class TemplateError(RuntimeError):
    pass


def socket_path() -> Optional[str]:
    """The agent's socket when this process was started as a template, else None."""
    return os.environ.get(ENV_SOCKET) or None


class _Channel:
    """One connection to the agent: JSON lines, with fds attached to requests."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # "@name": a Linux abstract socket (what the agent uses); else a path.
        self.sock.connect("\0" + path[1:] if path.startswith("@") else path)
        self.buf = b""
        self.fds: List[int] = []

    def send(self, msg: Dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def recv(self) -> Tuple[Optional[Dict[str, Any]], List[int]]:
        """The next request and the fds that came with it; (None, []) at EOF."""
        while b"\n" not in self.buf:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, 8)
            self.fds.extend(fds)
            if not data:
                return None, []
            self.buf += data
            if len(self.buf) > _MAX_LINE:
                raise TemplateError("request line too long")
        line, self.buf = self.buf.split(b"\n", 1)
        fds, self.fds = self.fds, []
        return json.loads(line), fds

    def close(self) -> None:
        self.sock.close()


def serve(path: str) -> None:
    """Parks this process as a template. Returns only in a forked worker, with the worker's
    environment, working directory and stdio in place. The template itself exits when the
    agent closes the connection."""
    channel = _connect(path)
    while True:
        try:
            msg, fds = channel.recv()
        except (OSError, ValueError) as err:
            print("gantry template: connection to the agent failed: %s" % err, file=sys.stderr)
            os._exit(1)
        if msg is None:
            os._exit(0)
        op = msg.get("op")
        if op == "fork":
            worker = _fork(channel, msg, fds)
            if worker:
                return
        elif op == "park":
            channel = _park(channel, path)
        else:
            for fd in fds:
                os.close(fd)
            channel.send({"error": "unknown op %r" % op})


def _connect(path: str) -> _Channel:
    channel = _Channel(path)
    channel.send({"op": "ready", "pid": os.getpid()})
    return channel


def _park(channel: _Channel, path: str) -> _Channel:
    """Leaves nothing connected to the outside, stops until continued, then reconnects."""
    channel.close()
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    # A restored process with a death signal set gets it when CRIU exits: clear it for the
    # snapshot, and set it again once continued (the agent is then the parent again).
    _set_death_signal(0)
    os.kill(os.getpid(), signal.SIGSTOP)
    # Continued: after the dump (same process) or after a restore (a new one).
    _set_death_signal(signal.SIGKILL)
    for _ in range(100):
        try:
            return _connect(path)
        except OSError:
            time.sleep(0.05)
    os._exit(1)


def _set_death_signal(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): the signal this process gets when its parent exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def _fork(channel: _Channel, msg: Dict[str, Any], fds: List[int]) -> bool:
    """Makes one worker. True in the worker; False in the template (after replying)."""
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        channel.send({"error": "a fork needs 2 fds (stdout, stderr), got %d" % len(fds)})
        return False
    sys.stdout.flush()
    sys.stderr.flush()
    report_r, report_w = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(report_r)
        if os.fork() == 0:
            _become_worker(channel, msg, fds, report_w)  # returns only when all went well
            return True
        os._exit(0)  # the middle process: the worker is re-parented to the agent
    os.close(report_w)
    for fd in fds:
        os.close(fd)
    os.waitpid(middle, 0)
    with os.fdopen(report_r, "rb") as r:
        report = r.read()
    try:
        reply = json.loads(report) if report else {"error": "the worker died while starting"}
    except ValueError:
        reply = {"error": "bad report from the worker: %r" % report[:200]}
    channel.send(reply)
    return False


def _become_worker(channel: _Channel, msg: Dict[str, Any], fds: List[int], report_w: int) -> None:
    """In the worker: session, cgroups, parent check, stdio, env, workdir. On failure reports
    the error and exits; on success reports its pid and returns."""

    def fail(what: str) -> None:
        os.write(report_w, json.dumps({"error": what}).encode())
        os._exit(127)

    try:
        os.setsid()
        for procs in msg.get("cgroupProcs") or []:
            with open(procs, "w") as f:
                f.write("0")  # "0": the writing process
        agent = int(msg.get("agentPid") or 0)
        deadline = time.monotonic() + _REPARENT_WAIT_S
        while os.getppid() != agent:
            if time.monotonic() > deadline:
                fail("not re-parented to the agent (pid %d); is it a child subreaper?" % agent)
            time.sleep(0.0005)
        _set_death_signal(signal.SIGKILL)
        if os.getppid() != agent:
            fail("the agent exited")
        channel.close()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in [null] + fds:
            os.close(fd)
        env = msg.get("env") or {}
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
        workdir = msg.get("workdir")
        if workdir:
            os.chdir(workdir)
    except Exception as err:  # noqa: BLE001 - any failure is reported to the agent
        fail("%s: %s" % (type(err).__name__, err))
    os.write(report_w, json.dumps({"pid": os.getpid()}).encode())
    os.close(report_w)
