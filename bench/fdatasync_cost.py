#!/usr/bin/python3
"""What an fdatasync costs on this disk when the write appends to a file (the file's size
changes, so the inode is written too) and when it overwrites blocks the file already has: the
reason the store restarts its SQLite WAL (src/store/sqlite/sqlite_store.cc, CheckpointLoop).
Both are measured in the same run, alternating, on a file next to the repository (the disk the
store uses by default).

Usage: /usr/bin/python3 bench/fdatasync_cost.py [--writes 300] [--size 8192] [--dir build]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, pct  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=300)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--dir", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    buf = b"x" * args.size
    append_path = os.path.join(args.dir, "fdatasync-append.tmp")
    over_path = os.path.join(args.dir, "fdatasync-overwrite.tmp")
    append = os.open(append_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    over = os.open(over_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        # The overwrite file gets its blocks first (written and synced): later writes reuse them.
        os.pwrite(over, b"\0" * (args.size * args.writes), 0)
        os.fdatasync(over)
        appended, overwritten = [], []
        for i in range(args.writes):
            off = i * args.size
            t0 = time.perf_counter()
            os.pwrite(append, buf, off)
            os.fdatasync(append)
            appended.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            os.pwrite(over, buf, off)
            os.fdatasync(over)
            overwritten.append((time.perf_counter() - t0) * 1000)
        print("| %d-byte write + fdatasync, %d each | p50 ms | p99 ms |" % (args.size, args.writes))
        print("|---|---:|---:|")
        print("| appending (the file grows) | %.3f | %.3f |" % (pct(appended, 50), pct(appended, 99)))
        print("| overwriting blocks the file has | %.3f | %.3f |" % (pct(overwritten, 50),
                                                                   pct(overwritten, 99)))
        print()
        print("appending / overwriting at p50: %.2fx" % (pct(appended, 50) / pct(overwritten, 50)))
    finally:
        os.close(append)
        os.close(over)
        os.unlink(append_path)
        os.unlink(over_path)


if __name__ == "__main__":
    main()
