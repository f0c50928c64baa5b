"""End-to-end on `gantry up`: workers from an OCI image in a real registry (Debian's
docker-registry on loopback), pulled with skopeo, unpacked with umoci and run with runc. The
image (tests/images/build_test_image.sh, tag "worker") is Debian with python3, this repository's
SDK and tests/images/worker.py; it is built once and cached."""
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from harness import ADMIN_KEY, E2ETest, GANTRY, ROOT, proc_state, tcp_service

IMAGES = os.path.join(ROOT, "tests", "images")
# The host id of a container's root (agent.cc: above the workers' uids, 400000 at least).
CONTAINER_ID_BASE = 400000


def free_port():
    """A port below 32768 (test servers stay out of the ephemeral range) nothing listens on."""
    for _ in range(200):
        port = random.randint(20000, 30000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def cgroup_limits(proc_self_cgroup):
    """{file: value} of the limits of the cgroup a process runs in, given its /proc/self/cgroup,
    read from the host's cgroupfs as the host's cgroup version names them; and its path."""
    lines = [l.split(":", 2) for l in proc_self_cgroup.splitlines()]
    paths = {c: path for _, ctrls, path in lines for c in ctrls.split(",")}
    root = "/sys/fs/cgroup"
    if os.path.exists(os.path.join(root, "cgroup.controllers")):  # cgroup v2 alone
        where = {f: root + paths[""] for f in ("memory.max", "memory.swap.max", "cpu.weight",
                                               "pids.max")}
    else:
        where = {"memory.limit_in_bytes": root + "/memory" + paths["memory"],
                 "cpu.shares": root + "/cpu" + paths["cpu"],
                 "pids.max": root + "/pids" + paths["pids"]}
    out = {}
    for name, d in where.items():
        with open(os.path.join(d, name)) as f:
            out[name] = f.read().strip()
    return out, paths.get("memory", paths.get(""))


class ImageTest(E2ETest):
    command = "up"
    # A worker that dies is reported by its agent (with why: over its memory limit, ...) and,
    # separately, lost when its pings stop (after 3 intervals). The agent must win that race for
    # the job's error to say why: at the cgroup v2 VM's emulated speed, 3 x 500 ms was too short
    # for it, with this code and with the code before (seen in tests/vm on 2026-12-07).
    server_args = ("--ping-interval-ms", "2000", "--stop-grace-ms", "1500")

    userns = False  # containers in user namespaces (--container-userns): UserNamespaceTest

    def containers_dir(self):
        """Where the agent keeps its containers' bundles and volumes: in the data directory, or
        with user namespaces outside it (for a container's root to reach its rootfs)."""
        if not self.userns:
            return os.path.join(self.server.data_dir, "containers")
        tag = hashlib.sha256(os.path.abspath(self.server.data_dir).encode()).hexdigest()[:12]
        return os.path.join("/var/lib/gantry-containers", tag)

    @classmethod
    def setUpClass(cls):
        cls.registry_dir = tempfile.mkdtemp(prefix="gantry-registry-")
        cls.port = free_port()
        subprocess.run(["bash", os.path.join(IMAGES, "registry.sh"), "start", str(cls.port),
                        cls.registry_dir], check=True, timeout=60)
        subprocess.run(["bash", os.path.join(IMAGES, "registry.sh"), "push", str(cls.port),
                        "gantry/worker:1", "worker"], check=True, timeout=600)
        cls.image = "127.0.0.1:%d/gantry/worker:1" % cls.port

    @classmethod
    def tearDownClass(cls):
        subprocess.run(["bash", os.path.join(IMAGES, "registry.sh"), "stop", str(cls.port),
                        cls.registry_dir], timeout=60)

    def tearDown(self):
        super().tearDown()
        if self.userns:  # its containers' directory outside the data directory (volumes)
            shutil.rmtree(self.containers_dir(), ignore_errors=True)

    def endpoint(self, id, **spec):
        body = {"id": id, "image": self.image, "idleTimeout": 2, "memoryMb": 256}
        body.update(spec)
        r = self.server.request("POST", "/v1/endpoints", body)
        self.assertEqual(r.status, 201, r)

    def runsync(self, endpoint, inp, timeout=120):
        return self.server.request("POST", "/v2/%s/runsync?wait=%d" % (endpoint, timeout * 1000),
                                   {"input": inp}, timeout=timeout + 10).json

    def test_image_worker_runs_isolated_as_non_root(self):
        self.endpoint("img", volume="shared")
        r = self.runsync("img", {"op": "whoami", "hostPath": ROOT})
        self.assertEqual(r["status"], "COMPLETED", r)
        out = r["output"]
        self.assertEqual(out["worker"], r["workerId"])
        self.assertEqual(out["hostname"], r["workerId"])  # its own UTS namespace
        self.assertLessEqual(out["pids"], 5)  # its own PID namespace: not the host's processes
        self.assertFalse(out["seesHostRepo"])  # its own root filesystem
        self.assertEqual(out["uid"], 1000)  # the image's USER
        # In a user namespace: its ids are the host's from 400000 (its root is nobody outside);
        # else the host's own.
        self.assertEqual(out["uidMap"], ["0", str(CONTAINER_ID_BASE), "65536"] if self.userns
                         else ["0", "0", "4294967295"])
        self.assertEqual(out["volume"], [])  # the named volume at /runpod-volume
        w = self.wait_for(lambda: self.server.request("POST", "/v2/img/runsync",
                                                      {"input": {"op": "write", "path":
                                                                 "/runpod-volume/x"}}).json)
        self.assertEqual(w["status"], "COMPLETED", w)
        written = os.stat(os.path.join(self.containers_dir(), "volumes", "shared", "x"))
        # With a user namespace, not the host's uid 1000.
        self.assertEqual(written.st_uid, 1000 + (CONTAINER_ID_BASE if self.userns else 0))
        # Pull events are in the worker's logs.
        logs = self.server.request("GET", "/v1/logs?worker=" + r["workerId"]).json
        text = "\n".join(l["text"] for l in logs.get("lines", []))
        self.assertIn("gantry: pull:", text)
        # The node says which OCI runtime runs containers here: crun where its probe container
        # ran, else runc, with crun's reason (on this project's VMs: cgroup hybrid mode).
        runtime = self.node()["runtime"]
        self.assertIn(runtime["ociRuntime"], ("crun", "runc"), runtime)
        if runtime["ociRuntime"] == "runc" and shutil.which("crun"):
            self.assertTrue(any("crun cannot run a container here (" in n
                                for n in runtime["ociNotes"]), runtime)
        # Which cgroup layout carries the limits: v2 alone where it is (tests/vm), else v1.
        v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        self.assertTrue(runtime["limits"].startswith(
            "cgroup v%d (memory, cpu, pids) under " % (2 if v2 else 1)), runtime)
        if v2 and shutil.which("crun"):
            self.assertEqual(runtime["ociRuntime"], "crun", runtime)

    def test_a_hostile_image_cannot_make_namespaces_mount_trace_or_sniff(self):
        self.endpoint("esc", maxAttempts=1)  # one attempt: a worker killed is not retried
        r = self.runsync("esc", {"op": "escape"})
        self.assertEqual(r["status"], "COMPLETED", r)
        out = r["output"]
        uid = out.pop("uid")
        self.assertEqual(uid, 1000)  # the image's USER
        for what, result in out.items():
            self.assertTrue(result.startswith("refused: "), "%s: %s" % (what, result))
        # The seccomp profile refuses what a user of its own could otherwise do here: make a
        # user namespace (Debian's kernel lets unprivileged users).
        self.assertEqual(out["unshare(CLONE_NEWUSER)"], "refused: Operation not permitted")
        self.assertEqual(out["clone(CLONE_NEWUSER)"], "refused: Operation not permitted")

    @unittest.skipIf(os.environ.get("GANTRY_TEST_CPU_EMULATED"),
                     "the CPUs are emulated (tests/vm): 4096 forks starve the worker's pings and "
                     "it is taken for lost; the pids limit there is checked by "
                     "test_limits_are_in_the_workers_cgroup_as_its_cgroup_version_spells_them")
    def test_a_container_fork_bomb_stops_at_the_pids_limit(self):
        # Memory enough for 4500 sleeping processes: the pids limit, not the memory limit, is
        # what stops the bomb. fork() fails with EAGAIN at the container's pids limit (4096
        # tasks, its worker's own included), not at the handler's cap of 4500 (which it reaches
        # without the limit). A bomb may take down its own worker (its SDK cannot make a
        # thread): the job is then retried on a fresh one, where the limit holds the same.
        self.endpoint("bomb", memoryMb=1024)
        bomb = self.runsync("bomb", {"op": "fork_bomb", "cap_s": 60, "most": 4500, "hold_s": 1})
        self.assertEqual(bomb["status"], "COMPLETED", bomb)
        self.assertEqual(bomb["output"]["errno"], "EAGAIN", bomb)
        self.assertLess(bomb["output"]["forked"], 4096, bomb)
        self.assertGreater(bomb["output"]["forked"], 3500, bomb)
        after = self.runsync("bomb", {"op": "whoami"})
        self.assertEqual(after["status"], "COMPLETED", after)  # the endpoint serves on

    def test_a_container_reaches_the_server_and_no_other_service_of_the_host(self):
        # A service on the host's loopback and one on every address of the host: a container
        # in its own network namespace reaches neither, at 127.0.0.1 (its own loopback) nor at
        # its gateway (where it reaches the server); one with hostNetwork reaches both.
        loopback, lport = tcp_service("127.0.0.1")
        wildcard, wport = tcp_service("0.0.0.0")
        self.addCleanup(loopback.close)
        self.addCleanup(wildcard.close)
        targets = ["127.0.0.1:%d" % lport, "GATEWAY:%d" % lport, "GATEWAY:%d" % wport]
        self.endpoint("net")
        r = self.runsync("net", {"op": "connect", "targets": targets})
        self.assertEqual(r["status"], "COMPLETED", r)
        self.assertTrue(r["output"]["gateway"].startswith("10.213."), r)
        for t in targets:
            self.assertTrue(r["output"][t].startswith("refused"), (t, r))
        # The control: the probe tells a reachable service from one that is not.
        self.endpoint("hostnet", hostNetwork=True)
        targets = ["127.0.0.1:%d" % lport, "127.0.0.1:%d" % wport]
        r = self.runsync("hostnet", {"op": "connect", "targets": targets})
        self.assertEqual(r["status"], "COMPLETED", r)
        for t in targets:
            self.assertEqual(r["output"][t], "ok: host-secret", r)

    def test_gpu_worker_gets_its_gpus(self):
        # A simulated inventory: the scheduler assigns GPUs as on a GPU host; the container gets
        # the variables that name them (device nodes exist only on a real GPU host).
        from harness import Server
        self.server.stop()
        self.server = Server(extra_args=self.server_args + ("--fake-gpus", "H100:2"),
                             command="up").start()
        self.endpoint("gpu", gpuTypeIds=["H100"], gpuCount=2)
        r = self.runsync("gpu", {"op": "whoami", "hostPath": ROOT})
        self.assertEqual(r["status"], "COMPLETED", r)
        self.assertEqual(r["output"]["gpus"], "0,1")
        self.assertEqual(r["output"]["nvidiaVisible"], "0,1")

    def test_second_worker_is_forked_inside_the_template_container(self):
        self.endpoint("tpl", idleTimeout=1, maxAttempts=1)
        first = self.runsync("tpl", {"op": "whoami", "hostPath": ROOT})
        self.assertEqual(first["status"], "COMPLETED", first)
        self.assertEqual(self.worker_report(first["workerId"])["startPath"], "full")
        tpl = self.ready_template("tpl")
        self.assertFalse(tpl["snapshot"])  # container templates are not checkpointed
        self.assertTrue(tpl["container"])
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY)
        out = subprocess.run([GANTRY, "nodes"], env=env, capture_output=True, text=True,
                             timeout=30).stdout
        self.assertIn("tpl@%d:ready(container)" % tpl["version"], out)
        self.scale_to_zero("tpl")
        second = self.runsync("tpl", {"op": "whoami", "hostPath": ROOT})
        self.assertEqual(second["status"], "COMPLETED", second)
        w = self.worker_report(second["workerId"])
        self.assertEqual(w["startPath"], "fork", w)
        out = second["output"]
        self.assertEqual(out["worker"], second["workerId"])  # its own identity
        self.assertFalse(out["seesHostRepo"])  # the image's root filesystem
        self.assertLessEqual(out["pids"], 6)  # the template's PID namespace, not the host's
        self.assertEqual(out["uid"], 1000)  # the image's USER
        # In a user namespace: its ids are the host's from 400000 (its root is nobody outside);
        # else the host's own.
        self.assertEqual(out["uidMap"], ["0", str(CONTAINER_ID_BASE), "65536"] if self.userns
                         else ["0", "0", "4294967295"])
        self.assertNotEqual(out["pid"], 1)  # the template is the container's init
        # Its end is reported (by the template, its parent) and it is replaced by a fork again.
        self.scale_to_zero("tpl")
        third = self.runsync("tpl", {"op": "whoami"})
        self.assertEqual(self.worker_report(third["workerId"])["startPath"], "fork")
        self.assertGreaterEqual(self.node()["startCounters"]["forks"], 2)
        # The worker's memory limit holds in its own cgroup: over it, its job fails saying so.
        hog = self.runsync("tpl", {"op": "allocate", "mb": 400})
        self.assertEqual(hog["status"], "FAILED", hog)
        self.assertIn("memory limit", hog.get("error", ""), hog)
        self.assertEqual(self.template("tpl")["pid"], tpl["pid"])  # the template lives on

    def test_a_new_version_lets_forked_workers_finish_then_retires_their_template(self):
        self.endpoint("ver", idleTimeout=1)
        self.runsync("ver", {"op": "whoami"})
        old = self.ready_template("ver")
        self.scale_to_zero("ver")
        job = self.server.request("POST", "/v2/ver/run", {"input": {"op": "sleep", "s": 4}}).json
        st = self.server.wait_status("ver", job["id"], {"IN_PROGRESS"})
        self.assertEqual(self.worker_report(st["workerId"])["startPath"], "fork")
        # A new version while the forked worker runs its job: the old template is dropped, but
        # its exit would end its worker's PID namespace, so it waits for it (retired).
        retired = self.node()["startCounters"]["retirements"]
        self.server.request("PATCH", "/v1/endpoints/ver", {"env": {"NEW": "1"}})
        self.wait_for(lambda: (self.template("ver") or {}).get("version") != old["version"],
                      what="the old template to be dropped")
        self.assertNotIn(proc_state(old["pid"]), (None, "Z"))  # retired, still running
        self.assertEqual(self.node()["startCounters"]["retirements"], retired + 1)
        done = self.server.wait_status("ver", job["id"], {"COMPLETED", "FAILED"}, timeout=30)
        self.assertEqual(done["status"], "COMPLETED", done)
        self.assertEqual(done["output"]["slept"], 4)
        # Then it exits, and its bundle goes.
        self.wait_for(lambda: proc_state(old["pid"]) in (None, "Z"),
                      what="the retired template to exit", timeout=30)

    def container_processes(self, ids):
        """Pids of the live processes in the cgroups of these containers (bundle names)."""
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/cgroup" % d) as f:
                    groups = f.read()
            except OSError:
                continue
            if proc_state(int(d)) not in (None, "Z") and any(
                    "/gantry/%s\n" % i in groups for i in ids):
                out.append(int(d))
        return out

    def test_containers_a_killed_agent_left_are_ended_when_it_starts_again(self):
        self.endpoint("left", idleTimeout=60)
        r = self.runsync("left", {"op": "whoami"})
        self.assertEqual(r["status"], "COMPLETED", r)
        self.ready_template("left")
        bundles = self.containers_dir()
        ids = [d for d in os.listdir(bundles) if d not in ("state", "volumes")]
        self.assertEqual(len(ids), 2, ids)  # the worker's container and the template's
        old = self.container_processes(ids)
        self.assertGreaterEqual(len(old), 2)

        def kill_leftovers():  # should the test fail: nothing of it outlives it
            for pid in set(old) & set(self.container_processes(ids)):
                os.kill(pid, signal.SIGKILL)
        self.addCleanup(kill_leftovers)
        # kill -9: runc dies with the agent, the containers' processes do not.
        self.server.kill9()
        time.sleep(1)
        self.assertTrue(set(old) & set(self.container_processes(ids)))
        # The agent that starts again on this data directory ends them (the worker, still
        # assigned, then starts afresh under its id).
        self.server.start()
        self.wait_for(lambda: not set(old) & set(self.container_processes(ids)),
                      what="the old containers to end", timeout=30)
        template = next(i for i in ids if i.startswith("tpl-"))
        self.wait_for(lambda: not os.path.exists(os.path.join(bundles, template)),
                      what="the old template's bundle to go")
        r = self.runsync("left", {"op": "whoami"})
        self.assertEqual(r["status"], "COMPLETED", r)

    def test_each_worker_writes_to_its_own_layer(self):
        # Forked workers share their template's sandbox (docs/containers.md): without
        # templates, each worker is a container of its own.
        self.endpoint("own", idleTimeout=0, flashboot=False)
        first = self.runsync("own", {"op": "write", "path": "/tmp/mark", "text": "a"})
        self.assertEqual(first["status"], "COMPLETED", first)
        self.scale_to_zero("own")
        second = self.runsync("own", {"op": "whoami", "check": "/tmp/mark"})
        self.assertEqual(second["status"], "COMPLETED", second)
        self.assertNotEqual(second["workerId"], first["workerId"])
        self.assertFalse(second["output"]["exists"])  # the first worker's file is not here

    def test_read_only_root_filesystem(self):
        self.endpoint("ro", readOnlyRootfs=True, maxAttempts=1)
        r = self.runsync("ro", {"op": "write", "path": "/app/x"})
        self.assertEqual(r["status"], "FAILED", r)
        self.assertIn("Read-only file system", r.get("error", ""), r)
        ok = self.runsync("ro", {"op": "whoami"})  # the worker itself runs fine
        self.assertEqual(ok["status"], "COMPLETED", ok)

    def test_limits_are_in_the_workers_cgroup_as_its_cgroup_version_spells_them(self):
        # On this project's hosts that is cgroup v1 (hybrid); tests/vm/cgroup2_tests.sh runs
        # this file again in a VM with cgroup v2 alone. Checked for a worker started in full
        # (runc or crun made its container) and one forked in the template's container (the
        # agent moved it into its cgroup): both get the same limits, written the same way.
        self.endpoint("lim", memoryMb=200, cpu=1.5, idleTimeout=60)
        first = self.runsync("lim", {"op": "whoami"})
        self.assertEqual(first["status"], "COMPLETED", first)
        self.assertEqual(self.worker_report(first["workerId"])["startPath"], "full")
        self.ready_template("lim")
        busy = self.server.request("POST", "/v2/lim/run",
                                   {"input": {"op": "sleep", "s": 30}}).json["id"]
        self.server.wait_status("lim", busy, ("IN_PROGRESS",))
        second = self.runsync("lim", {"op": "whoami"})  # the first worker is busy: a new one
        self.assertEqual(second["status"], "COMPLETED", second)
        self.assertEqual(self.worker_report(second["workerId"])["startPath"], "fork")
        v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        seen = set()
        for r in (first, second):
            limits, path = cgroup_limits(r["output"]["cgroup"])
            # Its own cgroup: on v2 a fork keeps the name of the cgroup made for it ahead.
            self.assertTrue(path.startswith("/gantry/"), path)
            self.assertNotIn(path, seen)
            seen.add(path)
            if v2:
                self.assertEqual(limits, {"memory.max": str(200 << 20), "memory.swap.max": "0",
                                          "cpu.weight": "150", "pids.max": "4096"})
            else:
                self.assertEqual(limits, {"memory.limit_in_bytes": str(200 << 20),
                                          "cpu.shares": "1536", "pids.max": "4096"})
        self.server.request("POST", "/v2/lim/cancel/" + busy)

    def test_over_its_memory_limit_the_job_fails_saying_so(self):
        self.endpoint("hog", memoryMb=96, maxAttempts=1)
        r = self.runsync("hog", {"op": "allocate", "mb": 400})
        self.assertEqual(r["status"], "FAILED", r)
        self.assertIn("memory limit", r.get("error", ""), r)

    def test_missing_image_fails_queued_jobs_with_the_cause_or_keeps_them_if_asked(self):
        # By default (maxFailedStarts 3) the queued job fails, saying why, within seconds.
        missing = "127.0.0.1:%d/gantry/worker:nope" % self.port
        self.endpoint("nope", image=missing)
        job = self.server.request("POST", "/v2/nope/run", {"input": {}}).json["id"]
        st = self.server.wait_status("nope", job, {"FAILED"}, timeout=90)
        self.assertIn("not found", st["error"])
        # maxFailedStarts 0: the endpoint is unhealthy and its job waits, for an image that
        # may yet be pushed.
        self.endpoint("keep", image=missing, maxFailedStarts=0)
        job = self.server.request("POST", "/v2/keep/run", {"input": {}}).json["id"]

        def unhealthy():
            h = self.server.request("GET", "/v2/keep/health").json
            return h if h.get("status") == "unhealthy" else None
        h = self.wait_for(unhealthy, timeout=60, what="unhealthy")
        self.assertIn("not found", h["lastError"])
        self.assertEqual(self.server.request("GET", "/v2/keep/status/" + job).json["status"],
                         "IN_QUEUE")

    def deploy(self, *args):
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY,
                   HOME=self.server.data_dir)
        return subprocess.run([GANTRY, "deploy"] + list(args), env=env, capture_output=True,
                              text=True, timeout=300)

    def test_deploy_pulls_the_image_before_any_request_and_shows_the_pull(self):
        p = self.deploy("--image", self.image, "--id", "pre")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # The node's pull, as it went: its events, then ready.
        self.assertRegex(p.stdout, r"\n  [^:]+: pulling: ")
        self.assertIn(": ready: pulled", p.stdout)
        self.assertIn("image ready on 1 node", p.stdout)
        pulls = self.server.request("GET", "/v1/endpoints/pre").json["imagePulls"]
        self.assertEqual([x["state"] for x in pulls], ["ready"], pulls)
        # Deployed again unchanged: same version, nothing to do. Changed (a new version): the
        # node fetches the image again (a "latest" tag may have moved), and has it.
        again = self.deploy("--image", self.image, "--id", "pre")
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)
        self.assertIn("version 1", again.stdout)
        self.assertIn("image ready on 1 node", again.stdout)
        r = self.server.request("PATCH", "/v1/endpoints/pre", {"env": {"X": "1"}})
        self.assertEqual(r.json["version"], 2, r)
        fetches = lambda: [i["fetches"] for i in self.node().get("images", [])
                           if i["image"] == self.image]
        self.wait_for(lambda: fetches() == [2], timeout=30, what="a second fetch of the image")
        self.wait_for(lambda: [x["state"] for x in self.server.request(
            "GET", "/v1/endpoints/pre").json["imagePulls"]] == ["ready"], timeout=60,
            what="the image ready again")
        # The first worker finds the image on the node: no pull on the request's path.
        r = self.runsync("pre", {"op": "whoami", "hostPath": ROOT})
        self.assertEqual(r["status"], "COMPLETED", r)
        logs = self.server.request("GET", "/v1/logs?worker=" + r["workerId"]).json
        text = "\n".join(l["text"] for l in logs.get("lines", []))
        self.assertIn("as the node has it", text)
        # An image that is not there: the deploy says so, with the registry's words.
        bad = self.deploy("--image", "127.0.0.1:%d/gantry/worker:nope" % self.port,
                          "--id", "nope")
        self.assertEqual(bad.returncode, 1, bad.stdout + bad.stderr)
        self.assertIn("failed: ", bad.stdout)
        self.assertIn("not found", bad.stdout)
        self.assertIn("could not be pulled on 1 of 1 nodes", bad.stderr)

    def test_an_image_no_endpoint_uses_is_removed_after_its_grace(self):
        from harness import Server
        self.server.stop()
        self.server = Server(extra_args=self.server_args + ("--image-keep-unused-s", "2"),
                             command="up").start()
        rootfs = os.path.join(self.server.data_dir, "images", "rootfs-%d" % CONTAINER_ID_BASE
                              if self.userns else "rootfs")
        unpacked = lambda: [d for d in os.listdir(rootfs) if not d.startswith(".") and
                            not d.endswith(".lock")] if os.path.isdir(rootfs) else []
        p = self.deploy("--image", self.image, "--id", "gc")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(len(unpacked()), 1)
        # Wanted by an endpoint: kept, well past the grace; and a worker runs from it.
        r = self.runsync("gc", {"op": "whoami", "hostPath": ROOT})
        self.assertEqual(r["status"], "COMPLETED", r)
        time.sleep(4)
        self.assertEqual(len(unpacked()), 1)
        # No endpoint uses it any more: removed once its grace has run out (the worker stops).
        self.assertEqual(self.server.request("DELETE", "/v1/endpoints/gc").status, 200)
        self.wait_for(lambda: unpacked() == [], timeout=30, what="the image removed")
        # Deployed again, it is pulled again.
        p = self.deploy("--image", self.image, "--id", "gc2")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(len(unpacked()), 1)

    def test_registry_down_is_a_clear_error(self):
        self.endpoint("down", image="127.0.0.1:%d/gantry/worker:1" % free_port())
        self.server.request("POST", "/v2/down/run", {"input": {}})

        def unhealthy():
            h = self.server.request("GET", "/v2/down/health").json
            return h if h.get("status") == "unhealthy" else None
        h = self.wait_for(unhealthy, timeout=60, what="unhealthy")
        self.assertIn("unavailable", h["lastError"])
        self.assertIn("connection refused", h["lastError"])


@unittest.skipIf(os.environ.get("GANTRY_TEST_CPU_EMULATED"),
                 "in the cgroup v2 VM the container tests with user namespaces did not finish "
                 "within the tier's time (not diagnosed yet; --container-userns is off by default)")
class UserNamespaceTest(ImageTest):
    """ImageTest's container tests again with --container-userns."""
    userns = True
    server_args = ImageTest.server_args + ("--container-userns",)


for _name in [n for n in dir(ImageTest) if n.startswith("test_")]:
    if _name not in ("test_image_worker_runs_isolated_as_non_root",
                     "test_each_worker_writes_to_its_own_layer",
                     "test_containers_a_killed_agent_left_are_ended_when_it_starts_again",
                     "test_an_image_no_endpoint_uses_is_removed_after_its_grace",
                     "test_second_worker_is_forked_inside_the_template_container",
                     "test_a_hostile_image_cannot_make_namespaces_mount_trace_or_sniff"):
        setattr(UserNamespaceTest, _name, None)


if __name__ == "__main__":
    unittest.main()
