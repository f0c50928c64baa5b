"""What the tests' hostile workers try, shared by the image worker (tests/images/worker.py, in
the test image as /app/attempts.py) and the bundles of tests/e2e (hostile/, netprobe/: deployed
with a copy of this file). Standard library only."""
import errno
import os
import signal
import socket
import time
import urllib.parse


def fork_bomb(cap_s, most, hold):
    """Forks children that sleep until fork fails, `most` of them or `cap_s` seconds have passed
    (a missing limit cannot hang the test); each execs /bin/sleep, so that it costs little memory
    and a worker's memory limit is not what stops it. Then calls hold() (it returns when the
    children may go), and kills them. {"forked": N, "errno": "EAGAIN" or None, "strerror"}."""
    deadline = time.monotonic() + cap_s
    kids, failure = [], None
    try:
        while len(kids) < most and time.monotonic() < deadline:
            try:
                pid = os.fork()
            except OSError as err:
                failure = err
                break
            if pid == 0:
                try:
                    os.execv("/bin/sleep", ["sleep", str(int(cap_s) + 5)])
                finally:
                    os._exit(127)
            kids.append(pid)
        hold(deadline)
    finally:
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
        for pid in kids:
            os.waitpid(pid, 0)
    return {"forked": len(kids),
            "errno": errno.errorcode.get(failure.errno) if failure else None,
            "strerror": str(failure) if failure else None}  # an "error" key fails the job


def connect_attempts(targets):
    """For each "HOST:PORT" (GATEWAY: the host the worker's server URL names), what a TCP
    connection there read ("ok: ...") or why it failed ("refused: ..."); and "gateway"."""
    gateway = urllib.parse.urlsplit(os.environ["RUNPOD_WEBHOOK_GET_JOB"]).hostname
    out = {"gateway": gateway}
    for target in targets:
        host, port = target.rsplit(":", 1)
        try:
            with socket.create_connection((gateway if host == "GATEWAY" else host, int(port)),
                                          timeout=2) as s:
                s.settimeout(2)
                out[target] = "ok: " + s.recv(64).decode()
        except Exception as err:  # noqa: BLE001 - every failure is the answer
            out[target] = "refused: %s: %s" % (type(err).__name__, err)
    return out
