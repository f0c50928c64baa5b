"""End-to-end over HTTPS with a private CA (issue: trust boundaries, TLS): `gantry up
--tls-cert --tls-key`, its in-process agent and the SDK workers it starts, the CLI with
--ca-file, RunPod's JavaScript SDK (NODE_EXTRA_CA_CERTS), and a webhook to an https:// target,
each verifying the other side's certificate; a client that does not trust the CA is refused."""
import http.client
import http.server
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import unittest

from harness import ADMIN_KEY, E2ETest, GANTRY, HANDLERS, PYTHON, Server

JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")
NODE = shutil.which("node")


def make_ca(d):
    """A private CA and a certificate it signed for 127.0.0.1 and localhost, in `d`."""
    def openssl(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=gantry e2e CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")


class TlsTest(E2ETest):
    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="gantry-pki-")
        os.chmod(cls.pki, 0o755)
        make_ca(cls.pki)
        cls.ca = os.path.join(cls.pki, "ca.pem")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki, ignore_errors=True)

    # Whether the server is told the CA (GANTRY_CA_FILE) or left to trust its own certificate.
    server_told_the_ca = True

    def setUp(self):
        self.saved = os.environ.pop("GANTRY_CA_FILE", None)
        env = {"GANTRY_CA_FILE": self.ca} if self.server_told_the_ca else {}
        self.server = Server(
            command="up", ca_file=self.ca, env=env,
            extra_args=["--tls-cert", os.path.join(self.pki, "server.pem"),
                        "--tls-key", os.path.join(self.pki, "server.key"),
                        "--webhook-allow", "127.0.0.0/8"]).start()
        self.workers = []

    def tearDown(self):
        super().tearDown()
        if self.saved is not None:
            os.environ["GANTRY_CA_FILE"] = self.saved

    def cli(self, *args, ca=True):
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY)
        env.pop("GANTRY_CA_FILE", None)
        pre = ["--ca-file", self.ca] if ca else []
        return subprocess.run([GANTRY] + pre + list(args), env=env, capture_output=True,
                              text=True, timeout=120)

    def echo_round_trip(self, payload):
        """An echo endpoint made with the CLI, and a job through it: its worker started by the
        in-process agent and answering over https."""
        p = self.cli("endpoint", "create", "echo", "--command", PYTHON,
                     os.path.join(HANDLERS, "echo.py"))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        p = self.cli("run", "echo", "--input", json.dumps(payload))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(json.loads(p.stdout), {"echo": payload})

    def test_everything_speaks_https_and_verifies_the_private_ca(self):
        self.assertTrue(self.server.url.startswith("https://127.0.0.1:"), self.server.url)
        # The CLI, with the CA: an endpoint whose worker the in-process agent starts (over
        # https to the server), and whose SDK worker takes and answers the job over https.
        self.echo_round_trip({"over": "tls"})
        # Without it, the CLI refuses the server's certificate (exit 3: cannot reach it).
        p = self.cli("ps", ca=False)
        self.assertEqual(p.returncode, 3, p.stdout + p.stderr)
        self.assertIn("certificate verify failed", p.stderr)
        # A client trusting only the system's CAs is refused too; plain HTTP gets nothing.
        conn = http.client.HTTPSConnection("127.0.0.1", self.server.port, timeout=10,
                                           context=ssl.create_default_context())
        with self.assertRaises(ssl.SSLCertVerificationError):
            conn.request("GET", "/healthz")
        conn.close()
        plain = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        with self.assertRaises((http.client.HTTPException, ConnectionError)):
            plain.request("GET", "/healthz")
            plain.getresponse().read()
        plain.close()
        self.assertEqual(self.server.request("GET", "/healthz").status, 200)

    def test_a_webhook_goes_to_an_https_target_that_the_ca_vouches_for(self):
        got = []

        class Hook(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        httpd = http.server.HTTPServer(("127.0.0.1", 0), Hook)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(self.pki, "server.pem"),
                            os.path.join(self.pki, "server.key"))
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        t = threading.Thread(target=httpd.serve_forever, daemon=True)
        t.start()
        try:
            self.server.create_endpoint({"id": "hook", "worker": {
                "command": [PYTHON, os.path.join(HANDLERS, "echo.py")]}})
            r = self.server.request("POST", "/v2/hook/run", {
                "input": {"x": 1},
                "webhook": "https://127.0.0.1:%d/done" % httpd.server_address[1]})
            self.assertEqual(r.status, 200, r)
            self.wait_for(lambda: got, timeout=60, what="the webhook over https")
            self.assertEqual(got[0]["id"], r.json["id"])
            self.assertEqual(got[0]["output"], {"echo": {"x": 1}})
        finally:
            httpd.shutdown()
            httpd.server_close()

    @unittest.skipUnless(NODE and os.path.isdir(os.path.join(JS_DIR, "node_modules",
                                                             "runpod-sdk")),
                         "node and runpod-sdk (scripts/setup.sh) run test_runpod_js.py too")
    def test_runpods_javascript_sdk_over_https(self):
        self.server.create_endpoint({"id": "echo", "worker": {
            "command": [PYTHON, os.path.join(HANDLERS, "echo.py")]}})
        env = dict(os.environ, GANTRY_URL=self.server.url, GANTRY_API_KEY=ADMIN_KEY,
                   NODE_EXTRA_CA_CERTS=self.ca)
        p = subprocess.run([NODE, os.path.join(JS_DIR, "sdk_check.mjs"), "runSync", "echo",
                            json.dumps({"input": {"js": True}, "timeout": 60000})],
                           env=env, cwd=JS_DIR, capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        out = json.loads(p.stdout.strip().splitlines()[-1])["result"]
        self.assertEqual(out["status"], "COMPLETED", out)
        self.assertEqual(out["output"], {"echo": {"js": True}})


class UpTrustsItsOwnCertificateTest(TlsTest):
    """`gantry up --tls-cert` without GANTRY_CA_FILE: its agent and workers trust the server's
    own certificate (a leaf here, signed by a CA they were not told of)."""

    server_told_the_ca = False

    def test_everything_speaks_https_and_verifies_the_private_ca(self):
        self.echo_round_trip({"own": "cert"})

    test_a_webhook_goes_to_an_https_target_that_the_ca_vouches_for = None
    test_runpods_javascript_sdk_over_https = None


class PlainListenWarningTest(unittest.TestCase):
    def test_listening_beyond_loopback_without_tls_warns(self):
        d = tempfile.mkdtemp(prefix="gantry-warn-")
        try:
            p = subprocess.Popen([GANTRY, "server", "--listen", "0.0.0.0:0", "--data-dir", d],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ, GANTRY_ADMIN_KEY=ADMIN_KEY))
            try:
                self.assertIn("listening on", p.stdout.readline())
            finally:
                p.terminate()
                _, err = p.communicate(timeout=30)
            self.assertIn("warning: listening on 0.0.0.0 without TLS", err)
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
