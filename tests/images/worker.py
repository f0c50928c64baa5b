"""The end-to-end tests' image worker: a RunPod handler file, as a user's image brings one.
Input {"op": "whoami"} reports what the container sees; {"op": "allocate", "mb": N} allocates
N MiB (to be OOM-killed past the endpoint's memoryMb); {"op": "sleep", "s": N} takes N seconds;
{"op": "escape"} and {"op": "fork_bomb", ...} are what a hostile image tries; {"op": "connect",
"targets": ["HOST:PORT", ...]} reports, for each, what a TCP connection there read ("ok: ...") or
why it failed ("refused: ..."), GATEWAY standing for the host its server URL names."""
import ctypes
import os
import socket
import stat
import time

import runpod
from attempts import connect_attempts, fork_bomb


def handler(job):
    inp = job["input"] or {}
    if inp.get("op") == "allocate":
        block = bytearray(int(inp["mb"]) << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1  # touch every page
        return {"allocated": len(block)}
    if inp.get("op") == "sleep":
        time.sleep(float(inp["s"]))
        return {"slept": inp["s"], "pid": os.getpid()}
    if inp.get("op") == "escape":
        return escape_attempts()
    if inp.get("op") == "fork_bomb":
        hold_s = float(inp.get("hold_s", 0))
        return fork_bomb(float(inp.get("cap_s", 20)), int(inp.get("most", 4500)),
                         lambda deadline: time.sleep(hold_s))
    if inp.get("op") == "connect":
        return connect_attempts(inp["targets"])
    if inp.get("op") == "write":
        path = inp["path"]
        with open(path, "w") as f:
            f.write(inp.get("text", ""))
        return {"wrote": path}
    return {
        "pid": os.getpid(),
        "pids": len([p for p in os.listdir("/proc") if p.isdigit()]),
        "hostname": socket.gethostname(),
        "uid": os.getuid(),
        "uidMap": open("/proc/self/uid_map").read().split(),  # its user namespace's, if any
        "worker": os.environ.get("RUNPOD_POD_ID"),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "nvidiaVisible": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
        "seesHostRepo": os.path.exists(inp.get("hostPath", "/work")),
        "volume": sorted(os.listdir("/runpod-volume")) if os.path.isdir("/runpod-volume") else None,
        "exists": os.path.exists(inp["check"]) if inp.get("check") else None,
        "cgroup": open("/proc/self/cgroup").read(),  # the host's paths: no cgroup namespace
    }


def escape_attempts():
    """What a hostile image tries: each {"name": "ok" | "refused: <errno name>"}."""
    libc = ctypes.CDLL(None, use_errno=True)

    def call(fn, *args):
        if fn(*args) == -1:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

    def raw_socket():
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP).close()

    def clone_newuser():  # fork() in a new user namespace, by clone() itself
        pid = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)  # SYS_clone, CLONE_NEWUSER|SIGCHLD
        if pid == 0:
            os._exit(0)
        if pid < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        os.waitpid(pid, 0)

    attempts = {
        "unshare(CLONE_NEWUSER)": lambda: call(libc.unshare, 0x10000000),
        "clone(CLONE_NEWUSER)": clone_newuser,
        "mount": lambda: call(libc.mount, b"none", b"/tmp", b"tmpfs", 0, None),
        "ptrace(PTRACE_ATTACH, 1)": lambda: call(libc.ptrace, 16, 1, None, None),
        "keyctl": lambda: call(libc.syscall, 250, 0, 0, 0, 0),  # SYS_keyctl, KEYCTL_GET_KEYRING_ID
        "bpf": lambda: call(libc.syscall, 321, 0, 0, 0),  # SYS_bpf
        "raw socket": raw_socket,
        "mknod": lambda: os.mknod("/tmp/null", stat.S_IFCHR | 0o600, os.makedev(1, 3)),
    }
    out = {}
    for name, fn in attempts.items():
        try:
            fn()
            out[name] = "ok"
        except OSError as err:
            out[name] = "refused: %s" % os.strerror(err.errno)
    out["uid"] = os.getuid()
    return out


runpod.serverless.start({"handler": handler})
