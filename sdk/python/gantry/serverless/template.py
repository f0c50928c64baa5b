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
  agent → template  {"op": "spare", "id": C, "cgroupProcs": [...]}
                                                      a cgroup made ahead for the next spare
                                                      (no answer): the spare joins it when it is
                                                      made, and its fork answer names it
                                                      ("spareCgroup": C), so that taking an
                                                      identity moves no process between cgroups
  agent → template  {"op": "park"}                   before a snapshot: the template points
                                                      fds 0-2 at /dev/null, closes the socket
                                                      and stops itself (SIGSTOP); once
                                                      continued (SIGCONT, after the dump or a
                                                      restore) it connects again
  EOF from the agent: the template exits.

The worker is a grandchild of the template: the middle process exits at once, so the worker is
re-parented to the agent (a child subreaper) and the agent reaps it like any worker it started.
It dies with the agent (PR_SET_PDEATHSIG once the agent is its parent), not with the template.

That double fork costs tens of milliseconds, so it is done ahead: while idle, the template keeps
one "spare", a grandchild already re-parented to the agent and in its own session, waiting on a
socket pair for an identity. A fork request is handed to the spare (a few milliseconds), and a
new spare is made once the template is idle again. Without a spare (it died, or the template has
just started or been continued) the template double-forks on the spot. A spare holds nothing of
the agent's; it exits when its socket closes (the template exited or parks for a snapshot).

