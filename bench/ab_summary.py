#!/usr/bin/env python3
"""The medians of bench/ab_compare.sh's runs: for each row of run_bench.sh's table, the req/s of
each run of the old and the new binary, the ratio of their medians, and each one's median ratio
to nginx in the same runs. Usage: bench/ab_summary.py OUT_DIR"""
import glob
import os
import re
import statistics
import sys


def rows(path):
    """scenario -> (req/s, p50 ms, rps/nginx) of one run_bench.sh table."""
    out = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 6 or not re.match(r"^[\d,]+$", cells[1]):
            continue
        name = re.sub(r", \d+ endpoints$", "", cells[0])
        out[name] = (float(cells[1].replace(",", "")), float(cells[2]), float(cells[5]))
    return out


def main():
    d = sys.argv[1]
    runs = {"old": [], "new": []}
    for which in runs:
        for path in sorted(glob.glob(os.path.join(d, "res-*-%s.md" % which))):
            runs[which].append(rows(path))
    print("| scenario | old req/s | new req/s | new/old (medians) | vs nginx, old | vs nginx, new "
          "| p50 ms old / new |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in runs["old"][0]:
        o = [r[name] for r in runs["old"] if name in r]
        n = [r[name] for r in runs["new"] if name in r]
        med = lambda xs, k: statistics.median(x[k] for x in xs)
        print("| %s | %s | %s | %.2f | %.2f | %.2f | %.3f / %.3f |" % (
            name, ", ".join("{:,.0f}".format(x[0]) for x in o),
            ", ".join("{:,.0f}".format(x[0]) for x in n), med(n, 0) / med(o, 0), med(o, 2),
            med(n, 2), med(o, 1), med(n, 1)))


if __name__ == "__main__":
    main()
