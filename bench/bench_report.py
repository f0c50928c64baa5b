#!/usr/bin/python3
"""Turns run_bench.sh's key=value results into the markdown report.

Usage: bench_report.py RESULTS_ENV OUT_MD   (also prints the report)
"""
import sys

res = {}
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").partition("=")
    res[k] = v

def num(k):
    try:
        return float(res[k])
    except (KeyError, ValueError):
        return None


# wrk's rate counts every answer; only 2xx answers count here.
for k in list(res):
    if k.endswith("_rps"):
        key = k[:-4]
        n, bad = num(key + "_requests"), num(key + "_non2xx")
        if n and bad:
            res[k] = str(float(res[k]) * (n - bad) / n)

def ms(us):
    return "–" if us is None else "%.3f" % (us / 1000.0)

def ratio(a, b, fmt="%.2f"):
    return "–" if a is None or b is None or b == 0 else fmt % (a / b)

c = res["conns"]
rows = [
    ("nginx static file (%s B JSON), -c%s" % (res.get("nginx_bytes", "?"), c), "nginx_c32", None),
    ("nginx static file, -c1", "nginx_c1", None),
    ("gantry `/run` (fsync on, default), -c%s, 4 endpoints" % c, "run_fsync", "nginx_c32"),
    ("gantry `/run` (`--no-fsync`), -c%s, 4 endpoints" % c, "run_nofsync", "nginx_c32"),
    ("gantry `/run` (fsync on), -c1", "run_fsync_c1", "nginx_c1"),
    ("gantry `/run` (`--no-fsync`), -c1", "run_nofsync_c1", "nginx_c1"),
    ("gantry `/runsync` e2e, C++ bench_worker, -c%s, 4 endpoints" % c, "runsync_c32", "nginx_c32"),
    ("gantry `/runsync` e2e, C++ bench_worker, -c1", "runsync_c1", "nginx_c1"),
]
if "runsync_py_rps" in res:
    rows.append(("gantry `/runsync` e2e, %s Python SDK workers, -c%s" % (res["py_workers"], c),
                 "runsync_py", "nginx_c32"))
rows = [r for r in rows if (r[1] + "_rps") in res or (r[1] + "_failed") in res]

out = []
out.append("Run: %s, commit %s (%s), %s; wrk %ss per row, -t%s for -c%s rows; bench_worker --mode %s, "
           "%s thread(s) per endpoint, batch %s."
           % (res["date"], res["commit"], res["build"], res["machine"], res["duration"], res["wrk_threads"],
              res["conns"], res["worker_mode"], res["worker_threads"], res["batch"]))
out.append("")
out.append("| scenario | req/s (2xx) | p50 ms | p99 ms | errors | rps / nginx | p50 / nginx | other load |")
out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
for title, key, base in rows:
    if res.get(key + "_failed"):
        out.append("| %s | failed | | | | | | |" % title)
        continue
    rps, p50, p99 = num(key + "_rps"), num(key + "_p50_us"), num(key + "_p99_us")
    errs = int(num(key + "_errors") or 0) + int(num(key + "_non2xx") or 0)  # socket + non-2xx
    other = res.get(key + "_other_pct")
    out.append("| %s | %s | %s | %s | %d | %s | %s | %s |" % (
        title, "–" if rps is None else "{:,.0f}".format(rps), ms(p50), ms(p99), errs,
        ratio(rps, num(base + "_rps")) if base else "1.00",
        ratio(p50, num(base + "_p50_us")) if base else "1.00",
        ("–" if other is None else other + "%") +
        (" (try %s)" % res[key + "_attempts"] if res.get(key + "_attempts", "1") != "1" else "")))
out.append("")
out.append("Ratios: -c%s rows against nginx -c%s; -c1 rows against nginx -c1. \"other load\": share of "
           "both CPUs used by other programs during the row (a row over 15%% is repeated, up to twice; "
           "\"try N\" says which run counts). errors: socket errors and timeouts plus non-2xx answers."
           % (res["conns"], res["conns"]))
if "runsync_py_rps" not in res and ("py_error" in res or "py_log" in res):
    out.append("Python SDK workers: not measured (%s%s)." % (
        res.get("py_error", "unknown"), ("; log: " + res["py_log"]) if res.get("py_log") else ""))
out.append("")

mem_jobs = num("mem_jobs")
rss = num("mem_rss_kb")
idle = num("mem_rss_idle_kb")
if mem_jobs:
    out.append("| memory (no workers) | value |")
    out.append("|---|---:|")
    out.append("| jobs queued via `/run`, -c%s (body %s bytes, ~1 KB input) | {:,.0f} in %s s |".format(mem_jobs)
               % (c, res.get("mem_input_bytes"), res.get("mem_submit_s")))
    out.append("| server VmRSS idle, before | %.1f MB |" % ((idle or 0) / 1024))
    out.append("| server VmRSS with the jobs queued | %.1f MB |" % ((rss or 0) / 1024))
    out.append("| server VmHWM (peak) | %.1f MB |" % ((num("mem_hwm_kb") or 0) / 1024))
    if rss and idle:
        out.append("| RSS per queued job, above idle | %.0f bytes |" % ((rss - idle) * 1024 / mem_jobs))
    out.append("| data dir on disk | %.1f MB |" % ((num("mem_disk_kb") or 0) / 1024))
    if "mem_restart_s" in res:
        out.append("| restart with the jobs: time to listening / VmRSS | %s s / %.1f MB |" % (
            res["mem_restart_s"], (num("mem_restart_rss_kb") or 0) / 1024))
    out.append("")

def check(name, ok, measured):
    return "| %s | %s | %s |" % (name, measured, "**met**" if ok else "**missed**")

out.append("| target | measured | |")
out.append("|---|---|---|")
n32, n1 = num("nginx_c32_rps"), num("nginx_c1_rps")
r = num("run_fsync_rps")
if r and n32:
    out.append(check("`/run` >= 50% of nginx rps (fsync on)", r / n32 >= 0.5, "%.0f%% (no-fsync: %s)" % (
        100 * r / n32, ("%.0f%%" % (100 * num("run_nofsync_rps") / n32)) if num("run_nofsync_rps") else "–")))
s = num("runsync_c32_rps")
if s and n32:
    out.append(check("`/runsync` e2e >= 25% of nginx rps", s / n32 >= 0.25, "%.0f%%" % (100 * s / n32)))
p50, np50, p99 = num("runsync_c1_p50_us"), num("nginx_c1_p50_us"), num("runsync_c1_p99_us")
if p50 and np50:
    out.append(check("single-client `/runsync` p50 <= 4x nginx -c1 p50", p50 <= 4 * np50,
                     "%.1fx (%s ms vs %s ms)" % (p50 / np50, ms(p50), ms(np50))))
if p99:
    out.append(check("single-client `/runsync` p99 <= 2 ms", p99 <= 2000, "%s ms" % ms(p99)))
if rss:
    out.append(check("%s queued 1 KB jobs < 300 MB RSS" % "{:,.0f}".format(mem_jobs or 0),
                     rss / 1024 < 300, "%.1f MB" % (rss / 1024)))
text = "\n".join(out) + "\n"
sys.stdout.write(text)
open(sys.argv[2], "w").write(text)
