"""End-to-end on `gantry up` as root: each worker has a network namespace of its own (issue:
trust boundaries). A deployed worker reaches the server (its jobs run) but not a service on the
host's loopback, nor one on every address of the host, whether at its gateway, at the host's own
address or at 127.0.0.1; nor another endpoint's worker. An endpoint with hostNetwork reaches the
host's loopback service: the control that shows the probe can tell."""
import os
import random
import socket
import unittest

from harness import E2ETest, tcp_service

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netprobe")


def host_address():
    """This host's address on its default route (no packet is sent), or None."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.connect(("192.0.2.1", 9))
        a = u.getsockname()[0]
        return None if a.startswith("127.") else a
    except OSError:
        return None
    finally:
        u.close()


@unittest.skipUnless(os.geteuid() == 0, "workers get network namespaces only under root")
class NetworkTest(E2ETest):
    command = "up"

    def setUp(self):
        super().setUp()
        self.loopback, self.loopback_port = tcp_service("127.0.0.1")
        self.wildcard, self.wildcard_port = tcp_service("0.0.0.0")

    def tearDown(self):
        super().tearDown()
        self.loopback.close()
        self.wildcard.close()

    def deploy(self, id, host_network=False):
        self.deploy_bundle(PROBE, 'id = "%s"\n%s[worker]\ncommand = ["/usr/bin/python3", '
                           '"handler.py"]\n' % (id, "hostNetwork = true\n" if host_network else ""))

    def probe(self, id, payload):
        r = self.server.request("POST", "/v2/%s/runsync?wait=60000" % id, {"input": payload},
                                timeout=90)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["status"], "COMPLETED", r)
        return r.json["output"]

    def test_a_worker_reaches_the_server_and_no_other_service_of_the_host(self):
        self.deploy("probe")
        targets = ["127.0.0.1:%d" % self.loopback_port, "GATEWAY:%d" % self.loopback_port,
                   "127.0.0.1:%d" % self.wildcard_port, "GATEWAY:%d" % self.wildcard_port]
        if host_address():
            targets.append("%s:%d" % (host_address(), self.wildcard_port))
        out = self.probe("probe", {"connect": targets})
        # Its own address, on the node's worker subnet; the server at the gateway (its job ran).
        self.assertTrue(out["gateway"].startswith("10.213."), out)
        self.assertTrue(out["address"].startswith("10.213."), out)
        self.assertNotEqual(out["address"], out["gateway"])
        for t in targets:
            self.assertTrue(out[t].startswith("refused"), (t, out))
        nodes = self.admin_cli("nodes")
        self.assertIn("own network namespace", nodes.stdout, nodes.stdout + nodes.stderr)
        # The control: an endpoint on the host's network reaches both services.
        self.deploy("hostnet", host_network=True)
        out = self.probe("hostnet", {"connect": targets[:1] + targets[2:3]})
        self.assertEqual(out[targets[0]], "ok: host-secret", out)
        self.assertEqual(out[targets[2]], "ok: host-secret", out)
        self.assertTrue(out["gateway"].startswith("127."), out)

    def test_a_worker_cannot_reach_another_endpoints_worker(self):
        self.deploy("alice")
        self.deploy("mallory")
        port = random.randint(20000, 32000)
        alice = self.probe("alice", {"listen": port})
        target = "%s:%d" % (alice["address"], port)
        self.assertNotEqual(self.probe("mallory", {})["address"], alice["address"])
        self.assertTrue(self.probe("mallory", {"connect": [target]})[target].startswith("refused"))
        # The control: alice's port serves (alice reaches it at her own address).
        self.assertEqual(self.probe("alice", {"connect": [target]})[target], "ok: worker-alice")


if __name__ == "__main__":
    unittest.main()
