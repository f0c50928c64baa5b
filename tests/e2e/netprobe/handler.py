"""A worker that probes its network (tests/e2e/test_network.py): connects to each target it is
given and reports "ok: <what the peer sent>" or "refused: <error>", with its own address and the
gateway it was given the server at. With "listen": PORT it also serves that port, on every
address of its own, from a thread that outlives the job (so that another worker can try it)."""
import os
import socket
import threading

import gantry.serverless as serverless
from attempts import connect_attempts


def serve(port, text):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(8)

    def loop():
        while True:
            c, _ = s.accept()
            with c:
                c.sendall(text.encode())

    threading.Thread(target=loop, daemon=True).start()


def handler(job):
    a = job["input"]
    if a.get("listen"):
        serve(int(a["listen"]), "worker-" + os.environ["RUNPOD_ENDPOINT_ID"])
    out = connect_attempts(a.get("connect", []))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((out["gateway"], 9))  # no packet: only the route, so the source address, is chosen
    out["address"] = u.getsockname()[0]
    u.close()
    return out


serverless.start({"handler": handler})
