"""The end-to-end tests' image worker: a RunPod handler file, as a user's image brings one.
Input {"op": "whoami"} reports what the container sees; {"op": "allocate", "mb": N} allocates
N MiB (to be OOM-killed past the endpoint's memoryMb); {"op": "sleep", "s": N} takes N seconds."""
import os
import socket
import time

import runpod


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
        "worker": os.environ.get("RUNPOD_POD_ID"),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "nvidiaVisible": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
        "seesHostRepo": os.path.exists(inp.get("hostPath", "/work")),
        "volume": sorted(os.listdir("/runpod-volume")) if os.path.isdir("/runpod-volume") else None,
        "exists": os.path.exists(inp["check"]) if inp.get("check") else None,
        "cgroup": open("/proc/self/cgroup").read(),  # the host's paths: no cgroup namespace
    }


runpod.serverless.start({"handler": handler})
