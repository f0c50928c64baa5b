"""Template mode against a stand-in agent: this test process plays the agent (a child
subreaper with the Unix socket), and real worker processes are forked from a real template."""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from tests.fake_gantry import FakeGantry

SDK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_MAIN = os.path.join(SDK_ROOT, "tests", "worker_main.py")
PR_SET_CHILD_SUBREAPER = 36


def _state(pid):
    """The one-letter state of `pid` from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _wait(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("timed out")


class Agent:
    """The agent's side of the protocol in template.py."""

    def __init__(self, path):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)
        self.listener.settimeout(30)
        self.conn = None
        self.buf = b""

    def close(self):
        if self.conn:
            self.conn.close()
        self.listener.close()

    def accept(self):
        if self.conn:
            self.conn.close()
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(10)
        self.buf = b""
        return self.read()

    def read(self):
        while b"\n" not in self.buf:
            data = self.conn.recv(65536)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send(self, msg, fds=()):
        socket.send_fds(self.conn, [json.dumps(msg).encode() + b"\n"], list(fds))

    def fork(self, env, log_path, workdir=None, cgroup_procs=()):
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.send({"op": "fork", "id": env["RUNPOD_POD_ID"], "env": env, "workdir": workdir,
                       "cgroupProcs": list(cgroup_procs), "agentPid": os.getpid()}, [out, out])
        finally:
            os.close(out)
        return self.read()


class _TemplateCase(unittest.TestCase):
    """A real template (tests/worker_main.py, identity handler) connected to `self.agent`."""
    extra_env = {}

    @classmethod
    def setUpClass(cls):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.agent = Agent(os.path.join(self.tmp.name, "ctl.sock"))
        self.addCleanup(self.agent.close)
        self.workers = []
        self.addCleanup(self._kill_workers)
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": SDK_ROOT,
               "TEST_HANDLER": "identity", "TEST_MARKER": os.path.join(self.tmp.name, "m"),
               "GANTRY_TEMPLATE_SOCKET": os.path.join(self.tmp.name, "ctl.sock")}
        env.update(self.extra_env)
        self.template_log = open(os.path.join(self.tmp.name, "template.log"), "w+b")
        self.addCleanup(self.template_log.close)
        self.template = subprocess.Popen([sys.executable, WORKER_MAIN], env=env,
                                         stdout=self.template_log, stderr=subprocess.STDOUT)
        self.addCleanup(self._kill_template)
        hello = self.agent.accept()
        self.assertEqual(hello, {"op": "ready", "pid": self.template.pid})

    def _kill_template(self):
        if self.template.poll() is None:
            self.template.kill()
        self.template.wait()

    def _kill_workers(self):
        for pid in self.workers:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass

    def _fork(self, fake, log_name="w.log"):
        reply = self.agent.fork(fake.env(), os.path.join(self.tmp.name, log_name),
                                workdir=self.tmp.name)
        self.assertIn("pid", reply, reply)
        self.workers.append(reply["pid"])
        return reply["pid"]

    def _fork_each_a_job(self, prefix, n=2):
        """Forks n workers (ids <prefix>0, <prefix>1, ...), each with one job to do; returns
        their (pid, job output) pairs."""
        fakes = [FakeGantry(worker_id=f"{prefix}{i}") for i in range(n)]
        for f in fakes:
            self.addCleanup(f.close)
            f.add_job("j", {})
        pids = [self._fork(f, f"{prefix}{i}.log") for i, f in enumerate(fakes)]
        return [(pid, f.wait_done("j").body["output"]) for pid, f in zip(pids, fakes)]


