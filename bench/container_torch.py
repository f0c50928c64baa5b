#!/usr/bin/python3
"""Container templates with a real model (issue 5, item 6): time from request to first response
of the cold-start benchmark's torch handler (bench/handlers/torch_big.py: `import torch`, a
488 MiB model mapped with gantry.weights, one forward pass), scaled from zero, in one run on one
`gantry up`, for:
  - a container worker started in full (`flashboot: false`): runc, overlay, the handler's
    imports and model load, every time;
  - a container worker forked from its template inside the template's container;
  - the same handler as a process worker forked from its template (the host's python3-torch).
The image (bench/images/build_torch_image.sh: Debian bookworm's python3-torch, the SDK, the
handler) is pushed to Debian's docker-registry on loopback; the model file lives in a named
volume (`/runpod-volume/models`), built by the first worker. Every start path is checked on the
worker (`startPath`).

Usage (root, after scripts/setup.sh and scripts/build.sh):
    /usr/bin/python3 bench/container_torch.py [--starts 20] [--port 21900]
The first run builds the image (several minutes, cached).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, GantryUp, LocalRegistry, pct  # noqa: E402

HANDLER = os.path.join(ROOT, "bench", "handlers", "torch_big.py")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--port", type=int, default=21900)
    args = ap.parse_args()
    layout = subprocess.run(["bash", os.path.join(ROOT, "bench", "images", "build_torch_image.sh")],
                            check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    models = tempfile.mkdtemp(prefix="gantry-bench-models-")
    with LocalRegistry() as registry:
        image = "127.0.0.1:%d/bench/torch:1" % registry.port
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
                        "oci:%s:torch" % layout, "docker://" + image], check=True)
        up = GantryUp(args.port)
        try:
            common = {"idleTimeout": 0, "workersMax": 1, "memoryMb": 4096}
            image_spec = {"image": image, "volume": "bench-models"}
            process = {"worker": {"command": ["/usr/bin/python3", HANDLER]},
                       "env": {"BENCH_MODEL_DIR": models}}
            for ep, spec in (("cfull", dict(image_spec, flashboot=False)), ("cfork", image_spec),
                             ("pfork", process)):
                r = up.call("POST", "/v1/endpoints", dict(common, id=ep, **spec))
                assert "error" not in r, r
            # First starts, not timed: the pull and unpack, the model file in the volume and on
            # the host, the templates.
            t0 = time.perf_counter()
            for ep in ("cfull", "cfork", "pfork"):
                r = up.call("POST", "/v2/%s/runsync?wait=900000" % ep, {"input": {}}, timeout=920)
                assert r["status"] == "COMPLETED", r
            print("first starts (pull, unpack, model files): %.0f s" % (time.perf_counter() - t0),
                  file=sys.stderr)
            for ep in ("cfork", "pfork"):
                up.wait_ready_template(ep)
            paths = {"cfull": "full", "cfork": "fork", "pfork": "fork"}
            res = up.interleaved_starts(paths, args.starts, progress=True)
        finally:
            up.close()
            shutil.rmtree(models, ignore_errors=True)
    names = {"cfull": "container worker, full start (runc, imports, model mapped)",
             "cfork": "container worker forked from its template inside its container",
             "pfork": "process worker forked from its template"}
    print("| torch handler, scale from zero (%d starts each) | p50 ms | p99 ms |" % args.starts)
    print("|---|---:|---:|")
    for ep in paths:
        print("| %s | %.0f | %.0f |" % (names[ep], pct(res[ep], 50), pct(res[ep], 99)))
    print()
    print("container fork is %.1fx faster than a container full start at p50; it adds %.0f ms "
          "over the process fork" % (pct(res["cfull"], 50) / pct(res["cfork"], 50),
                                     pct(res["cfork"], 50) - pct(res["pfork"], 50)))


if __name__ == "__main__":
    main()
