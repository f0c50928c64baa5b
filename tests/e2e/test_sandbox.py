"""End-to-end on `gantry up` as root: deployed code is a hostile tenant (issue: trust
boundaries). Two endpoints deployed from bundles; one tries to read the server's files, the other
endpoint's bundle and environment, to write outside its scratch directory, to open a raw socket,
mknod, ptrace its neighbour, and forks until it cannot. Every attempt must fail (the fork bomb at
its cgroup's pids limit), and the other endpoint keeps serving."""
import glob
import os
import shutil
import tempfile
import unittest

from harness import E2ETest, Server, pids_with_env

HOSTILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile")


@unittest.skipUnless(os.geteuid() == 0, "workers run as users of their own only under root")
class SandboxTest(E2ETest):
    command = "up"

    def setUp(self):
        super().setUp()
        self.dirs = []

    def tearDown(self):
        super().tearDown()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    def cli(self, *args):
        return self.admin_cli(*args)

    def deploy(self, id, secret):
        """The hostile bundle as endpoint `id`, with a secret of its own in its environment."""
        self.deploy_bundle(HOSTILE, 'id = "%s"\n[worker]\ncommand = ["/usr/bin/python3", '
                           '"handler.py"]\n[worker.env]\nTENANT_SECRET = "%s"\n' % (id, secret))

    def run_job(self, id, payload):
        r = self.server.request("POST", "/v2/%s/runsync?wait=60000" % id, {"input": payload},
                                timeout=90)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["status"], "COMPLETED", r)
        return r.json["output"]

    def test_a_hostile_tenant_reaches_nothing_of_the_platform_or_its_neighbour(self):
        self.deploy("alice", "alice-secret-123")
        self.deploy("mallory", "mallory-secret-456")
        alice = self.run_job("alice", {"whoami": True})
        mallory = self.run_job("mallory", {"whoami": True})
        # Users of their own, never root, never each other's.
        self.assertNotEqual(mallory["uid"], 0)
        self.assertNotEqual(mallory["uid"], alice["uid"])
        self.assertEqual(mallory["groups"], [mallory["gid"]])
        self.assertNotIn(self.server.data_dir, mallory["cwd"])
        self.assertEqual(mallory["home"], mallory["scratch"])
        # The data directory is closed, from its first byte.
        data = self.server.data_dir
        self.assertEqual(os.stat(data).st_mode & 0o777, 0o700)
        secrets = [os.path.join(data, n) for n in os.listdir(data) if n.startswith("gantry.db")]
        secrets += glob.glob(os.path.join(data, "blobs", "*"))
        self.assertIn(os.path.join(data, "gantry.db"), secrets)
        for path in secrets + [os.path.join(data, "worker-uids")]:
            self.assertEqual(os.lstat(path).st_mode & 0o777, 0o600, path)
        # What mallory aims at, found as root: alice's bundle copy and her processes' pids.
        alice_pids = pids_with_env("TENANT_SECRET", "alice-secret-123")  # worker, template
        self.assertTrue(alice_pids)
        area = os.path.dirname(os.path.dirname(os.path.dirname(alice["scratch"])))
        [alice_bundle] = glob.glob(os.path.join(area, str(alice["uid"]), "bundles", "*"))
        report = self.run_job("mallory", {
            "read": [os.path.join(data, "gantry.db"),
                     os.path.join(data, "server.log"), os.path.join(alice_bundle, "handler.py"),
                     os.path.join(alice["scratch"], "f"), "/etc/shadow"],
            "list": [data, area, os.path.join(area, str(alice["uid"])), alice["scratch"]],
            "write": [os.path.join(mallory["cwd"], "handler.py"),
                      os.path.join(mallory["cwd"], "new.py"), os.path.join(data, "x"),
                      os.path.join(area, "x"), os.path.join(alice["scratch"], "x"),
                      "/etc/gantry-was-here"],
            "environ": alice_pids,
            "ptrace": alice_pids,
            "raw_socket": True,
            "mknod": True,
        })
        self.assertTrue(report, report)
        for what, result in report.items():
            # Refused by the kernel's permission checks, not missed by a wrong path.
            self.assertTrue(result.startswith("refused: PermissionError"),
                            "%s: %s" % (what, result))
        # What it may do: write in its own scratch directory.
        self.assertEqual(self.run_job("mallory", {"scratch": True}), {"scratch": "ok"})
        # The neighbour was served throughout, and still is.
        self.assertEqual(self.run_job("alice", {"whoami": True})["uid"], alice["uid"])
        # The node says how its workers run.
        nodes = self.cli("nodes")
        self.assertIn("uid per endpoint", nodes.stdout, nodes.stdout + nodes.stderr)

    def test_a_fork_bomb_stops_at_the_pids_limit_and_the_neighbour_keeps_serving(self):
        self.deploy("alice", "alice-secret-123")
        self.deploy("mallory", "mallory-secret-456")
        alice = self.run_job("alice", {"whoami": True})
        self.run_job("mallory", {"whoami": True})  # its worker is up: the bomb goes off at once
        flags = tempfile.mkdtemp(prefix="gantry-bomb-")
        self.dirs.append(flags)
        os.chmod(flags, 0o777)  # where mallory's user says it is full, and is told to stop
        r = self.server.request("POST", "/v2/mallory/run", {"input": {"fork_bomb": {
            "flag_dir": flags, "cap_s": 40, "most": 4500}}})
        self.assertEqual(r.status, 200, r)
        self.wait_for(lambda: os.path.exists(os.path.join(flags, "full")), timeout=60,
                      what="the fork bomb to stop forking")
        # While mallory's worker holds every process its cgroup may: alice is served.
        self.assertEqual(self.run_job("alice", {"whoami": True})["uid"], alice["uid"])
        open(os.path.join(flags, "release"), "w").close()
        done = self.server.wait_status("mallory", r.json["id"], {"COMPLETED", "FAILED"},
                                       timeout=120)
        # Completed on some attempt (a bomb may take down its own worker, whose SDK then cannot
        # make a thread; the job is retried on a fresh one): that attempt's fork() failed at the
        # limit. Without the limit no attempt completes so (each worker is killed at its memory
        # limit, or forks 4500).
        self.assertEqual(done["status"], "COMPLETED", done)
        bomb = done["output"]
        # fork() failed with EAGAIN at the cgroup's pids limit (kContainerPidsMax, 4096 tasks:
        # the worker's own threads and heartbeat process count too), not at the test's cap of
        # 4500 nor for another reason long before it.
        self.assertEqual(bomb["errno"], "EAGAIN", bomb)
        self.assertLess(bomb["forked"], 4096, bomb)
        self.assertGreater(bomb["forked"], 3500, bomb)
        # Afterwards both are served, mallory too (its children are gone).
        self.assertEqual(self.run_job("alice", {"whoami": True})["uid"], alice["uid"])
        self.assertIn("uid", self.run_job("mallory", {"whoami": True}))

    def first_and_forked(self, id):
        """whoami of endpoint `id`'s first worker (a full start) and of the next one, forked
        from its template once the first is gone (asserted so)."""
        self.server.request("PATCH", "/v1/endpoints/" + id, {"idleTimeout": 1})
        first = self.run_job(id, {"whoami": True})
        self.ready_template(id)
        self.wait_for(lambda: not self.live(id), timeout=60, what="scale to zero")
        r = self.server.request("POST", "/v2/%s/runsync?wait=60000" % id,
                                {"input": {"whoami": True}}, timeout=90)
        self.assertEqual(r.json["status"], "COMPLETED", r)
        # The agent's report of how it started comes a moment after the worker itself.
        self.assertEqual(self.worker_report(r.json["workerId"])["startPath"], "fork")
        return first, r.json["output"]

    def test_a_worker_forked_from_the_template_is_the_endpoints_user_too(self):
        self.deploy("forked", "forked-secret")
        first, second = self.first_and_forked("forked")
        self.assertEqual(second["uid"], first["uid"])
        self.assertNotEqual(second["uid"], 0)
        self.assertEqual(second["cwd"], first["cwd"])  # its bundle copy
        self.assertNotEqual(second["scratch"], first["scratch"])  # a scratch directory its own
        self.assertEqual(second["home"], second["scratch"])


