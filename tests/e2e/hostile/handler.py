"""A hostile tenant's handler (tests/e2e/test_sandbox.py): tries what a worker must not be able
to do and reports each attempt as {"name": "ok" | "refused: <error>"}. The test passes it the
paths and pids to aim at, which it found as root."""
import ctypes
import os
import socket
import stat
import time

import gantry.serverless as serverless
from attempts import fork_bomb

libc = ctypes.CDLL(None, use_errno=True)


def attempt(fn):
    try:
        fn()
        return "ok"
    except Exception as err:  # noqa: BLE001 - every failure is the answer
        return "refused: %s: %s" % (type(err).__name__, err)


def read(path):
    with open(path, "rb") as f:
        f.read(1)


def write(path):
    with open(path, "wb") as f:
        f.write(b"x")


def listdir(path):
    os.listdir(path)


def raw_socket():
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP).close()


def mknod(path):
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))


def ptrace(pid):
    PTRACE_ATTACH = 16
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def hold_until_released(flags):
    """With a `flag_dir`, a fork bomb writes flag_dir/full once it has stopped forking and holds
    its children until flag_dir/release appears (or its cap passes): the test checks a
    neighbour meanwhile."""
    def hold(deadline):
        if not flags:
            return
        write(os.path.join(flags, "full"))
        while time.monotonic() < deadline and not os.path.exists(os.path.join(flags, "release")):
            time.sleep(0.05)
    return hold


def handler(job):
    a = job["input"]
    if a.get("whoami"):
        return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                "pid": os.getpid(),
                "cwd": os.getcwd(), "home": os.environ.get("HOME"),
                "scratch": os.environ.get("GANTRY_SCRATCH")}
    if a.get("fork_bomb"):
        b = a["fork_bomb"]
        return fork_bomb(float(b.get("cap_s", 20)), int(b.get("most", 4500)),
                         hold_until_released(b.get("flag_dir")))
    out = {}
    for path in a.get("read", []):
        out["read " + path] = attempt(lambda: read(path))
    for path in a.get("list", []):
        out["list " + path] = attempt(lambda: listdir(path))
    for path in a.get("write", []):
        out["write " + path] = attempt(lambda: write(path))
    for pid in a.get("environ", []):
        out["environ %d" % pid] = attempt(lambda: read("/proc/%d/environ" % pid))
    for pid in a.get("ptrace", []):
        out["ptrace %d" % pid] = attempt(lambda: ptrace(pid))
    if a.get("raw_socket"):
        out["raw socket"] = attempt(raw_socket)
    if a.get("mknod"):
        out["mknod"] = attempt(lambda: mknod(os.path.join(os.environ["GANTRY_SCRATCH"], "null")))
    if a.get("scratch"):  # what a worker may do: write in its scratch directory
        out["scratch"] = attempt(lambda: write(os.path.join(os.environ["GANTRY_SCRATCH"], "f")))
    return out


serverless.start({"handler": handler})
