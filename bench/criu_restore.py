#!/usr/bin/python3
"""Times CRIU full against lazy-pages restore of a process holding N MiB of anonymous memory.

Usage (as root, after scripts/setup.sh):
    /usr/bin/python3 bench/criu_restore.py [--mib 256 1024] [--runs 5] [--criu PATH]

For each size: starts a child that fills N MiB of anonymous memory and SIGSTOPs itself, dumps it
once, then restores the same image --runs times per mode. Each restore runs criu with the flags
that src/agent/snapshot/criu.cc uses (keep them in sync), then SIGCONTs the process, which reads
one byte of every page of its memory, checks that it still holds what it wrote, and exits.
Printed per mode, median over the runs:
  restore   criu restore returns (lazy: plus starting `criu lazy-pages` and waiting for it)
  +touched  restore, then SIGCONT until the process has read all of its memory and exited
Images live in a temp dir under /tmp (page cache warm after the first restore).
"""

import argparse
import ctypes
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PR_SET_CHILD_SUBREAPER = 36
ENV = {"CRIU_FAULT": "130", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "LC_ALL": "C"}

CHILD = r"""
import os, signal, sys
n = int(sys.argv[1]) << 20
blob = bytearray(b"\x5a") * n            # every page touched and non-zero
blob[0::4096] = bytes(range(256)) * (n // 4096 // 256) + bytes(range((n // 4096) % 256))
os.kill(os.getpid(), signal.SIGSTOP)
ok = blob[0::4096] == bytes(range(256)) * (n // 4096 // 256) + bytes(range((n // 4096) % 256))
sys.exit(0 if ok and blob[4095] == 0x5a else 3)
"""


def run(cmd, **kw):
    r = subprocess.run(cmd, env=ENV, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}: {r.stdout}{r.stderr}")


def restore_once(criu, img, lazy):
    """Returns (seconds until restore returned, seconds until the process had touched all)."""
    t0 = time.perf_counter()
    daemon = None
    if lazy:
        rfd, wfd = os.pipe()
        daemon = subprocess.Popen(
            [criu, "lazy-pages", "-D", img, "-o", os.path.join(img, "lazy-pages.log"), "-v4",
             "--status-fd", str(wfd)], env=ENV, stdin=subprocess.DEVNULL, pass_fds=(wfd,))
        os.close(wfd)
        ready = os.read(rfd, 1)
        os.close(rfd)
        if not ready:
            sys.exit("criu lazy-pages did not start; see lazy-pages.log")
    pidfile = os.path.join(img, "restore.pid")
    if os.path.exists(pidfile):
        os.unlink(pidfile)  # criu refuses to overwrite it
    cmd = [criu, "restore", "-D", img, "--shell-job", "--manage-cgroups=ignore",
           "--restore-detached", "--pidfile", pidfile, "-o", os.path.join(img, "restore.log"),
           "-v4"]
    if lazy:
        cmd.append("--lazy-pages")
    run(cmd)
    t_restored = time.perf_counter()
    pid = int(open(pidfile).read())
    os.kill(pid, signal.SIGCONT)
    _, status = os.waitpid(pid, 0)
    t_done = time.perf_counter()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"restored process ended badly: {status}")
    if daemon is not None and daemon.wait(timeout=60) != 0:
        sys.exit("criu lazy-pages failed; see lazy-pages.log")
    return t_restored - t0, t_done - t0


def bench_size(criu, mib, runs):
    tmp = tempfile.mkdtemp(prefix="gantry-criu-bench.")
    img = os.path.join(tmp, "img")
    os.makedirs(img)
    try:
        child = subprocess.Popen(["/usr/bin/python3", "-c", CHILD, str(mib)],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 process_group=0)
        _, status = os.waitpid(child.pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            sys.exit(f"the child did not stop: {status}")
        t0 = time.perf_counter()
        run([criu, "dump", "-t", str(child.pid), "-D", img, "--shell-job",
             "-o", os.path.join(img, "dump.log"), "-v4"])
        dump_s = time.perf_counter() - t0
        os.waitpid(child.pid, 0)
        child.returncode = -9  # reaped above; keeps Popen from waiting on a reused pid
        image_mib = sum(os.path.getsize(os.path.join(img, f)) for f in os.listdir(img)) / 2**20
        results = {}
        for mode in ("full", "lazy"):
            samples = [restore_once(criu, img, mode == "lazy") for _ in range(runs)]
            results[mode] = (statistics.median(s[0] for s in samples),
                             statistics.median(s[1] for s in samples))
        return dump_s, image_mib, results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--criu", default=os.environ.get("GANTRY_CRIU", "/usr/local/lib/gantry/criu"))
    args = ap.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")

    print(f"criu: {args.criu}; median of {args.runs} restores per mode; times in ms")
    print("| anon memory | image | dump | full: restore | full: +touched | lazy: restore "
          "| lazy: +touched |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for mib in args.mib:
        dump_s, image_mib, r = bench_size(args.criu, mib, args.runs)
        print(f"| {mib} MiB | {image_mib:.0f} MiB | {dump_s * 1e3:.0f} | {r['full'][0] * 1e3:.0f} "
              f"| {r['full'][1] * 1e3:.0f} | {r['lazy'][0] * 1e3:.0f} | {r['lazy'][1] * 1e3:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