NOBODY = 65534


def read_text(path):
    with open(path) as f:
        return f.read()


@unittest.skipUnless(os.geteuid() == 0, "the test becomes another user to start the agent")
class NotRootTest(SandboxTest):
    """`gantry up` as a user that is not root (nobody): its workers keep that user, so only
    their namespaces and mount view keep them from the server's files and from each other.
    Every path and pid aimed at below is one the same user could read without them."""
    server_prefix = ("setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups")

    def setUp(self):
        data = tempfile.mkdtemp(prefix="gantry-e2e-")
        os.chown(data, NOBODY, NOBODY)
        self.server = Server(data_dir=data, command="up", prefix=self.server_prefix).start()
        self.workers = []
        self.dirs = []

    def refused(self, report):
        self.assertTrue(report, report)
        for what, result in report.items():
            # Absent from its view (or, for what it does see, refused): never read.
            self.assertRegex(result, r"^refused: (FileNotFoundError|ProcessLookupError|"
                             r"PermissionError|OSError: \[Errno (3|30)\])", what)

    def test_a_hostile_tenant_reaches_nothing_of_the_platform_or_its_neighbour(self):
        self.deploy("alice", "alice-secret-123")
        self.deploy("mallory", "mallory-secret-456")
        alice = self.run_job("alice", {"whoami": True})
        mallory = self.run_job("mallory", {"whoami": True})
        self.assertEqual(mallory["uid"], NOBODY)  # the agent's user: no other to take
        self.assertEqual(mallory["pid"], 1)  # the init of a PID namespace of its own
        self.assertEqual(mallory["home"], mallory["scratch"])
        data = self.server.data_dir
        alice_pids = pids_with_env("TENANT_SECRET", "alice-secret-123")  # worker, template
        self.assertTrue(alice_pids)
        for pid in alice_pids:  # readable by the same user, but for the PID namespace
            self.assertEqual(os.stat("/proc/%d" % pid).st_uid, NOBODY)
        [alice_toml] = [p for p in glob.glob(os.path.join(data, "**", "gantry.toml"),
                                             recursive=True) if '"alice"' in read_text(p)]
        secrets = [os.path.join(data, "gantry.db"), os.path.join(data, "server.log"),
                   alice_toml, os.path.join(alice["scratch"], "f")]
        open(secrets[-1], "w").close()
        for path in secrets:
            self.assertEqual(os.stat(path).st_uid in (NOBODY, 0), True, path)
        report = self.run_job("mallory", {
            "read": secrets,
            # (The data directory's own path is there, empty but for the way to its binds.)
            "list": [os.path.dirname(os.path.dirname(alice["scratch"])),
                     os.path.dirname(alice["scratch"])],
            "write": [os.path.join(mallory["cwd"], "handler.py"),
                      os.path.join(mallory["cwd"], "new.py"),
                      os.path.join(alice["scratch"], "x"), "/usr/gantry-was-here"],
            "environ": alice_pids,
            "ptrace": alice_pids,
            "raw_socket": True,
            "mknod": True,
        })
        self.refused(report)
        self.assertEqual(self.run_job("mallory", {"scratch": True}), {"scratch": "ok"})
        # Under /tmp, the data directory's path is in the worker's own /tmp: a write there
        # stays there.
        self.run_job("mallory", {"write": [os.path.join(data, "x")]})
        self.assertFalse(os.path.exists(os.path.join(data, "x")))
        self.assertEqual(self.run_job("alice", {"whoami": True})["uid"], NOBODY)
        nodes = self.cli("nodes")
        self.assertIn("namespaces per worker", nodes.stdout, nodes.stdout + nodes.stderr)

    def test_a_worker_forked_from_the_template_is_in_the_view_too(self):
        self.deploy("forked", "forked-secret")
        self.deploy("other", "other-secret")
        first, second = self.first_and_forked("forked")
        self.assertNotEqual(second["pid"], 1)  # a child of its template, the namespace's init
        self.assertEqual(second["cwd"], first["cwd"])
        self.assertNotEqual(second["scratch"], first["scratch"])
        self.run_job("other", {"whoami": True})
        other_pids = pids_with_env("TENANT_SECRET", "other-secret")
        self.assertTrue(other_pids)
        report = self.run_job("forked", {"read": [os.path.join(self.server.data_dir,
                                                               "gantry.db")],
                                         "environ": other_pids})
        self.refused(report)
        self.assertEqual(self.run_job("forked", {"scratch": True}), {"scratch": "ok"})

    test_a_fork_bomb_stops_at_the_pids_limit_and_the_neighbour_keeps_serving = None
    test_a_worker_forked_from_the_template_is_the_endpoints_user_too = None


@unittest.skipUnless(os.geteuid() == 0, "the flag matters only under root")
class SameUserTest(E2ETest):
    command = "up"
    server_args = ("--insecure-same-user",)

    def test_insecure_same_user_runs_workers_as_root_and_says_so(self):
        with open(os.path.join(HOSTILE, "gantry.toml")) as f:
            self.deploy_bundle(HOSTILE, f.read())
        r = self.server.request("POST", "/v2/hostile/runsync?wait=60000",
                                {"input": {"whoami": True}}, timeout=90)
        self.assertEqual(r.json["output"]["uid"], 0, r)
        self.assertIn("--insecure-same-user", self.admin_cli("nodes").stdout)


if __name__ == "__main__":
    unittest.main()
