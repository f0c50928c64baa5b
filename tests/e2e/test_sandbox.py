"""End-to-end on `gantry up` as root: deployed code is a hostile tenant (issue: trust
boundaries). Two endpoints deployed from bundles; one tries to read the server's files, the other
endpoint's bundle and environment, to write outside its scratch directory, to open a raw socket,
mknod, ptrace its neighbour. Every attempt must fail, and the other endpoint keeps serving."""
import glob
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import ADMIN_KEY, E2ETest, GANTRY, pids_with_env

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
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY)
        return subprocess.run([GANTRY] + list(args), env=env, capture_output=True, text=True,
                              timeout=120)

    def deploy(self, id, secret):
        """The hostile bundle as endpoint `id`, with a secret of its own in its environment."""
        d = tempfile.mkdtemp(prefix="gantry-hostile-")
        self.dirs.append(d)
        shutil.copy(os.path.join(HOSTILE, "handler.py"), d)
        with open(os.path.join(d, "gantry.toml"), "w") as f:
            f.write('id = "%s"\n[worker]\ncommand = ["/usr/bin/python3", "handler.py"]\n'
                    '[worker.env]\nTENANT_SECRET = "%s"\n' % (id, secret))
        p = self.cli("deploy", d)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

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


    def test_a_worker_forked_from_the_template_is_the_endpoints_user_too(self):
        self.deploy("forked", "forked-secret")
        self.server.request("PATCH", "/v1/endpoints/forked", {"idleTimeout": 1})
        first = self.run_job("forked", {"whoami": True})
        self.ready_template("forked")
        self.wait_for(lambda: not self.live("forked"), timeout=60, what="scale to zero")
        r = self.server.request("POST", "/v2/forked/runsync?wait=60000",
                                {"input": {"whoami": True}}, timeout=90)
        self.assertEqual(r.json["status"], "COMPLETED", r)
        second = r.json["output"]
        # The agent's report of how it started comes a moment after the worker itself.
        def start_path():
            ws = self.server.request("GET", "/v1/endpoints/forked/workers").json["workers"]
            return next((w["startPath"] for w in ws if w["id"] == r.json["workerId"]), "")
        self.assertEqual(self.wait_for(start_path, what="the worker's start path"), "fork")
        self.assertEqual(second["uid"], first["uid"])
        self.assertNotEqual(second["uid"], 0)
        self.assertEqual(second["cwd"], first["cwd"])  # its bundle copy
        self.assertNotEqual(second["scratch"], first["scratch"])  # a scratch directory its own
        self.assertEqual(second["home"], second["scratch"])


@unittest.skipUnless(os.geteuid() == 0, "the flag matters only under root")
class SameUserTest(E2ETest):
    command = "up"
    server_args = ("--insecure-same-user",)

    def test_insecure_same_user_runs_workers_as_root_and_says_so(self):
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY)
        p = subprocess.run([GANTRY, "deploy", HOSTILE], env=env, capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        r = self.server.request("POST", "/v2/hostile/runsync?wait=60000",
                                {"input": {"whoami": True}}, timeout=90)
        self.assertEqual(r.json["output"]["uid"], 0, r)
        p = subprocess.run([GANTRY, "nodes"], env=env, capture_output=True, text=True, timeout=60)
        self.assertIn("--insecure-same-user", p.stdout)


if __name__ == "__main__":
    unittest.main()