class TemplateTest(_TemplateCase):
    def test_forked_workers_get_their_own_identity(self):
        for i, (pid, out) in enumerate(self._fork_each_a_job("w")):
            self.assertEqual(out["pid"], pid)
            self.assertEqual(out["pod"], f"w{i}")
            self.assertEqual(out["ppid"], os.getpid())  # re-parented to the agent
            self.assertEqual(out["init_pid"], self.template.pid)  # initialised once, in the template
            self.assertEqual(out["init_memory"], "initialised")
            self.assertEqual(out["cwd"], self.tmp.name)
            self.assertIsNone(out["image_var"])  # the fork's environment replaces the template's
            self.assertEqual(os.getsid(pid), pid)  # its own session and process group
        self.assertIsNone(self.template.poll())

    def test_a_crashing_worker_leaves_the_template_alone(self):
        fake = FakeGantry(worker_id="w0")
        self.addCleanup(fake.close)
        fake.add_job("j", {})
        pid = self._fork(fake)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)  # the agent, not the template, reaps it
        self.assertEqual(os.WTERMSIG(status), signal.SIGKILL)
        self.workers.remove(pid)
        self.assertIsNone(self.template.poll())
        second = FakeGantry(worker_id="w1")
        self.addCleanup(second.close)
        second.add_job("j", {})
        self._fork(second)
        self.assertEqual(second.wait_done("j").body["output"]["pod"], "w1")

    def test_bad_requests_get_errors(self):
        self.agent.send({"op": "fork", "env": {}})  # no fds
        self.assertIn("error", self.agent.read())
        self.agent.send({"op": "nonsense"})
        self.assertIn("error", self.agent.read())
        reply = self.agent.fork({"RUNPOD_POD_ID": "x"}, os.path.join(self.tmp.name, "x.log"),
                                cgroup_procs=[os.path.join(self.tmp.name, "no/such/cgroup.procs")])
        self.assertIn("No such file", reply["error"])
        self.assertIsNone(self.template.poll())

    def test_park_stops_and_reconnects_when_continued(self):
        self.agent.send({"op": "park"})
        self.assertIsNone(self.agent.read())  # the template closed its end
        _wait(lambda: _state(self.template.pid) == "T")
        fds = os.listdir(f"/proc/{self.template.pid}/fd")
        for fd in fds:  # nothing but /dev/null, files and pipes of its own: CRIU can dump it
            target = os.readlink(f"/proc/{self.template.pid}/fd/{fd}")
            self.assertFalse(target.startswith("socket:"), target)
            if fd in ("0", "1", "2"):
                self.assertEqual(target, "/dev/null")
        os.kill(self.template.pid, signal.SIGCONT)
        self.assertEqual(self.agent.accept(), {"op": "ready", "pid": self.template.pid})
        fake = FakeGantry(worker_id="w9")
        self.addCleanup(fake.close)
        fake.add_job("j", {})
        self._fork(fake)
        self.assertEqual(fake.wait_done("j").body["output"]["pod"], "w9")

    def test_idle_template_hands_forks_to_a_spare_made_ahead(self):
        time.sleep(0.6)  # idle: the template has made its spare
        fake = FakeGantry(worker_id="w5")
        self.addCleanup(fake.close)
        fake.add_job("j", {})
        reply = self.agent.fork(fake.env(), os.path.join(self.tmp.name, "w5.log"),
                                workdir=self.tmp.name)
        self.assertTrue(reply.get("spare"), reply)
        self.workers.append(reply["pid"])
        out = fake.wait_done("j").body["output"]
        self.assertEqual(out["pid"], reply["pid"])
        self.assertEqual(out["pod"], "w5")
        self.assertEqual(out["ppid"], os.getpid())
        self.assertEqual(out["init_pid"], self.template.pid)
        self.assertEqual(os.getsid(reply["pid"]), reply["pid"])
        # A spare is made again once idle; parking closes it (nothing connected remains).
        time.sleep(0.6)
        self.agent.send({"op": "park"})
        self.assertIsNone(self.agent.read())
        _wait(lambda: _state(self.template.pid) == "T")
        for fd in os.listdir(f"/proc/{self.template.pid}/fd"):
            target = os.readlink(f"/proc/{self.template.pid}/fd/{fd}")
            self.assertFalse(target.startswith("socket:"), target)
        os.kill(self.template.pid, signal.SIGCONT)
        self.assertEqual(self.agent.accept(), {"op": "ready", "pid": self.template.pid})

    def test_fds_stay_with_their_message_when_messages_arrive_together(self):
        # A message without fds right before a fork: both may come in one read.
        for _ in range(5):
            self.agent.send({"op": "spare", "id": "c", "cgroupProcs": []})
            fake = FakeGantry(worker_id="wf")
            self.addCleanup(fake.close)
            reply = self.agent.fork(fake.env(), os.path.join(self.tmp.name, "wf.log"))
            self.assertIn("pid", reply, reply)
            self.workers.append(reply["pid"])

    def test_template_exits_when_the_agent_hangs_up(self):
        self.agent.conn.close()
        self.assertEqual(self.template.wait(10), 0)


