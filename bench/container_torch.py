#!/usr/bin/python3
"""Container templates with a real model: time from request to first response
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

It also measures memory, as bench/cold_start_paths.py does for processes: the PSS of four
concurrent workers forked inside one template's container against one container worker started
in full (each after its forward pass, which reads every weight).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (ROOT, GantryUp, LocalRegistry, pct, pss_kb,  # noqa: E402
                      wait_worker_pids)

HANDLER = os.path.join(ROOT, "bench", "handlers", "torch_big.py")


IN_IMAGE = "/app/torch_big.py"  # the handler's path in the image: marks its workers


def measure_memory(up, image_spec):
    """(PSS KiB of one full container worker, of each of 4 forked ones, of their template)."""
    up.wait_zero("cfull")
    wait_worker_pids(IN_IMAGE, 0)
    job = up.call("POST", "/v2/cfull/run", {"input": {"hold": 4}})
    pids = wait_worker_pids(IN_IMAGE, 1)
    time.sleep(1.5)  # its forward pass is done: every weight was read
    full = pss_kb(pids[0])
    up.call("GET", "/v2/cfull/status/" + job["id"])
    up.wait_zero("cfull")
    r = up.call("POST", "/v1/endpoints", dict(image_spec, id="cmem", idleTimeout=2, workersMax=4,
                                              memoryMb=4096, scalerType="REQUEST_COUNT",
                                              scalerValue=1))
    assert "error" not in r, r
    assert up.call("POST", "/v2/cmem/runsync?wait=120000", {"input": {}},
                   timeout=130)["status"] == "COMPLETED"
    tpl = up.wait_ready_template("cmem")
    up.wait_zero("cmem")
    wait_worker_pids(IN_IMAGE, 0)
    for _ in range(4):
        up.call("POST", "/v2/cmem/run", {"input": {"hold": 6}})
    pids = wait_worker_pids(IN_IMAGE, 4)
    time.sleep(2.5)
    children = [pss_kb(p) for p in pids]
    paths = [w["startPath"] for w in up.workers("cmem") if w["state"] != "STOPPED"]
    assert paths.count("fork") == 4, paths
    # The template's reported pid is its OCI runtime's; the template is that one's child (of
    # one of its threads).
    init = None
    for task in os.listdir("/proc/%d/task" % tpl["pid"]):
        with open("/proc/%d/task/%s/children" % (tpl["pid"], task)) as f:
            init = init or next((int(p) for p in f.read().split()), None)
    return full, children, pss_kb(init)


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
            memory = measure_memory(up, image_spec)
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
    full, children, template = memory
    print()
    print("| memory (PSS) | MiB |")
    print("|---|---:|")
    print("| one container worker started in full | %.0f |" % (full / 1024))
    print("| four workers forked in one template's container, together | %.0f |"
          % (sum(children) / 1024))
    print("| their template | %.0f |" % (template / 1024))
    print()
    print("four forked workers use %.2fx the memory of one full worker (%.2fx with the template)"
          % (sum(children) / full, (sum(children) + template) / full))
    print()
    print("container fork is %.1fx faster than a container full start at p50; it adds %.0f ms "
          "over the process fork" % (pct(res["cfull"], 50) / pct(res["cfork"], 50),
                                     pct(res["cfork"], 50) - pct(res["pfork"], 50)))


if __name__ == "__main__":
    main()
