#!/usr/bin/python3
"""What unauthenticated clients can cost the server (docs/security.md, "Nothing unauthenticated
may cost the server more than a small, fixed amount"), in one run on a fresh `gantry server`
(no agent, no workers):

  uploads  50 clients at once each start a POST of a 20 MiB body with no key (or a wrong one)
           and send it slowly (16 KiB every 20 ms); each stops when it is answered. Reported:
           the answers, how much of its body each had sent by then, and the server's RSS
           (VmRSS now, VmHWM its peak) before, during and after, against the idle server.
  idle     /healthz latency (new connection per request, as a load balancer's check) with no
           other connection, then while 250 idle sockets (connected, nothing sent) are held, then
           with none again: median and p99, and the ratio against the first, same run. Twice:
           with the server's descriptor limit as this shell has it, and under
           `prlimit --nofile=160:160` (the 250 sockets are then beyond what it may accept, as in
           tests/e2e/test_trust.py BadClientTest).

Usage (from the repository root, after scripts/build.sh; standard library only):
    /usr/bin/python3 bench/dos_cost.py [--requests 300] [--clients 50] [--idle 250]
Prints a markdown table.
"""
import argparse
import http.client
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import GANTRY, KEY, pct  # noqa: E402

BODY = 20 << 20  # each upload's Content-Length


class Server:
    """`gantry server` on a free port with its own data dir, under `prefix` (e.g. prlimit)."""

    def __init__(self, prefix=()):
        self.data = tempfile.mkdtemp(prefix="gantry-bench-dos-")
        env = dict(os.environ, GANTRY_ADMIN_KEY=KEY)
        self.proc = subprocess.Popen(
            list(prefix) + [GANTRY, "server", "--listen", "127.0.0.1:0", "--data-dir", self.data],
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.data, "log"), "ab"), env=env)
        self.pid = self.proc.pid  # prlimit execs gantry: the same process
        deadline = time.time() + 10
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode()
            if "listening on http://" in line:
                self.port = int(line.rsplit(":", 1)[1].split()[0].strip("/"))
                break
        else:
            raise RuntimeError("gantry server did not start; see " + self.data + "/log")

    def vm(self, field):
        """VmRSS or VmHWM of the server, in MiB."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        shutil.rmtree(self.data, ignore_errors=True)


def slow_upload(port, authorization, out):
    """A POST of a BODY-byte body sent 16 KiB every 20 ms until the server answers (or the
    body is all sent); appends (status line, bytes of body sent, seconds) to out."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    t0 = time.perf_counter()
    sent, status = 0, "no answer"
    head = "POST /v2/ep/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if authorization:
        head += "Authorization: %s\r\n" % authorization
    head += "Content-Length: %d\r\n\r\n" % BODY
    chunk = b"a" * (16 << 10)
    try:
        s.sendall(head.encode())
        while sent < BODY:
            ready, _, _ = select.select([s], [], [], 0.02)
            if ready:
                reply = s.recv(4096).decode(errors="replace")
                status = reply.split("\r\n", 1)[0] if reply else "closed"
                break
            s.sendall(chunk)
            sent += len(chunk)
    except OSError as err:  # reset or broken pipe: the server closed it
        status = "closed (%s)" % type(err).__name__
    finally:
        s.close()
    out.append((status, sent, time.perf_counter() - t0))


def uploads(args):
    """The uploads row: {"idle": MiB, "during": MiB (max sampled), "peak": VmHWM MiB,
    "after": MiB, "answers": {status: count}, "sent": [bytes], "secs": [s]}."""
    srv = Server()
    try:
        time.sleep(0.5)
        idle_rss = srv.vm("VmRSS")
        results, threads = [], []
        for i in range(args.clients):
            auth = None if i % 2 == 0 else "Bearer gk_not_a_key_of_this_server_0000"
            threads.append(threading.Thread(target=slow_upload, args=(srv.port, auth, results)))
        for t in threads:
            t.start()
        during = idle_rss
        while any(t.is_alive() for t in threads):
            during = max(during, srv.vm("VmRSS"))
            time.sleep(0.01)
        for t in threads:
            t.join()
        time.sleep(0.5)
        answers = {}
        for status, _, _ in results:
            answers[status] = answers.get(status, 0) + 1
        return {"idle": idle_rss, "during": during, "peak": srv.vm("VmHWM"),
                "after": srv.vm("VmRSS"), "answers": answers,
                "sent": [r[1] for r in results], "secs": [r[2] for r in results]}
    finally:
        srv.close()