class ContainerTemplateTest(_TemplateCase):
    """The template as a container's init would run (GANTRY_TEMPLATE_CONTAINER=1): its workers
    are its own children, and it reports how they end."""
    extra_env = {"GANTRY_TEMPLATE_CONTAINER": "1", "TEST_IMAGE_VAR": "from the image"}

    def _fork(self, fake, log_name="w.log"):
        pid = super()._fork(fake, log_name)
        self._continue(pid)
        return pid

    def _continue(self, pid):
        """What the agent does once it has moved a worker into its cgroups."""
        _wait(lambda: _state(pid) == "T")  # it waits, stopped, for that
        os.kill(pid, signal.SIGCONT)

    def _exit_report(self):
        msg = self.agent.read()
        self.assertEqual(msg and msg.get("op"), "exit", msg)
        return msg

    def test_workers_are_its_children_with_their_identity_and_its_environment(self):
        for i, (pid, out) in enumerate(self._fork_each_a_job("c")):
            self.assertEqual(out["pid"], pid)
            self.assertEqual(out["pod"], f"c{i}")
            self.assertEqual(out["ppid"], self.template.pid)  # not re-parented: the init's child
            self.assertEqual(out["init_pid"], self.template.pid)
            self.assertEqual(out["image_var"], "from the image")  # added to, not replaced
            self.assertIsNone(out["template_socket"])  # the template's own variables are gone
            self.assertEqual(os.getsid(pid), pid)

    def test_the_end_of_each_worker_is_reported(self):
        fake = FakeGantry(worker_id="c0")
        self.addCleanup(fake.close)
        fake.add_job("j", {})
        pid = self._fork(fake)
        fake.wait_done("j")
        os.kill(pid, signal.SIGKILL)
        msg = self._exit_report()
        self.assertEqual(msg["pid"], pid)
        self.assertTrue(os.WIFSIGNALED(msg["status"]))
        self.assertEqual(os.WTERMSIG(msg["status"]), signal.SIGKILL)
        self.assertEqual(_state(pid), None)  # reaped by the template
        self.assertIsNone(self.template.poll())

    def test_idle_template_hands_forks_to_a_spare_made_ahead(self):
        time.sleep(0.6)
        fake = FakeGantry(worker_id="c5")
        self.addCleanup(fake.close)
        fake.add_job("j", {})
        # A cgroup offered for the spare: the template says which process to move there.
        self.agent.send({"op": "spare", "id": "cg1", "cgroupProcs": []})
        made = self.agent.read()
        self.assertEqual(made["op"], "spare-made", made)
        self.assertEqual(made["id"], "cg1")
        self.assertEqual(_state(made["pid"]) in ("S", "R"), True)
        reply = self.agent.fork(fake.env(), os.path.join(self.tmp.name, "c5.log"))
        self.assertTrue(reply.get("spare"), reply)
        self.assertEqual(reply["pid"], made["pid"])
        self.assertEqual(reply["spareCgroup"], "cg1")
        self._continue(reply["pid"])
        out = fake.wait_done("j").body["output"]
        self.assertEqual(out["pid"], reply["pid"])
        self.assertEqual(out["pod"], "c5")
        self.assertEqual(out["ppid"], self.template.pid)
        self.assertEqual(out["image_var"], "from the image")
        os.kill(reply["pid"], signal.SIGTERM)
        self.assertEqual(self._exit_report()["pid"], reply["pid"])

    def test_a_retired_template_exits_after_its_last_worker(self):
        fake = FakeGantry(worker_id="c7")
        self.addCleanup(fake.close)
        fake.add_job("j", {})
        pid = self._fork(fake)
        fake.wait_done("j")
        self.agent.send({"op": "retire"})
        time.sleep(0.3)
        self.assertIsNone(self.template.poll())  # its worker still runs
        os.kill(pid, signal.SIGKILL)
        self.assertEqual(self._exit_report()["pid"], pid)
        self.assertEqual(self.template.wait(10), 0)

    def test_template_waits_for_its_workers_when_the_agent_hangs_up(self):
        fake = FakeGantry(worker_id="c8")
        self.addCleanup(fake.close)
        fake.add_job("j", {})
        pid = self._fork(fake)
        fake.wait_done("j")
        self.agent.conn.close()
        time.sleep(0.3)
        self.assertIsNone(self.template.poll())
        os.kill(pid, signal.SIGKILL)
        self.assertEqual(self.template.wait(10), 0)


if __name__ == "__main__":
    unittest.main()
