#!/usr/bin/python3
"""Weights in anonymous memory (torch.save/torch.load) against weights mapped from the page
cache (gantry.weights), for a worker template that fork()s its workers.

Builds 8 x Linear(4000, 4000) float32 (128 M parameters, 488 MiB), saves it both ways into a
temp dir, and measures in one run:
  - save and load times of both formats (loads warm: the files were just written);
  - the first (and second) forward pass in a fork()ed child when the parent holds the model
    (a) in anonymous memory, from torch.load, or (b) mapped with gantry.weights.load;
  - PSS (from /proc/PID/smaps_rollup) of 1 and of 4 forked children that each ran one forward
    pass and wait, for (a) and (b), and the parent's PSS at that moment;
  - fresh processes (exec, no template): import torch, load the model, first forward pass, and
    the PSS of 4 of them holding the model at once.

Usage (from the repository root; needs Debian's python3-torch, about a minute here):
    /usr/bin/python3 bench/weights_share.py [--layers 8] [--dim 4000] [--children 4]
Prints markdown tables.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SDK = os.path.join(ROOT, "sdk", "python")
sys.path.insert(0, SDK)

import torch  # noqa: E402

from gantry import weights  # noqa: E402

MiB = 1024 * 1024


def build(layers, dim, device=None):
    return torch.nn.Sequential(*[torch.nn.Linear(dim, dim, device=device) for _ in range(layers)])


def forward_ms(model, x):
    t0 = time.perf_counter()
    with torch.no_grad():
        model(x)
    return (time.perf_counter() - t0) * 1e3


def rollup(pid):
    """{field: MiB} from /proc/PID/smaps_rollup."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return out


def fork_child(fn, release=None):
    """fork()s a child that runs fn() and writes its JSON result to a pipe; with `release` (a
    pipe (r, w) shared by all held children), the child then waits for end of file on it.
    Returns (pid, result reader)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            os.write(w, (json.dumps(fn()) + "\n").encode())
            if release:
                os.close(release[1])
                os.read(release[0], 1)   # returns at EOF: the parent closed its end
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, os.fdopen(r, "rb")


def child_first_forward(model, x, runs):
    """Median over `runs` fresh children of their first and second forward-pass times (ms)."""
    firsts, seconds = [], []
    for _ in range(runs):
        pid, reader = fork_child(lambda: (forward_ms(model, x), forward_ms(model, x)))
        first, second = json.loads(reader.readline())
        reader.close()
        os.waitpid(pid, 0)
        firsts.append(first)
        seconds.append(second)
    return statistics.median(firsts), statistics.median(seconds)


def children_pss(model, x, n):
    """PSS (MiB) of n forked children that each ran one forward pass, and the parent's."""
    release = os.pipe()
    kids = [fork_child(lambda: forward_ms(model, x), release) for _ in range(n)]
    for _, reader in kids:
        reader.readline()   # this child has run its forward pass and now waits
    per_child = [rollup(pid) for pid, _ in kids]
    parent = rollup(os.getpid())
    os.close(release[1])
    os.close(release[0])
    for pid, reader in kids:
        reader.close()
        os.waitpid(pid, 0)
    return {
        "children_pss": sum(c["Pss"] for c in per_child),
        "children_pss_anon": sum(c.get("Pss_Anon", 0) for c in per_child),
        "children_pss_file": sum(c.get("Pss_File", 0) for c in per_child),
        "children_rss": sum(c["Rss"] for c in per_child),
        "parent_pss": parent["Pss"],
    }


FRESH = r"""
import sys, time, json
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[4])
import torch
from gantry import weights
t1 = time.perf_counter()
layers, dim = int(sys.argv[2]), int(sys.argv[3])
def build(device=None):
    return torch.nn.Sequential(*[torch.nn.Linear(dim, dim, device=device) for _ in range(layers)])
path = sys.argv[1]
if path.endswith(".pt"):
    model = weights.bind(build("meta"), torch.load(path))
else:
    model = weights.bind(build("meta"), weights.load(path))
t2 = time.perf_counter()
with torch.no_grad():
    model(torch.ones(1, dim))
t3 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1, t3 - t2]), flush=True)
sys.stdin.read()   # held until the parent closes our stdin
"""