def healthz_ms(port, n):
    """n sequential GET /healthz, each on a new connection; their times in ms."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        c.close()
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status == 200, r.status
    return out


def idle(args, prefix):
    """The idle rows of one server: {phase: [ms]} and how many idle sockets were open."""
    srv = Server(prefix)
    held = []
    try:
        healthz_ms(srv.port, 20)  # warm up
        res = {"none": healthz_ms(srv.port, args.requests)}
        for _ in range(args.idle):
            try:
                held.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
            except OSError:
                break  # the backlog is full: what a flood looks like too
        time.sleep(0.5)
        res["held"] = healthz_ms(srv.port, args.requests)
        # How many of them the server still holds open (a closed one reads EOF at once).
        still = 0
        for s in held:
            s.setblocking(False)
            try:
                still += 0 if s.recv(1) == b"" else 1
            except BlockingIOError:
                still += 1
            except OSError:
                pass
        res["opened"], res["still_open"] = len(held), still
        for s in held:
            s.close()
        held = []
        time.sleep(0.5)
        res["after"] = healthz_ms(srv.port, args.requests)
        return res
    finally:
        for s in held:
            s.close()
        srv.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--idle", type=int, default=250)
    args = ap.parse_args()
    up = uploads(args)
    nofile = subprocess.run(["sh", "-c", "ulimit -n"], capture_output=True, text=True).stdout
    runs = [("descriptor limit %s" % nofile.strip(), ()),
            ("descriptor limit 160", ("prlimit", "--nofile=160:160"))]
    idle_res = [(name, idle(args, prefix)) for name, prefix in runs]

    sent = sorted(up["sent"])
    print("### %d unauthenticated slow uploads of 20 MiB at once\n" % args.clients)
    print("| figure | value |")
    print("|---|---:|")
    print("| answers | %s |" % ", ".join("%s: %d" % kv for kv in sorted(up["answers"].items())))
    print("| body sent before the answer, median / max | %d / %d KiB |"
          % (pct(sent, 50) >> 10, sent[-1] >> 10))
    print("| time to the answer, median / max | %.0f / %.0f ms |"
          % (pct(up["secs"], 50) * 1000, max(up["secs"]) * 1000))
    print("| server VmRSS idle (baseline) | %.1f MiB |" % up["idle"])
    print("| server VmRSS during, highest sample | %.1f MiB (+%.1f) |"
          % (up["during"], up["during"] - up["idle"]))
    print("| server VmHWM (peak) | %.1f MiB (+%.1f) |" % (up["peak"], up["peak"] - up["idle"]))
    print("| server VmRSS after | %.1f MiB |" % up["after"])
    print()
    print("### /healthz (new connection each, %d requests per phase) with %d idle sockets held\n"
          % (args.requests, args.idle))
    print("| server | phase | p50 ms | p99 ms | p50 / baseline | p99 / baseline |")
    print("|---|---|---:|---:|---:|---:|")
    for name, r in idle_res:
        b50, b99 = pct(r["none"], 50), pct(r["none"], 99)
        for phase, label in (("none", "no idle sockets (baseline)"),
                             ("held", "%d idle sockets opened (%d still open at the end)"
                              % (r["opened"], r["still_open"])),
                             ("after", "idle sockets closed again")):
            p50, p99 = pct(r[phase], 50), pct(r[phase], 99)
            print("| %s | %s | %.3f | %.3f | %.2f | %.2f |"
                  % (name, label, p50, p99, p50 / b50, p99 / b99))


if __name__ == "__main__":
    main()