Inside a container (`GANTRY_TEMPLATE_CONTAINER=1`: the agent runs the template as the init of
an OCI container, docs/containers.md) a worker cannot become the agent's child: an orphan is
re-parented to the container's init, which is the template itself. So there the worker is a
plain child of the template, in the same sandbox (PID, mount, IPC and UTS namespaces, root
filesystem); the agent finds it by the pid the template answers (the container's pid, mapped
to the host's through /proc). A worker cannot reach the host's cgroups, so once it has taken
its identity and answered it stops itself (SIGSTOP): the agent moves it into its cgroups and
continues it (SIGCONT), and none of the worker's code runs outside its limits. The template
reaps its children and reports how each worker ended:

  template → agent  {"op": "exit", "pid": N, "status": S}   N: the pid the fork answered,
                                                             S: the wait status
  agent → template  {"op": "retire"}                 no more forks: the template exits once its
                                                      last worker has (its exit would end the
                                                      container's PID namespace, and so them)
  template → agent  {"op": "spare-made", "pid": N, "id": C}
                                                      its spare (made, or already there, when
                                                      cgroup C was offered with "spare"): the
                                                      agent moves it into C; the fork answer
                                                      that spare gives names C ("spareCgroup")

The environment of the fork request is added to the template's (the image's env) instead of
replacing it. EOF from the agent: the template waits for its workers, then exits. There are no
snapshots of container templates ("park" is not sent).
"""

import ctypes
import gc
import json
import os
import select
import signal
import socket
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

ENV_SOCKET = "GANTRY_TEMPLATE_SOCKET"
ENV_CONTAINER = "GANTRY_TEMPLATE_CONTAINER"
_MAX_LINE = 1 << 20
_PR_SET_PDEATHSIG = 1
_REPARENT_WAIT_S = 5.0
# How long the template waits idle, after it connected or served a fork, before it makes a
# spare (so that making one does not compete with the worker that just started).
_SPARE_AFTER_IDLE_S = 0.2


class TemplateError(RuntimeError):
    pass


def socket_path() -> Optional[str]:
    """The agent's socket when this process was started as a template, else None."""
    return os.environ.get(ENV_SOCKET) or None


class _Channel:
    """One stream connection: JSON lines, with fds attached to messages."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        # Fds received, each with the offset in `buf` of the message they came with.
        self.fds: List[Tuple[int, List[int]]] = []

    @classmethod
    def connect(cls, path: str) -> "_Channel":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # "@name": a Linux abstract socket (what the agent uses); else a path.
        sock.connect("\0" + path[1:] if path.startswith("@") else path)
        return cls(sock)

    def send(self, msg: Dict[str, Any], fds: List[int] = ()) -> None:
        data = json.dumps(msg).encode() + b"\n"
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.sendall(data)

    def recv(self, timeout: Optional[float] = None) -> Tuple[Optional[Dict[str, Any]], List[int]]:
        """The next message and the fds that came with it; (None, []) at EOF. With a timeout,
        socket.timeout when nothing complete came in time."""
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, 8)
            if not data:
                for _, lost in self.fds + [(0, fds)]:
                    for fd in lost:
                        os.close(fd)
                return None, []
            self.buf += data
            if fds:
                # Each message is one sendmsg() and Linux ends a read at the data that carries
                # fds, so they belong to the last message that begins in this read.
                self.fds.append((self.buf.rfind(b"\n", 0, len(self.buf) - 1) + 1, fds))
            if len(self.buf) > _MAX_LINE:
                raise TemplateError("message line too long")
        nl = self.buf.index(b"\n")
        line, self.buf = self.buf[:nl], self.buf[nl + 1:]
        mine = [fd for offset, fds in self.fds if offset <= nl for fd in fds]
        self.fds = [(offset - nl - 1, fds) for offset, fds in self.fds if offset > nl]
        return json.loads(line), mine

    def close(self) -> None:
        self.sock.close()


def serve(path: str) -> None:
    """Parks this process as a template. Returns only in a forked worker, with the worker's
    environment, working directory and stdio in place. The template itself exits when the
    agent closes the connection."""
    # Objects made so far are never collected: the collector of a fork would otherwise walk
    # (and so write to, copying on write) every page of the inherited heap.
    gc.collect()
    gc.freeze()
    if os.environ.get(ENV_CONTAINER) == "1":
        _Inside().serve(path)
        return
    channel = _connect(path)
    spare: Optional[_Channel] = None
    spare_cgroup: Optional[Dict[str, Any]] = None  # {"id", "cgroupProcs"} for the next spare
    while True:
        try:
            msg, fds = channel.recv(None if spare else _SPARE_AFTER_IDLE_S)
        except socket.timeout:
            spare, worker = _make_spare(channel, spare_cgroup)
            if worker:
                return
            spare_cgroup = None  # the spare took it (or it is gone)
            continue
        except (OSError, ValueError) as err:
            print("gantry template: connection to the agent failed: %s" % err, file=sys.stderr)
            os._exit(1)
        if msg is None:
            os._exit(0)
        op = msg.get("op")
        if op == "fork":
            reply = _hand_to_spare(spare, msg, fds) if spare else None
            spare = None  # used (or broken): a new one is made once idle
            if reply is None:
                if _fork(channel, msg, fds):
                    return
            else:
                channel.send(reply)
        elif op == "spare":
            for fd in fds:
                os.close(fd)
            spare_cgroup = msg
        elif op == "park":
            if spare:
                spare.close()  # it exits: nothing may stay connected for the snapshot
                spare = None
            spare_cgroup = None  # the agent removes it
            channel = _park(channel, path)
        else:
            for fd in fds:
                os.close(fd)
            channel.send({"error": "unknown op %r" % op})


def _connect(path: str) -> _Channel:
    channel = _Channel.connect(path)
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


def _double_fork() -> int:
    """Returns 0 in the grandchild (being re-parented to this process's parent's subreaper,
    the agent) and the middle's pid, already reaped, in the caller."""
    sys.stdout.flush()
    sys.stderr.flush()
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            return 0
        os._exit(0)  # the middle process: the grandchild is re-parented to the agent
    os.waitpid(middle, 0)
    return middle


def _adopted_by(agent: int) -> None:
    """In a grandchild: waits until the agent is its parent, then dies with it. Raises
    TemplateError when that does not happen."""
    os.setsid()
    deadline = time.monotonic() + _REPARENT_WAIT_S
    while os.getppid() != agent:
        if time.monotonic() > deadline:
            raise TemplateError("not re-parented to the agent (pid %d); is it a child "
                                "subreaper?" % agent)
        time.sleep(0.0005)
    _set_death_signal(signal.SIGKILL)
    if os.getppid() != agent:
        raise TemplateError("the agent exited")


def _make_spare(channel: _Channel,
                cgroup: Optional[Dict[str, Any]]) -> Tuple[Optional[_Channel], bool]:
    """Makes a spare, in `cgroup` ({"id", "cgroupProcs"}) if given. In the template: (its
    channel, False), or (None, False) if it could not be made. In the spare, once it has become
    a worker: (None, True)."""
    agent = os.getppid()
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError:
        return None, False
    if _double_fork() == 0:
        ours.close()
        channel.close()  # nothing of the agent's stays in a spare
        _spare_main(_Channel(theirs), agent, cgroup)  # returns only as a worker
        return None, True
    theirs.close()
    return _Channel(ours), False


def _spare_main(template: _Channel, agent: int, cgroup: Optional[Dict[str, Any]]) -> None:
    """In a spare: joins its cgroup, waits for an identity, then becomes that worker (returns).
    Exits when the template goes away or the identity cannot be taken."""
    try:
        _adopted_by(agent)
        if cgroup:
            _join_cgroup(cgroup.get("cgroupProcs") or [])
    except (TemplateError, OSError):
        os._exit(1)
    def take(msg: Dict[str, Any], fds: List[int]) -> Dict[str, Any]:
        reply = _take_identity(msg, fds, in_cgroup=bool(cgroup))
        if cgroup and "pid" in reply:
            reply["spareCgroup"] = cgroup.get("id")
        return reply

    _spare_wait(template, take)


def _spare_wait(template: _Channel,
                take: Callable[[Dict[str, Any], List[int]], Dict[str, Any]]) -> None:
    """In a spare: waits for an identity from the template, takes it (`take` returns the answer)
    and answers. Returns in the worker; exits when the template goes away or the identity
    cannot be taken."""
    try:
        msg, fds = template.recv()
    except (OSError, ValueError):
        os._exit(1)
    if msg is None:
        os._exit(0)
    reply = take(msg, fds)
    try:
        template.send(reply)
    except OSError:
        # The template gave up waiting for this answer (and forked the worker itself): this
        # process must not go on as a second copy of it.
        os._exit(1)
    template.close()
    if "error" in reply:
        os._exit(127)


def _join_cgroup(procs_files: List[str]) -> None:
    for procs in procs_files:
        with open(procs, "w") as f:
            f.write("0")  # "0": the writing process


def _hand_to_spare(spare: _Channel, msg: Dict[str, Any],
                   fds: List[int]) -> Optional[Dict[str, Any]]:
    """The spare's answer to a fork request, or None if it is gone (the caller then forks)."""
    try:
        spare.send(msg, fds)
        reply, _ = spare.recv(_REPARENT_WAIT_S)
    except (OSError, ValueError):
        reply = None
    spare.close()
    if reply is None:
        return None
    for fd in fds:
        os.close(fd)
    reply["spare"] = True
    return reply


def _fork(channel: _Channel, msg: Dict[str, Any], fds: List[int]) -> bool:
    """Makes one worker on the spot. True in the worker; False in the template (after
    replying)."""
    agent = int(msg.get("agentPid") or 0)

    def become() -> Dict[str, Any]:
        try:
            _adopted_by(agent)
            return _take_identity(msg, fds)
        except (TemplateError, OSError) as err:
            return {"error": str(err)}

    reply = _fork_on_the_spot(channel, fds, _double_fork, become)
    if reply is None:
        return True
    channel.send(reply)
    return False


def _fork_on_the_spot(channel: _Channel, fds: List[int], new_process: Callable[[], int],
                      become: Callable[[], Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Makes one worker: `new_process()` forks (0 in the worker), `become()` gives the worker
    its identity and returns its answer. None in the worker (ready to run); the answer for the
    agent in the template, not sent yet."""
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return {"error": "a fork needs 2 fds (stdout, stderr), got %d" % len(fds)}
    report_r, report_w = os.pipe()
    if new_process() == 0:
        os.close(report_r)
        channel.close()
        reply = become()
        os.write(report_w, json.dumps(reply).encode())
        os.close(report_w)
        if "error" in reply:
            os._exit(127)
        return None
    os.close(report_w)
    for fd in fds:
        os.close(fd)
    with os.fdopen(report_r, "rb") as r:
        report = r.read()
    try:
        return json.loads(report) if report else {"error": "the worker died while starting"}
    except ValueError:
        return {"error": "bad report from the worker: %r" % report[:200]}


def _await_cgroups() -> None:
    """In a worker forked inside a container: stops until the agent has moved it into its
    cgroups and continued it."""
    os.kill(os.getpid(), signal.SIGSTOP)


def _take_identity(msg: Dict[str, Any], fds: List[int], in_cgroup: bool = False,
                   merge_env: bool = False) -> Dict[str, Any]:
    """In a grandchild adopted by the agent: cgroups (unless already `in_cgroup`), stdio, env
    (added to the template's, without its template variables, if `merge_env`; else replacing
    it), workdir. Returns the reply for the agent: {"pid": N}, or {"error": "..."} (the caller
    then exits)."""
    if len(fds) != 2:
        return {"error": "a fork needs 2 fds (stdout, stderr), got %d" % len(fds)}
    try:
        if not in_cgroup:
            _join_cgroup(msg.get("cgroupProcs") or [])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in [null] + fds:
            os.close(fd)
        env = msg.get("env") or {}
        if merge_env:
            for name in (ENV_SOCKET, ENV_CONTAINER):
                os.environ.pop(name, None)
        else:
            os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
        workdir = msg.get("workdir")
        if workdir:
            os.chdir(workdir)
    except Exception as err:  # noqa: BLE001 - any failure is reported to the agent
        return {"error": "%s: %s" % (type(err).__name__, err)}
    return {"pid": os.getpid()}


class _Inside:
    """The template as a container's init: its workers are its own children (module docstring)."""

    def __init__(self) -> None:
        self.workers: set = set()  # pids of the workers it made (the spare is not one yet)
        self.spare: Optional[_Channel] = None
        self.spare_pid = 0
        self.offered: Optional[str] = None  # a cgroup offered for the next spare
        self.spare_cgroup: Optional[str] = None  # the cgroup the spare was announced for
        self.retiring = False
        # SIGCHLD wakes the loop (through this pipe) to reap and report.
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

    def serve(self, path: str) -> None:
        """Returns only in a worker."""
        channel = _connect(path)
        while True:
            if self.retiring and not self.workers:
                os._exit(0)
            if b"\n" not in channel.buf:
                timeout = None if self.spare or self.retiring else _SPARE_AFTER_IDLE_S
                readable, _, _ = select.select([channel.sock, self.wake_r], [], [], timeout)
                if self.wake_r in readable:
                    self._reap(channel)
                    continue
                if not readable:
                    if self._make_spare(channel):
                        return
                    continue
            try:
                msg, fds = channel.recv()
            except (OSError, ValueError) as err:
                print("gantry template: connection to the agent failed: %s" % err,
                      file=sys.stderr)
                msg, fds = None, []
            if msg is None:  # the agent is gone: nobody to report to; end with the workers
                self._close_spare()
                while self.workers:
                    self.workers.discard(os.wait()[0])
                os._exit(0)
            op = msg.get("op")
            if op == "fork" and not self.retiring:
                if self._fork(channel, msg, fds):
                    return
            elif op == "retire":
                self.retiring = True
                self._close_spare()
            elif op == "spare":
                for fd in fds:
                    os.close(fd)
                self.offered = msg.get("id")
                self._announce_spare(channel)
            else:
                for fd in fds:
                    os.close(fd)
                channel.send({"error": "unknown op %r" % op if op != "fork" else "retiring"})

    def _reap(self, channel: _Channel) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.spare_pid:
                self._close_spare()
            if pid in self.workers:
                self.workers.discard(pid)
                try:
                    channel.send({"op": "exit", "pid": pid, "status": status})
                except OSError:
                    pass  # the agent is gone; its runtime times the status out

    def _child(self) -> int:
        """fork(); in the child (0) the template's signal set-up is undone and it leads its
        own session."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(self.wake_r)
            os.close(self.wake_w)
            os.setsid()
        return pid

    def _close_spare(self) -> None:
        if self.spare:
            self.spare.close()  # it exits
        self.spare = None
        self.spare_pid = 0
        self.spare_cgroup = None

    def _announce_spare(self, channel: _Channel) -> None:
        """Tells the agent which process is the spare for the cgroup it offered."""
        if not (self.spare and self.offered and not self.spare_cgroup):
            return
        self.spare_cgroup, self.offered = self.offered, None
        channel.send({"op": "spare-made", "pid": self.spare_pid, "id": self.spare_cgroup})

    def _make_spare(self, channel: _Channel) -> bool:
        """Makes a spare; True in the spare once it has become a worker."""
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError:
            return False
        pid = self._child()
        if pid == 0:
            ours.close()
            channel.close()  # nothing of the agent's stays in a spare
            _spare_wait(_Channel(theirs), lambda msg, fds: _take_identity(
                msg, fds, in_cgroup=True, merge_env=True))
            _await_cgroups()
            return True
        theirs.close()
        self.spare, self.spare_pid = _Channel(ours), pid
        self._announce_spare(channel)
        return False

    def _fork(self, channel: _Channel, msg: Dict[str, Any], fds: List[int]) -> bool:
        """Makes one worker (from the spare if there is one). True in the worker."""
        reply = None
        if self.spare:
            cgroup = self.spare_cgroup
            reply = _hand_to_spare(self.spare, msg, fds)
            self.spare, self.spare_pid, self.spare_cgroup = None, 0, None
            if reply is not None and "pid" in reply and cgroup:
                reply["spareCgroup"] = cgroup
        if reply is None:  # no spare, or it is gone: fork on the spot
            reply = _fork_on_the_spot(
                channel, fds, self._child,
                lambda: _take_identity(msg, fds, in_cgroup=True, merge_env=True))
            if reply is None:
                _await_cgroups()
                return True
        if "pid" in reply:  # the worker's own pid: in this PID namespace, the one fork gave
            self.workers.add(reply["pid"])
        channel.send(reply)
        return False