def fresh_processes(path, args, n):
    """Starts n fresh processes (exec, no template) that each load `path` and run one forward
    pass, one after another; returns the first one's (import, load, forward) times in ms and
    the PSS (MiB) of all n, measured while they all still hold the model."""
    procs, times = [], None
    try:
        for _ in range(n):
            p = subprocess.Popen([sys.executable, "-c", FRESH, path, str(args.layers),
                                  str(args.dim), SDK], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            line = p.stdout.readline()
            if not line:
                raise RuntimeError("a fresh process failed")
            times = times or [v * 1e3 for v in json.loads(line)]
        pss = sum(rollup(p.pid)["Pss"] for p in procs)
    finally:
        for p in procs:
            p.stdin.close()
            p.wait()
            p.stdout.close()
    return times, pss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--dim", type=int, default=4000)
    ap.add_argument("--children", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3, help="children per first-forward median")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="gantry-weights-bench-")
    pt, gw = os.path.join(tmp, "model.pt"), os.path.join(tmp, "model.gw")
    x = torch.ones(1, args.dim)
    try:
        t0 = time.perf_counter()
        model = build(args.layers, args.dim)
        build_s = time.perf_counter() - t0
        size_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / MiB
        state = model.state_dict()

        t0 = time.perf_counter()
        with open(pt, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        torch_save_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        weights.save(gw, state)   # includes its fsync
        gw_save_s = time.perf_counter() - t0
        del model, state

        # (a) anonymous memory: torch.load, bound into a meta-built module (no extra copy).
        t0 = time.perf_counter()
        loaded = torch.load(pt)
        torch_load_s = time.perf_counter() - t0
        model_a = weights.bind(build(args.layers, args.dim, "meta"), loaded)
        del loaded
        parent_fwd_a = [forward_ms(model_a, x) for _ in range(2)]
        child_a = child_first_forward(model_a, x, args.runs)
        pss_a = {n: children_pss(model_a, x, n) for n in (1, args.children)}
        del model_a

        # (b) mapped from the page cache with gantry.weights.
        t0 = time.perf_counter()
        tensors = weights.load(gw)
        gw_map_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for t in tensors.values():
            t.sum()
        gw_touch_s = time.perf_counter() - t0
        model_b = weights.bind(build(args.layers, args.dim, "meta"), tensors)
        del tensors
        parent_fwd_b = [forward_ms(model_b, x) for _ in range(2)]
        child_b = child_first_forward(model_b, x, args.runs)
        pss_b = {n: children_pss(model_b, x, n) for n in (1, args.children)}
        del model_b

        fresh_a, fresh_pss_a = fresh_processes(pt, args, args.children)
        fresh_b, fresh_pss_b = fresh_processes(gw, args, args.children)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = args.children
    print("model: %d x Linear(%d, %d) float32, %.0f MiB; built in %.2f s; torch %s, %d thread(s)"
          % (args.layers, args.dim, args.dim, size_mib, build_s, torch.__version__,
             torch.get_num_threads()))
    print()
    print("| | torch.save / torch.load (a) | gantry.weights (b) |")
    print("|---|---:|---:|")
    print("| save, with fsync | %.2f s | %.2f s |" % (torch_save_s, gw_save_s))
    print("| load (warm page cache) | %.2f s | %.2f ms map + %.0f ms first read of all |"
          % (torch_load_s, gw_map_s * 1e3, gw_touch_s * 1e3))
    print("| parent: forward pass 1, 2 (batch 1) | %.0f, %.0f ms | %.0f, %.0f ms |"
          % tuple(parent_fwd_a + parent_fwd_b))
    print("| fork()ed child: first forward pass (median of %d) | **%.0f ms** | **%.0f ms** |"
          % (args.runs, child_a[0], child_b[0]))
    print("| fork()ed child: second forward pass | %.0f ms | %.0f ms |" % (child_a[1], child_b[1]))
    for k in (1, n):
        print("| PSS of %d child%s after a forward pass (sum; anon / file) | %.0f MiB (%.0f / %.0f)"
              " | %.0f MiB (%.0f / %.0f) |"
              % (k, "" if k == 1 else "ren", pss_a[k]["children_pss"],
                 pss_a[k]["children_pss_anon"], pss_a[k]["children_pss_file"],
                 pss_b[k]["children_pss"], pss_b[k]["children_pss_anon"],
                 pss_b[k]["children_pss_file"]))
        print("| parent's PSS beside %d child%s | %.0f MiB | %.0f MiB |"
              % (k, "" if k == 1 else "ren", pss_a[k]["parent_pss"], pss_b[k]["parent_pss"]))
        print("| parent + %d child%s, PSS | %.0f MiB | %.0f MiB |"
              % (k, "" if k == 1 else "ren", pss_a[k]["parent_pss"] + pss_a[k]["children_pss"],
                 pss_b[k]["parent_pss"] + pss_b[k]["children_pss"]))
    print("| fresh process (no template): import torch, load, first forward | "
          "%.0f + %.0f + %.0f ms | %.0f + %.0f + %.0f ms |" % tuple(fresh_a + fresh_b))
    print("| %d fresh processes, each holding the model, PSS (sum) | %.0f MiB | %.0f MiB |"
          % (n, fresh_pss_a, fresh_pss_b))


if __name__ == "__main__":
    main()
